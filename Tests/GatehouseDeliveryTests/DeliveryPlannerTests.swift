import GatehouseCore
@testable import GatehouseDelivery
@testable import GatehouseStore
import Testing

/// What an event causes at delivery, decided in Delivery and persisted by the store as is.
struct DeliveryPlannerTests {
    static func planner() -> DeliveryPlanner {
        var root = GatehouseConfig.Route()
        root.receiver = "team"
        root.groupBy = ["pipeline"]
        var ops = GatehouseConfig.Route()
        ops.receiver = "ops"
        ops.matchers = [try! Matcher.parse(#"severity="critical""#)]
        ops.continueMatching = true
        root.routes = [ops]
        return DeliveryPlanner(routes: RouteTree(root), sendResolved: ["team"])
    }

    func event(_ type: String, severity: Severity = .error, attributes: JSONObject? = nil) -> Event {
        Event(id: "e-\(type)", type: type, pipeline: "train", run: "r1", severity: severity, attributes: attributes, time: Timestamp(milliseconds: 1000))
    }

    @Test func failuresAreGroupedAndMarkTheirPipelineFailing() {
        let plan = Self.planner().plan(event("step.failed"))
        #expect(plan.isFailure && !plan.resolvesFailures)
        #expect(plan.deliveries.count == 1)
        let team = plan.deliveries.first { $0.receiver == "team" }
        #expect(team?.groupKey.hasSuffix("pipeline=train") == true && team?.sendResolved == true && team?.alone == false)
        // A child route takes the critical one (the root only gets what no child took).
        let critical = Self.planner().plan(event("run.failed", severity: .critical))
        #expect(critical.deliveries.map(\.receiver) == ["ops"] && critical.deliveries[0].sendResolved == false)
    }

    @Test func aSuccessResolves() {
        let plan = Self.planner().plan(event("run.succeeded", severity: .info))
        #expect(!plan.isFailure && plan.resolvesFailures)
    }

    @Test func gateEventsAreMessagesOfTheirOwnAndEscalationsGoWhereTheGateSays() {
        let opened = Self.planner().plan(event("gate.opened"))
        #expect(opened.deliveries.allSatisfy { $0.alone && $0.groupKey == "gate|e-gate.opened" && $0.groupWait == .init(milliseconds: 0) })
        #expect(opened.deliveries.map(\.receiver) == ["team"])
        let escalated = Self.planner().plan(event("gate.escalated", attributes: JSONObject([("escalate_to", .array([.string("oncall"), .string("ops")]))])))
        #expect(escalated.deliveries.map(\.receiver) == ["oncall", "ops"])
        #expect(escalated.deliveries.allSatisfy { $0.route == "escalate_to" })
    }

    @Test func withoutRoutesNothingIsPlanned() {
        #expect(DeliveryPlanner(routes: nil).plan(event("run.failed")).deliveries.isEmpty)
    }
}

/// The dispatcher marks a group flushed after its first send — except a group that is its event
/// alone, which has no `alert_groups` row (`Dispatcher.Settings.groupsAlone`). Its inference
/// from a delivery's route and key must agree with what the planner decided.
struct GroupsAloneTests {
    static func routes() -> RouteTree {
        var root = GatehouseConfig.Route()
        root.receiver = "team"
        root.groupBy = ["pipeline"]
        var everything = GatehouseConfig.Route()
        everything.receiver = "alerts"
        everything.groupBy = ["..."]
        everything.matchers = [try! Matcher.parse(#"type="run.failed""#)]
        everything.continueMatching = true
        root.routes = [everything]
        return RouteTree(root)!
    }

    func delivery(_ plan: PlannedDelivery) -> Delivery {
        Delivery(
            id: "msg_1", event_seq: 1, receiver: plan.receiver, route: plan.route, group_key: plan.groupKey, kind: "event", state: .pending,
            attempts: 0, next_attempt_at: 0, created_at: 0, updated_at: 0, delivered_at: nil, last_status: nil, last_error: nil,
            response_body: nil, message_id: nil, fallback: nil, fallback_of: nil, batch_id: nil)
    }

    @Test func theDispatchersInferenceAgreesWithThePlanner() {
        let routes = Self.routes()
        var settings = Dispatcher.Settings()
        settings.routesGroupingEverything = Dispatcher.Settings.routesGroupingEverything(in: routes)
        #expect(settings.routesGroupingEverything == ["root.0"])
        let planner = DeliveryPlanner(routes: routes)
        let events = [
            // Grouped by pipeline, and (its failure) alone on the child route.
            Event(id: "e1", type: "run.failed", pipeline: "train", run: "r1", time: Timestamp(milliseconds: 1000)),
            Event(id: "e2", type: "step.failed", pipeline: "train", run: "r1", time: Timestamp(milliseconds: 1000)),
            // Gate messages and an escalation: alone.
            Event(id: "g1", type: "gate.opened", pipeline: "train", time: Timestamp(milliseconds: 1000)),
            Event(
                id: "g2", type: "gate.escalated", pipeline: "train", attributes: JSONObject([("escalate_to", .array([.string("ops")]))]),
                time: Timestamp(milliseconds: 1000)),
        ]
        var seen = (alone: 0, grouped: 0)
        for event in events {
            for plan in planner.plan(event).deliveries {
                #expect(settings.groupsAlone(delivery(plan), event: event) == plan.alone, "\(event.id) \(event.type) → \(plan.route) \(plan.groupKey)")
                if plan.alone { seen.alone += 1 } else { seen.grouped += 1 }
            }
        }
        #expect(seen.alone == 3 && seen.grouped == 1)
    }

    @Test func aGroupWithARowIsNeverTakenForALoneOne() {
        var settings = Dispatcher.Settings()
        settings.routesGroupingEverything = Dispatcher.Settings.routesGroupingEverything(in: Self.routes())
        let planner = DeliveryPlanner(routes: Self.routes())
        // An event id shaped like a field grouping's key: on the route grouping by everything
        // its group is alone, but its key could be a field group's, so it is marked anyway.
        let shaped = Event(id: "pipeline=train", type: "run.failed", pipeline: "train", time: Timestamp(milliseconds: 1000))
        let plans = planner.plan(shaped).deliveries
        #expect(plans.map(\.route) == ["root.0"] && plans[0].alone)
        #expect(!settings.groupsAlone(delivery(plans[0]), event: shaped))
        // A row planned when that route grouped by pipeline (its group has a row) and led by
        // that very event, sent under a config that now groups the route by everything.
        let old = PlannedDelivery(receiver: "alerts", route: "root.0", groupKey: "root.0|pipeline=train", groupWait: .seconds(0), groupInterval: .seconds(0), fallback: nil)
        #expect(!settings.groupsAlone(delivery(old), event: shaped))
        let e1 = Event(id: "e1", type: "run.failed", pipeline: "train", time: Timestamp(milliseconds: 1000))
        #expect(!settings.groupsAlone(delivery(old), event: e1))
        // Every grouped plan, whatever the event, is marked.
        for event in [shaped, e1, Event(id: "root.0|x", type: "step.failed", pipeline: "train", time: Timestamp(milliseconds: 1000))] {
            for plan in planner.plan(event).deliveries where !plan.alone {
                #expect(!settings.groupsAlone(delivery(plan), event: event))
            }
        }
    }
}
