import GatehouseCore
import Testing

private func route(_ receiver: String?, matchers: [String] = [], groupBy: [String]? = nil, groupWait: String? = nil,
                   continue c: Bool = false, _ children: [GatehouseConfig.Route] = []) -> GatehouseConfig.Route {
    var r = GatehouseConfig.Route()
    r.receiver = receiver
    r.matchers = matchers.flatMap { try! Matcher.parseList($0) }
    r.groupBy = groupBy
    r.groupWait = groupWait.flatMap(GatehouseDuration.init)
    r.continueMatching = c
    r.routes = children
    return r
}

private func event(_ labels: [(String, String)], type: String = "run.failed", pipeline: String = "train", run: String? = "r1") -> Event {
    Event(id: "e-\(type)-\(pipeline)-\(run ?? "")-\(labels.map { "\($0)=\($1)" }.joined(separator: ","))", type: type, pipeline: pipeline, run: run, labels: labels, time: .now())
}

struct RoutingTests {
    /// Alertmanager's documented example (docs/configuration.md, "route" section).
    let tree = RouteTree(route("default-receiver", groupBy: ["cluster", "alertname"], groupWait: "30s", [
        route("database-pager", matchers: [#"service=~"mysql|cassandra""#], groupWait: "10s"),
        route("frontend-pager", matchers: [#"team="frontend""#], groupBy: ["product", "environment"]),
    ]))!

    @Test func alertmanagerExampleRoutesLikeAlertmanager() {
        let mysql = tree.match(event([("service", "mysql"), ("cluster", "eu1")]))
        #expect(mysql.map(\.receiver) == ["database-pager"])
        #expect(mysql[0].groupWait == GatehouseDuration("10s"))
        // Inherited from the root.
        #expect(mysql[0].groupBy == .fields(["cluster", "alertname"]))
        #expect(mysql[0].groupInterval == RouteTree.defaultGroupInterval)

        let frontend = tree.match(event([("team", "frontend")]))
        #expect(frontend.map(\.receiver) == ["frontend-pager"])
        #expect(frontend[0].groupBy == .fields(["product", "environment"]))
        #expect(frontend[0].groupWait == GatehouseDuration("30s"))

        // Anchored regex: "mysql-replica" is not "mysql".
        #expect(tree.match(event([("service", "mysql-replica")])).map(\.receiver) == ["default-receiver"])
        #expect(tree.match(event([])).map(\.path) == ["root"])
    }

    @Test func firstMatchWinsUnlessContinue() {
        let t = RouteTree(route("default", [
            route("ops", matchers: [#"type=~"run.failed|step.failed""#, #"severity="critical""#], continue: true),
            route("ml", matchers: [#"pipeline="train""#]),
            route("never", matchers: [#"pipeline="train""#]),
        ]))!
        var critical = event([], type: "run.failed")
        critical.severity = .critical
        #expect(t.match(critical).map(\.receiver) == ["ops", "ml"])
        #expect(t.match(event([], type: "run.failed")).map(\.receiver) == ["ml"])
        #expect(t.match(event([], type: "run.failed", pipeline: "etl")).map(\.receiver) == ["default"])
    }

    @Test func nestedRoutesInheritAndFallBackToTheParent() {
        let t = RouteTree(route("default", groupBy: ["pipeline"], [
            route(nil, matchers: [#"team="ml""#], groupWait: "5s", [
                route("ml-critical", matchers: [#"severity="critical""#]),
            ]),
        ]))!
        let n = t.match(event([("team", "ml")]))
        // The ml route has no receiver of its own: it inherits "default", and takes the event
        // itself because no child matched.
        #expect(n.map(\.path) == ["root.0"])
        #expect(n[0].receiver == "default")
        var critical = event([("team", "ml")])
        critical.severity = .critical
        let c = t.match(critical)
        #expect(c.map(\.receiver) == ["ml-critical"])
        #expect(c[0].groupWait == GatehouseDuration("5s"))
        #expect(c[0].groupBy == .fields(["pipeline"]))
    }

    @Test func groupKeys() {
        let t = RouteTree(route("r", groupBy: ["pipeline", "run"]))!
        let a = t.root.groupKey(for: event([], run: "r1"))
        #expect(a == t.root.groupKey(for: event([("x", "y")], type: "step.failed", run: "r1")))
        #expect(a != t.root.groupKey(for: event([], run: "r2")))
        let all = RouteTree(route("r", groupBy: ["..."]))!
        #expect(all.root.groupBy == .everything)
        #expect(all.root.groupKey(for: event([("a", "1")])) != all.root.groupKey(for: event([("a", "2")])))
    }

    @Test func inhibitionMutesTheStepFailuresOfAFailedRun() throws {
        var rule = GatehouseConfig.InhibitRule()
        rule.sourceMatchers = try Matcher.parseList(#"type="run.failed""#)
        rule.targetMatchers = try Matcher.parseList(#"type="step.failed""#)
        rule.equal = ["pipeline", "run"]
        let inhibitor = Inhibitor(rules: [rule])
        let runFailed = event([], type: "run.failed", run: "r1")
        #expect(inhibitor.mutingRule(for: event([], type: "step.failed", run: "r1"), among: [runFailed])?.source == runFailed)
        #expect(inhibitor.mutingRule(for: event([], type: "step.failed", run: "r2"), among: [runFailed]) == nil)
        #expect(inhibitor.mutingRule(for: runFailed, among: [runFailed]) == nil)
    }

    @Test func silencesHaveATimeWindow() throws {
        let s = Silence(id: "s1", matchers: try Matcher.parseList(#"pipeline="train""#), startsAt: Timestamp(milliseconds: 1000), endsAt: Timestamp(milliseconds: 2000), createdBy: "web:bob", comment: "maintenance")
        #expect(s.mutes(event([]), at: Timestamp(milliseconds: 1500)))
        #expect(!s.mutes(event([]), at: Timestamp(milliseconds: 2000)))
        #expect(!s.mutes(event([]), at: Timestamp(milliseconds: 999)))
        #expect(!s.mutes(event([], pipeline: "etl"), at: Timestamp(milliseconds: 1500)))
    }
}

struct RetryScheduleTests {
    @Test func backsOffExponentiallyWithJitterAndACap() {
        let s = RetrySchedule()
        #expect(s.delay(afterAttempt: 1, random: 0.5).milliseconds == 1000)
        #expect(s.delay(afterAttempt: 2, random: 0.5).milliseconds == 2000)
        #expect(s.delay(afterAttempt: 5, random: 0.5).milliseconds == 16000)
        #expect(s.delay(afterAttempt: 30, random: 0.5).milliseconds == 3_600_000)
        #expect(s.delay(afterAttempt: 1, random: 0).milliseconds == 800)
        #expect(s.delay(afterAttempt: 1, random: 0.999).milliseconds == 1200)
        // The receiver's Retry-After wins when longer.
        #expect(s.delay(afterAttempt: 1, retryAfter: 30, random: 0.5).milliseconds == 30000)
        #expect(s.allows(next: Timestamp(milliseconds: 86_400_000), created: Timestamp(milliseconds: 0)))
        #expect(!s.allows(next: Timestamp(milliseconds: 86_400_001), created: Timestamp(milliseconds: 0)))
    }
}
