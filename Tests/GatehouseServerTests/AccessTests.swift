import Foundation
import GatehouseClient
import GatehouseCore
import Testing

@Suite(.serialized)
struct AccessTests {
    @Test func tokensAndScopesGuardEveryRoute() async throws {
        try await offThePool {
            let dir = TempDir()
            let db = dir.file("gatehouse.db")
            // Protected mode: without tokens a loopback caller needs none.
            let server = try ServerProcess(dir: dir, db: db)
            #expect(try server.post("/v1/events", #"{"type":"a.b","pipeline":"p"}"#).status == 202)

            let writer = try runCLI(["token", "create", "--name", "ci", "--scopes", "events:write", "--db", db])
            #expect(writer.status == 0, "\(writer.stderr)")
            let writeToken = writer.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(writeToken.hasPrefix("gth_"))
            let reader = try runCLI(["token", "create", "--name", "dash", "--scopes", "events:read", "--db", db])
            let readToken = reader.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try runCLI(["token", "create", "--name", "x", "--scopes", "events:fly", "--db", db]).status == 64)

            // Only the hash is stored.
            let dump = try Data(contentsOf: URL(fileURLWithPath: db)) + ((try? Data(contentsOf: URL(fileURLWithPath: db + "-wal"))) ?? Data())
            #expect(dump.range(of: Data(writeToken.utf8)) == nil)

            // Once a token exists, anonymous calls are refused (after the short cache expires).
            Thread.sleep(forTimeInterval: 2.2)
            let anonymous = try server.post("/v1/events", #"{"type":"a.b","pipeline":"p"}"#)
            #expect(anonymous.status == 401)
            #expect(anonymous.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
            #expect(try server.get("/v1/events").status == 401)
            #expect(try server.get("/v1/events", token: "gth_wrong").status == 401)

            // Scopes: each route needs its own.
            #expect(try server.post("/v1/events", #"{"type":"a.b","pipeline":"p"}"#, token: writeToken).status == 202)
            let forbidden = try server.get("/v1/events", token: writeToken)
            #expect(forbidden.status == 403)
            #expect(forbidden.json["detail"]?.stringValue?.contains("events:read") == true)
            #expect(try server.post("/v1/events", #"{"type":"a.b","pipeline":"p"}"#, token: readToken).status == 403)
            for path in ["/v1/events", "/v1/runs", "/v1/runs/x", "/v1/events/stream?after=99999"] {
                #expect(try server.get(path, token: writeToken).status == 403, "\(path)")
                #expect(try server.get(path).status == 401, "\(path)")
            }
            #expect(try server.get("/v1/events", token: readToken).status == 200)
            #expect(try server.get("/healthz").status == 200)

            // The CLI passes the token and maps refusals to exit 77.
            let denied = try runCLI(["emit", "--type", "a.b", "--pipeline", "p"], environment: ["GATEHOUSE_URL": server.url, "GATEHOUSE_TOKEN": readToken])
            #expect(denied.status == 77)
            #expect(denied.stderr.contains("lacks the scope events:write"))
            #expect(try runCLI(["emit", "--type", "a.b", "--pipeline", "p", "--token", writeToken, "--server", server.url]).status == 0)

            // Listing never shows secrets; revoking takes effect.
            let list = try runCLI(["token", "ls", "--db", db])
            #expect(list.stdout.contains("ci") && list.stdout.contains("events:write"))
            #expect(!list.stdout.contains(writeToken))
            #expect(try runCLI(["token", "revoke", "ci", "--db", db]).status == 0)
            #expect(try runCLI(["token", "revoke", "nobody", "--db", db]).status == 1)
            Thread.sleep(forTimeInterval: 2.2)
            #expect(try server.post("/v1/events", #"{"type":"a.b","pipeline":"p"}"#, token: writeToken).status == 401)
        }
    }

    @Test func serveRefusesANonLoopbackAddressWithoutTokens() async throws {
        try await offThePool {
            let dir = TempDir()
            let db = dir.file("gatehouse.db")
            let refused = try runCLI(["serve", "--address", "0.0.0.0:0", "--db", db])
            #expect(refused.status == 78)
            #expect(refused.stderr.contains("refusing to listen on 0.0.0.0:0 without access tokens"))

            #expect(try runCLI(["token", "create", "--name", "admin", "--scopes", "admin", "--db", db]).status == 0)
            let server = try ServerProcess(dir: dir, db: db, arguments: ["--address", "0.0.0.0:0"])
            // serve printed 0.0.0.0:PORT; reach it through loopback.
            let url = server.url.replacingOccurrences(of: "0.0.0.0", with: "127.0.0.1")
            let r = try HTTPClient().send(method: "GET", url: url + "/v1/events")
            #expect(r.status == 401)
        }
    }
}
