import Dispatch
import Foundation
import GatehouseClient
import GatehouseCore
import Synchronization
import Testing

/// Three replicas on one PostgreSQL database under load, one killed with SIGKILL every few
/// seconds and started again: every acknowledged event is delivered, a duplicate only ever
/// repeats its webhook-id, every gate closes exactly once, every waiter is answered, and the
/// audit chain verifies. (The PostgreSQL pass of `make test`; about 30 s.)
@Suite(.enabled(if: testingPostgres, "needs GATEHOUSE_TEST_POSTGRES"))
struct ChaosTests {
    /// What the clients saw, shared by their threads.
    final class Ledger: Sendable {
        let acknowledged = Mutex<Set<String>>([])
        /// Gate id → the state its waiter was finally answered with.
        let answered = Mutex<[String: String]>([:])
        let gates = Mutex<[String]>([])
        let stop = Atomic<Bool>(false)
    }

    /// `method path` against the replicas, starting at `first`, until one answers (a killed
    /// one refuses the connection; the next is tried, with the same request: every request
    /// here is safe to repeat).
    static func call(_ urls: [String], first: Int, _ method: String, _ path: String, _ body: String? = nil, attempts: Int = 40) -> HTTPResult? {
        for attempt in 0..<attempts {
            let base = urls[(first + attempt) % urls.count]
            if let result = ReplicaTests.call(method, base, path, body), result.status != 0, result.status < 500 { return result }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return nil
    }

    @Test func killingReplicasLosesNothing() async throws {
        try await offThePool {
            let dir = TempDir()
            let sink = try Sink()
            let db = testDatabase(dir)
            let config = ReplicaTests.config(dir, sink)
            let ports = try (0..<3).map { _ in try freePort() }
            let urls = ports.map { "http://127.0.0.1:\($0)" }
            func start(_ slot: Int) throws -> ServerProcess {
                try ServerProcess(
                    dir: dir, db: db, arguments: ["--config", config, "--address", "127.0.0.1:\(ports[slot])"],
                    environment: ["GATEHOUSE_TEMPLATES": templatesFolder])
            }
            var servers = try (0..<3).map(start)
            let ledger = Ledger()
            let clients = DispatchGroup()

            // Two senders: an event counts once a replica answered 202.
            for sender in 0..<2 {
                DispatchQueue.global().async(group: clients) {
                    var n = 0
                    while !ledger.stop.load(ordering: .relaxed) {
                        let id = "chaos-\(sender)-\(n)"
                        n += 1
                        let body = #"{"id":"\#(id)","type":"run.failed","pipeline":"chaos","run":"\#(id)"}"#
                        if Self.call(urls, first: n % 3, "POST", "/v1/events", body)?.status == 202 {
                            ledger.acknowledged.withLock { _ = $0.insert(id) }
                        }
                        Thread.sleep(forTimeInterval: 0.01)
                    }
                }
            }
            // Gates: opened by key on one replica, waited on at another, decided at a third.
            DispatchQueue.global().async(group: clients) {
                var n = 0
                while !ledger.stop.load(ordering: .relaxed) {
                    n += 1
                    let opened = Self.call(urls, first: n, "POST", "/v1/gates", #"{"title":"Chaos \#(n)","pipeline":"chaos","key":"chaos/\#(n)"}"#)
                    guard let id = opened.flatMap({ try? JSONValue.parse($0.text).objectValue?["id"]?.stringValue }) else { continue }
                    ledger.gates.withLock { $0.append(id) }
                    let round = n
                    DispatchQueue.global().async(group: clients) {
                        // Waits until the gate closes, reconnecting (elsewhere) when its replica dies.
                        for attempt in 0..<200 {
                            let answer = Self.call(urls, first: round + 1 + attempt, "GET", "/v1/gates/\(id)/wait?timeout=20s")
                            if let state = answer.flatMap({ try? JSONValue.parse($0.text).objectValue?["state"]?.stringValue }), state != "pending" {
                                ledger.answered.withLock { $0[id] = state }
                                return
                            }
                        }
                    }
                    Thread.sleep(forTimeInterval: 0.2)
                    _ = Self.call(urls, first: n + 2, "POST", "/v1/gates/\(id)/decisions", #"{"decision":"approve","by":"web:ops"}"#)
                }
            }

            // The chaos: every 2.5 s one replica dies with SIGKILL and comes back.
            let end = Date().addingTimeInterval(15)
            var victim = 0
            while Date() < end {
                Thread.sleep(forTimeInterval: 2.5)
                servers[victim].kill()
                Thread.sleep(forTimeInterval: 0.3)
                servers[victim] = try start(victim)
                victim = (victim + 1) % 3
            }
            ledger.stop.store(true, ordering: .relaxed)
            clients.wait()

            let acknowledged = ledger.acknowledged.withLock { $0 }
            #expect(acknowledged.count > 100, "the load ran (\(acknowledged.count) events)")
            // Every acknowledged event arrives; duplicates repeat their webhook-id.
            var delivered: [String: Set<String>] = [:]
            let deadline = Date().addingTimeInterval(45)
            repeat {
                delivered = [:]
                for message in try sink.received("/ok/hook") {
                    for id in ReplicaTests.eventIDs(message.body) where id.hasPrefix("chaos-") {
                        delivered[id, default: []].insert(message.headers["webhook-id"] ?? "")
                    }
                }
                if acknowledged.isSubset(of: delivered.keys) { break }
                Thread.sleep(forTimeInterval: 0.2)
            } while Date() < deadline
            let missing = acknowledged.subtracting(delivered.keys)
            #expect(missing.isEmpty, "\(missing.count) acknowledged events never delivered, e.g. \(missing.prefix(5))")
            let split = delivered.filter { $0.value.count > 1 }
            let dead = Self.call(urls, first: 0, "GET", "/v1/deliveries?state=dead&limit=10").flatMap { try? JSONValue.parse($0.text).objectValue?["deliveries"]?.arrayValue } ?? []
            #expect(dead.isEmpty, "the receiver answers 200: nothing may die (\(dead.count))")
            #expect(split.isEmpty, "events delivered under two webhook-ids: \(split.prefix(3))")

            let messages = try sink.received("/ok/hook").filter { ReplicaTests.eventIDs($0.body).contains { $0.hasPrefix("chaos-") } }.count
            print("chaos: \(acknowledged.count) events acknowledged, \(delivered.count) delivered in \(messages) messages, \(ledger.gates.withLock { $0.count }) gates")

            // Every gate closed once, and its waiter heard.
            let gates = ledger.gates.withLock { $0 }
            let answered = ledger.answered.withLock { $0 }
            #expect(gates.count >= 10)
            for id in gates {
                #expect(answered[id] == "approved", "gate \(id): waiter got \(answered[id] ?? "nothing")")
                let actions = Self.call(urls, first: 0, "GET", "/v1/gates/\(id)/audit")
                    .flatMap { try? JSONValue.parse($0.text).objectValue?["entries"]?.arrayValue }?
                    .compactMap { $0.objectValue?["action"]?.stringValue } ?? []
                #expect(actions.filter { $0 == "closed" }.count == 1 && actions.filter { $0 == "opened" }.count == 1, "gate \(id): \(actions)")
            }
            let verified = Self.call(urls, first: 0, "GET", "/v1/audit/verify").flatMap { try? JSONValue.parse($0.text).objectValue }
            #expect(verified?["ok"] == .bool(true), "\(String(describing: verified))")
            withExtendedLifetime(servers) {}
        }
    }
}
