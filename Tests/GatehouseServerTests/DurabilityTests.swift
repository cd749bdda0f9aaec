import Foundation
import Synchronization
import GatehouseClient
import GatehouseCore
import Testing

@Suite(.serialized)
struct DurabilityTests {
    /// kill -9 while events are being acknowledged under load; every acknowledged event must be
    /// there exactly once after a restart on the same file.
    @Test func everyAcknowledgedEventSurvivesKillDashNine() async throws {
        try await offThePool {
            let dir = TempDir()
            let server = try ServerProcess(dir: dir)
            let url = server.url
            let acknowledged = AckLog()
            let writers = 8
            let group = DispatchGroup()
            for w in 0..<writers {
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    let client = HTTPClient(connectTimeout: 1, timeout: 5)
                    var i = 0
                    while true {
                        // Mix single events and batches; ids are unique per writer and sequence.
                        let size = i % 3 == 0 ? 10 : 1
                        let ids = (0..<size).map { "w\(w)-\(i)-\($0)" }
                        let body = "[" + ids.map { #"{"id":"\#($0)","type":"step.started","pipeline":"crash","run":"w\#(w)"}"# }.joined(separator: ",") + "]"
                        guard let r = try? client.send(method: "POST", url: url + "/v1/events", headers: ["Content-Type": "application/json"], body: Array(body.utf8)) else { return }
                        if r.status == 202 { acknowledged.add(ids) }
                        i += 1
                    }
                }
            }
            Thread.sleep(forTimeInterval: 1.5)
            server.kill()
            group.wait()
            let acked = acknowledged.all
            #expect(acked.count > 100, "too little load to mean anything: \(acked.count)")

            let restarted = try ServerProcess(dir: dir, db: server.db)
            let stored = try restarted.allEvents("pipeline=crash").map { $0["id"]!.stringValue! }
            let storedSet = Set(stored)
            #expect(stored.count == storedSet.count, "an event was stored twice")
            let missing = acked.filter { !storedSet.contains($0) }
            #expect(missing.isEmpty, "\(missing.count) acknowledged events lost, e.g. \(missing.prefix(5))")
            // Runs were updated in the same transactions as their events.
            let runs = try restarted.json("/v1/runs?pipeline=crash")["runs"]?.arrayValue ?? []
            let counted = runs.compactMap { $0.objectValue?["events"]?.doubleValue }.reduce(0, +)
            #expect(Int(counted) == stored.count)
        }
    }

    /// The store's process-wide SQLite settings (statement journals in memory, no memory
    /// statistics, the WAL-write coalescing VFS) only take if they come before anything else
    /// in the process opens SQLite; each logs a warning when it came too late.
    @Test func theStoresSQLiteSettingsTakeEffectInTheServer() async throws {
        try await offThePool {
            let server = try ServerProcess()
            #expect(try server.post("/v1/events", #"{"id":"s1","type":"run.failed","pipeline":"p","run":"r1"}"#).status == 202)
            let log = server.stopAndReadLog()
            #expect(!log.contains("SQLite was initialised before the store opened it"), "\(log)")
            #expect(!log.contains("could not install the WAL write coalescing VFS"), "\(log)")
        }
    }

    @Test func sigtermFinishesInFlightWorkAndExitsCleanly() async throws {
        try await offThePool {
            let dir = TempDir()
            let server = try ServerProcess(dir: dir)
            let stream = StreamReader(url: server.url + "/v1/events/stream?after=0")
            #expect(stream.wait { _, raw in raw.contains("connected") })
            #expect(try server.post("/v1/events", #"{"id":"s1","type":"a.b","pipeline":"p"}"#).status == 202)
            server.signal(SIGTERM)
            // The open stream is closed by the server, and the process exits 0.
            #expect(stream.done.wait(timeout: .now() + 10) == .success)
            #expect(server.waitForExit(timeout: 10) == 0)
            let restarted = try ServerProcess(dir: dir, db: server.db)
            #expect(try restarted.allEvents().map { $0["id"]!.stringValue! } == ["s1"])
        }
    }

    /// SIGTERM while a receiver holds a send open (it accepted the connection and never
    /// answers): /readyz turns 503 at once, every open request gets a whole answer, the send is
    /// abandoned at the deadline and the process exits 0 within shutdown_timeout + 1 s. The
    /// abandoned delivery is still pending and goes again after the restart, same webhook-id.
    @Test func sigtermWithASendInFlightStopsCleanlyWithinTheTimeout() async throws {
        try await offThePool {
            let sink = try Sink()
            let dir = TempDir()
            let cfg = dir.write("gatehouse.yml", """
                server: { shutdown_timeout: 3s }
                receivers:
                  - name: slow
                    timeout: 30s
                    webhook: { url: \(sink.url("/hangfirst/slow")), secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw }
                route: { receiver: slow }
                """)
            let env = ["GATEHOUSE_TEMPLATES": templatesFolder, "SWIFT_BACKTRACE": "enable=no"]
            let server = try ServerProcess(dir: dir, arguments: ["--config", cfg], environment: env)
            #expect(try server.post("/v1/events", #"{"id":"h1","type":"run.failed","pipeline":"p"}"#).status == 202)
            let held = try sink.wait(for: 1, at: "/hangfirst")
            #expect(held.count == 1)
            let gate = try #require(server.post("/v1/gates", #"{"title":"t","pipeline":"bye"}"#).json["id"]?.stringValue)
            let waiting = try RawHTTPConnection(port: server.port)
            waiting.get("/v1/gates/\(gate)/wait?timeout=120s")
            try server.waitForWaiters(1)
            let stream = StreamReader(url: server.url + "/v1/events/stream?after=0")
            #expect(stream.wait { _, raw in raw.contains("connected") })

            let signalled = Date()
            server.signal(SIGTERM)
            // The signal lands asynchronously: look until the server says it is draining.
            var ready = 200
            let looking = Date().addingTimeInterval(2)
            while ready != 503, Date() < looking, let r = try? server.get("/readyz") {
                ready = r.status
                if ready != 503 { Thread.sleep(forTimeInterval: 0.01) }
            }
            #expect(ready == 503)
            let answer = try #require(waiting.read(timeout: 10))
            #expect(answer.status == 200)
            #expect(stream.done.wait(timeout: .now() + 10) == .success)
            #expect(server.waitForExit(timeout: 15) == 0)
            // shutdown_timeout + 1 s, with room for a loaded CI machine; the receiver would have
            // held it for 30 s.
            #expect(Date().timeIntervalSince(signalled) < 6, "took \(Date().timeIntervalSince(signalled)) s")

            // The event's delivery (the gate's notice went out meanwhile) is sent again after the
            // restart under the same webhook-id.
            let id = try #require(held.first?.headers["webhook-id"])
            let restarted = try ServerProcess(dir: dir, db: server.db, arguments: ["--config", cfg], environment: env)
            let rows = try restarted.waitForDeliveries(timeout: 20) { rows in rows.contains { $0["id"] == .string(id) && $0["state"] == .string("delivered") } }
            #expect(rows.contains { $0["id"] == .string(id) && $0["state"] == .string("delivered") })
            #expect(try sink.received("/hangfirst").filter { $0.headers["webhook-id"] == id }.count == 2)
        }
    }

    /// SIGTERM while another process holds the SQLite file's write lock (a backup tool, an
    /// `sqlite3` shell left in a transaction) and requests wait behind it: they are answered
    /// `503` with Retry-After at the shutdown deadline, and the process exits 0 in time — it
    /// used to outlive the deadline waiting for the lock and crash ("Cancellation took longer
    /// than allowed"), the waiting requests cut off unanswered. Nothing they sent is stored.
    @Test func sigtermWhileAnotherProcessHoldsTheDatabaseLockStopsInTime() async throws {
        guard !testingPostgres else { return }  // PostgreSQL's lock waits are its own
        try await offThePool {
            let dir = TempDir()
            let cfg = dir.write("gatehouse.yml", "server: { shutdown_timeout: 3s }\n")
            let server = try ServerProcess(dir: dir, arguments: ["--config", cfg], environment: ["SWIFT_BACKTRACE": "enable=no"])
            #expect(try server.post("/v1/events", #"{"id":"before","type":"run.started","pipeline":"p"}"#).status == 202)
            let holder = Process()
            holder.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            holder.arguments = ["-c", """
                import sqlite3, sys, time
                c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
                c.execute("BEGIN IMMEDIATE")
                print("held", flush=True)
                time.sleep(60)
                """, server.db]
            #expect(try firstLine(of: holder) == "held")
            defer { if holder.isRunning { kill(holder.processIdentifier, SIGKILL) } }
            let answers = Mutex<[HTTPResult?]>([])
            let group = DispatchGroup()
            let base = server.url
            for n in 0..<4 {
                // Threads of their own: the global queue runs as many blocking calls as cores.
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    let body = #"{"id":"blocked\#(n)","type":"run.started","pipeline":"p"}"#
                    do {
                        let r = try HTTPClient().send(method: "POST", url: base + "/v1/events", headers: ["Content-Type": "application/json"], body: Array(body.utf8))
                        answers.withLock { $0.append(r) }
                    } catch {
                        answers.withLock { $0.append(nil) }
                    }
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
            // Time for the four requests to be in, waiting on the lock, on a loaded machine too
            // (one that came after the signal would find the listener closed, not a 503).
            Thread.sleep(forTimeInterval: 1.5)
            let signalled = Date()
            server.signal(SIGTERM)
            #expect(server.waitForExit(timeout: 15) == 0)
            // shutdown_timeout is 3 s; before the fix it outlived the lock's 10 s wait and crashed.
            #expect(Date().timeIntervalSince(signalled) < 8, "took \(Date().timeIntervalSince(signalled)) s")
            #expect(group.wait(timeout: .now() + 5) == .success)
            for answer in answers.withLock({ $0 }) {
                #expect(answer?.status == 503 && answer?.header("Retry-After") == "1", "\(answer.map { "\($0.status) \($0.text)" } ?? "no answer")")
                #expect(answer?.text.contains("locked by another process") == true)
            }
            kill(holder.processIdentifier, SIGKILL)
            holder.waitUntilExit()
            let restarted = try ServerProcess(dir: dir, db: server.db)
            let ids = try restarted.get("/v1/events?limit=100").json["events"]?.arrayValue?.compactMap { $0.objectValue?["id"]?.stringValue }
            #expect(ids == ["before"])
        }
    }
}

final class AckLog: @unchecked Sendable {
    private let lock = NSLock()
    private var ids: [String] = []
    func add(_ new: [String]) { lock.lock(); ids += new; lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return ids }
}
