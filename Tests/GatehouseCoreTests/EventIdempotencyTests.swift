import GatehouseCore
import Testing

private let fixedNow = Timestamp(milliseconds: 1_795_946_400_000)

/// An id is an idempotency key: the same content again is a duplicate, different content under
/// it is refused — never stored first and dropped second.
struct EventIdempotencyTests {
    let intake = EventIntake(validator: EventValidator(now: { fixedNow }, makeID: { "generated" }), maxItems: 10)

    func events(_ body: String, _ type: EventIntake.MediaType = .json) -> Result<[Event], Problem> {
        intake.events(from: Array(body.utf8), mediaType: type)
    }

    @Test func aRepeatedIDWithOtherContentInOneBatchIsRefusedNamingBothItems() throws {
        let result = events(#"[{"id":"x","type":"a.b","pipeline":"p"},{"id":"y","type":"a.b","pipeline":"p"},{"id":"x","type":"a.b","pipeline":"q"}]"#)
        guard case .failure(let problem) = result else { Issue.record("accepted: \(result)"); return }
        #expect(problem.status == 422)
        #expect(problem.errors.count == 1)
        #expect(problem.errors.first?.index == 2 && problem.errors.first?.field == "id")
        #expect(problem.errors.first?.detail.contains("item 2") == true && problem.errors.first?.detail.contains("item 0") == true)
    }

    @Test func ndjsonNamesLines() throws {
        let result = events("{\"id\":\"x\",\"type\":\"a.b\",\"pipeline\":\"p\"}\n{\"id\":\"x\",\"type\":\"a.c\",\"pipeline\":\"p\"}\n", .ndjson)
        guard case .failure(let problem) = result else { Issue.record("accepted"); return }
        #expect(problem.errors.first?.detail.contains("line 2") == true && problem.errors.first?.detail.contains("line 1") == true)
    }

    @Test func theSameContentTwiceInOneBatchIsAccepted() throws {
        let batch = try events(#"[{"id":"x","type":"a.b","pipeline":"p","labels":{"a":"1"}},{"id":"x","type":"a.b","pipeline":"p","labels":{"a":"1"}}]"#).get()
        #expect(batch.count == 2)
    }

    /// An empty name names nothing: `run: ""` would make a run no URL can show.
    @Test func emptyNamesAreRefused() throws {
        for field in ["run", "step"] {
            guard case .failure(let problem) = events(#"{"type":"a.b","pipeline":"p","\#(field)":""}"#) else { Issue.record("accepted \(field) \"\""); continue }
            #expect(problem.errors.first?.field == field)
        }
        let gate = GateSpec.parse(.object(JSONObject([("title", .string("t")), ("pipeline", .string("p")), ("run", .string(""))])))
        guard case .failure(let invalid) = gate else { Issue.record("a gate with run \"\" was accepted"); return }
        #expect(invalid.errors.contains { $0.field == "run" })
    }

    @Test func timesCountOnlyWhenBothSendersGaveOne() throws {
        let plain = try events(#"{"id":"x","type":"a.b","pipeline":"p"}"#).get()[0]
        var later = plain
        later.time = fixedNow.adding(milliseconds: 5000)
        #expect(!plain.timeGiven)
        #expect(plain.sameContent(as: later), "a re-send without a time is the same event")
        let timed = try events(#"{"id":"x","type":"a.b","pipeline":"p","time":"2026-11-29T10:00:00Z"}"#).get()[0]
        let otherTime = try events(#"{"id":"x","type":"a.b","pipeline":"p","time":"2026-11-29T10:00:01Z"}"#).get()[0]
        #expect(timed.timeGiven)
        #expect(timed.sameContent(as: timed))
        #expect(!timed.sameContent(as: otherTime))
        #expect(!timed.sameContent(as: plain))
        var other = plain
        other.summary = "changed"
        #expect(!plain.sameContent(as: other))
    }
}
