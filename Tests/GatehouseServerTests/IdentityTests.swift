import Foundation
import GatehouseClient
import GatehouseCore
import Testing

/// Issue 10, defect 8: one identity per person, `web:<name>`, whether they label through the
/// API, sign in on the pages, or decide a gate.
@Suite(.serialized)
struct IdentityTests {
    @Test func anAnnotatorIsOnePersonThroughTheAPIAndThePage() async throws {
        try await offThePool {
            let server = try ServerProcess(environment: ["GATEHOUSE_TEMPLATES": templatesFolder])
            #expect(try server.post("/v1/datasets", #"{"name":"pairs","labels":["pos","neg"],"annotators_per_item":2}"#).status == 201)
            #expect(try server.post("/v1/datasets/pairs/items", #"[{"id":"1","data":{"text":"a"}},{"id":"2","data":{"text":"b"}},{"id":"3","data":{"text":"c"}}]"#).status == 200)

            let api = try server.post("/v1/datasets/pairs/items/1/labels", #"{"label":"pos","annotator":"web:alice"}"#)
            #expect(api.status == 201 && api.json["annotator"] == .string("web:alice"))
            // The bare name is the same person: it changes her label, it is not a second one.
            let bare = try server.post("/v1/datasets/pairs/items/1/labels", #"{"label":"neg","annotator":"alice"}"#)
            #expect(bare.status == 201 && bare.json["annotator"] == .string("web:alice") && bare.json["item_complete"] == .bool(false))

            // Signed in on the page as alice: item 1 is hers already, so she is served item 2.
            let login = try server.post("/login", "name=alice&next=/annotate/pairs", contentType: "application/x-www-form-urlencoded")
            let cookie = try #require(login.header("Set-Cookie")?.split(separator: ";").first.map(String.init))
            let page = try server.request("GET", "/annotate/pairs", headers: ["Cookie": cookie]).text
            #expect(page.contains(#"name="item" value="2""#), "\(page)")
            let csrf = try #require(page.components(separatedBy: #"name="csrf" value=""#).dropFirst().first?.prefix { $0 != "\"" })
            let posted = try server.post("/annotate/pairs", "csrf=\(csrf)&item=2&label=pos&action=label", contentType: "application/x-www-form-urlencoded", headers: ["Cookie": cookie])
            #expect(posted.status == 303)
            // Typing web:alice at sign-in is alice too, not web:web:alice.
            let again = try server.post("/login", "name=web%3Aalice&next=/inbox", contentType: "application/x-www-form-urlencoded")
            let cookie2 = try #require(again.header("Set-Cookie")?.split(separator: ";").first.map(String.init))
            let inbox = try server.request("GET", "/inbox", headers: ["Cookie": cookie2]).text
            #expect(inbox.contains("1 waiting for you"), "\(inbox)")

            let stats = try server.json("/v1/datasets/pairs/stats")
            #expect(stats["annotators"] == .object(JSONObject([("web:alice", .int(2))])))
            let export = try server.get("/v1/datasets/pairs/export?format=jsonl").text.split(separator: "\n").compactMap { try? JSONValue.parse(String($0)).objectValue }
            let annotators = Set(export.flatMap { ($0["labels"]?.arrayValue ?? []).compactMap { $0.objectValue?["annotator"]?.stringValue } })
            #expect(annotators == ["web:alice"])
        }
    }

    @Test func decidersAreWebIdentitiesAndTheOpeningTokenIsAudited() async throws {
        try await offThePool {
            let dir = TempDir()
            let db = testDatabase(dir)
            let ci = try runCLI(["token", "create", "--name", "ci", "--scopes", "gates:write,gates:decide", "--db", db]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let admin = try runCLI(["token", "create", "--name", "root", "--scopes", "admin", "--db", db]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let server = try ServerProcess(dir: dir, db: db, environment: ["GATEHOUSE_TEMPLATES": templatesFolder])

            // The audit row of an opened gate names the token beside the claimed requested_by.
            let opened = try server.post("/v1/gates", #"{"title":"Ship?","pipeline":"p","requested_by":"web:carol","approvers":["web:bob","web:dave"],"required_approvals":2}"#, token: ci)
            #expect(opened.status == 201, "\(opened.text)")
            let id = try #require(opened.json["id"]?.stringValue)
            let audit = try server.request("GET", "/v1/gates/\(id)/audit", token: ci).json["entries"]?.arrayValue ?? []
            let first = try #require(audit.first?.objectValue)
            #expect(first["action"] == .string("opened") && first["actor"] == .string("web:carol"))
            #expect(first["detail"]?.objectValue?["token"] == .string("ci"), "\(first)")

            // A bare name given as the decider means web:<name>.
            let byName = try server.post("/v1/gates/\(id)/decisions", #"{"decision":"approve","by":"dave"}"#, token: admin)
            #expect(byName.status == 200, "\(byName.text)")
            #expect(byName.json["decisions"]?.arrayValue?.first?.objectValue?["by"] == .string("web:dave"))

            // Typing web:bob on the gate page is bob, not web:web:bob.
            let url = try #require(opened.json["url"]?.stringValue)
            let path = String(url.dropFirst(server.url.count))
            let token = try #require(path.components(separatedBy: "t=").last)
            let page = try server.get(path)
            let cookie = try #require(page.header("Set-Cookie")?.split(separator: ";").first.map(String.init))
            let csrf = try #require(page.text.components(separatedBy: #"name="csrf" value=""#).dropFirst().first?.prefix { $0 != "\"" })
            let done = try server.post("/gates/\(id)", "t=\(token)&csrf=\(csrf)&name=web%3Abob&decision=approve", contentType: "application/x-www-form-urlencoded", headers: ["Cookie": cookie])
            #expect(done.status == 200, "\(done.text)")
            let closed = try server.request("GET", "/v1/gates/\(id)", token: ci).json
            #expect(closed["state"] == .string("approved"))
            #expect(closed["decisions"]?.arrayValue?.compactMap { $0.objectValue?["by"]?.stringValue } == ["web:dave", "web:bob"])
        }
    }
}
