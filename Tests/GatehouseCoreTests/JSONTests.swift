import Foundation
import GatehouseCore
import Testing

struct JSONTests {
    /// The ingest answer is built by hand on the hot path: it must stay the document the
    /// Codable encoding (the OpenAPI schema's) gives.
    @Test func theIngestAnswerBuiltByHandIsTheEncodedOne() {
        for response in [IngestResponse(accepted: 2, duplicates: 1, ids: ["a", "b\"c", "ü"]), IngestResponse(accepted: 0, duplicates: 0, ids: [])] {
            #expect(response.json == JSONValueEncoder.value(response))
            #expect(response.json.serialized() == JSONValueEncoder.value(response).serialized())
        }
    }

    @Test func parsesAndSerialisesLosslessly() throws {
        let text = #"{"a":1,"b":[true,false,null],"c":"x\"y\\z\n","d":-0.5e10,"e":{"f":12345678901234567890},"g":"é✓😀"}"#
        let value = try JSONValue.parse(text)
        #expect(value.serialized() == text)
        #expect(value.objectValue?["e"]?.objectValue?["f"] == .number("12345678901234567890"))
    }

    @Test func decodesEscapesAndSurrogatePairs() throws {
        #expect(try JSONValue.parse(#""\u00e9\ud83d\ude00\/\t""#) == .string("é😀/\t"))
        #expect(throws: JSONParseError.self) { try JSONValue.parse(#""\ud83d""#) }
    }

    @Test(arguments: [
        ("", "unexpected end"), ("{", "expected a string key"), ("[1,]", "unexpected character"), ("01", "leading zero"),
        ("{\"a\" 1}", "expected ':'"), ("trux", "invalid literal"), ("\"a\nb\"", "control character"), ("1 2", "unexpected data"),
        ("-", "invalid number"), ("1.", "digits expected"),
    ])
    func rejectsMalformedInput(_ text: String, _ message: String) {
        do {
            _ = try JSONValue.parse(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.message.contains(message), "\(text): \(error.message)")
        }
    }

    @Test func reportsLineAndColumn() {
        do {
            _ = try JSONValue.parse("{\n  \"a\": 1,\n  \"b\": }")
            Issue.record("accepted")
        } catch {
            #expect(error.line == 3)
            #expect(error.column == 8)
        }
    }

    @Test func limitsNesting() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
    }

    @Test func duplicateKeysKeepTheLast() throws {
        let value = try JSONValue.parse(#"{"a":1,"a":2}"#)
        #expect(value.objectValue?.count == 1)
        #expect(value.objectValue?["a"] == .number("2"))
    }

    @Test func sortedKeysAreCanonical() throws {
        #expect(try JSONValue.parse(#"{"b":1,"a":{"d":1,"c":2}}"#).serialized(sortedKeys: true) == #"{"a":{"c":2,"d":1},"b":1}"#)
    }
}

struct TimeTests {
    @Test(arguments: [
        ("2026-11-29T10:00:00Z", Int64(1_795_946_400_000)),
        ("2026-11-29T10:00:00.123Z", 1_795_946_400_123),
        ("2026-11-29T12:00:00+02:00", 1_795_946_400_000),
        ("2026-11-29t10:00:00.1z", 1_795_946_400_100),
        // More than three fractional digits (nanoseconds, as Go and Python send) used to trap.
        ("2026-11-29T10:00:00.1234Z", 1_795_946_400_123),
        ("2026-11-29T10:00:00.123456789Z", 1_795_946_400_123),
        ("2026-11-29 05:30:00-04:30", 1_795_946_400_000),
        ("1970-01-01T00:00:00Z", 0),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
    ])
    func parsesRFC3339(_ text: String, _ ms: Int64) {
        #expect(Timestamp(rfc3339: text)?.milliseconds == ms)
    }

    /// The ends of what RFC 3339 writes: an offset carrying a time past year 0000 or 9999 is
    /// refused (it came back as "00-1-12-31T…" and "10000-01-01T…"); the ends themselves
    /// round-trip.
    @Test func timesAtTheEndsOfTheYearsRoundTripOrAreRefused() {
        #expect(Timestamp(rfc3339: "0000-01-01T00:00:00+23:59") == nil)
        #expect(Timestamp(rfc3339: "9999-12-31T23:59:60-23:59") == nil)
        for text in ["0000-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z", "0000-01-01T23:59:00+23:59"] {
            let time = Timestamp(rfc3339: text)
            #expect(time != nil, "\(text)")
            if let time { #expect(Timestamp(rfc3339: time.rfc3339) == time && time.rfc3339.count == 24, "\(time.rfc3339)") }
        }
    }

    @Test(arguments: ["2026-11-29", "2026-11-29T10:00:00", "2026-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2026-11-29T25:00:00Z", "yesterday", "2026-11-29T10:00:00.Z", "2026-11-29T10:00:00+0200"])
    func rejectsNonRFC3339(_ text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    @Test func formatsUTCWithMilliseconds() {
        #expect(Timestamp(milliseconds: 1_795_946_400_123).rfc3339 == "2026-11-29T10:00:00.123Z")
        #expect(Timestamp(milliseconds: -1).rfc3339 == "1969-12-31T23:59:59.999Z")
        for ms in stride(from: Int64(-10_000_000_000), to: 4_000_000_000_000, by: 97_654_321_987) {
            #expect(Timestamp(rfc3339: Timestamp(milliseconds: ms).rfc3339)?.milliseconds == ms)
        }
    }

    @Test func parsesDurations() {
        #expect(GatehouseDuration("30s")?.milliseconds == 30_000)
        #expect(GatehouseDuration("1h30m")?.milliseconds == 5_400_000)
        #expect(GatehouseDuration("500ms")?.milliseconds == 500)
        #expect(GatehouseDuration("2d")?.milliseconds == 172_800_000)
        #expect(GatehouseDuration("0")?.milliseconds == 0)
        #expect(GatehouseDuration("0s")?.milliseconds == 0)
        for bad in ["", "5", "5 minutes", "1m1h", "m", "-1s", "1.5h", "1x"] { #expect(GatehouseDuration(bad) == nil, "\(bad)") }
        #expect(GatehouseDuration("1h30m")?.description == "1h30m")
        // At most 100 years: longer ones overflowed the time arithmetic they feed (a crash).
        #expect(GatehouseDuration("100y")?.milliseconds == 3_153_600_000_000)
        for long in ["101y", "100y1ms", "292471208y", "99y53w", "9223372036854775807ms", "100y9223372036854775807ms"] { #expect(GatehouseDuration(long) == nil, "\(long)") }
    }
}

/// `JSONValueEncoder`: typed API bodies keep their declared key order, free-form fields pass
/// through digit for digit, and absent fields are `null` unless the type omits them.
struct JSONValueEncoderTests {
    struct Shown: Encodable {
        var zeta: String
        var alpha: Int
        var missing: String?
        var when: Timestamp
        var free: JSONValue
        var nested: [Omitting]
    }
    struct Omitting: Encodable, JSONOmitsAbsentFields {
        var name: String
        var note: String?
        var ratio: Double?
    }

    @Test func keyOrderNullsAndFreeFormFields() throws {
        let free = try JSONValue.parse(#"{"id":12345678901234567890,"b":[1.50,true,null],"a":"x"}"#)
        let value = Shown(
            zeta: "z", alpha: 3, missing: nil, when: Timestamp(milliseconds: 1_700_000_000_123), free: free,
            nested: [Omitting(name: "n", note: nil, ratio: 0.25), Omitting(name: "m", note: "hi", ratio: nil)])
        let json = try JSONValueEncoder().encode(value)
        #expect(json.serialized() == #"{"zeta":"z","alpha":3,"missing":null,"when":"2023-11-14T22:13:20.123Z","free":{"id":12345678901234567890,"b":[1.50,true,null],"a":"x"},"nested":[{"name":"n","ratio":0.25},{"name":"m","note":"hi"}]}"#)
    }

    @Test func gateAndDatasetViewsFlattenTheirSpecs() throws {
        let spec = try #require(try? GateSpec.parse(JSONValue.parse(#"{"title":"Ship?","pipeline":"p","timeout":"1h","labels":{"b":"2","a":"1"},"inputs":[{"name":"pct","type":"integer","min":1,"max":100,"required":true}]}"#)).get())
        let gate = Gate(id: "gate_1", spec: spec, createdAt: Timestamp(milliseconds: 0))
        let keys = gate.json(url: "http://x/gates/gate_1").objectValue?.keys ?? []
        #expect(keys == [
            "id", "state", "url", "title", "pipeline", "choices", "input_spec", "required_approvals", "approvers",
            "allow_self_approval", "timeout", "on_timeout", "labels", "created_at", "expires_at", "approvals", "decisions", "inputs",
        ])
        let object = try #require(gate.json(url: nil).objectValue)
        #expect(object["url"] == nil && object["details"] == nil)
        #expect(object["labels"]?.serialized() == #"{"a":"1","b":"2"}"#)
        #expect(object["input_spec"]?.serialized() == #"[{"name":"pct","type":"integer","min":1,"max":100,"required":true}]"#)
        #expect(object["timeout"] == .string("1h") && object["approvals"] == .int(0))
    }
}

/// `JSONValueDecoder`: a typed request refuses what a person could have meant differently, with
/// the API's 422 naming each field.
struct JSONValueDecoderTests {
    struct Sizes: Decodable, JSONStrictKeys {
        var count: Int
        var ratio: Double?
        var tags: [String]
        static let knownKeys: Set<String> = ["count", "ratio", "tags"]
    }

    func problem<T: Decodable>(_ type: T.Type, _ text: String) throws -> Problem? {
        do {
            _ = try JSONValueDecoder().decode(type, from: JSONValue.parse(text))
            return nil
        } catch let problem as Problem {
            return problem
        }
    }

    @Test func decodesAndNamesEveryBadField() throws {
        let ok = try JSONValueDecoder().decode(Sizes.self, from: JSONValue.parse(#"{"count":3.0,"ratio":null,"tags":["a"]}"#))
        #expect(ok.count == 3 && ok.ratio == nil && ok.tags == ["a"])
        let unknown = try #require(try problem(Sizes.self, #"{"count":1,"tags":[],"cuont":2,"extra":true}"#))
        #expect(unknown.status == 422 && unknown.errors.map(\.field) == ["cuont", "extra"])
        #expect(try problem(Sizes.self, #"{"count":1.5,"tags":[]}"#)?.errors.first.map { "\($0.field): \($0.detail)" } == "count: must be an integer, got a number")
        #expect(try problem(Sizes.self, #"{"count":1,"tags":["a",2]}"#)?.errors.first?.field == "tags[1]")
        #expect(try problem(Sizes.self, #"{"tags":[]}"#)?.errors.first.map { "\($0.field): \($0.detail)" } == "count: is required")
        #expect(try problem(Sizes.self, #"{"count":null,"tags":[]}"#)?.errors.first?.detail == "must not be null")
        #expect(try problem(Sizes.self, #"[1]"#)?.errors.first?.detail == "must be an object, got an array")
    }

    @Test func aDecisionRoundTripsBetweenTheCLIAndTheServer() throws {
        let asked = DecisionRequest(decision: "approve", comment: "ok", inputs: JSONObject([("pct", .number("10"))]))
        let sent = JSONValueEncoder.value(asked)
        #expect(sent.serialized() == #"{"decision":"approve","comment":"ok","inputs":{"pct":10}}"#)
        #expect(try JSONValueDecoder().decode(DecisionRequest.self, from: sent) == asked)
        #expect(try problem(DecisionRequest.self, #"{"decision":"approve","inputs":[1]}"#)?.errors.first.map { "\($0.field): \($0.detail)" } == "inputs: must be an object, got an array")
        #expect(try problem(DecisionRequest.self, #"{"comment":"x"}"#)?.errors.first?.field == "decision")
    }

    /// The creation bodies read through `FieldReader`: one 422 names every bad field, nested
    /// ones with their paths, and decoding goes on past a bad array element.
    @Test func creationBodiesNameEveryBadFieldAtOnce() throws {
        let gate = try #require(try problem(GateSpec.self, #"""
            {"title": 5, "timout": "1h", "choices": "approve", "required_approvals": 2.5,
             "inputs": [{"name": "ok", "type": "integer"}, {"name": "bad name", "type": "date"}, 7, {"name": "pct", "type": "string", "min": 1}],
             "labels": {"team": 1}, "auto_approve": {"when": "risk <"}}
            """#))
        #expect(gate.status == 422)
        #expect(gate.errors.map(\.field) == [
            "timout", "title", "choices", "inputs[1].name", "inputs[1].type", "inputs[2]", "inputs[3].min", "required_approvals", "labels",
            "auto_approve.when",
        ])
        #expect(gate.errors.first { $0.field == "inputs[2]" }?.detail == "must be an object with name and type")
        #expect(gate.errors.first { $0.field == "title" }?.detail == "must be a string")
        // A repeated input name is reported at the element that repeats it, counting bad ones too.
        let repeated = try #require(try problem(GateSpec.self, #"{"title":"t","inputs":[7,{"name":"a","type":"string"},{"name":"a","type":"boolean"}]}"#))
        #expect(repeated.errors.map(\.field) == ["inputs[0]", "inputs[2].name"])
        #expect(try problem(GateSpec.self, #"{"title":"t","auto_approve":{"when":1}}"#)?.errors.map { "\($0.field): \($0.detail)" } == [#"auto_approve.when: must be {"when": "<expression>"}"#])
        // Foundation's decoder reads the same types: the checks are in the type, not the decoder.
        let spec = try JSONDecoder().decode(GateSpec.self, from: Data(#"{"title":"Ship?","inputs":[{"name":"pct","type":"integer","max":100}],"timeout":"2h"}"#.utf8))
        #expect(spec.title == "Ship?" && spec.inputs.map(\.name) == ["pct"] && spec.timeout?.description == "2h")
        #expect(throws: Problem.self) { try JSONDecoder().decode(GateSpec.self, from: Data(#"{"title":"x","timeout":"soon"}"#.utf8)) }

        let dataset = try #require(try problem(DatasetSpec.self, #"{"name":"a b","task":"boxes","labels":["x","x"],"annotators_per_item":0}"#))
        #expect(dataset.errors.map(\.field) == ["name", "task", "labels", "annotators_per_item"])
        #expect(try problem(DatasetSpec.self, #"{"name":"ok","labels":[]}"#)?.errors.map(\.detail) == ["is required: 1 to 50 strings"])
    }

    @Test func aSilenceRoundTripsBetweenTheCLIAndTheServer() throws {
        let asked = SilenceRequest(matchers: [#"pipeline="train""#], duration: "2h", created_by: "web:ops", comment: "GPU maintenance")
        let sent = JSONValueEncoder.value(asked)
        #expect(sent.serialized() == #"{"matchers":["pipeline=\"train\""],"duration":"2h","created_by":"web:ops","comment":"GPU maintenance"}"#)
        let decoded = try JSONValueDecoder().decode(SilenceRequest.self, from: sent)
        #expect(decoded == asked)
        let now = Timestamp(milliseconds: 1_000_000)
        let silence = try decoded.silence(id: "sil_1", now: now, defaultCreator: "admin").get()
        #expect(silence.startsAt == now && silence.endsAt == now.adding(milliseconds: 7_200_000) && silence.matchers.count == 1)

        let bad = try #require(try problem(SilenceRequest.self, #"{"matchers":["=\"x\"", 3],"starts_at":"yesterday","comment":1}"#))
        #expect(bad.errors.map(\.field) == ["matchers[0]", "matchers[1]", "starts_at", "ends_at", "comment"])
        // Both times given in the wrong order: refused on decoding, with the other bad fields.
        let backwards = try #require(try problem(SilenceRequest.self, #"{"matchers":["a=\"b\""],"starts_at":"2026-01-02T00:00:00Z","ends_at":"2026-01-01T00:00:00Z","comment":2}"#))
        #expect(backwards.errors.map(\.field) == ["ends_at", "comment"])
        // starts_at left to the clock: the window is checked against it.
        let past = try JSONValueDecoder().decode(SilenceRequest.self, from: JSONValue.parse(#"{"matchers":["a=\"b\""],"ends_at":"1970-01-01T00:00:01Z"}"#))
        #expect(throws: Problem.self) { try past.silence(id: "s", now: now, defaultCreator: "x").get() }
        // As Alertmanager: a silence of nearly everything (every matcher matches the empty
        // string) is refused; one matcher that needs a value makes it a silence of something.
        for matchers in [#"["a=~\".*\""]"#, #"["pipeline!=\"x\""]"#, #"["{a=\"\", b!~\"y\"}"]"#, #"["a=~\".*\"", "b=\"\""]"#] {
            let everything = try #require(try problem(SilenceRequest.self, #"{"matchers":\#(matchers),"duration":"1h"}"#), "\(matchers)")
            #expect(everything.errors.map(\.field) == ["matchers"] && everything.errors[0].detail.contains("empty string"), "\(matchers)")
        }
        for matchers in [#"["pipeline=~\".+\"", "pipeline!=\"x\""]"#, #"["{a=~\".*\", type=\"run.failed\"}"]"#] {
            #expect(try problem(SilenceRequest.self, #"{"matchers":\#(matchers),"duration":"1h"}"#) == nil, "\(matchers)")
        }
    }

    @Test func aLabelTakesTheFieldOfTheDatasetsTask() throws {
        let asked = try JSONValueDecoder().decode(LabelRequest.self, from: JSONValue.parse(#"{"label":"cat","spans":[]}"#))
        #expect(asked.value(for: .classification) == .string("cat"))
        #expect(asked.value(for: .multilabel) == .string("cat"))
        #expect(asked.value(for: .spans) == .array([]))
        #expect(try problem(LabelRequest.self, #"{"lable":"cat"}"#)?.errors.map(\.field) == ["lable"])
        #expect(try problem(LabelRequest.self, #"{"label":"cat","annotator":7}"#)?.errors.map(\.field) == ["annotator"])
    }
}

/// A number typed on a gate's web form is a number only in JSON's grammar: `nan` was stored as
/// a raw number, the gate became unreadable JSON and was lost after a restart.
struct GateFormInputTests {
    @Test func formNumbersFollowJSONGrammar() {
        let number = GateInput(name: "n", kind: .number)
        let integer = GateInput(name: "i", kind: .integer)
        for text in ["nan", "NaN", "inf", "-inf", "infinity", "0x10", "+5", ".5", "5.", "1_000"] {
            #expect(number.parseForm(text) == .string(text), "\(text)")
            #expect(number.check(number.parseForm(text)) != nil, "\(text)")
            #expect(integer.check(integer.parseForm(text)) != nil, "\(text)")
        }
        #expect(number.parseForm(" 2.5 ") == .number("2.5") && number.check(.number("2.5")) == nil)
        #expect(integer.parseForm("-3") == .number("-3") && integer.check(.number("-3")) == nil)
        // A JSON number too large for a double is refused, not stored as infinity.
        #expect(number.check(number.parseForm("1e400")) != nil)
    }
}
