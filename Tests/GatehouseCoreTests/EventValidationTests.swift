import GatehouseCore
import Testing

private let fixedNow = Timestamp(milliseconds: 1_795_946_400_000)
private let intake = EventIntake(validator: EventValidator(now: { fixedNow }, makeID: { "generated" }), maxItems: 5)

private func events(_ body: String, _ type: EventIntake.MediaType = .json, headers: [String: String] = [:]) -> Result<[Event], Problem> {
    intake.events(from: Array(body.utf8), mediaType: type) { headers[$0] }
}

private func fieldErrors(_ result: Result<[Event], Problem>) -> [FieldError] {
    if case .failure(let p) = result { return p.errors }
    return []
}

struct EventValidationTests {
    @Test func appliesDefaults() throws {
        let e = try events(#"{"type":"step.failed","pipeline":"train"}"#).get()[0]
        #expect(e.id == "generated")
        #expect(e.severity == .error)
        #expect(e.time == fixedNow)
        #expect(try events(#"{"type":"run.started","pipeline":"train"}"#).get()[0].severity == .info)
        #expect(try events(#"{"type":"run.failed","pipeline":"t","severity":"warning"}"#).get()[0].severity == .warning)
    }

    @Test func acceptsAnyDottedType() {
        for t in ["run.failed", "model.registered", "my-org.custom_thing.happened", "A.B"] { #expect(EventValidator.isDottedName(t), "\(t)") }
        for t in ["run", ".run", "run.", "run..failed", "run failed", "rün.failed", ""] { #expect(!EventValidator.isDottedName(t), "\(t)") }
    }

    @Test func namesEveryInvalidField() {
        let errors = fieldErrors(events(#"{"type":7,"severity":"fatal","labels":{"1bad":"x","ok":"y","n":2},"url":"javascript:alert(1)","details":null}"#))
        let fields = Set(errors.map(\.field))
        #expect(fields == ["type", "pipeline", "severity", "labels.1bad", "labels.n", "url"])
        #expect(errors.first { $0.field == "type" }?.detail == "must be a string, got a number")
        #expect(errors.first { $0.field == "pipeline" }?.detail == "is required")
    }

    @Test func enforcesLimits() {
        let long = String(repeating: "x", count: 129)
        #expect(fieldErrors(events(#"{"id":"\#(long)","type":"a.b","pipeline":"p"}"#)).map(\.field) == ["id"])
        #expect(fieldErrors(events(#"{"type":"a.b","pipeline":"p","summary":"\#(String(repeating: "s", count: 1001))"}"#)).map(\.field) == ["summary"])
        // One line: no line break of any kind Unicode has.
        for breaking in [#"\n"#, #"\r"#, #"\u2028"#, #"\u2029"#, #"\u0085"#, #"\u000b"#] {
            #expect(fieldErrors(events(#"{"type":"a.b","pipeline":"p","summary":"one\#(breaking)two"}"#)).map(\.field) == ["summary"], "\(breaking)")
        }
        #expect(fieldErrors(events(#"{"type":"a.b","pipeline":"p","details":"\#(String(repeating: "d", count: 20001))"}"#)).map(\.field) == ["details"])
        let labels = (0..<65).map { #""l\#($0)":"v""# }.joined(separator: ",")
        #expect(fieldErrors(events(#"{"type":"a.b","pipeline":"p","labels":{\#(labels)}}"#)).map(\.field) == ["labels"])
        let big = String(repeating: "a", count: 65 * 1024)
        #expect(fieldErrors(events(#"{"type":"a.b","pipeline":"p","attributes":{"x":"\#(big)"}}"#)).map(\.field) == ["attributes"])
        // Exactly at the limits is fine; lengths count characters, not bytes.
        #expect((try? events(#"{"type":"a.b","pipeline":"\#(String(repeating: "é", count: 256))","summary":"\#(String(repeating: "s", count: 1000))"}"#).get()) != nil)
    }

    @Test func batchesAreAtomicAndIndexed() {
        let result = events(#"[{"type":"a.b","pipeline":"p"},{"type":"a.b"},{"type":"a.b","pipeline":"p"},{"pipeline":"p"}]"#)
        guard case .failure(let problem) = result else { Issue.record("accepted a bad batch"); return }
        #expect(problem.status == 422)
        #expect(problem.errors.map(\.index) == [1, 3])
        #expect(problem.detail.contains("item 1: pipeline is required"))
    }

    @Test func batchLimitIs413() {
        let six = "[" + Array(repeating: #"{"type":"a.b","pipeline":"p"}"#, count: 6).joined(separator: ",") + "]"
        guard case .failure(let p) = events(six) else { Issue.record("accepted"); return }
        #expect(p.status == 413)
        guard case .failure(let n) = events(String(repeating: "{\"type\":\"a.b\",\"pipeline\":\"p\"}\n", count: 6), .ndjson) else { Issue.record("accepted"); return }
        #expect(n.status == 413)
    }

    @Test func ndjsonNamesLines() throws {
        #expect(try events("{\"type\":\"a.b\",\"pipeline\":\"p\"}\r\n\n  \n{\"type\":\"a.c\",\"pipeline\":\"p\"}", .ndjson).get().map(\.type) == ["a.b", "a.c"])
        let errors = fieldErrors(events("{\"type\":\"a.b\",\"pipeline\":\"p\"}\n\n{\"type\":\"a.b\"}\n{oops}\n", .ndjson))
        #expect(errors.map(\.line) == [4])
        let invalid = fieldErrors(events("{\"type\":\"a.b\",\"pipeline\":\"p\"}\n\n{\"type\":\"a.b\"}\n", .ndjson))
        #expect(invalid.map(\.line) == [3])
        #expect(invalid.map(\.index) == [1])
    }

    @Test func emptyAndMalformedBodies() {
        guard case .failure(let empty) = events("  \n") else { Issue.record("accepted"); return }
        #expect(empty.status == 400)
        guard case .failure(let array) = events("[]") else { Issue.record("accepted"); return }
        #expect(array.status == 422)
        guard case .failure(let scalar) = events("42") else { Issue.record("accepted"); return }
        #expect(scalar.errors.first?.detail == "must be a JSON object, got a number")
    }

    @Test func mediaTypes() {
        #expect(EventIntake.mediaType(contentType: "application/json; charset=utf-8", hasCESpecVersion: false) == .json)
        #expect(EventIntake.mediaType(contentType: nil, hasCESpecVersion: false) == .json)
        #expect(EventIntake.mediaType(contentType: "application/json", hasCESpecVersion: true) == .cloudEventBinary)
        #expect(EventIntake.mediaType(contentType: "Application/CloudEvents+JSON", hasCESpecVersion: false) == .cloudEvent)
        #expect(EventIntake.mediaType(contentType: "application/cloudevents-batch+json", hasCESpecVersion: false) == .cloudEventBatch)
        #expect(EventIntake.mediaType(contentType: "application/x-ndjson", hasCESpecVersion: false) == .ndjson)
        #expect(EventIntake.mediaType(contentType: "text/plain", hasCESpecVersion: false) == nil)
        #expect(EventIntake.mediaType(contentType: "application/x-www-form-urlencoded", hasCESpecVersion: false) == nil)
        #expect(EventIntake.mediaType(contentType: " \tapplication/x-ndjson ; charset=utf-8", hasCESpecVersion: false) == .ndjson)
        #expect(EventIntake.mediaType(contentType: " ", hasCESpecVersion: false) == .json)
    }

    @Test func asciiTrim() {
        #expect(" \t a b \r\n".trimmingASCIIWhitespace == "a b")
        #expect("\r\n".trimmingASCIIWhitespace == "")
        #expect("".trimmingASCIIWhitespace == "")
        #expect("x".trimmingASCIIWhitespace == "x")
        #expect(" é\u{00A0}".trimmingASCIIWhitespace == "é\u{00A0}")
    }
}

struct CloudEventsTests {
    @Test func mapsStructuredMode() throws {
        let e = try events(#"{"specversion":"1.0","id":"c1","source":"https://ci.example/pipelines/train","type":"run.failed","time":"2026-11-29T10:00:00Z","subject":"r42","datacontenttype":"application/json","data":{"step":"fit","summary":"OOM","labels":{"team":"ml"},"gpu":"a100","attributes":{"auc":0.9}},"traceparent":"00-1"}"#, .cloudEvent).get()[0]
        #expect(e.id == "c1")
        #expect(e.type == "run.failed")
        #expect(e.pipeline == "train")
        #expect(e.run == "r42")
        #expect(e.step == "fit")
        #expect(e.summary == "OOM")
        #expect(e.label("team") == "ml")
        #expect(e.time == Timestamp(rfc3339: "2026-11-29T10:00:00Z"))
        #expect(e.attributes == JSONObject([("gpu", .string("a100")), ("auc", .number("0.9")), ("traceparent", .string("00-1"))]))
    }

    @Test func dataOverridesSourceAndSubject() throws {
        let e = try events(#"{"specversion":"1.0","id":"c2","source":"/a/b","type":"x.y","subject":"s","data":{"pipeline":"p","run":"r"}}"#, .cloudEvent).get()[0]
        #expect(e.pipeline == "p")
        #expect(e.run == "r")
    }

    @Test func refusesNonConformingEvents() {
        // Without a source there is no pipeline either.
        #expect(Set(fieldErrors(events(#"{"id":"c","type":"x.y"}"#, .cloudEvent)).map(\.field)) == ["specversion", "source", "pipeline"])
        #expect(fieldErrors(events(#"{"specversion":"1.0","id":"c","source":"/p","type":"x.y","data_base64":"AAAA"}"#, .cloudEvent)).map(\.field) == ["data_base64"])
        #expect(fieldErrors(events(#"{"specversion":"1.0","id":"c","source":"/p","type":"x.y","data":"text"}"#, .cloudEvent)).map(\.field) == ["data"])
        #expect(fieldErrors(events(#"{"specversion":"1.0","id":"c","source":"/p","type":"x.y","datacontenttype":"text/xml","data":{}}"#, .cloudEvent)).map(\.field) == ["datacontenttype"])
        let batch = fieldErrors(events(#"[{"specversion":"1.0","id":"c","source":"/p","type":"x.y"},{"specversion":"1.0","source":"/p","type":"x.y"}]"#, .cloudEventBatch))
        #expect(batch.map(\.index) == [1])
    }

    @Test func binaryModeReadsHeaders() throws {
        let e = try events(#"{"summary":"hi"}"#, .cloudEventBinary, headers: ["ce-specversion": "1.0", "ce-id": "b1", "ce-source": "urn:x:pipe", "ce-type": "model.registered", "ce-subject": "r1"]).get()[0]
        #expect(e.id == "b1")
        #expect(e.pipeline == "urn:x:pipe")
        #expect(e.run == "r1")
        #expect(e.summary == "hi")
        #expect(Set(fieldErrors(events(#"{}"#, .cloudEventBinary, headers: ["ce-specversion": "1.0"])).map(\.field)) == ["id", "source", "type", "pipeline"])
    }

    /// The binding sends header values percent-encoded (a hostile tester found `r%C3%A9sum%C3%A9`
    /// stored as it came: one run became two), and a raw byte outside ASCII has no known text.
    @Test func binaryModeHeadersArePercentDecoded() throws {
        let base = ["ce-specversion": "1.0", "ce-id": "b%201", "ce-source": "urn:x:pipe", "ce-type": "model.registered"]
        let e = try events(#"{}"#, .cloudEventBinary, headers: base.merging(["ce-subject": "r%C3%A9sum%c3%a9 100%25"]) { $1 }).get()[0]
        #expect(e.run == "résumé 100%" && e.id == "b 1")
        for bad in ["r\u{FFFD}s", "rés", "50%", "%zz", "%C3", "%FF", "tab\there"] {
            #expect(fieldErrors(events(#"{}"#, .cloudEventBinary, headers: base.merging(["ce-subject": bad]) { $1 })).map(\.field) == ["ce-subject"], "\(bad)")
        }
    }
}
