import Foundation
import HTTPTypes
import GatehouseClient
import GatehouseCore
import GatehouseStore
@testable import GatehouseServer
import Testing

@Suite(.serialized)
struct AccessTests {
    @Test func tokensAndScopesGuardEveryRoute() async throws {
        try await offThePool {
            let dir = TempDir()
            let db = testDatabase(dir)
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
            // A name becomes an actor in the audit trail: no control characters (as the API checks).
            #expect(try runCLI(["token", "create", "--name", "we\u{1}ird", "--scopes", "events:read", "--db", db]).status == 64)
            // The name is who the token acts as (web:<name>): it must be one, and one token's.
            for name in ["ci bot", "bad name<x>", "a:b", "say\"hi\"", "web:ci"] {
                let refused = try runCLI(["token", "create", "--name", name, "--scopes", "events:read", "--db", db])
                #expect(refused.status == 64 && refused.stderr.contains("cannot be a name"), "\(name): \(refused.status) \(refused.stderr)")
            }
            let twice = try runCLI(["token", "create", "--name", "ci", "--scopes", "events:read", "--db", db])
            #expect(twice.status == 65 && twice.stderr.contains("already named ci"), "\(twice.stderr)")

            // Only the hash is stored.
            if testingPostgres {
                let stored = try Storage.open(db).readNow { try $0.all("SELECT id, name, scopes, hash FROM tokens") { [$0[0], $0[1], $0[2], $0[3]] as [String] } }
                #expect(stored.count == 2 && !stored.joined().contains(writeToken) && !stored.joined().contains(readToken))
            } else {
                let dump = try Data(contentsOf: URL(fileURLWithPath: db)) + ((try? Data(contentsOf: URL(fileURLWithPath: db + "-wal"))) ?? Data())
                #expect(dump.range(of: Data(writeToken.utf8)) == nil)
            }

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
            let db = testDatabase(dir)
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

/// Web sessions (the console, labelling, the inbox): signed in with a token, a person acts with
/// that token's scopes; revoking the token signs them out; a session expires; a sign-in by name
/// ends when tokens exist; a change through a session is refused when the browser says it came
/// from another site.
@Suite(.serialized)
struct WebSessionTests {
    /// The console form's CSRF token, as the page carries it.
    func csrf(_ server: ServerProcess, _ session: String) throws -> String {
        let page = try server.request("GET", "/silences", headers: ["Cookie": session]).text
        return try #require(page.components(separatedBy: #"name="csrf" value=""#).dropFirst().first?.prefix { $0 != "\"" }).description
    }

    /// A token that may read but not decide gets no decision link and no buttons; a token whose
    /// name is no person's cannot sign in (it would loop back to the form).
    @Test func onlyDecidersGetDecisionLinks() async throws {
        try await offThePool {
            let dir = TempDir()
            let db = testDatabase(dir)
            let server = try ServerProcess(dir: dir, db: db)
            let admin = try runCLI(["token", "create", "--name", "root", "--scopes", "admin", "--db", db]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let reader = try runCLI(["token", "create", "--name", "rd", "--scopes", "events:read", "--db", db]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            // A token named before names had to be people's (the CLI refuses "ci bot" now).
            let (_, oddSecret) = try SQLTokenStore(database: Storage.open(db)).create(name: "ci bot", scopes: [.eventsRead])
            Thread.sleep(forTimeInterval: 2.2)
            #expect(try server.post("/v1/gates", #"{"title":"Ship?","pipeline":"p"}"#, token: admin).status == 201)
            let rd = try #require(Self.cookie(try server.post("/login", "token=\(reader)", contentType: "application/x-www-form-urlencoded")))
            let gates = try server.request("GET", "/gates", headers: ["Cookie": rd]).text
            #expect(gates.contains("Ship?") && !gates.contains("you may decide") && !gates.contains("/decide"))
            // The link it gets names nobody: the page asks who decides, and refuses rd by the gate's rules.
            let token = try #require(gates.components(separatedBy: "?t=v1.").dropFirst().first?.split(separator: ".").first)
            var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            while base64.count % 4 != 0 { base64 += "=" }
            let claims = try #require(Data(base64Encoded: base64).map { String(decoding: $0, as: UTF8.self) })
            #expect(claims.split(separator: "|", omittingEmptySubsequences: false).dropFirst().first == "", "\(claims)")
            let inbox = try server.request("GET", "/inbox", headers: ["Cookie": rd])
            #expect(inbox.status == 200 && !inbox.text.contains("Ship?"))
            let refused = try server.post("/login", "token=\(oddSecret)", contentType: "application/x-www-form-urlencoded")
            #expect(refused.status == 422 && refused.text.contains("not a person"))
        }
    }

    static func cookie(_ response: HTTPResult) -> String? {
        response.header("Set-Cookie")?.split(separator: ";").first.map(String.init)
    }

    @Test func aSessionCarriesItsTokensScopesAndEndsWithIt() async throws {
        try await offThePool {
            let dir = TempDir()
            let db = testDatabase(dir)
            let server = try ServerProcess(dir: dir, db: db)
            // Without tokens, from loopback: a name signs in, and the console shows runs.
            let byName = try #require(Self.cookie(try server.post("/login", "name=ops&next=/", contentType: "application/x-www-form-urlencoded")))
            #expect(try server.request("GET", "/", headers: ["Cookie": byName]).text.contains("<h1>Runs</h1>"))
            #expect(try server.request("GET", "/").status == 303)

            let reader = try runCLI(["token", "create", "--name", "dash", "--scopes", "events:read", "--db", db]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let labeller = try runCLI(["token", "create", "--name", "ann", "--scopes", "datasets:label", "--db", db]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            Thread.sleep(forTimeInterval: 2.2)  // the token count is cached for 2 s
            // Tokens exist now: the session by name is over.
            #expect(try server.request("GET", "/", headers: ["Cookie": byName]).status == 303)
            #expect(try server.post("/login", "name=ops", contentType: "application/x-www-form-urlencoded").status == 401)

            let dash = try #require(Self.cookie(try server.post("/login", "token=\(reader)&next=/", contentType: "application/x-www-form-urlencoded")))
            let page = try server.request("GET", "/events", headers: ["Cookie": dash])
            #expect(page.status == 200 && page.text.contains("<h1>Events</h1>") && page.text.contains("dash"))
            // The console's script reads the API with the session: the token's scopes apply.
            #expect(try server.request("GET", "/v1/events", headers: ["Cookie": dash]).status == 200)
            #expect(try server.request("POST", "/v1/events", body: #"{"type":"a.b","pipeline":"p"}"#, headers: ["Cookie": dash]).status == 403)
            let ann = try #require(Self.cookie(try server.post("/login", "token=\(labeller)&next=/", contentType: "application/x-www-form-urlencoded")))
            #expect(try server.request("GET", "/", headers: ["Cookie": ann]).header("Location") == "/inbox")
            #expect(try server.request("GET", "/events", headers: ["Cookie": ann]).status == 403)
            #expect(try server.request("GET", "/v1/events", headers: ["Cookie": ann]).status == 403)

            // Revoking the token signs its sessions out.
            #expect(try runCLI(["token", "revoke", "dash", "--db", db]).status == 0)
            Thread.sleep(forTimeInterval: 2.2)
            #expect(try server.request("GET", "/events", headers: ["Cookie": dash]).status == 303)
            #expect(try server.request("GET", "/v1/events", headers: ["Cookie": dash]).status == 401)
            // A forged or old-style cookie is nobody.
            #expect(try server.request("GET", "/", headers: ["Cookie": "gatehouse_who=b3Bz.AAAA"]).status == 303)
            // Signing out clears the cookie.
            let out = try server.request("POST", "/logout", headers: ["Cookie": ann])
            #expect(out.status == 303 && out.header("Set-Cookie")?.contains("Max-Age=0") == true)
        }
    }

    @Test func aSessionCannotChangeThingsFromAnotherSite() async throws {
        try await offThePool {
            let dir = TempDir()
            let db = testDatabase(dir)
            let server = try ServerProcess(dir: dir, db: db)
            let admin = try runCLI(["token", "create", "--name", "root", "--scopes", "admin", "--db", db]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            Thread.sleep(forTimeInterval: 2.2)
            let session = try #require(Self.cookie(try server.post("/login", "token=\(admin)&next=/", contentType: "application/x-www-form-urlencoded")))
            let event = #"{"type":"a.b","pipeline":"p"}"#
            // Another port of the host or a sibling site gets the cookie too (SameSite=Lax):
            // only this server's own pages may change things through it.
            for site in ["cross-site", "Cross-Site", "same-site"] {
                #expect(try server.request("POST", "/v1/events", body: event, headers: ["Cookie": session, "Sec-Fetch-Site": site]).status == 403, "\(site)")
            }
            #expect(try server.request("POST", "/v1/events", body: event, headers: ["Cookie": session]).status == 403)
            #expect(try server.request("POST", "/v1/events", body: event, headers: ["Cookie": session, "Origin": "http://127.0.0.1:1"]).status == 403)
            #expect(try server.request("POST", "/v1/events", body: event, headers: ["Cookie": session, "Sec-Fetch-Site": "same-origin"]).status == 202)
            let host = server.url.replacingOccurrences(of: "http://", with: "")
            #expect(try server.request("POST", "/v1/events", body: event, headers: ["Cookie": session, "Origin": "http://\(host)"]).status == 202)
            #expect(try server.json("/v1/events", token: admin)["events"]?.arrayValue?.count == 2)
            // Nor may another site sign a visitor in, or out.
            #expect(try server.request("POST", "/login", body: "token=\(admin)", contentType: "application/x-www-form-urlencoded", headers: ["Sec-Fetch-Site": "same-site"]).status == 403)
            #expect(try server.request("POST", "/logout", headers: ["Cookie": session, "Sec-Fetch-Site": "cross-site"]).status == 403)
            // An alert on a console page says only what this server put there for this session.
            let forged = try server.request("GET", "/silences?error=Paste+your+token+at+evil.example&sig=AAAA", headers: ["Cookie": session])
            #expect(forged.status == 200 && !forged.text.contains("evil.example"))
            let refused = try server.request("POST", "/silences", body: "matchers=nonsense&csrf=\(try csrf(server, session))", contentType: "application/x-www-form-urlencoded", headers: ["Cookie": session])
            let back = try #require(refused.header("Location"))
            #expect(try server.request("GET", back, headers: ["Cookie": session]).text.contains("role=\"alert\""))
            #expect(try server.request("GET", back, headers: ["Cookie": "gatehouse_who=" + "x"]).status == 303)
        }
    }

    /// A hostile tester's find: without tokens the loopback caller is trusted, and a browser on
    /// this machine is one — any page its user opened could post a `text/plain` form (no
    /// preflight) to silence every alert, or reach the server under its own name by DNS
    /// rebinding and read and decide gates. Such requests are now refused and change nothing;
    /// the user's own tools (no `Sec-Fetch-Site`, no `Origin`, a loopback `Host`) are not.
    @Test func protectedModeRefusesOtherSitesPagesAndOtherHostNames() async throws {
        try await offThePool {
            let dir = TempDir()
            let server = try ServerProcess(dir: dir, db: testDatabase(dir))
            let port = server.url.split(separator: ":").last.map(String.init) ?? ""
            let silence = #"{"matchers":["pipeline=\"train\""],"ends_at":"2030-01-01T00:00:00Z"}"#
            let plain = try server.post("/v1/silences", silence, contentType: "text/plain")
            #expect(plain.status == 415 && plain.header("Content-Type") == "application/problem+json", "\(plain.status) \(plain.text)")
            for headers in [["Sec-Fetch-Site": "cross-site"], ["Sec-Fetch-Site": "same-site"], ["Origin": "http://evil.example"], ["Origin": "null"],
                            ["Host": "attacker.example:\(port)"], ["Host": "127.0.0.1.attacker.example:\(port)"]] {
                let refused = try server.post("/v1/silences", silence, headers: headers)
                #expect(refused.status == 403 && refused.text.contains("no tokens"), "\(headers): \(refused.status) \(refused.text)")
                // The events' fast path asks the same.
                #expect(try server.post("/v1/events", #"{"type":"a.b","pipeline":"p"}"#, headers: headers).status == 403, "\(headers)")
            }
            // Reading under another name (a rebinding page would read the answer) is refused too,
            // and so is any request another site's page makes but a link followed to a page:
            // `GET /v1/datasets/{name}/next` leases an item, a stream holds a connection.
            #expect(try server.request("GET", "/v1/gates", headers: ["Host": "attacker.example:\(port)"]).status == 403)
            #expect(try server.request("GET", "/v1/gates", headers: ["Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"]).status == 403)
            #expect(try server.request("GET", "/v1/gates", headers: ["Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"]).status == 403)
            // The router drops empty segments: //v1/… is the API too.
            #expect(try server.request("GET", "//v1/gates", headers: ["Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"]).status == 403)
            let followed = try server.request("GET", "/gates", headers: ["Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Accept": "text/html"])
            #expect(followed.status == 303 && followed.header("Location")?.hasPrefix("/login") == true, "\(followed.status)")
            // A reverse proxy on this machine is on loopback, but its clients are not.
            for header in ["Forwarded", "X-Forwarded-For", "X-Real-IP"] {
                #expect(try server.post("/v1/events", #"{"type":"a.b","pipeline":"p"}"#, headers: [header: "203.0.113.9"]).status == 403, "\(header)")
            }
            #expect(try server.request("POST", "/login", body: "name=mallory&next=/", contentType: "application/x-www-form-urlencoded",
                                       headers: ["Host": "attacker.example:\(port)", "Sec-Fetch-Site": "same-origin"]).status == 403)
            #expect(try server.json("/v1/silences")["silences"]?.arrayValue?.isEmpty == true)
            #expect(try server.json("/v1/events")["events"]?.arrayValue?.isEmpty == true)
            // The user's own tools and this server's own pages, under any loopback name.
            for headers in [[:], ["Sec-Fetch-Site": "same-origin"], ["Sec-Fetch-Site": "none"], ["Origin": server.url],
                            ["Host": "localhost:\(port)"], ["Host": "[::1]:\(port)"], ["Host": "app.localhost"], ["Host": "127.0.0.2"]] {
                #expect(try server.post("/v1/events", #"{"type":"a.b","pipeline":"p"}"#, headers: headers).status == 202, "\(headers)")
            }
            #expect(try server.post("/v1/silences", silence).status == 201)
            #expect(try server.request("GET", "/v1/gates", headers: ["Host": "localhost:\(port)"]).status == 200)
        }
    }

    @Test func loopbackNames() {
        for name in ["127.0.0.1", "127.0.0.1:80", "127.1.2.3:8080", "localhost", "LOCALHOST:9", "localhost.", "a.b.localhost:1", "[::1]", "[::1]:8080"] {
            #expect(LocalTrust.isLoopbackName(name), "\(name)")
        }
        for name in ["evil.example", "127.0.0.1.evil.example", "localhost.evil.example", "128.0.0.1", "127.0.0.256", "127.0.0", "[::2]:80", "[::1]x",
                     "localhost:80x", "0.0.0.0", ""] {
            #expect(!LocalTrust.isLoopbackName(name), "\(name)")
        }
    }

    /// The events fast path asks `isLoopbackName` alone when none of `fieldsBeyondHost` came:
    /// every field that can make `refusal` refuse a request with a loopback `Host` must be in
    /// that list (add a field to `refusal`, and here, and this holds the list to it).
    @Test func everyFieldProtectedModeReadsBesidesHostIsListed() throws {
        let hostile: [(String, String)] = [
            ("Forwarded", "for=203.0.113.7"), ("X-Forwarded-For", "203.0.113.7"), ("X-Real-IP", "203.0.113.7"),
            ("Sec-Fetch-Site", "cross-site"), ("Origin", "http://evil.example"),
        ]
        let clean = HTTPRequest(method: .post, scheme: "http", authority: "127.0.0.1:8080", path: "/v1/events")
        #expect(LocalTrust.refusal(clean) == nil)
        for (name, value) in hostile {
            var request = clean
            let field = try #require(HTTPField.Name(name))
            request.headerFields[field] = value
            #expect(LocalTrust.refusal(request) != nil, "\(name)")
            #expect(LocalTrust.fieldsBeyondHost.contains(field), "\(name)")
        }
        // Sec-Fetch-Mode and Sec-Fetch-Dest decide with Sec-Fetch-Site (a link followed to a page).
        var navigation = HTTPRequest(method: .get, scheme: "http", authority: "127.0.0.1:8080", path: "/gates")
        navigation.headerFields[try #require(HTTPField.Name("Sec-Fetch-Site"))] = "cross-site"
        #expect(LocalTrust.refusal(navigation) != nil)
        navigation.headerFields[try #require(HTTPField.Name("Sec-Fetch-Mode"))] = "navigate"
        navigation.headerFields[try #require(HTTPField.Name("Sec-Fetch-Dest"))] = "document"
        #expect(LocalTrust.refusal(navigation) == nil)
        for name in ["Sec-Fetch-Mode", "Sec-Fetch-Dest"] {
            #expect(LocalTrust.fieldsBeyondHost.contains(try #require(HTTPField.Name(name))), "\(name)")
        }
    }
}
