import Foundation
import GatehouseClient
import GatehouseCore
import Testing

/// Issue 10, defect 2: an escaped NUL used to cut strings where they met SQLite, so
/// `nid\u0000one` was stored as `nid` and `nid\u0000two` was then dropped as its duplicate.
/// Identifiers now refuse control characters (422 naming the field, nothing stored); free
/// text is stored and returned exactly as sent.
@Suite(.serialized)
struct ControlCharacterTests {
    func problem(_ r: HTTPResult) -> Problem? { (try? JSONValue.parse(bytes: r.body)).flatMap(Problem.init(json:)) }

    @Test func eventIdentifiersRefuseControlCharactersAndTextKeepsThem() async throws {
        try await offThePool {
            let server = try ServerProcess()
            let refused: [(String, String)] = [
                ("id", #"{"id":"nid\u0000one","type":"run.started","pipeline":"p"}"#),
                ("pipeline", #"{"type":"run.started","pipeline":"p\u0000q"}"#),
                ("run", #"{"type":"run.started","pipeline":"p","run":"r\u001f"}"#),
                ("step", #"{"type":"run.started","pipeline":"p","step":"s\u007f"}"#),
                ("labels.team", #"{"type":"run.started","pipeline":"p","labels":{"team":"ml\u0000ops"}}"#),
                ("type", #"{"type":"run.st\u0000arted","pipeline":"p"}"#),
                ("url", #"{"type":"run.started","pipeline":"p","url":"http://x/a\u0000b"}"#),
                // C1 controls and bidirectional overrides (a name that reads as another).
                ("labels.team", #"{"type":"run.started","pipeline":"p","labels":{"team":"ml\u0085"}}"#),
                ("pipeline", #"{"type":"run.started","pipeline":"deploy-\u202Egnp.exe"}"#),
                ("run", #"{"type":"run.started","pipeline":"p","run":"r\u2066x\u2069"}"#),
                ("step", #"{"type":"run.started","pipeline":"p","step":"one\u2028two"}"#),
            ]
            for (field, body) in refused {
                let r = try server.post("/v1/events", body)
                #expect(r.status == 422 && r.header("Content-Type") == "application/problem+json", "\(field): \(r.status) \(r.text)")
                #expect(problem(r)?.errors.map(\.field) == [field], "\(r.text)")
            }
            // NDJSON and CloudEvents go through the same validation.
            let nd = try server.post("/v1/events", "{\"type\":\"a.b\",\"pipeline\":\"p\"}\n{\"type\":\"a.b\",\"pipeline\":\"p\",\"run\":\"x\\u0000\"}\n", contentType: "application/x-ndjson")
            #expect(nd.status == 422 && problem(nd)?.errors.first?.line == 2)
            let ce = try server.post("/v1/events", #"{"specversion":"1.0","id":"c\u0000e","source":"/p","type":"a.b"}"#, contentType: "application/cloudevents+json")
            #expect(ce.status == 422 && problem(ce)?.errors.first?.field == "id")
            #expect(try server.allEvents().isEmpty)

            let accepted = try server.post("/v1/events", #"{"id":"nid","type":"run.failed","pipeline":"p","summary":"a\u0000b\u0001c","details":"x\u0000\n\u0000y","attributes":{"k":"v\u0000w"}}"#)
            #expect(accepted.status == 202, "\(accepted.text)")
            let stored = try #require(try server.allEvents().first)
            #expect(stored["summary"] == .string("a\u{0}b\u{1}c"))
            #expect(stored["details"] == .string("x\u{0}\n\u{0}y"))
            #expect(stored["attributes"]?.objectValue?["k"] == .string("v\u{0}w"))
            // The run's timeline reads the same rows another way.
            let second = try server.post("/v1/events", #"{"type":"run.started","pipeline":"p","run":"r1","summary":"\u0000"}"#)
            #expect(second.status == 202)
            #expect(try server.json("/v1/runs/r1")["timeline"]?.arrayValue?.first?.objectValue?["summary"] == .string("\u{0}"))
        }
    }

    @Test func gateDatasetAndSilenceIdentifiersRefuseControlCharacters() async throws {
        try await offThePool {
            let server = try ServerProcess()
            for (field, body) in [("key", #"{"title":"t","pipeline":"p","key":"r1\u0000/deploy"}"#),
                                  ("pipeline", #"{"title":"t","pipeline":"p\n"}"#),
                                  ("labels.team", #"{"title":"t","pipeline":"p","labels":{"team":"a\u0000"}}"#),
                                  ("approvers[0]", #"{"title":"t","pipeline":"p","approvers":["web:bob\u0000"]}"#)] {
                let r = try server.post("/v1/gates", body)
                #expect(r.status == 422 && problem(r)?.errors.first?.field == field, "\(field): \(r.status) \(r.text)")
            }
            let gate = try server.post("/v1/gates", #"{"title":"Ship\u0000it?","details":"a\u0000b","pipeline":"p","key":"k1"}"#)
            #expect(gate.status == 201, "\(gate.text)")
            let id = try #require(gate.json["id"]?.stringValue)
            let reread = try server.json("/v1/gates/\(id)")
            #expect(reread["title"] == .string("Ship\u{0}it?") && reread["details"] == .string("a\u{0}b"))
            let decided = try server.post("/v1/gates/\(id)/decisions", #"{"decision":"approve","comment":"ok\u0000fine"}"#)
            #expect(decided.status == 200, "\(decided.text)")
            #expect(decided.json["decisions"]?.arrayValue?.first?.objectValue?["comment"] == .string("ok\u{0}fine"))

            let badLabel = try server.post("/v1/datasets", #"{"name":"d","labels":["a\u0000"]}"#)
            #expect(badLabel.status == 422 && problem(badLabel)?.errors.first?.field == "labels")
            #expect(try server.post("/v1/datasets", #"{"name":"d","labels":["a","b"],"instructions":"read\u0000me"}"#).status == 201)
            let badItem = try server.post("/v1/datasets/d/items", #"[{"id":"one","data":{"text":"t"}},{"id":"i\u0000d","data":{"text":"t"}}]"#)
            #expect(badItem.status == 422 && problem(badItem)?.errors.first?.field == "id" && problem(badItem)?.errors.first?.index == 1, "\(badItem.text)")
            #expect(try server.json("/v1/datasets/d")["items"] == .int(0))
            #expect(try server.json("/v1/datasets/d")["instructions"] == .string("read\u{0}me"))
            #expect(try server.post("/v1/datasets/d/items", #"[{"id":"one","data":{"text":"t\u0000u"}}]"#).status == 200)
            let next = try server.json("/v1/datasets/d/next?annotator=alice")
            #expect(next["data"]?.objectValue?["text"] == .string("t\u{0}u"))
            let badAnnotator = try server.post("/v1/datasets/d/items/one/labels", #"{"label":"a","annotator":"al\u0000ice"}"#)
            #expect(badAnnotator.status == 422 && problem(badAnnotator)?.errors.first?.field == "annotator")

            let badSilence = try server.post("/v1/silences", #"{"matchers":["pipeline=\"p\""],"duration":"1h","created_by":"web:a\u0000"}"#)
            #expect(badSilence.status == 422 && problem(badSilence)?.errors.first?.field == "created_by")
            #expect(try server.post("/v1/silences", #"{"matchers":["pipeline=\"p\""],"duration":"1h","created_by":"web:a","comment":"why\u0000not"}"#).status == 201)
            let silences = try server.json("/v1/silences")["silences"]?.arrayValue ?? []
            #expect(silences.first?.objectValue?["comment"] == .string("why\u{0}not"))
        }
    }
}
