import Foundation
import GatehouseClient
import GatehouseCore
@testable import GatehouseServer
import Hummingbird
import Testing

/// `POST /v1/events` answered on the event loop (`EventsFastPath`): taken for what will be
/// accepted, the same answers as the router's for everything, and answers in request order on
/// a connection whatever path each request took.
@Suite(.serialized)
struct EventsFastPathTests {
    /// Requests that cover what the path takes and what it hands to the router: accepted,
    /// duplicate, reused id (refused by the commit, then answered by the router), bad JSON, a
    /// missing field, a reserved type, batches, NDJSON, CloudEvents (structured and binary),
    /// media types and charsets refused, a query string, `Expect`, a malformed Authorization,
    /// what protected mode refuses (after requests it trusted on the same connection), and a
    /// field given twice.
    static let requests: [(label: String, text: String)] = {
        func post(_ body: String, type: String = "application/json", headers: String = "", path: String = "/v1/events") -> String {
            "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: \(type)\r\nContent-Length: \(body.utf8.count)\r\n\(headers)\r\n\(body)"
        }
        return [
            ("accepted", post(#"{"id":"a1","type":"run.failed","pipeline":"p","run":"r1","summary":"boom"}"#)),
            ("duplicate", post(#"{"id":"a1","type":"run.failed","pipeline":"p","run":"r1","summary":"boom"}"#)),
            ("reused id", post(#"{"id":"a1","type":"run.failed","pipeline":"p","run":"r1","summary":"other"}"#)),
            ("bad json", post(#"{"id":"a2","type":"#)),
            ("missing pipeline", post(#"{"id":"a2","type":"run.failed"}"#)),
            ("reserved", post(#"{"id":"a2","type":"gate.approved","pipeline":"p"}"#)),
            ("batch", post(#"[{"id":"a3","type":"run.started","pipeline":"p","run":"r2"},{"id":"a4","type":"step.failed","pipeline":"p","run":"r2","step":"s"}]"#)),
            ("batch with one bad", post(#"[{"id":"a5","type":"run.started","pipeline":"p"},{"id":"a6","type":"","pipeline":"p"}]"#)),
            ("ndjson", post("{\"id\":\"a7\",\"type\":\"run.started\",\"pipeline\":\"q\"}\n{\"id\":\"a8\",\"type\":\"run.succeeded\",\"pipeline\":\"q\"}\n", type: "application/x-ndjson")),
            ("cloudevent", post(#"{"specversion":"1.0","id":"a9","source":"ci","type":"run.failed","data":{"pipeline":"p","run":"r3"}}"#, type: "application/cloudevents+json")),
            ("cloudevent binary", post(#"{"pipeline":"p","run":"r4"}"#, headers: "ce-specversion: 1.0\r\nce-id: a10\r\nce-source: ci\r\nce-type: run.failed\r\n")),
            ("text/plain", post(#"{"id":"a11","type":"run.failed","pipeline":"p"}"#, type: "text/plain")),
            ("latin1", post(#"{"id":"a11","type":"run.failed","pipeline":"p"}"#, type: "application/json; charset=latin1")),
            ("utf-8 charset", post(#"{"id":"a12","type":"run.failed","pipeline":"p"}"#, type: "application/json; charset=UTF-8")),
            ("query", post(#"{"id":"a13","type":"run.failed","pipeline":"p"}"#, path: "/v1/events?x=1")),
            ("expect", post(#"{"id":"a14","type":"run.failed","pipeline":"p"}"#, headers: "Expect: 100-continue\r\n")),
            ("basic auth", post(#"{"id":"a15","type":"run.failed","pipeline":"p"}"#, headers: "Authorization: Basic eDp5\r\n")),
            // What protected mode refuses, on a connection whose earlier requests it trusted.
            ("other host", post(#"{"id":"a17","type":"run.failed","pipeline":"p"}"#).replacingOccurrences(of: "Host: 127.0.0.1", with: "Host: evil.example")),
            ("proxied", post(#"{"id":"a18","type":"run.failed","pipeline":"p"}"#, headers: "X-Forwarded-For: 203.0.113.7\r\n")),
            ("cross-site", post(#"{"id":"a19","type":"run.failed","pipeline":"p"}"#, headers: "Sec-Fetch-Site: cross-site\r\n")),
            ("other origin", post(#"{"id":"a20","type":"run.failed","pipeline":"p"}"#, headers: "Origin: http://evil.example\r\n")),
            ("same origin", post(#"{"id":"a21","type":"run.failed","pipeline":"p"}"#, headers: "Origin: http://127.0.0.1\r\nSec-Fetch-Site: same-origin\r\n")),
            // A field given twice: its values combine, as the router reads them.
            ("two content types", post(#"{"id":"a22","type":"run.failed","pipeline":"p"}"#, headers: "Content-Type: text/plain\r\n")),
            ("health", "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
            // Over the 64 KiB parsed on the event loop, within max_body: the router's.
            ("large batch", post("[" + (0..<400).map { #"{"id":"b\#($0)","type":"run.started","pipeline":"p","summary":"\#(String(repeating: "x", count: 150))"}"# }.joined(separator: ",") + "]")),
            ("after all that", post(#"{"id":"a16","type":"run.succeeded","pipeline":"p","run":"r1"}"#)),
        ]
    }()

    /// What may differ between two servers answering the same request: the request id and
    /// the date. The rest — status, header names, body — must not.
    static func comparable(_ answer: RawHTTPConnection.Answer) -> String {
        let names = answer.headers.keys.sorted().joined(separator: ",")
        return "\(answer.status) [\(names)] \(answer.body)"
    }

    /// Each request sent on one keep-alive connection, its answer read before the next is sent
    /// (so each request that can take the fast path does), after a first request that lets the
    /// authenticator cache that the server has no tokens.
    func answersOneByOne(environment: [String: String]) throws -> [String] {
        let server = try ServerProcess(environment: environment)
        #expect(try server.post("/v1/events", #"{"id":"a0","type":"run.started","pipeline":"p","run":"r1"}"#).status == 202)
        let connection = try RawHTTPConnection(port: server.port)
        var answers: [String] = []
        for (label, text) in Self.requests {
            connection.send(text)
            let answer = try #require(connection.read(timeout: 30), "no answer to \(label)")
            answers.append("\(label): \(Self.comparable(answer))")
        }
        let stored = try server.allEvents().compactMap { $0["id"]?.stringValue }
        answers.append("stored: \(stored)")
        return answers
    }

    @Test func theFastPathAnswersAsTheRouterDoes() async throws {
        try await offThePool {
            let viaRouter = try answersOneByOne(environment: ["GATEHOUSE_EVENTS_FAST_PATH": "off"])
            let viaFastPath = try answersOneByOne(environment: [:])
            #expect(viaRouter.count == Self.requests.count + 1)
            for (router, fast) in zip(viaRouter, viaFastPath) {
                #expect(router == fast)
            }
            // The answers are what the API promises, not merely the same on both paths.
            let statuses = viaFastPath.dropLast().map { $0.split(separator: " ").dropFirst().first { Int($0) != nil }.map(String.init) ?? "" }
            #expect(statuses == ["202", "202", "409", "400", "422", "422", "202", "422", "202", "202", "202", "415", "415", "202", "202", "202", "401", "403", "403", "403", "403", "202", "415", "200", "202", "202"])
            #expect(viaFastPath.last == "stored: \(["a0", "a1", "a3", "a4", "a7", "a8", "a9", "a10", "a12", "a13", "a14", "a21"] + (0..<400).map { "b\($0)" } + ["a16"])")
        }
    }

    /// Requests that break off while the fast path reads them — a chunk size that is not hex,
    /// a body cut short, a head alone, each followed by the client closing its side — are the
    /// router's to answer, as if it had read them from the start.
    @Test func brokenRequestsAreAnsweredAsTheRouterDoes() async throws {
        try await offThePool {
            let head = "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            let broken = [
                head + "Transfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
                head + "Content-Length: 100\r\n\r\n{\"id\":\"c1\",\"type\":",
                head + "Content-Length: 40\r\n\r\n",
            ]
            func answers(_ environment: [String: String]) throws -> [String] {
                let server = try ServerProcess(environment: environment)
                #expect(try server.post("/v1/events", #"{"id":"w","type":"run.started","pipeline":"p"}"#).status == 202)
                return try broken.map { text in
                    let connection = try RawConnection(server.url)
                    connection.send(text)
                    connection.shutdownWrite()
                    let reply = String(decoding: connection.read(for: 10), as: UTF8.self)
                    let lines = reply.components(separatedBy: "\r\n")
                    let names = lines.dropFirst().prefix { !$0.isEmpty }.compactMap { $0.split(separator: ":").first?.lowercased() }.sorted()
                    return "\(lines.first ?? "") \(names) \(lines.last ?? "")"
                }
            }
            let viaRouter = try answers(["GATEHOUSE_EVENTS_FAST_PATH": "off"])
            let viaFastPath = try answers([:])
            #expect(viaRouter == viaFastPath)
            #expect(viaFastPath.allSatisfy { $0.hasPrefix("HTTP/1.1 400") && $0.contains("x-request-id") }, "\(viaFastPath)")
        }
    }

    /// Holds the SQLite write lock of `db` from another process for `seconds`; returns once
    /// it is held.
    func holdWriteLock(_ db: String, seconds: Double) throws -> Process {
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        holder.arguments = ["python3", "-c", """
            import sqlite3, sys, time
            c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
            c.execute("BEGIN IMMEDIATE"); print("locked", flush=True); time.sleep(float(sys.argv[2])); c.execute("COMMIT")
            """, db, String(seconds)]
        let out = Pipe()
        holder.standardOutput = out
        try holder.run()
        #expect(String(decoding: out.fileHandleForReading.availableData, as: UTF8.self).hasPrefix("locked"))
        return holder
    }

    func post(_ body: String) -> String {
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    /// Commits slower than `idle_timeout` (another process holds the write lock): a client
    /// still sending its next request, or pipelining 200, is not taken for idle and gets every
    /// answer once the lock goes; a request that breaks off behind the slow commit gets the
    /// router's own answer (a problem naming the request), not a bare 400.
    @Test func slowCommitsKeepTheirConnectionsAndOrder() async throws {
        try await offThePool {
            let dir = TempDir()
            // SQLite whatever the suite's store: the lock is held on its file.
            let server = try ServerProcess(
                dir: dir, db: dir.file("gatehouse.db"), arguments: ["--config", dir.write("gatehouse.yml", "server:\n  idle_timeout: 2s\n")])
            #expect(try server.post("/v1/events", #"{"id":"w","type":"run.started","pipeline":"p"}"#).status == 202)

            // The commit waits longer than the idle timeout; the body's pieces come well within
            // it (a starved client thread may oversleep its 0.7 s).
            var holder = try holdWriteLock(server.db, seconds: 5)
            let slow = try RawHTTPConnection(port: server.port)
            let second = #"{"id":"s2","type":"run.failed","pipeline":"p"}"#
            let secondHead = String(post(second).dropLast(second.utf8.count))
            slow.send(post(#"{"id":"s1","type":"run.failed","pipeline":"p"}"#) + secondHead)
            for piece in [String(second.prefix(20)), String(second.dropFirst(20))] {
                Thread.sleep(forTimeInterval: 0.7)
                slow.send(piece)
            }
            for id in ["s1", "s2"] {
                let answer = slow.read(timeout: 15)
                #expect(answer?.status == 202, "\(id): \(answer.map { "\($0.status) \($0.body)" } ?? "no answer")")
            }
            holder.waitUntilExit()

            // The fast path takes a request only while the authenticator's cache (2 s) says
            // who may send: let it expire, and have the router fill it again, before each phase.
            func freshCache() throws {
                Thread.sleep(forTimeInterval: 2.1)
                #expect(try server.get("/v1/events?limit=1").status == 200)
            }
            try freshCache()
            holder = try holdWriteLock(server.db, seconds: 1.5)
            let chain = try RawHTTPConnection(port: server.port)
            let summary = String(repeating: "s", count: 100)
            chain.send((0..<200).map { post(#"{"id":"c\#($0)","type":"run.failed","pipeline":"p","summary":"\#(summary)"}"#) }.joined())
            for i in 0..<200 {
                let answer = chain.read(timeout: 15)
                #expect(answer?.status == 202 && answer?.body.contains(#""c\#(i)""#) == true, "c\(i): \(answer.map { "\($0.status) \($0.body)" } ?? "no answer")")
                if answer == nil { break }
            }
            holder.waitUntilExit()

            // Shorter than idle_timeout: a request left half-sent that long is closed as idle.
            try freshCache()
            holder = try holdWriteLock(server.db, seconds: 0.6)
            let broken = try RawConnection(server.url)
            broken.send(post(#"{"id":"b1","type":"run.failed","pipeline":"p"}"#))
            Thread.sleep(forTimeInterval: 0.1)
            broken.send("POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":")
            broken.shutdownWrite()
            let replies = String(decoding: broken.read(for: 10), as: UTF8.self)
            holder.waitUntilExit()
            // Each body ends with a newline, so each status line starts a line.
            let statuses = replies.components(separatedBy: "\n").filter { $0.hasPrefix("HTTP/1.1 ") }
            #expect(statuses.map { $0.prefix(12) } == ["HTTP/1.1 202", "HTTP/1.1 400"], "\(replies)")
            #expect(replies.lowercased().contains("content-type: application/problem+json"), "\(replies)")
            #expect(replies.components(separatedBy: "X-Request-Id").count == 3, "\(replies)")

            #expect(try server.allEvents().count == 1 + 2 + 200 + 1)
        }
    }

    /// A pipelining client gets its answers in the order it asked, whichever path answered
    /// each: requests that came while one was committing on the fast path wait for it.
    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await offThePool {
            let server = try ServerProcess()
            #expect(try server.post("/v1/events", #"{"id":"w","type":"run.started","pipeline":"p"}"#).status == 202)
            let connection = try RawHTTPConnection(port: server.port)
            var burst = ""
            var expected: [(status: Int, id: String?)] = []
            for i in 0..<40 {
                func post(_ body: String) -> String {
                    "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
                }
                switch i % 5 {
                case 0, 1:
                    burst += post(#"{"id":"e\#(i)","type":"run.failed","pipeline":"p","run":"r\#(i)"}"#)
                    expected.append((202, "e\(i)"))
                case 2:
                    burst += "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                    expected.append((200, nil))
                case 3:
                    // A reused id: accepted by the fast path's checks, refused by the commit.
                    burst += post(#"{"id":"e\#(i - 3)","type":"run.failed","pipeline":"p","run":"other"}"#)
                    expected.append((409, nil))
                default:
                    burst += post(#"{"id":"e\#(i)","type":"run.failed"}"#)
                    expected.append((422, nil))
                }
            }
            connection.send(burst)
            for (index, want) in expected.enumerated() {
                let answer = try #require(connection.read(timeout: 30), "no answer \(index)")
                #expect(answer.status == want.status, "answer \(index): \(answer.status) \(answer.body)")
                if let id = want.id { #expect(answer.body.contains(#""ids":["\#(id)"]"#), "answer \(index): \(answer.body)") }
            }
            #expect(try server.allEvents().count == 1 + 16)
        }
    }

    /// The path is taken — for a caller the authenticator has cached, a token or the local
    /// user — and counts in the request metrics like the router's answers.
    @Test func acceptedEventsTakeTheFastPath() async throws {
        try await offThePool {
            let dir = TempDir()
            let db = testDatabase(dir)
            let created = try runCLI(["token", "create", "--name", "ci", "--scopes", "events:write", "--db", db])
            let token = try #require(created.stdout.split(whereSeparator: \.isNewline).first { $0.hasPrefix("gth_") }.map(String.init))
            let server = try ServerProcess(dir: dir, db: db, environment: ["GATEHOUSE_LOG_LEVEL": "debug", "GATEHOUSE_LOG_FORMAT": "json"])
            for i in 0..<5 {
                #expect(try server.post("/v1/events", #"{"id":"t\#(i)","type":"run.failed","pipeline":"p"}"#, token: token).status == 202)
            }
            let metrics = try server.get("/metrics").text
            let line = metrics.split(separator: "\n").first {
                $0.hasPrefix("gatehouse_http_request_duration_seconds_count") && $0.contains(#"route="/v1/events""#) && $0.contains(#"status="202""#)
            }
            #expect(line?.hasSuffix(" 5") == true, "\(line ?? "no such series")")
            let log = server.stopAndReadLog()
            // The first request reads the token and fills the cache; the rest are answered on
            // the event loop, which names itself in the debug line.
            let fast = log.components(separatedBy: "\n").filter { $0.contains(#""answered_on":"event loop""#) }
            #expect(fast.count >= 3, "\(log.suffix(2000))")
        }
    }

    /// The path's request ids are spelt as the router's (Hummingbird's `RequestID`): its prefix
    /// for the process, then a counter in 16 hex digits.
    @Test func requestIDsShareTheRoutersPrefix() {
        let router = RequestID().description
        let first = EventsFastPath.newRequestID()
        let second = EventsFastPath.newRequestID()
        #expect(first.count == router.count && second.count == router.count)
        #expect(first.dropLast(16) == router.dropLast(16))
        let (a, b) = (UInt64(first.suffix(16), radix: 16), UInt64(second.suffix(16), radix: 16))
        // Counted on (answers other tests' servers give in this process may come between).
        #expect(a != nil && b != nil && (1..<1_000_000).contains(b! &- a!), "\(first) \(second)")
    }
}
