import Foundation
import GatehouseClient
import GatehouseCore
import Synchronization
import Testing

/// Reads an SSE stream on its own thread, collecting messages.
final class StreamReader: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [SSEParser.Message] = []
    private var raw = ""
    private var stopped = false
    let done = DispatchSemaphore(value: 0)

    init(url: String, headers: [String: String] = [:]) {
        Thread.detachNewThread { [self] in
            var parser = SSEParser()
            _ = try? HTTPClient().stream(url: url, headers: headers) { bytes in
                self.lock.lock()
                defer { self.lock.unlock() }
                self.raw += String(decoding: bytes, as: UTF8.self)
                self.messages += parser.feed(bytes)
                return !self.stopped
            }
            done.signal()
        }
    }

    var snapshot: (messages: [SSEParser.Message], raw: String) {
        lock.lock()
        defer { lock.unlock() }
        return (messages, raw)
    }

    /// Waits until `condition` holds on what arrived, up to `timeout`.
    func wait(timeout: TimeInterval = 10, until condition: ([SSEParser.Message], String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let s = snapshot
            if condition(s.messages, s.raw) { return true }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return false
    }

    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
    }
}

@Suite(.serialized)
struct StreamTests {
    @Test func streamDeliversBacklogThenLiveEventsAndResumes() async throws {
        try await offThePool {
            let dir = TempDir()
            let config = dir.write("gatehouse.yml", "server:\n  sse_heartbeat: 200ms\n")
            let server = try ServerProcess(dir: dir, arguments: ["--config", config])
            _ = try server.post("/v1/events", #"[{"id":"b1","type":"a.b","pipeline":"p"},{"id":"b2","type":"a.b","pipeline":"q"}]"#)

            // From the start: the backlog, then live events as they commit.
            let all = StreamReader(url: server.url + "/v1/events/stream?after=0")
            // Filtered, starting at the live end.
            let onlyP = StreamReader(url: server.url + "/v1/events/stream?pipeline=p")
            #expect(all.wait { m, _ in m.map(\.id) == ["1", "2"] })
            #expect(onlyP.wait { _, raw in raw.contains("connected") })
            _ = try server.post("/v1/events", #"[{"id":"l1","type":"run.failed","pipeline":"p"},{"id":"l2","type":"a.b","pipeline":"q"}]"#)
            #expect(all.wait { m, _ in m.count == 4 })
            #expect(all.snapshot.messages[2].event == "run.failed")
            #expect((try? JSONValue.parse(all.snapshot.messages[2].data))?.objectValue?["id"] == .string("l1"))
            #expect(onlyP.wait { m, _ in m.count == 1 && m[0].id == "3" })
            // Heartbeats keep the connection alive while nothing happens.
            #expect(all.wait(timeout: 3) { _, raw in raw.contains(": heartbeat") })

            // Resume after a disconnect with Last-Event-ID: only what came after it.
            let resumed = StreamReader(url: server.url + "/v1/events/stream", headers: ["Last-Event-ID": "2"])
            #expect(resumed.wait { m, _ in m.map(\.id) == ["3", "4"] })
            Thread.sleep(forTimeInterval: 0.3)
            #expect(resumed.snapshot.messages.count == 2)
            for reader in [all, onlyP, resumed] { reader.stop() }
        }
    }

    /// A hostile tester's find: a stream opened with a token went on delivering events after
    /// the token was revoked (new requests with it got 401). It now ends instead, and nothing
    /// committed after the revocation took effect is sent on it.
    @Test func aStreamEndsWhenItsTokenIsRevoked() async throws {
        try await offThePool {
            let dir = TempDir()
            let db = testDatabase(dir)
            let server = try ServerProcess(dir: dir, db: db)
            let admin = try runCLI(["token", "create", "--name", "root", "--scopes", "admin", "--db", db]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let reader = try runCLI(["token", "create", "--name", "dash", "--scopes", "events:read", "--db", db]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let stream = StreamReader(url: server.url + "/v1/events/stream", headers: ["Authorization": "Bearer \(reader)"])
            #expect(stream.wait { _, raw in raw.contains("connected") })
            #expect(try server.post("/v1/events", #"{"id":"before","type":"a.b","pipeline":"p"}"#, token: admin).status == 202)
            #expect(stream.wait { m, _ in m.count == 1 })
            #expect(try runCLI(["token", "revoke", "dash", "--db", db]).status == 0)
            // Past the 2 s a verified token is cached: new requests with it are refused.
            Thread.sleep(forTimeInterval: 2.5)
            #expect(try server.get("/v1/events", token: reader).status == 401)
            #expect(try server.post("/v1/events", #"{"id":"after","type":"a.b","pipeline":"p"}"#, token: admin).status == 202)
            #expect(stream.done.wait(timeout: .now() + 10) == .success, "the stream is still open")
            #expect(stream.snapshot.messages.map(\.id) == ["1"])
            #expect(!stream.snapshot.raw.contains("after"))
        }
    }

    /// A hostile tester held 1,100 streams open and `max_connections` (1,024) was spent: events
    /// and `/healthz` waited out their timeouts. Streams now take at most half of it; one more
    /// is a `503` with Retry-After, and a stream that ends gives its place back.
    @Test func streamsLeaveConnectionsForEverythingElse() async throws {
        try await offThePool {
            let dir = TempDir()
            let config = dir.write("gatehouse.yml", "server:\n  max_connections: 16\n  sse_heartbeat: 100ms\n")
            let server = try ServerProcess(dir: dir, arguments: ["--config", config])
            let open = (0..<8).map { _ in StreamReader(url: server.url + "/v1/events/stream") }
            for reader in open { #expect(reader.wait { _, raw in raw.contains("connected") }) }
            let refused = try server.get("/v1/events/stream")
            #expect(refused.status == 503 && refused.header("Retry-After") == "5" && refused.text.contains("event streams are open"), "\(refused.status) \(refused.text)")
            #expect(try server.post("/v1/events", #"{"id":"e1","type":"a.b","pipeline":"p"}"#).status == 202)
            #expect(try server.get("/healthz").status == 200)
            // `events tail`, refused a place, waits as told and comes back (it used to exit).
            let tail = try RunningCLI(["events", "tail", "--after", "0", "--count", "1", "--json"], server: server.url)
            Thread.sleep(forTimeInterval: 1)
            // A stream that ends gives its place back (the server notices at its next write).
            open[0].stop()
            #expect(open[0].done.wait(timeout: .now() + 10) == .success)
            var again: StreamReader?
            let deadline = Date().addingTimeInterval(10)
            while again == nil && Date() < deadline {
                let reader = StreamReader(url: server.url + "/v1/events/stream")
                if reader.wait(timeout: 2, until: { _, raw in raw.contains("connected") }) { again = reader } else { Thread.sleep(forTimeInterval: 0.2) }
            }
            #expect(again != nil, "no place was given back")
            for reader in open.dropFirst() + [again].compactMap({ $0 }) { reader.stop() }
            let tailed = tail.finish(timeout: 30)
            #expect(tailed.status == 0 && tailed.stdout.contains("\"e1\""), "\(tailed.status) \(tailed.stderr)")
        }
    }

    @Test func cliTailFollowsTheStream() async throws {
        try await offThePool {
            let server = try ServerProcess()
            _ = try server.post("/v1/events", #"{"id":"t1","type":"step.failed","pipeline":"train","run":"r1","step":"fit","summary":"OOM"}"#)
            let result = try runCLI(["events", "tail", "--after", "0", "--count", "1", "--json"], environment: ["GATEHOUSE_URL": server.url])
            #expect(result.status == 0, "\(result.stderr)")
            #expect((try? JSONValue.parse(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))?.objectValue?["id"] == .string("t1"))
            let human = try runCLI(["events", "tail", "--after", "0", "--count", "1"], environment: ["GATEHOUSE_URL": server.url])
            #expect(human.stdout.contains("step.failed  train/r1/fit  OOM"))
        }
    }
}
