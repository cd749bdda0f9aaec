import Dispatch
import Foundation
import GatehouseClient
import GatehouseCore
import GatehouseServer
import Synchronization
import Testing

/// Several `gatehouse serve` processes on one PostgreSQL database (the PostgreSQL pass of
/// `make test` only): what one commits, the others see and wake on; each event reaches the
/// receiver once; a gate closes once however many replicas are clicked at once; timers fire
/// once; two people on two replicas are not served the same item.
@Suite(.enabled(if: testingPostgres, "needs GATEHOUSE_TEST_POSTGRES"))
struct ReplicaTests {
    /// A webhook receiver on a fresh sink, one message per event.
    static func config(_ dir: TempDir, _ sink: Sink) -> String {
        dir.write("gatehouse.yml", """
            receivers:
              - name: hook
                webhook: { url: \(sink.url("/ok/hook")) }
            route:
              receiver: hook
              group_by: ['...']
              group_wait: 0s
            """)
    }

    static func replicas(_ count: Int, dir: TempDir, db: String, config: String) throws -> [ServerProcess] {
        try (0..<count).map { _ in try ServerProcess(dir: dir, db: db, arguments: ["--config", config], environment: ["GATEHOUSE_TEMPLATES": templatesFolder]) }
    }

    /// The ids of the events a webhook message carried (one event, or a digest's events).
    static func eventIDs(_ body: String) -> [String] {
        guard let o = (try? JSONValue.parse(body))?.objectValue else { return [] }
        if let event = o["event"]?.objectValue, let id = event["id"]?.stringValue { return [id] }
        return (o["events"]?.arrayValue ?? []).compactMap { $0.objectValue?["id"]?.stringValue }
    }

    /// One request to the server at `base` (a URL, which threads may share where the
    /// ServerProcess may not be).
    static func call(_ method: String, _ base: String, _ path: String, _ body: String? = nil) -> HTTPResult? {
        try? HTTPClient().send(
            method: method, url: base + path, headers: body == nil ? [:] : ["Content-Type": "application/json"], body: body.map { Array($0.utf8) })
    }

    /// Runs `work` on `count` threads at once and returns their results.
    static func together<T: Sendable>(_ count: Int, _ work: @escaping @Sendable (Int) -> T) -> [T] {
        let results = Mutex<[Int: T]>([:])
        DispatchQueue.concurrentPerform(iterations: count) { i in
            let value = work(i)
            results.withLock { $0[i] = value }
        }
        return results.withLock { r in (0..<count).map { r[$0]! } }
    }

    /// A replica whose config lacks the receiver leaves its deliveries to the others (its view
    /// may lag or lead theirs in a rolling upgrade); and one whose connections the server
    /// dropped (a restart, a terminated backend) carries on with fresh ones.
    @Test func aReplicaNeitherEndsOthersWorkNorHangsOnDroppedConnections() async throws {
        try await offThePool {
            let dir = TempDir()
            let sink = try Sink()
            let db = testDatabase(dir)
            let config = dir.write("sender.yml", """
                receivers:
                  - name: hook
                    webhook: { url: \(sink.url("/down-3/hook")) }
                route:
                  receiver: hook
                  group_by: ['...']
                  group_wait: 0s
                """)
            let sender = try Self.replicas(1, dir: dir, db: db, config: config)[0]
            #expect(try sender.post("/v1/events", #"{"id":"o1","type":"run.failed","pipeline":"p","run":"o1"}"#).status == 202)
            // While the receiver fails (its backlog pending), an API-only replica joins.
            Thread.sleep(forTimeInterval: 0.5)
            let bare = try ServerProcess(dir: dir, db: db)
            Thread.sleep(forTimeInterval: 1)
            let states = try bare.json("/v1/deliveries")["deliveries"]?.arrayValue?.compactMap { $0.objectValue?["state"]?.stringValue } ?? []
            #expect(!states.contains("dead"), "\(states)")
            let delivered = try sender.waitForDeliveries(timeout: 30) { rows in rows.allSatisfy { $0["state"] == .string("delivered") } }
            #expect(delivered.count == 1 && delivered.allSatisfy { $0["state"] == .string("delivered") }, "\(delivered)")

            // The server drops every connection of this database: both replicas go on.
            let name = String(db.split(separator: "/").last!.split(separator: "?").first!)
            let terminated = try Storage.open(db).readNow { session in
                try session.values(Bool.self, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ? AND pid <> pg_backend_pid()", [name])
            }
            #expect(terminated.filter { $0 }.count >= 4, "both replicas' pools, listeners: \(terminated)")
            Thread.sleep(forTimeInterval: 0.5)
            #expect(try bare.post("/v1/events", #"{"id":"o2","type":"run.failed","pipeline":"p","run":"o2"}"#).status == 202)
            #expect(try sender.post("/v1/events", #"{"id":"o3","type":"run.failed","pipeline":"p","run":"o3"}"#).status == 202)
            // The API-only replica stored its event (routed by its own config: to no receiver).
            #expect(try sender.json("/v1/events?pipeline=p")["events"]?.arrayValue?.count == 3)
            let after = try sender.waitForDeliveries(timeout: 30) { rows in rows.count == 2 && rows.allSatisfy { $0["state"] == .string("delivered") } }
            #expect(after.count == 2 && after.allSatisfy { $0["state"] == .string("delivered") }, "\(after)")
        }
    }

    @Test func replicasShareTheBusTheWorkAndTheTimers() async throws {
        try await offThePool {
            let dir = TempDir()
            let sink = try Sink()
            let db = testDatabase(dir)
            let servers = try Self.replicas(3, dir: dir, db: db, config: Self.config(dir, sink))
            let (a, b, c) = (servers[0], servers[1], servers[2])
            let urls = servers.map(\.url)

            // A wait on B is woken by a decision on C: the bus crossed processes (the wait
            // would otherwise return the pending gate after 30 s).
            let opened = try JSONValue.parse(a.post("/v1/gates", #"{"title":"Ship?","pipeline":"replicas","key":"r1/ship"}"#).text).objectValue
            let id = try #require(opened?["id"]?.stringValue)
            let started = Date()
            let waiter = DispatchQueue.global()
            let waited = Mutex<JSONObject?>(nil)
            let done = DispatchSemaphore(value: 0)
            waiter.async {
                let answer = Self.call("GET", urls[1], "/v1/gates/\(id)/wait?timeout=30s")
                waited.withLock { $0 = answer.flatMap { try? JSONValue.parse($0.text).objectValue } }
                done.signal()
            }
            Thread.sleep(forTimeInterval: 0.5)
            #expect(try c.post("/v1/gates/\(id)/decisions", #"{"decision":"approve","by":"web:carol"}"#).status == 200)
            done.wait()
            #expect(waited.withLock { $0?["state"] } == .string("approved"))
            #expect(Date().timeIntervalSince(started) < 15)

            // Events sent to all three reach the receiver once each, whichever replica sends.
            let ids = (0..<30).map { "rep-\($0)" }
            for (i, eventID) in ids.enumerated() {
                let server = servers[i % 3]
                #expect(try server.post("/v1/events", #"{"id":"\#(eventID)","type":"run.failed","pipeline":"replicas","run":"\#(eventID)"}"#).status == 202)
            }
            let deadline = Date().addingTimeInterval(30)
            var delivered: [String: Set<String>] = [:]
            repeat {
                delivered = [:]
                for message in try sink.received("/ok/hook") {
                    for eventID in Self.eventIDs(message.body) where eventID.hasPrefix("rep-") {
                        delivered[eventID, default: []].insert(message.headers["webhook-id"] ?? "")
                    }
                }
                if delivered.count == ids.count { break }
                Thread.sleep(forTimeInterval: 0.1)
            } while Date() < deadline
            #expect(Set(delivered.keys) == Set(ids))
            let messages = try sink.received("/ok/hook").filter { Self.eventIDs($0.body).contains { $0.hasPrefix("rep-") } }
            #expect(messages.count == ids.count, "each event sent once, not once per replica")

            // Two replicas clicked at once: one decision closes the gate, the other is told
            // it is closed; never two outcomes.
            for round in 0..<5 {
                let raced = try JSONValue.parse(a.post("/v1/gates", #"{"title":"Race \#(round)","pipeline":"race"}"#).text).objectValue
                let raceID = try #require(raced?["id"]?.stringValue)
                let statuses = Self.together(3) { i in
                    Self.call("POST", urls[i], "/v1/gates/\(raceID)/decisions", i == 1 ? #"{"decision":"reject","by":"web:bob"}"# : #"{"decision":"approve","by":"web:ann\#(i)"}"#)?.status ?? 0
                }
                #expect(statuses.filter { $0 == 200 }.count == 1 && statuses.filter { $0 == 409 }.count == 2, "\(statuses)")
                let audit = try c.json("/v1/gates/\(raceID)/audit")["entries"]?.arrayValue?.compactMap { $0.objectValue?["action"]?.stringValue } ?? []
                #expect(audit.filter { $0 == "closed" }.count == 1, "\(audit)")
            }

            // A timeout fires once, though three schedulers know the gate.
            let timed = try JSONValue.parse(b.post("/v1/gates", #"{"title":"Soon","pipeline":"timers","timeout":"1s","on_timeout":"reject"}"#).text).objectValue
            let timedID = try #require(timed?["id"]?.stringValue)
            let expiry = Date().addingTimeInterval(15)
            while Date() < expiry, try a.json("/v1/gates/\(timedID)")["state"] == .string("pending") { Thread.sleep(forTimeInterval: 0.1) }
            #expect(try a.json("/v1/gates/\(timedID)")["state"] == .string("rejected"))
            Thread.sleep(forTimeInterval: 1.5)
            let actions = try a.json("/v1/gates/\(timedID)/audit")["entries"]?.arrayValue?.compactMap { $0.objectValue?["action"]?.stringValue } ?? []
            #expect(actions.filter { $0 == "expired" }.count == 1, "\(actions)")

            // One label needed per item: two people on two replicas get different items.
            #expect(try a.post("/v1/datasets", #"{"name":"shared","task":"classification","labels":["a","b"],"annotators_per_item":1}"#).status == 201)
            let imported = try a.post("/v1/datasets/shared/items", #"[{"id":"i1","data":{"text":"x"}},{"id":"i2","data":{"text":"y"}}]"#)
            #expect(imported.status == 200, "\(imported.text)")
            let served = Self.together(2) { i in
                Self.call("GET", urls[i], "/v1/datasets/shared/next?annotator=web:p\(i)").flatMap { try? JSONValue.parse($0.text).objectValue?["id"]?.stringValue }
            }
            #expect(Set(served.compactMap { $0 }).count == 2, "\(served)")
            // A third person finds nothing left to take.
            #expect(try c.get("/v1/datasets/shared/next?annotator=web:p9").status == 204)

            #expect(try c.json("/v1/audit/verify")["ok"] == .bool(true))
        }
    }

    /// A replica started after another holds every receiver gets its share within seconds,
    /// and the receivers it is handed while their sends are in flight are not sent again: the
    /// rows stay claimed by the process sending them until their outcomes are in.
    @Test func aLaterReplicaGetsItsShareAndSendsNothingTwice() async throws {
        try await offThePool {
            let dir = TempDir()
            let sink = try Sink()
            let db = testDatabase(dir)
            let names = ["r1", "r2", "r3", "r4"]
            let config = dir.write("senders.yml", """
                receivers:
                \(names.map { "  - name: \($0)\n    webhook: { url: \(sink.url("/slow-8/\($0)")) }" }.joined(separator: "\n"))
                route:
                  receiver: r1
                  group_by: ['...']
                  group_wait: 0s
                  routes:
                \(names.map { "    - matchers: ['pipeline=\"p-\($0)\"']\n      receiver: \($0)" }.joined(separator: "\n"))
                """)
            let store = try Storage.open(db)
            /// Which process holds each receiver's lease now.
            func holders() throws -> [String: String] {
                try store.readNow { session in
                    try session.all("SELECT name, owner FROM owners WHERE name LIKE 'receiver:%' AND until > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)") { row in
                        (row[0] as String, row[1] as String)
                    }
                }.reduce(into: [:]) { $0[$1.0] = $1.1 }
            }
            func waitFor(_ what: String, timeout: TimeInterval, _ done: () throws -> Bool) throws {
                let deadline = Date().addingTimeInterval(timeout)
                while Date() < deadline, try !done() { Thread.sleep(forTimeInterval: 0.1) }
                let now = (try? holders()) ?? [:]
                #expect(try done(), "\(what) within \(timeout) s: \(now)")
            }

            // A replica serving no receiver (API only) does not count against the others' share.
            let apiOnly = try ServerProcess(dir: dir, db: db)
            let first = try Self.replicas(1, dir: dir, db: db, config: config)[0]
            // Within 4 s: had the API-only replica counted, `first` would take two at once and
            // the other two only once nobody had held them for a whole lease (5 s).
            try waitFor("one process holding every receiver", timeout: 4) { let h = try holders(); return h.count == 4 && Set(h.values).count == 1 }
            for name in names {
                #expect(try first.post("/v1/events", #"{"id":"e-\#(name)","type":"run.failed","pipeline":"p-\#(name)","run":"a-\#(name)"}"#).status == 202)
            }
            // Every receiver has its send in flight (answered in 8 s) when the second starts.
            try waitFor("four sends in flight", timeout: 5) { try sink.received("/slow-8/").count == 4 }
            let second = try Self.replicas(1, dir: dir, db: db, config: config)[0]
            try waitFor("two receivers each", timeout: 10) {
                let h = try holders()
                return h.count == 4 && Dictionary(grouping: h.values, by: { $0 }).values.map(\.count).sorted() == [2, 2]
            }
            #expect(try sink.received("/slow-8/").count == 4, "a receiver handed over mid-send is not sent to again")
            _ = try first.waitForDeliveries(timeout: 20) { rows in rows.count == 4 && rows.allSatisfy { $0["state"] == .string("delivered") } }

            // Both now send, each event once.
            for name in names {
                #expect(try second.post("/v1/events", #"{"id":"f-\#(name)","type":"run.failed","pipeline":"p-\#(name)","run":"b-\#(name)"}"#).status == 202)
            }
            let delivered = try second.waitForDeliveries(timeout: 20) { rows in rows.count == 8 && rows.allSatisfy { $0["state"] == .string("delivered") } }
            #expect(delivered.count == 8 && delivered.allSatisfy { $0["state"] == .string("delivered") }, "\(delivered)")
            Thread.sleep(forTimeInterval: 1)
            let sent = try sink.received("/slow-8/").flatMap { Self.eventIDs($0.body) }
            #expect(sent.sorted() == names.flatMap { ["e-\($0)", "f-\($0)"] }.sorted(), "each event once: \(sent)")
            #expect(try apiOnly.get("/healthz").status == 200)
        }
    }
}
