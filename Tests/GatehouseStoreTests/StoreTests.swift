import Foundation
import GRDB
import GatehouseCore
@testable import GatehouseStore
import Synchronization
import Testing

private func tempPath() -> String { NSTemporaryDirectory() + "gatehouse-store-\(UUID().uuidString).db" }

/// Removes SQLite databases with their WAL and shared-memory files.
private func removeDatabases(_ paths: String...) {
    for path in paths { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
}

private func event(_ id: String, type: String = "step.started", pipeline: String = "p", run: String? = "r1") -> Event {
    Event(id: id, type: type, pipeline: pipeline, run: run, time: Timestamp(milliseconds: 1_795_946_400_000))
}

struct MigrationTests {
    @Test func migratesFromEmptyAndReopens() throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let db = try GatehouseDatabase(path: path)
        #expect(try db.appliedMigrations() == ["v1-events", "v1-tokens", "v2-deliveries", "v3-gates", "v4-datasets", "v5-web-identities", "v6-event-time-given", "v7-deliveries-by-event", "v8-leases", "v9-drop-deliveries-by-group", "v10-deliveries-retried-at", "v11-runs-in-arrival-order", "v12-receiver-holds", "v13-runs-by-status", "v14-deliveries-by-fallback-of"])
        let tables = try db.pool.read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name") }
        #expect(tables.contains("events") && tables.contains("runs") && tables.contains("tokens"))
        let indexes = try db.pool.read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE type='index'") }
        #expect(indexes.contains("deliveries_due") && !indexes.contains("deliveries_by_group"))
        #expect(try db.pool.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") } == "wal")
        // Full durability means synchronous=FULL (2) on the writer.
        #expect(try db.pool.write { try Int.fetchOne($0, sql: "PRAGMA synchronous") } == 2)
        // Checkpoints every 4,000 pages, not SQLite's 1,000 (fewer copies of hot index pages).
        #expect(try db.pool.write { try Int.fetchOne($0, sql: "PRAGMA wal_autocheckpoint") } == 4000)
        // Reopening applies nothing twice.
        let again = try GatehouseDatabase(path: path, durability: .normal)
        #expect(try again.appliedMigrations() == ["v1-events", "v1-tokens", "v2-deliveries", "v3-gates", "v4-datasets", "v5-web-identities", "v6-event-time-given", "v7-deliveries-by-event", "v8-leases", "v9-drop-deliveries-by-group", "v10-deliveries-retried-at", "v11-runs-in-arrival-order", "v12-receiver-holds", "v13-runs-by-status", "v14-deliveries-by-fallback-of"])
        #expect(try again.pool.write { try Int.fetchOne($0, sql: "PRAGMA synchronous") } == 1)
    }

    /// v11 moves runs into a rowid table: runs summarised before it are read and updated
    /// after it as before, found by run alone too, and a run name in two pipelines stays two runs.
    @Test func runsSurviveTheMoveToArrivalOrder() async throws {
        let path = tempPath()
        defer { removeDatabases(path) }
        do {
            let pool = try DatabasePool(path: path)
            try GatehouseDatabase.migrator.migrate(pool, upTo: "v10-deliveries-retried-at")
            try await pool.write { db in
                try db.execute(sql: """
                    INSERT INTO runs (pipeline, run, status, failed_step, started_at, ended_at, last_event_at, lifecycle_at, event_count, counts)
                    VALUES ('p', 'r1', 'failed', 'fit', 1000, 2000, 2000, 2000, 2, '{"run.failed":1,"run.started":1}'),
                           ('q', 'r1', 'running', NULL, 1500, NULL, 1500, 1500, 1, '{"run.started":1}')
                    """)
            }
        }
        let database = try GatehouseDatabase(path: path)
        #expect(try database.appliedMigrations().contains("v11-runs-in-arrival-order"))
        let indexes = try await database.pool.read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='runs' ORDER BY name") }
        #expect(indexes == ["runs_by_key", "runs_by_pipeline", "runs_by_recency", "runs_by_status"])
        // Every form of the runs listing reads an index in the order it shows: no scan of the
        // table, no sort of a pipeline's runs (each CI job is a run: they pile up).
        for (pipeline, status) in [(false, false), (true, false), (false, true), (true, true)] {
            var values: [any DatabaseValueConvertible] = []
            if pipeline { values.append("p") }
            if status { values.append("failed") }
            values.append(10)
            let arguments = try #require(StatementArguments(values))
            let plan = try await database.pool.read { db in
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + EventLog.runsQuery(pipeline: pipeline, status: status), arguments: arguments)
                    .map { $0["detail"] as String }
            }
            // Filtered by pipeline or status: a search of those entries, not a walk of every
            // run's in order of recency (a status alone walked it until a page of matches
            // turned up: 65 ms at 300,000 runs with rare failures); unfiltered: that walk,
            // stopping at the limit.
            #expect(plan.allSatisfy { $0.hasPrefix(pipeline || status ? "SEARCH" : "SCAN") && $0.contains("USING INDEX") && !$0.contains("TEMP B-TREE") }, "\(pipeline) \(status): \(plan)")
        }
        let log = EventLog(database: database, bus: Bus())
        let (moved, _) = try #require(try await log.run("r1", pipeline: "p"))
        #expect(moved.status == .failed && moved.failedStep == "fit" && moved.eventCount == 2 && moved.counts == ["run.failed": 1, "run.started": 1])
        // A later event folds into the moved row (the upsert's conflict target still holds).
        _ = try await log.append([Event(id: "e3", type: "run.started", pipeline: "p", run: "r1", time: Timestamp(milliseconds: 3000))])
        let (updated, _) = try #require(try await log.run("r1", pipeline: "p"))
        #expect(updated.status == .running && updated.eventCount == 3 && updated.startedAt.milliseconds == 1000)
        #expect(try await log.runs(pipeline: nil, status: nil, limit: 10).count == 2)
        // By run alone: the most recent of the pipelines that have it.
        #expect(try await log.run("r1", pipeline: nil)?.0.pipeline == "p")
        #expect(try await log.run("r1", pipeline: "q")?.0.status == .running)
    }

    @Test func createsTheDatabaseFolder() throws {
        let dir = NSTemporaryDirectory() + "gatehouse-nested-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try GatehouseDatabase(path: dir + "/a/b/g.db")
        #expect(FileManager.default.fileExists(atPath: dir + "/a/b/g.db"))
    }
}

/// The writer's WAL frames go to the file a commit at a time (WALWriteCoalescing.c), and what
/// reaches the file is the WAL SQLite meant to write.
struct WALCoalescingTests {
    @Test func aCommitsFramesLeaveInAFewWritesAndTheWALRecoversWhole() async throws {
        let path = tempPath()
        let copy = tempPath()
        defer { removeDatabases(path, copy) }
        let database = try GatehouseDatabase(path: path)
        let log = EventLog(database: database, bus: Bus())
        let before = try #require(try database.coalescedWALWrites())
        _ = try await log.append([event("one")])
        // ~3 MB of WAL in one commit: more than the VFS buffers (1 MiB) and than the platform
        // VFS takes in one write (128 KiB), short of an automatic checkpoint (4,000 pages).
        _ = try await log.append((0..<2500).map { i in
            var e = event("e\(i)", type: "run.started", pipeline: "p\(i % 7)", run: "run-\(i)")
            e.summary = String(repeating: "s", count: 400)
            return e
        })
        let after = try #require(try database.coalescedWALWrites())
        let asked = after.asked - before.asked
        let made = after.made - before.made
        #expect(made > 0 && asked > 20 * made, "\(asked) frame writes asked, \(made) made")
        // Readers, on their own connections, see every event.
        #expect(try await log.count() == 2501)
        // A copy of the files taken with the writer still open is recovered from its WAL (SQLite
        // checks every frame's checksum then and stops at the first bad one).
        let walSize = try #require(try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int)
        #expect(walSize > 1_200_000 && walSize < 4000 * 4120, "\(walSize)")
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        try FileManager.default.copyItem(atPath: path + "-wal", toPath: copy + "-wal")
        let recovered = EventLog(database: try GatehouseDatabase(path: copy), bus: Bus())
        #expect(try await recovered.count() == 2501)
        #expect(try await recovered.runs(pipeline: "p3", status: nil, limit: 1000).count == 357)
    }

    /// A WAL write that fails (the file-size limit, as a full disk would) ends as it does in
    /// plain SQLite: the commit fails at NORMAL as at FULL, frames a transaction spilled are not
    /// lost to a failed read, and a rollback still releases the write lock. Sources/VFSErrorCheck
    /// runs each in a process of its own (a file-size limit is the whole process's).
    @Test func writeErrorsThroughTheVFSEndAsInPlainSQLite() throws {
        let exe = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        let check = exe.deletingLastPathComponent().appendingPathComponent("VFSErrorCheck").path
        let scratch = NSTemporaryDirectory() + "gatehouse-vfs-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: check)
        process.arguments = [scratch]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(text)")
        #expect(text.components(separatedBy: "\n").filter { $0.hasPrefix("ok") }.count == 4, "\(text)")
    }

    /// Relaxed commits (the writer's housekeeping) run at synchronous=NORMAL; a `normal` store's
    /// every commit does. Their frames are coalesced and recover the same.
    @Test func atNormalDurabilityTooTheWritesAreCoalescedAndRecover() async throws {
        let path = tempPath()
        let copy = tempPath()
        defer { removeDatabases(path, copy) }
        let database = try GatehouseDatabase(path: path, durability: .normal)
        let log = EventLog(database: database, bus: Bus())
        _ = try await log.append((0..<50).map { event("e\($0)", run: "run-\($0)") })
        let writes = try #require(try database.coalescedWALWrites())
        #expect(writes.made > 0 && writes.asked > 10 * writes.made, "\(writes.asked) frame writes asked, \(writes.made) made")
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        try FileManager.default.copyItem(atPath: path + "-wal", toPath: copy + "-wal")
        #expect(try await EventLog(database: try GatehouseDatabase(path: copy), bus: Bus()).count() == 50)
    }
}

struct EventLogTests {
    @Test func appendsReadsAndDetectsDuplicates() async throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let log = EventLog(database: try GatehouseDatabase(path: path), bus: Bus())
        var e = event("a")
        e.labels = [("team", "ml")]
        e.attributes = JSONObject([("n", .number("1"))])
        let first = try await log.append([e, event("b")])
        #expect(first == AppendOutcome(ids: ["a", "b"], accepted: 2, duplicates: 0, lastCursor: 2))
        let second = try await log.append([event("b"), event("c"), event("c")])
        #expect(second.ids == ["b", "c", "c"] && second.accepted == 1 && second.duplicates == 2)
        let stored = try await log.events(EventFilter())
        #expect(stored.map(\.event.id) == ["a", "b", "c"])
        #expect(stored[0].event == e)
        // Cursors only grow (a refused duplicate may leave a gap: AUTOINCREMENT never reuses).
        #expect(stored.map(\.cursor) == stored.map(\.cursor).sorted() && Set(stored.map(\.cursor)).count == 3)
        #expect(second.lastCursor == stored[2].cursor)
        #expect(try await log.events(EventFilter(after: 1, limit: 1)).map(\.event.id) == ["b"])
    }

    /// A commit hands its new deliveries over exactly as a read of the outbox returns them
    /// (every kind of column, a NUL in free text), in commit order, on both stores; a commit
    /// that also created a `resolved` message hands nothing (those are found by reading). And
    /// the hand-off is called the same way on the 300th commit as on the first: a closure kept
    /// in a `Mutex` was re-wrapped at each call, deepening the stack (and the CPU) per commit.
    @Test func committedDeliveriesAreHandedOverAsTheOutboxReadsThem() async throws {
        var planned = PlannedDelivery(receiver: "hook", route: "r", groupKey: "", groupWait: .seconds(0), groupInterval: .seconds(300), fallback: "spare", alone: true)
        planned.sendResolved = true
        let hook = planned
        let planner: @Sendable (Event) -> DeliveryPlan = { event in
            var plan = hook
            plan.groupKey = "g|" + event.id
            return DeliveryPlan(deliveries: event.type == "run.succeeded" ? [] : [plan], isFailure: event.type == "run.failed", resolvesFailures: event.type == "run.succeeded")
        }
        let log = EventLog(database: try openTestStore(freshStoreLocation("handoff")), bus: Bus(), planner: planner)
        let taken = Mutex<[[(Delivery, StoredEvent)]]>([])
        let depths = Mutex<[Int]>([])
        log.handDeliveries { rows, _, _ in
            let depth = Thread.callStackSymbols.count
            depths.withLock { $0.append(depth) }
            taken.withLock { $0.append(rows) }
            return true
        }
        let rich = Event(
            id: "rich", type: "run.failed", pipeline: "p", run: "r", step: "s", severity: .critical, summary: "a\u{0}b", details: "d",
            labels: [("team", "ml"), ("env", "prod")], attributes: JSONObject([("auc", .number("0.91")), ("n", .int(3)), ("x", .array([.null, .bool(true)]))]),
            url: "https://ci.example/1", time: Timestamp(milliseconds: 1_795_946_400_000))
        _ = try await log.append([rich, event("plain")])
        let outbox = SQLOutbox(log: log)
        let read = try await outbox.due(receiver: "hook", now: .now().adding(milliseconds: 1000), limit: 10, claim: nil)
        var handed = taken.withLock { $0 }
        for _ in 0..<3000 where handed.isEmpty {  // up to 30 s on a starved machine
            try await Task.sleep(for: .milliseconds(10))
            handed = taken.withLock { $0 }
        }
        #expect(handed.count == 1)
        #expect(handed.first?.map(\.0) == read.map(\.0))
        #expect(handed.first?.map(\.1) == read.map(\.1))
        #expect(read.count == 2 && read.first?.1.event.summary == "a\u{0}b")

        // A run that succeeds resolves the failing pipeline: a `resolved` delivery is created
        // outside the events' own plans, so that commit hands nothing over.
        _ = try await log.append([Event(id: "ok", type: "run.succeeded", pipeline: "p", run: "r2", time: Timestamp(milliseconds: 1_795_946_400_000))])
        #expect(taken.withLock { $0.count } == 1)
        #expect(try await outbox.due(receiver: "hook", now: .now().adding(milliseconds: 1000), limit: 10, claim: nil).contains { $0.0.kind == "resolved" })

        for n in 0..<300 { _ = try await log.append([event("d\(n)")]) }
        // (The hand-off follows the answers to the commit's requests.)
        var seen = depths.withLock { $0 }
        for _ in 0..<3000 where seen.count < 301 {
            try await Task.sleep(for: .milliseconds(10))
            seen = depths.withLock { $0 }
        }
        #expect(seen.count == 301 && seen.last == seen[1], "\(seen.count) calls; stack depth \(seen[1]) at the second hand-off, \(seen.last ?? 0) at the last")
    }

    /// A request's events go in as few statements as 32, 16 … rows allow: across those
    /// statements they keep their order, known ids are duplicates, an id repeated within the
    /// request counts once, and a reused id with other content refuses the whole request.
    @Test func aLargeBatchIsInsertedInOrderAcrossStatements() async throws {
        let log = EventLog(database: try openTestStore(freshStoreLocation("rows")), bus: Bus())
        _ = try await log.append((0..<5).map { event("k\($0)") })
        // 61 = 32 + 16 + 8 + 4 + 1 rows: the stored k0…k4 again, n3 again at 40 (another statement).
        let batch = (0..<61).map { i in i == 40 ? event("n3") : i % 12 == 6 ? event("k\(i / 12)") : event("n\(i)") }
        let outcome = try await log.append(batch)
        #expect(outcome.ids == batch.map(\.id))
        #expect(outcome.accepted == 55 && outcome.duplicates == 6)
        let stored = try await log.events(EventFilter(limit: 1000))
        let fresh = batch.enumerated().filter { $0.offset != 40 && !$0.element.id.hasPrefix("k") }.map(\.element.id)
        #expect(stored.map(\.event.id) == (0..<5).map { "k\($0)" } + fresh)
        #expect(stored.map(\.cursor) == stored.map(\.cursor).sorted())
        #expect(outcome.lastCursor == stored.last?.cursor)

        let conflict = (0..<20).map { event("m\($0)") } + [event("n5", type: "step.failed")]
        await #expect(throws: Problem.self) { try await log.append(conflict) }
        #expect(try await log.count() == stored.count)

        // Runs likewise: 37 in one request (32 + 4 + 1 rows), three of them known already.
        _ = try await log.append((0..<3).map { event("s\($0)", type: "run.started", run: "x\($0)") })
        _ = try await log.append((0..<40).map { event("t\($0)", type: $0 < 37 ? "run.started" : "run.failed", run: "x\($0 % 37)") })
        let runs = Dictionary(uniqueKeysWithValues: try await log.runs(pipeline: "p", status: nil, limit: 100).map { ($0.run, $0) })
        #expect(runs.count == 38)
        for i in 0..<37 {
            #expect(runs["x\(i)"]?.eventCount == (i < 3 ? 3 : 1), "x\(i)")
            #expect(runs["x\(i)"]?.status == (i < 3 ? .failed : .running), "x\(i)")
        }
    }

    /// Ids and runs are told apart by their bytes, as the databases do: "caf\u{E9}" and
    /// "cafe\u{301}" (equal as Swift strings) are two events, and two runs, in one request.
    @Test func idsAndRunsThatSwiftCallsEqualAreKeptApart() async throws {
        let log = EventLog(database: try openTestStore(freshStoreLocation("bytes")), bus: Bus())
        let composed = "caf\u{E9}", decomposed = "cafe\u{301}"
        #expect(composed == decomposed)
        let outcome = try await log.append([event(composed, run: composed), event(decomposed, run: decomposed)])
        #expect(outcome.accepted == 2 && outcome.duplicates == 0)
        let stored = try await log.events(EventFilter())
        #expect(stored.map { Array($0.event.id.utf8) } == [Array(composed.utf8), Array(decomposed.utf8)])
        let runs = try await log.runs(pipeline: "p", status: nil, limit: 10)
        #expect(runs.count == 2 && runs.allSatisfy { $0.eventCount == 1 })
        // The request's own check for an id repeated with other content goes by bytes too.
        let intake = EventIntake(maxItems: 10)
        let body = #"[{"id":"caf\u00e9","type":"a.b","pipeline":"p"},{"id":"cafe\u0301","type":"c.d","pipeline":"p"}]"#
        #expect((try? intake.events(from: Array(body.utf8), mediaType: .json).get())?.count == 2)
    }

    @Test func concurrentWritersShareCommitsAndNeverDuplicate() async throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let bus = Bus()
        let log = EventLog(database: try GatehouseDatabase(path: path), bus: bus)
        let subscriber = bus.subscribe()
        // 400 requests from 40 concurrent writers; every event (same id, same content) is sent
        // by two different writers.
        let requests = 400
        let results = try await withThrowingTaskGroup(of: AppendOutcome.self) { group in
            for writer in 0..<40 {
                group.addTask {
                    var outcomes = AppendOutcome(ids: [], accepted: 0, duplicates: 0)
                    for i in 0..<(requests / 40) {
                        let id = "e-\((writer / 2) * 100 + i)"
                        let o = try await log.append([event(id, run: "r\((writer / 2) % 4)")])
                        outcomes.accepted += o.accepted
                        outcomes.duplicates += o.duplicates
                    }
                    return outcomes
                }
            }
            var all: [AppendOutcome] = []
            for try await o in group { all.append(o) }
            return all
        }
        #expect(results.map(\.accepted).reduce(0, +) == requests / 2)
        #expect(results.map(\.duplicates).reduce(0, +) == requests / 2)
        #expect(try await log.count() == requests / 2)
        // Group commit: fewer transactions than requests.
        #expect(log.commitCount < requests)
        // The bus announced the end of the log.
        // (A request is answered before its commit is published, so wait for the last notice
        // rather than for a quiet moment.)
        let end = try await log.lastCursor()
        var last: Int64 = 0
        while last < end, let m = await subscriber.next(timeout: .seconds(30)) {
            if case .eventsCommitted(let c) = m { last = max(last, c) }
        }
        #expect(last == end)
        // Runs counted every event exactly once.
        let runs = try await log.runs(pipeline: "p", status: nil, limit: 10)
        #expect(runs.map(\.eventCount).reduce(0, +) == requests / 2)
    }

    @Test func oneFailingRequestDoesNotFailItsNeighbours() async throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try GatehouseDatabase(path: path)
        // A trigger that refuses one pipeline stands in for a failure inside one request.
        try await database.pool.write { db in
            try db.execute(sql: "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.pipeline = 'poison' BEGIN SELECT RAISE(ABORT, 'refused'); END")
        }
        let log = EventLog(database: database, bus: Bus())
        let outcomes = await withTaskGroup(of: (String, Bool).self) { group in
            for i in 0..<30 {
                group.addTask {
                    let poisoned = i % 3 == 0
                    let batch = [event("ok-\(i)", pipeline: "fine"), event("x-\(i)", pipeline: poisoned ? "poison" : "fine")]
                    return ("\(i)", (try? await log.append(batch)) != nil)
                }
            }
            var result: [(String, Bool)] = []
            for await o in group { result.append(o) }
            return result
        }
        #expect(outcomes.filter { !$0.1 }.count == 10)
        // Poisoned requests left nothing behind (atomic), the others are whole.
        let stored = Set(try await log.events(EventFilter(limit: 1000)).map(\.event.id))
        #expect(stored.count == 40)
        for i in 0..<30 where i % 3 == 0 { #expect(!stored.contains("ok-\(i)")) }
    }

    @Test func aCommitSQLiteRolledBackByItselfFailsWhole() async throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try GatehouseDatabase(path: path)
        // RAISE(ROLLBACK) ends the whole transaction, as SQLITE_IOERR or SQLITE_FULL may: no
        // request of that group commit may then be committed, and none reported committed.
        try await database.pool.write { db in
            try db.execute(sql: "CREATE TRIGGER crash BEFORE INSERT ON events WHEN NEW.pipeline = 'rollback' BEGIN SELECT RAISE(ROLLBACK, 'rolled back'); END")
        }
        let log = EventLog(database: database, bus: Bus())
        // Waves of concurrent requests (so they share commits): batches, each in a savepoint,
        // and single events, in none; in every other wave one request rolls back.
        var outcomes: [(Int, Bool)] = []
        for wave in 0..<8 {
            outcomes += await withTaskGroup(of: (Int, Bool).self) { group in
                for i in wave * 8..<(wave + 1) * 8 {
                    let rollback = wave % 2 == 1 && i % 8 == 3
                    group.addTask {
                        let batch = i % 2 == 0
                            ? [event("a-\(i)", run: "r\(i % 5)"), event("b-\(i)", run: "r\(i % 5)")]
                            : [event("a-\(i)", pipeline: rollback ? "rollback" : "p", run: "r\(i % 5)")]
                        return (i, (try? await log.append(batch)) != nil)
                    }
                }
                var result: [(Int, Bool)] = []
                for await o in group { result.append(o) }
                return result
            }
        }
        let stored = Set(try await log.events(EventFilter(limit: 1000)).map(\.event.id))
        for (i, succeeded) in outcomes {
            #expect(stored.contains("a-\(i)") == succeeded, "request \(i): reported \(succeeded ? "committed" : "failed")")
        }
        #expect(outcomes.contains { $0.1 } && outcomes.contains { !$0.1 })
        // Runs count exactly the events that were committed.
        let runs = try await log.runs(pipeline: "p", status: nil, limit: 10)
        #expect(runs.map(\.eventCount).reduce(0, +) == stored.count)
    }

    /// SQLite rolls the whole transaction back when a statement meets a full disk: every
    /// request of that group commit must then be told the disk is full (a `503` asking for a
    /// retry), not a bare abort (a `500`), and none may be stored.
    @Test func aFullDiskIsReportedAsFullToEveryRequestOfAGroupCommit() async throws {
        let path = tempPath()
        defer { removeDatabases(path) }
        let database = try GatehouseDatabase(path: path)
        let log = EventLog(database: database, bus: Bus())
        _ = try await log.append([event("first")])
        // The writer may not grow the file: a write needing a new page fails with SQLITE_FULL,
        // as on a full disk.
        try await database.pool.writeWithoutTransaction { db in
            let pages = try Int.fetchOne(db, sql: "PRAGMA page_count")!
            _ = try Int.fetchOne(db, sql: "PRAGMA max_page_count = \(pages)")
        }
        let failures = await withTaskGroup(of: String?.self) { group in
            for i in 0..<16 {
                group.addTask {
                    var e = event("big-\(i)", run: "r\(i)")
                    e.details = String(repeating: "x", count: 20_000)
                    do {
                        _ = try await log.append([e])
                        return "big-\(i) was stored"
                    } catch {
                        return isStorageFull(error) ? nil : "big-\(i): \(error)"
                    }
                }
            }
            var all: [String] = []
            for await failure in group { if let failure { all.append(failure) } }
            return all
        }
        #expect(failures.isEmpty, "\(failures)")
        #expect(try await log.count() == 1)
    }

    @Test func aReusedIdFailsAloneInItsGroupCommit() async throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let log = EventLog(database: try GatehouseDatabase(path: path), bus: Bus())
        _ = try await log.append([event("taken", pipeline: "p")])
        // Each wave shares commits: single events, batches, and one id reused with other content.
        var refused = 0
        for wave in 0..<6 {
            refused += await withTaskGroup(of: Int.self) { group in
                for i in 0..<8 {
                    group.addTask {
                        let batch = i == 5 ? [event("taken", pipeline: "other")]
                            : i % 2 == 0 ? [event("w\(wave)-\(i)-a"), event("w\(wave)-\(i)-b")] : [event("w\(wave)-\(i)")]
                        do {
                            _ = try await log.append(batch)
                            return 0
                        } catch let problem as Problem where problem.status == 409 {
                            return 1
                        } catch {
                            return 100
                        }
                    }
                }
                var sum = 0
                for await n in group { sum += n }
                return sum
            }
        }
        #expect(refused == 6)
        #expect(try await log.count() == 1 + 6 * (4 * 2 + 3))
    }

    @Test func runSummariesFollowTheirEvents() async throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let log = EventLog(database: try GatehouseDatabase(path: path), bus: Bus())
        _ = try await log.append([event("1", type: "run.started"), event("2", type: "step.failed"), event("3", run: nil)])
        _ = try await log.append([event("4", type: "run.failed"), event("5", type: "run.started", pipeline: "other")])
        let (summary, timeline) = try #require(try await log.run("r1", pipeline: "p"))
        #expect(summary.status == .failed)
        #expect(summary.eventCount == 3)
        #expect(timeline.map(\.event.id) == ["1", "2", "4"])
        #expect(try await log.runs(pipeline: nil, status: nil, limit: 10).count == 2)
        #expect(try await log.run("nope", pipeline: nil) == nil)
    }
}

struct TokenStoreTests {
    @Test func createVerifyRevoke() async throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = SQLTokenStore(database: try GatehouseDatabase(path: path))
        #expect(try store.activeCountNow() == 0)
        let (token, secret) = try store.create(name: "ci", scopes: [.eventsWrite])
        #expect(secret.hasPrefix("gth_") && secret.count == 36)
        #expect(try await store.verify(secret: secret)?.id == token.id)
        #expect(try await store.verify(secret: secret + "x") == nil)
        let stored = try await store.database.read { try $0.values(String.self, "SELECT hash FROM tokens") }
        #expect(stored == [AccessToken.hash(secret)])
        #expect(try store.revoke("ci").map(\.id) == [token.id])
        #expect(try await store.verify(secret: secret) == nil)
        #expect(try store.activeCountNow() == 0)
        #expect(try store.list().first?.revokedAt != nil)
    }

    /// A live name is taken once, also by creations racing from two processes (two handles on
    /// the file); a revoked token's name is free again.
    @Test func aLiveNameIsTakenOnceEvenByCreationsAtTheSameTime() async throws {
        let path = tempPath()
        defer { removeDatabases(path) }
        let stores = [SQLTokenStore(database: try GatehouseDatabase(path: path)), SQLTokenStore(database: try GatehouseDatabase(path: path))]
        let outcomes = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 16) { i in
            let outcome: String
            do {
                outcome = try stores[i % 2].create(name: "ci", scopes: [.eventsWrite]).0.id
            } catch let taken as TokenNameTaken {
                outcome = "taken by " + taken.existing.id
            } catch {
                outcome = "error \(error)"
            }
            outcomes.withLock { $0.append(outcome) }
        }
        let all = outcomes.withLock { $0 }
        let created = all.filter { $0.hasPrefix("tok_") }
        #expect(created.count == 1, "\(all)")
        #expect(all.filter { $0 == "taken by " + (created.first ?? "") }.count == 15, "\(all)")
        #expect(try stores[0].list().filter { $0.name == "ci" }.count == 1)
        _ = try stores[1].revoke("ci")
        #expect(try stores[0].create(name: "ci", scopes: [.eventsRead]).0.name == "ci")
    }
}

struct OutboxTests {
    @Test func deliveriesJoinTheirGroupAndIdleGroupsAreForgotten() async throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try GatehouseDatabase(path: path)
        let clock = Timestamp(milliseconds: 1_000_000)
        let log = EventLog(database: database, bus: Bus(), clock: { clock }) { event in
            DeliveryPlan(deliveries: [
                PlannedDelivery(receiver: "team", route: "root", groupKey: "root|run=\(event.run ?? "")", groupWait: .seconds(30), groupInterval: .seconds(300), fallback: nil),
                PlannedDelivery(receiver: "audit", route: "root.0", groupKey: "root.0|\(event.id)", groupWait: .seconds(0), groupInterval: .seconds(300), fallback: nil, alone: true)])
        }
        _ = try await log.append([event("a", run: "r1"), event("b", run: "r1"), event("c", run: "r2")])
        let outbox = SQLOutbox(log: log)
        let team = try await outbox.list(state: .pending, receiver: "team", limit: 10)
        #expect(team.count == 3)
        // A new group waits group_wait; later members join its pending flush.
        #expect(Set(team.map(\.next_attempt_at)) == [1_030_000])
        #expect(try await outbox.list(state: .pending, receiver: "audit", limit: 10).allSatisfy { $0.next_attempt_at == 1_000_000 })
        // Alone deliveries keep no group.
        #expect(try await database.pool.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM alert_groups") } == 2)

        // r1 flushes at 1,030,000: its next event waits for group_interval after that.
        let r1 = team.filter { $0.group_key == "root|run=r1" }
        try await outbox.record(r1.map { var d = $0; d.state = .delivered; return d }, flushedGroup: ("team", "root|run=r1", Timestamp(milliseconds: 1_030_000)))
        let later = EventLog(database: database, bus: Bus(), clock: { Timestamp(milliseconds: 1_100_000) }) { event in
            DeliveryPlan(deliveries: [PlannedDelivery(receiver: "team", route: "root", groupKey: "root|run=\(event.run ?? "")", groupWait: .seconds(30), groupInterval: .seconds(300), fallback: nil)])
        }
        _ = try await later.append([event("d", run: "r1")])
        #expect(try await outbox.list(state: .pending, receiver: "team", limit: 10).first { $0.group_key == "root|run=r1" }?.next_attempt_at == 1_330_000)

        // Idle groups past their interval are forgotten; groups with a flush pending are kept.
        #expect(try await outbox.forgetIdleGroups(now: Timestamp(milliseconds: 2_000_000)) == 0)
        try await outbox.record([], flushedGroup: ("team", "root|run=r1", Timestamp(milliseconds: 1_330_000)))
        #expect(try await outbox.forgetIdleGroups(now: Timestamp(milliseconds: 1_700_000)) == 1)
        #expect(try await database.pool.read { try String.fetchAll($0, sql: "SELECT group_key FROM alert_groups") } == ["root|run=r2"])
    }

    /// A receiver taken out of the config leaves nothing behind that would grow: its pending
    /// deliveries end dead, and its groups (one with a flush still to come is never swept as
    /// idle) and failing pipelines (reminded of every repeat_interval, for ever) are forgotten.
    /// Reminders go only to configured receivers. (A hostile test saw 700 reminders pile up
    /// for a removed receiver in 80 s.)
    @Test func aRemovedReceiverLeavesNoGroupsFailuresOrReminders() async throws {
        let path = tempPath()
        defer { removeDatabases(path) }
        let database = try GatehouseDatabase(path: path)
        let log = EventLog(database: database, bus: Bus(), clock: { Timestamp(milliseconds: 1_000_000) }) { event in
            var plans: [PlannedDelivery] = []
            for receiver in ["kept", "gone"] {
                var plan = PlannedDelivery(receiver: receiver, route: "root", groupKey: "root|\(event.pipeline)", groupWait: .seconds(20), groupInterval: .seconds(2), fallback: nil)
                plan.repeatInterval = .seconds(5)
                plans.append(plan)
            }
            return DeliveryPlan(deliveries: plans, isFailure: true)
        }
        _ = try await log.append([event("a", pipeline: "p1"), event("b", pipeline: "p2")])
        let outbox = SQLOutbox(log: log)
        func count(_ table: String, _ receiver: String) async throws -> Int {
            try await database.pool.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM \(table) WHERE receiver = ?", arguments: [receiver]) ?? 0 }
        }
        #expect(try await count("alert_groups", "gone") == 2)
        #expect(try await count("failing_pipelines", "gone") == 2)
        // Reminders fall due (1,020,000 + 5 s): only the configured receiver gets them.
        let due = Timestamp(milliseconds: 1_026_000)
        #expect(try await outbox.nextRepeatTime(receivers: ["kept"]) == Timestamp(milliseconds: 1_025_000))
        #expect(try await outbox.fireRepeats(now: due, receivers: ["kept"]) == 2)
        #expect(try await outbox.list(state: .pending, receiver: "gone", limit: 10).allSatisfy { $0.kind == "event" })
        #expect(try await outbox.list(state: .pending, receiver: "kept", limit: 10).filter { $0.kind == "repeat" }.count == 2)
        #expect(try await outbox.fireRepeats(now: due, receivers: []) == 0)
        // At start-up without it: its deliveries end, its groups and failures are forgotten.
        #expect(try await outbox.killOrphans(known: ["kept"], now: due) == 2)
        #expect(try await outbox.list(state: .dead, receiver: "gone", limit: 10).count == 2)
        #expect(try await count("alert_groups", "gone") == 0)
        #expect(try await count("failing_pipelines", "gone") == 0)
        #expect(try await count("alert_groups", "kept") == 2)
        #expect(try await count("failing_pipelines", "kept") == 2)
    }

    /// A receiver's hold is kept until it is ok again, and forgotten with the receiver.
    @Test func receiverHoldsAreKeptReplacedAndForgotten() async throws {
        let path = tempPath()
        defer { removeDatabases(path) }
        let log = EventLog(database: try GatehouseDatabase(path: path), bus: Bus())
        let outbox = SQLOutbox(log: log)
        func save(_ hold: ReceiverHold?, _ receiver: String) async throws {
            try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
                outbox.saveHold(hold, receiver: receiver) { error in if let error { done.resume(throwing: error) } else { done.resume() } }
            }
        }
        #expect(try await outbox.holds().isEmpty)
        let paused = ReceiverHold(state: "paused_by_rate_limit", until: Timestamp(milliseconds: 5_000), consecutiveFailures: 1)
        try await save(paused, "slack")
        try await save(ReceiverHold(state: "backing_off", until: Timestamp(milliseconds: 2_000), consecutiveFailures: 3), "gone")
        let longer = ReceiverHold(state: "backing_off", until: Timestamp(milliseconds: 9_000), consecutiveFailures: 2)
        try await save(longer, "slack")
        #expect(try await outbox.holds() == ["slack": longer, "gone": ReceiverHold(state: "backing_off", until: Timestamp(milliseconds: 2_000), consecutiveFailures: 3)])
        // Start-up without `gone`: its hold goes with it.
        _ = try await outbox.killOrphans(known: ["slack"], now: Timestamp(milliseconds: 10_000))
        #expect(try await outbox.holds() == ["slack": longer])
        // Ok again: nothing kept.
        try await save(nil, "slack")
        #expect(try await outbox.holds().isEmpty)
    }

    /// Inhibition's look-back: of a pipeline's (or run's) last `limit` events, those received
    /// in the window, newest first; what is older than the window is not returned.
    @Test func recentEventsAreTheLastOnesReceivedInTheWindow() async throws {
        let path = tempPath()
        defer { removeDatabases(path) }
        let database = try GatehouseDatabase(path: path)
        for (at, ids) in [(1_000_000, ["old1", "old2", "old3"]), (5_000_000, ["new1", "new2"])] {
            let log = EventLog(database: database, bus: Bus(), clock: { Timestamp(milliseconds: Int64(at)) })
            _ = try await log.append(ids.map { event($0, pipeline: "p", run: $0.hasSuffix("2") ? "r2" : "r1") })
            _ = try await log.append([event("other-" + ids[0], pipeline: "q", run: "r1")])
        }
        let outbox = SQLOutbox(log: EventLog(database: database, bus: Bus()))
        let window = Timestamp(milliseconds: 4_000_000)
        #expect(try await outbox.recentEvents(pipeline: "p", run: nil, since: window, limit: 200).map(\.id) == ["new2", "new1"])
        #expect(try await outbox.recentEvents(pipeline: "p", run: "r2", since: window, limit: 200).map(\.id) == ["new2"])
        #expect(try await outbox.recentEvents(pipeline: "p", run: "r1", since: Timestamp(milliseconds: 0), limit: 200).map(\.id) == ["new1", "old3", "old1"])
        #expect(try await outbox.recentEvents(pipeline: "p", run: nil, since: Timestamp(milliseconds: 0), limit: 2).map(\.id) == ["new2", "new1"])
        #expect(try await outbox.recentEvents(pipeline: "p", run: nil, since: Timestamp(milliseconds: 6_000_000), limit: 200).isEmpty)
    }

    /// `GET /v1/deliveries` without a filter: newest first, as with one.
    @Test func unfilteredDeliveriesAreNewestFirst() async throws {
        let path = tempPath()
        defer { removeDatabases(path) }
        let database = try GatehouseDatabase(path: path)
        for (i, id) in ["a", "b", "c"].enumerated() {
            let log = EventLog(database: database, bus: Bus(), clock: { Timestamp(milliseconds: 1_000_000 + Int64(i) * 1000) }) { event in
                DeliveryPlan(deliveries: [PlannedDelivery(receiver: i == 1 ? "audit" : "hook", route: "root", groupKey: "root|\(event.id)", groupWait: .seconds(0), groupInterval: .seconds(60), fallback: nil, alone: true)])
            }
            _ = try await log.append([event(id)])
        }
        let outbox = SQLOutbox(log: EventLog(database: database, bus: Bus()))
        let all = try await outbox.list(state: nil, receiver: nil, limit: 10)
        #expect(all.map(\.created_at) == [1_002_000, 1_001_000, 1_000_000])
        #expect(try await outbox.list(state: nil, receiver: nil, limit: 2).map(\.id) == Array(all.prefix(2).map(\.id)))
        #expect(try await outbox.list(state: .pending, receiver: "hook", limit: 10).map(\.created_at) == [1_002_000, 1_000_000])
    }

    /// When a receiver comes back, the deliveries that failed with it go again at once, in the
    /// order they were created; one that kept failing keeps its own back-off.
    @Test func aRecoveredReceiversBacklogIsDueAgainOldestFirst() async throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try GatehouseDatabase(path: path)
        var clock = Timestamp(milliseconds: 1_000_000)
        for id in ["a", "b", "c", "d"] {
            let at = clock
            let log = EventLog(database: database, bus: Bus(), clock: { at }) { event in
                DeliveryPlan(deliveries: [PlannedDelivery(receiver: "hook", route: "root", groupKey: "root|\(event.id)", groupWait: .seconds(0), groupInterval: .seconds(60), fallback: nil, alone: true)])
            }
            _ = try await log.append([event(id)])
            clock = clock.adding(milliseconds: 1000)
        }
        let outbox = SQLOutbox(log: EventLog(database: database, bus: Bus()))
        var rows = try await outbox.list(state: .pending, receiver: "hook", limit: 10).sorted { $0.created_at < $1.created_at }
        // a and b failed with the receiver and were put off; c failed three times already.
        for (i, attempts, next) in [(0, 1, 9_000_000), (1, 2, 8_000_000), (2, 3, 7_000_000)] {
            rows[i].state = .failed
            rows[i].attempts = attempts
            rows[i].next_attempt_at = Int64(next)
        }
        try await outbox.record(Array(rows.prefix(3)))
        #expect(try await outbox.reviveBacklog(receiver: "hook") == 2)
        let due = try await outbox.due(receiver: "hook", now: Timestamp(milliseconds: 5_000_000), limit: 10).map(\.1.event.id)
        #expect(due == ["a", "b", "d"])
    }
}
