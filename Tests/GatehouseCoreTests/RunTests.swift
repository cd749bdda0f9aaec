import GatehouseCore
import Testing

private func event(_ type: String, _ time: String, step: String? = nil, run: String = "r1") -> Event {
    Event(id: "\(type)-\(time)", type: type, pipeline: "train", run: run, step: step, time: Timestamp(rfc3339: "2026-11-29T\(time)Z")!)
}

struct RunTests {
    @Test func failedRunWithFailedStep() throws {
        let run = try #require(RunSummary.derive([
            event("run.started", "10:00:00"), event("step.started", "10:01:00", step: "fit"),
            event("step.failed", "10:05:00", step: "fit"), event("run.failed", "10:06:00"),
        ]))
        #expect(run.status == .failed)
        #expect(run.failedStep == "fit")
        #expect(run.startedAt == Timestamp(rfc3339: "2026-11-29T10:00:00Z"))
        #expect(run.endedAt == Timestamp(rfc3339: "2026-11-29T10:06:00Z"))
        #expect(run.durationMilliseconds == 360_000)
        #expect(run.eventCount == 4)
        #expect(run.counts == ["run.started": 1, "step.started": 1, "step.failed": 1, "run.failed": 1])
    }

    @Test func orderOfArrivalDoesNotMatter() {
        let events = [event("run.started", "10:00:00"), event("step.failed", "10:02:00", step: "a"), event("run.succeeded", "10:09:00")]
        let forward = RunSummary.derive(events)
        let backward = RunSummary.derive(events.reversed())
        #expect(forward?.status == .succeeded)
        #expect(backward?.status == forward?.status)
        #expect(backward?.startedAt == forward?.startedAt)
        #expect(backward?.endedAt == forward?.endedAt)
        // A success clears the failed step (the step was retried and the run went on).
        #expect(forward?.failedStep == nil)
    }

    @Test func runningUntilATerminalEventAndReRuns() {
        var run = RunSummary.derive([event("run.started", "10:00:00"), event("step.failed", "10:01:00", step: "fit")])!
        #expect(run.status == .running)
        #expect(run.failedStep == "fit")
        #expect(run.endedAt == nil)
        run = run.applying(event("run.failed", "10:02:00"))
        #expect(run.status == .failed)
        run = run.applying(event("run.started", "11:00:00"))
        #expect(run.status == .running)
        #expect(run.endedAt == nil)
        // A late, older terminal event does not override the newer start.
        run = run.applying(event("run.succeeded", "10:30:00"))
        #expect(run.status == .running)
    }

    @Test func startWithoutRunStartedIsTheEarliestEvent() {
        let run = RunSummary.derive([event("step.started", "10:05:00"), event("step.started", "10:01:00")])!
        #expect(run.startedAt == Timestamp(rfc3339: "2026-11-29T10:01:00Z"))
        #expect(RunSummary.derive([Event(id: "x", type: "a.b", pipeline: "p", time: .now())]) == nil)
    }

    @Test func jsonShape() {
        let run = RunSummary.derive([event("run.started", "10:00:00"), event("run.succeeded", "10:00:01.500")])!
        let o = run.json.objectValue!
        #expect(o["duration_seconds"] == .number("1.5"))
        #expect(o["status"] == .string("succeeded"))
        #expect(o["failed_step"] == .null)
    }
}

struct MatcherTests {
    private let event = Event(id: "1", type: "run.failed", pipeline: "train", run: "r1", labels: [("team", "ml")], time: .now())

    @Test func operatorsAndAnchoring() throws {
        #expect(try Matcher.parse(#"type="run.failed""#).matches(event))
        #expect(try Matcher.parse(#"type!="run.failed""#).matches(event) == false)
        #expect(try Matcher.parse(#"type=~"run.failed|step.failed""#).matches(event))
        // Anchored: a substring does not match.
        #expect(try Matcher.parse(#"type=~"run""#).matches(event) == false)
        #expect(try Matcher.parse(#"pipeline!~"tr.*""#).matches(event) == false)
        #expect(try Matcher.parse(#"severity="error""#).matches(event))
        #expect(try Matcher.parse(#"team="ml""#).matches(event))
        // Absent labels match the empty string, as in Alertmanager.
        #expect(try Matcher.parse(#"env="""#).matches(event))
        #expect(try Matcher.parse("team=ml").matches(event))
    }

    @Test func parsesLists() throws {
        let list = try Matcher.parseList(#"{type=~"run.*", severity!="info", team="m\"l"}"#)
        #expect(list.map(\.description) == [#"type=~"run.*""#, #"severity!="info""#, #"team="m\"l""#])
    }

    @Test(arguments: [#"type>"x""#, #"=~"x""#, #"type=~"(""#, #"type="x"#, #"{type="x""#, #"a="1" b="2""#, "9x=\"1\""])
    func rejectsBadMatchers(_ text: String) {
        #expect(throws: MatcherError.self) { try Matcher.parseList(text) }
    }
}
