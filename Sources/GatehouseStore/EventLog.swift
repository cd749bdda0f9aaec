import Dispatch
import Foundation
import GatehouseCore
import Metrics
import Synchronization

/// What one append request got: its ids in order (a duplicate reports the id it repeated).
public struct AppendOutcome: Sendable, Equatable {
    public var ids: [String]
    public var accepted: Int
    public var duplicates: Int
    /// Cursor of the last event this request inserted, nil when all were duplicates.
    public var lastCursor: Int64?
}

public struct EventFilter: Sendable, Equatable {
    public var pipeline: String?
    public var run: String?
    public var types: [String] = []
    public var after: Int64 = 0
    public var limit: Int = 100
    /// The last `limit` matches, newest first (the console), instead of the first after `after`.
    public var newestFirst = false

    public init(pipeline: String? = nil, run: String? = nil, types: [String] = [], after: Int64 = 0, limit: Int = 100) {
        self.pipeline = pipeline
        self.run = run
        self.types = types
        self.after = after
        self.limit = limit
    }

    public func matches(_ event: Event) -> Bool {
        if let pipeline, event.pipeline != pipeline { return false }
        if let run, event.run != run { return false }
        if !types.isEmpty, !types.contains(event.type) { return false }
        return true
    }
}

/// The durable event log. `append` answers only after the events are committed; requests that
/// arrive while a commit is in flight wait for the next one and share it (group commit), so
/// load costs one fsync per commit, not one per request. Each request keeps its own
/// atomicity through a savepoint.
public final class EventLog: Sendable {
    public let database: any StoreDatabase
    public let bus: Bus
    /// The one writer: event appends, state changes and delivery outcomes share its group
    /// commits (two queues contended for SQLite's single writer, and each paid a transaction).
    private let committer = GroupCommitQueue<Item>(label: "gatehouse.commit")
    private let commitTimer = Metrics.Timer(label: "gatehouse_store_commit_duration_seconds", preferredDisplayUnit: .seconds)
    private let commitSize = Recorder(label: "gatehouse_store_commit_events", aggregate: true)
    private let ingested = Counter(label: "gatehouse_events_ingested_total")
    private let duplicated = Counter(label: "gatehouse_events_duplicate_total")
    private let clock: @Sendable () -> Timestamp
    /// Decides, inside the commit, which deliveries each new event causes, so an acknowledged
    /// event's deliveries are on disk with it.
    private let planner: (@Sendable (Event) -> DeliveryPlan)?
    private let commitCounter = Atomic<Int>(0)
    /// Transactions committed so far (tests use it to see group commit at work).
    public var commitCount: Int { commitCounter.load(ordering: .relaxed) }
    /// Boxed, as a closure in a `Mutex` must be (`Boxed`).
    private let handoff = Mutex<Boxed<DeliveryHandoff>?>(nil)

    /// Told, on the writer's thread after each commit of events and before the bus hears of
    /// it, every delivery the commit's events created, with their events, in commit order —
    /// exactly the rows a read of the outbox would return — and the commit's last cursor. It
    /// answers true when it took all of them (the dispatcher then has no need to read them
    /// back). Not called for a commit that created deliveries some other way (a `resolved`
    /// message): those are found by reading, as before. Must be quick, never blocking.
    public typealias DeliveryHandoff = @Sendable (_ rows: [(Delivery, StoredEvent)], _ lastCursor: Int64, _ now: Timestamp) -> Bool

    /// Sets (or, with nil, removes) the one taker of committed deliveries.
    public func handDeliveries(to taker: DeliveryHandoff?) {
        let box = taker.map { Boxed($0) }
        handoff.withLock { $0 = box }
    }

    /// The deliveries one commit's events created (see `DeliveryHandoff`). `complete` is
    /// false when the commit created deliveries that are not in `rows`.
    private struct Created {
        /// Whether anyone takes them (otherwise no rows are built).
        var collecting: Bool
        var rows: [(Delivery, StoredEvent)] = []
        var complete = true

        mutating func append(_ other: Created) {
            rows += other.rows
            complete = complete && other.complete
        }
    }

    private enum Item {
        case request(Request)
        case write(Write)
    }

    /// A write that rides with the next group commit and needs no fsync of its own (delivery
    /// outcomes: lost in a power cut, the delivery is sent again under the same webhook-id).
    private struct Write {
        var work: @Sendable (any SQLSession) throws -> Void
        /// Called on the writer's queue once committed (nil) or failed: quick, never blocking.
        var completion: @Sendable ((any Error)?) -> Void
    }

    private struct Request {
        var events: [Event]
        /// Aligned with `events` (or empty): their columns and plans, worked out before the
        /// commit on the caller's thread, so the one writer thread only binds and steps.
        var prepared: [Prepared] = []
        /// Aligned with `events` (or empty): what each new one causes in the same commit.
        var consequences: [EventConsequence?] = []
        /// Other writes that must commit with the events they cause (a gate closing and its
        /// `gate.*` event): runs first, inside the request's savepoint; its events are appended.
        var work: (@Sendable (any SQLSession) throws -> [Event])?
        /// Told the outcome once the commit ended, on the writer's thread: quick, never blocking.
        var finish: @Sendable (Result<AppendOutcome, any Error>) -> Void
    }

    public init(
        database: any StoreDatabase, bus: Bus, clock: @escaping @Sendable () -> Timestamp = { .now() },
        planner: (@Sendable (Event) -> DeliveryPlan)? = nil
    ) {
        self.database = database
        self.bus = bus
        self.clock = clock
        self.planner = planner
    }

    public func append(_ events: [Event]) async throws -> AppendOutcome {
        try await append(events, consequences: [])
    }

    public func append(_ events: [Event], consequences: [EventConsequence?]) async throws -> AppendOutcome {
        try await withCheckedThrowingContinuation { continuation in
            append(events, consequences: consequences) { continuation.resume(with: $0) }
        }
    }

    /// The same, for a caller that is not a task (the HTTP front end's fast path): `completion`
    /// is called on the writer's thread once the commit ended, and must be quick.
    public func append(
        _ events: [Event], consequences: [EventConsequence?] = [],
        completion: @escaping @Sendable (Result<AppendOutcome, any Error>) -> Void
    ) {
        let prepared = events.map(prepare)
        committer.submit(.request(Request(events: events, prepared: prepared, consequences: consequences, work: nil, finish: completion))) {
            self.commit($0)
        }
    }

    /// What the commit needs of an event that does not depend on the database: the values of
    /// its row but `received_at` (the commit's time, bound last) and the deliveries it causes.
    private struct Prepared {
        var columns: [SQLValue]
        var plan: DeliveryPlan?
    }

    private func prepare(_ event: Event) -> Prepared {
        var labels: SQLValue = .null
        if !event.labels.isEmpty {
            var object = JSONObject()
            for (k, v) in event.labels { object.append(k, .string(v)) }
            labels = .text(JSONValue.object(object).serialized())
        }
        let columns: [SQLValue] = [
            .text(event.id), .text(event.type), .text(event.pipeline), event.run.map(SQLValue.text) ?? .null,
            event.step.map(SQLValue.text) ?? .null, .text(event.severity.rawValue), event.summary.map(SQLValue.freeText) ?? .null,
            event.details.map(SQLValue.freeText) ?? .null, labels,
            event.attributes.map { .text(JSONValue.object($0).serialized()) } ?? .null, event.url.map(SQLValue.text) ?? .null,
            .int(event.time.milliseconds), .int(event.timeGiven ? 1 : 0),
        ]
        return Prepared(columns: columns, plan: planner?(event))
    }

    /// Runs `work` inside the next group commit and appends the events it returns in the same
    /// transaction, so a state change and the events (and deliveries) it causes are durable
    /// together or not at all. `work` must not block on anything but the database.
    public func transact<T: Sendable>(_ work: @escaping @Sendable (any SQLSession) throws -> (T, [Event])) async throws -> T {
        let result = Mutex<T?>(nil)
        _ = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<AppendOutcome, any Error>) in
            let request = Request(events: [], work: { db in
                let (value, events) = try work(db)
                result.withLock { $0 = value }
                return events
            }, finish: { continuation.resume(with: $0) })
            committer.submit(.request(request)) { self.commit($0) }
        }
        return result.withLock { $0! }
    }

    /// Runs `work` in the next group commit, in a savepoint of its own (its failure fails only
    /// it), and calls `completion` once that is committed. Alone in a commit it is not fsynced:
    /// it becomes durable with the next event commit (WAL order); events keep `durability`.
    public func write(_ work: @escaping @Sendable (any SQLSession) throws -> Void, completion: @escaping @Sendable ((any Error)?) -> Void) {
        committer.submit(.write(Write(work: work, completion: completion))) { self.commit($0) }
    }

    private func commit(_ items: [Item]) {
        let started = DispatchTime.now().uptimeNanoseconds
        let receivedAt = clock()
        var requests: [Request] = []
        var writes: [Write] = []
        for item in items {
            switch item {
            case .request(let r): requests.append(r)
            case .write(let w): writes.append(w)
            }
        }
        var outcomes = [Result<AppendOutcome, any Error>](repeating: .failure(CancellationError()), count: requests.count)
        var writeErrors = [(any Error)?](repeating: nil, count: writes.count)
        var lastCursor: Int64 = 0
        var total = 0
        let taker = handoff.withLock { $0 }
        var created = Created(collecting: taker != nil)
        // Most commits have no failure to isolate, and a savepoint is not free: two round trips
        // on PostgreSQL; on SQLite two statements and a copy of every page it touches (a
        // request's savepoint copied the index pages the one before it had just written). So
        // the commit is first tried whole; only if something in it fails is it rolled back and
        // run again with a savepoint per request, so that the one failure fails only its own
        // request. (Work and consequences only write through the session, so running them
        // again is safe.)
        let optimistic = requests.count + writes.count > 1
        for isolated in optimistic ? [false, true] : [true] {
            do {
                try database.commit(relaxed: requests.isEmpty) { db in
                    (outcomes, writeErrors, lastCursor, total, created) = try self.run(
                        requests, writes, receivedAt: receivedAt, isolated: isolated, collecting: created.collecting, db: db)
                }
                break
            } catch is FailedWhole {
                continue
            } catch {
                for i in outcomes.indices { outcomes[i] = .failure(error) }
                for i in writeErrors.indices { writeErrors[i] = error }
                lastCursor = 0
                total = 0
                created = Created(collecting: false)
                break
            }
        }
        if !requests.isEmpty {
            commitCounter.add(1, ordering: .relaxed)
            commitTimer.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started))
            commitSize.record(total)
        }
        if total > 0 { ingested.increment(by: total) }
        for (request, outcome) in zip(requests, outcomes) {
            if case .success(let o) = outcome, o.duplicates > 0 { duplicated.increment(by: o.duplicates) }
            request.finish(outcome)
        }
        if lastCursor > 0 {
            // The dispatcher takes what it can send at once straight from here (reading it back
            // cost a tenth of the server's CPU under the alerts load); the bus tells everyone.
            if created.complete, let taker { _ = taker.value(created.rows, lastCursor, receivedAt) }
            bus.publish(.eventsCommitted(lastCursor: lastCursor))
        }
        for (write, error) in zip(writes, writeErrors) { write.completion(error) }
    }

    /// A commit tried whole failed in one of its parts: it is run again part by part.
    private struct FailedWhole: Error {}

    /// The requests and writes of one group commit, inside its transaction. `isolated`: each
    /// shared request and write in a savepoint of its own, so a failure fails only it;
    /// otherwise any failure fails the whole (`FailedWhole`).
    private func run(
        _ requests: [Request], _ writes: [Write], receivedAt: Timestamp, isolated: Bool, collecting: Bool, db: any SQLSession
    ) throws -> ([Result<AppendOutcome, any Error>], [(any Error)?], Int64, Int, Created) {
        var outcomes = [Result<AppendOutcome, any Error>](repeating: .failure(CancellationError()), count: requests.count)
        var writeErrors = [(any Error)?](repeating: nil, count: writes.count)
        var lastCursor: Int64 = 0
        var inserted: [Event] = []
        var created = Created(collecting: collecting)
        let single = requests.count == 1 && writes.isEmpty
        for (i, request) in requests.enumerated() {
            // One event without other work writes all or nothing by itself (a conflict is
            // found before anything is written): no savepoint needed — on SQLite, where a
            // failed statement leaves the transaction usable. PostgreSQL aborts the whole
            // transaction instead, so there each shared request has one.
            let atomic = single || !isolated
                || (db.dialect == .sqlite && request.work == nil && request.events.count == 1 && request.consequences.isEmpty)
            do {
                var outcome = AppendOutcome(ids: [], accepted: 0, duplicates: 0, lastCursor: nil)
                var mine: [Event] = []
                var made = Created(collecting: collecting)
                let body = {
                    let events = try request.work.map { try $0(db) + request.events } ?? request.events
                    // Consequences line up with the request's own events, which come after
                    // what `work` returned.
                    let offset = events.count - request.events.count
                    let consequences = request.consequences.isEmpty ? [] : Array(repeating: nil, count: offset) + request.consequences
                    outcome = try self.insert(
                        events, prepared: request.prepared, offset: offset, consequences: consequences, receivedAt: receivedAt, db: db,
                        inserted: &mine, created: &made)
                }
                if atomic { try body() } else { try db.savepoint(body) }
                inserted.append(contentsOf: mine)
                created.append(made)
                if let c = outcome.lastCursor { lastCursor = max(lastCursor, c) }
                outcomes[i] = .success(outcome)
            } catch {
                if single { throw error }
                // A reused id with other content is refused before anything is written (no
                // statement failed, the transaction is intact): a lone event then fails alone,
                // without costing its neighbours the whole commit again. (SQLite only for now:
                // PostgreSQL's path is unchanged and measured as it was.)
                let refusedUnwritten = db.dialect == .sqlite && request.work == nil && request.events.count == 1
                    && request.consequences.isEmpty && (error as? Problem)?.status == 409
                if !isolated && !refusedUnwritten { throw FailedWhole() }
                outcomes[i] = .failure(error)
            }
        }
        try updateRuns(with: inserted, db: db)
        let alone = requests.isEmpty && writes.count == 1
        for (i, write) in writes.enumerated() {
            do {
                if alone || !isolated { try write.work(db) } else { try db.savepoint { try write.work(db) } }
            } catch {
                if alone { throw error }
                if !isolated { throw FailedWhole() }
                writeErrors[i] = error
            }
        }
        return (outcomes, writeErrors, lastCursor, inserted.count, created)
    }

    private static let eventColumns = "id, type, pipeline, run, step, severity, summary, details, labels, attributes, url, time, time_given, received_at"
    private static let insertEvent = """
        INSERT INTO events (\(eventColumns))
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING
        """
    /// The same for 2, 4 … 32 rows at once, returning what it inserted: a request's events
    /// are inserted in as few statements as these sizes allow (see `insertRows`).
    private static let insertEvents: [String] = (1...5).map { power in
        let row = "(" + Array(repeating: "?", count: 14).joined(separator: ", ") + ")"
        return "INSERT INTO events (\(eventColumns)) VALUES " + Array(repeating: row, count: 1 << power).joined(separator: ", ")
            + " ON CONFLICT (id) DO NOTHING RETURNING id, seq"
    }

    /// Inserts `events` (their columns in `ready`, `received_at` still to come) with as few
    /// statements as it can — 32, 16 … 2 rows each, one for a last single row — and returns
    /// each event's `seq`, nil where it was not inserted (its id is known, or repeats an
    /// earlier event of the same request). Under batched ingest a statement per event cost
    /// more than the B-tree work it did.
    private func insertRows(_ events: [Event], _ ready: [Prepared], receivedAt: Timestamp, db: any SQLSession) throws -> [Int64?] {
        var seqs = [Int64?](repeating: nil, count: events.count)
        try Self.inStatements(of: events.count) { rows, power in
            guard power > 0 else {
                seqs[rows.lowerBound] = try insertOne(ready[rows.lowerBound], receivedAt: receivedAt, db: db)
                return
            }
            var values: [SQLValue] = []
            values.reserveCapacity(rows.count * 14)
            for i in rows {
                values += ready[i].columns
                values.append(.int(receivedAt.milliseconds))
            }
            // Keyed by bytes, as the store tells ids apart (ExactText).
            var inserted: [ExactText: Int64] = [:]
            try db.query(Self.insertEvents[power - 1], SQLArguments(values: values)) { row in inserted[ExactText(row[0])] = row[1] }
            // An id twice in the request: the first occurrence is the one inserted.
            for i in rows { seqs[i] = inserted.removeValue(forKey: ExactText(events[i].id)) }
        }
        return seqs
    }

    /// One event's row; its `seq`, or nil when its id is known.
    private func insertOne(_ ready: Prepared, receivedAt: Timestamp, db: any SQLSession) throws -> Int64? {
        try db.insertedKey(Self.insertEvent, SQLArguments(values: ready.columns + [.int(receivedAt.milliseconds)]), column: "seq")
    }

    /// Splits `count` rows into statements of 32, 16, 8, 4, 2 and 1 rows (the largest that
    /// fits, first): few statements, and at most six shapes of each to prepare and cache.
    /// `body` gets each statement's rows and its size as a power of two.
    private static func inStatements(of count: Int, _ body: (Range<Int>, Int) throws -> Void) rethrows {
        var start = 0
        while start < count {
            let power = min(5, Int.bitWidth - 1 - (count - start).leadingZeroBitCount)
            try body(start..<(start + (1 << power)), power)
            start += 1 << power
        }
    }
    private static let selectEvent = "SELECT \(EventRow.selectColumns) FROM events WHERE id = ?"

    /// `prepared` (when not empty) lines up with `events` from `offset` on; events before it
    /// (what a request's work returned) and events they cause are prepared here.
    private func insert(
        _ events: [Event], prepared: [Prepared] = [], offset: Int = 0, consequences: [EventConsequence?] = [], receivedAt: Timestamp,
        db: any SQLSession, inserted: inout [Event], created: inout Created
    ) throws -> AppendOutcome {
        var outcome = AppendOutcome(ids: [], accepted: 0, duplicates: 0, lastCursor: nil)
        outcome.ids.reserveCapacity(events.count)
        var caused: [Event] = []
        let ready = events.indices.map { index in index >= offset && index - offset < prepared.count ? prepared[index - offset] : prepare(events[index]) }
        // Several events with nothing caused in between are inserted together; with
        // consequences (rules), each event is inserted before what it causes runs, as always.
        let together = events.count > 1 && consequences.allSatisfy { $0 == nil }
            ? try insertRows(events, ready, receivedAt: receivedAt, db: db) : nil
        for (index, event) in events.enumerated() {
            let seq: Int64?
            if let together { seq = together[index] } else { seq = try insertOne(ready[index], receivedAt: receivedAt, db: db) }
            outcome.ids.append(event.id)
            if let seq {
                outcome.accepted += 1
                outcome.lastCursor = seq
                inserted.append(event)
                if let plan = ready[index].plan {
                    if !plan.deliveries.isEmpty {
                        let deliveries = try SQLOutbox.insert(
                            plan.deliveries, eventSeq: seq, pipeline: event.pipeline, isFailure: plan.isFailure, now: receivedAt, db: db)
                        if created.collecting {
                            // The event as the outbox's read would return it: from its own columns.
                            let stored = EventRow.storedEvent(ValuesRow(EventRow.values(seq: seq, ready[index].columns, receivedAt: receivedAt)))
                            for delivery in deliveries { created.rows.append((delivery, stored)) }
                        }
                    }
                    if plan.resolvesFailures {
                        if try SQLOutbox.resolve(pipeline: event.pipeline, eventSeq: seq, now: receivedAt, db: db) > 0 { created.complete = false }
                    }
                }
                if index < consequences.count, let consequence = consequences[index] {
                    caused += try consequence(event, ConsequenceTransaction(db: db))
                }
            } else {
                // A known id: the same content again is an idempotent duplicate; different
                // content under it is refused (409), as payment APIs treat idempotency keys.
                if let stored = try db.first(Self.selectEvent, [event.id], { EventRow.storedEvent($0) }),
                   !stored.event.sameContent(as: event) {
                    throw Problem(
                        status: 409, title: "Conflict",
                        detail: "event id \"\(event.id)\" was already used for an event with different content; send a new id for a new event")
                }
                outcome.duplicates += 1
            }
        }
        if !caused.isEmpty {
            // What the events caused (a rule's `gate.opened`) follows them, with its own
            // deliveries; it causes nothing further (no rule loops).
            let more = try insert(caused, receivedAt: receivedAt, db: db, inserted: &inserted, created: &created)
            if let c = more.lastCursor { outcome.lastCursor = max(outcome.lastCursor ?? c, c) }
        }
        return outcome
    }

    /// Folds the newly inserted events into their runs' summaries through cached statements
    /// (no SQL is generated per run). A run first seen in this commit — every CI job, every
    /// pipeline run — costs one `INSERT … ON CONFLICT DO NOTHING`; only a run that already has
    /// a row is read, folded and written back.
    private func updateRuns(with events: [Event], db: any SQLSession) throws {
        var order: [RunKey] = []
        var touched: [RunKey: [Event]] = [:]
        order.reserveCapacity(events.count)
        touched.reserveCapacity(events.count)
        for event in events {
            guard let run = event.run else { continue }
            let key = RunKey(pipeline: event.pipeline, run: run)
            touched[key, default: []].append(event)
            if touched[key]!.count == 1 { order.append(key) }
        }
        guard !order.isEmpty else { return }
        // (Several runs per multi-row statement, like events, measured no faster: the
        // `RETURNING` it needs to tell new runs from known ones costs what it saves.)
        for key in order {
            let runEvents = touched[key]!
            let fresh = runEvents.reduce(RunSummary(pipeline: key.pipeline, run: key.run, first: runEvents[0].time)) { $0.applying($1) }
            if try db.execute(Self.insertRun, RunRow.arguments(fresh)) > 0 { continue }
            guard var summary = try db.first("""
                SELECT status, failed_step, started_at, ended_at, last_event_at, lifecycle_at, event_count, counts FROM runs WHERE pipeline = ? AND run = ?
                """, [key.pipeline, key.run], { RunRow.summary(pipeline: key.pipeline, run: key.run, row: $0) })
            else { continue }
            for event in runEvents { summary = summary.applying(event) }
            try db.execute("""
                UPDATE runs SET status = ?3, failed_step = ?4, started_at = ?5, ended_at = ?6, last_event_at = ?7, lifecycle_at = ?8,
                    event_count = ?9, counts = ?10 WHERE pipeline = ?1 AND run = ?2
                """, RunRow.arguments(summary))
        }
    }

    private static let runColumns = "pipeline, run, status, failed_step, started_at, ended_at, last_event_at, lifecycle_at, event_count, counts"
    private static let insertRun = "INSERT INTO runs (\(runColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (pipeline, run) DO NOTHING"

    /// Compared by bytes, as the store's unique key on runs compares them (ExactText).
    private struct RunKey: Hashable {
        var pipeline: String
        var run: String

        static func == (a: RunKey, b: RunKey) -> Bool { ExactText(a.pipeline) == ExactText(b.pipeline) && ExactText(a.run) == ExactText(b.run) }

        func hash(into hasher: inout Hasher) {
            hasher.combine(ExactText(pipeline))
            hasher.combine(ExactText(run))
        }
    }

    // MARK: Reads

    public func events(_ filter: EventFilter) async throws -> [StoredEvent] {
        try await database.read { db in try Self.fetchEvents(filter, db: db) }
    }

    static func fetchEvents(_ filter: EventFilter, db: any SQLSession) throws -> [StoredEvent] {
        var clauses = ["seq > ?"]
        var arguments: SQLArguments = [filter.after]
        if let pipeline = filter.pipeline { clauses.append("pipeline = ?"); arguments.append(pipeline) }
        if let run = filter.run { clauses.append("run = ?"); arguments.append(run) }
        if !filter.types.isEmpty {
            clauses.append("type IN (\(filter.types.map { _ in "?" }.joined(separator: ",")))")
            arguments += SQLArguments(filter.types)
        }
        arguments.append(filter.limit)
        let sql = "SELECT \(EventRow.selectColumns) FROM events WHERE \(clauses.joined(separator: " AND ")) ORDER BY seq \(filter.newestFirst ? "DESC" : "ASC") LIMIT ?"
        return try db.all(sql, arguments) { EventRow.storedEvent($0) }
    }

    public func lastCursor() async throws -> Int64 {
        try await database.read { db in try db.value(Int64.self, "SELECT COALESCE(MAX(seq), 0) FROM events") ?? 0 }
    }

    public func count() async throws -> Int {
        try await database.read { db in try db.value(Int.self, "SELECT COUNT(*) FROM events") ?? 0 }
    }

    public func runs(pipeline: String?, status: RunSummary.Status?, limit: Int) async throws -> [RunSummary] {
        try await database.read { db in
            var arguments: SQLArguments = []
            if let pipeline { arguments.append(pipeline) }
            if let status { arguments.append(status.rawValue) }
            arguments.append(limit)
            return try db.all(Self.runsQuery(pipeline: pipeline != nil, status: status != nil), arguments, RunRow.summary)
        }
    }

    /// The runs listing, most recently active first, filtered by pipeline and status when
    /// asked (arguments in that order, then the limit).
    static func runsQuery(pipeline: Bool, status: Bool) -> String {
        let clauses: [String] = (pipeline ? ["pipeline = ?"] : []) + (status ? ["status = ?"] : [])
        let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
        return "SELECT \(RunRow.selectColumns) FROM runs \(whereClause) ORDER BY last_event_at DESC LIMIT ?"
    }

    /// A run with its timeline. Several pipelines may use the same run id: `pipeline` picks one,
    /// otherwise the most recently active wins.
    public func run(_ run: String, pipeline: String?, timelineLimit: Int = 1000) async throws -> (RunSummary, [StoredEvent])? {
        try await database.read { db in
            let summary: RunSummary?
            if let pipeline {
                summary = try db.first("SELECT \(RunRow.selectColumns) FROM runs WHERE pipeline = ? AND run = ?", [pipeline, run], RunRow.summary)
            } else {
                summary = try db.first("SELECT \(RunRow.selectColumns) FROM runs WHERE run = ? ORDER BY last_event_at DESC LIMIT 1", [run], RunRow.summary)
            }
            guard let summary else { return nil }
            let events = try db.all(
                "SELECT \(EventRow.selectColumns) FROM events WHERE run = ? AND pipeline = ? ORDER BY time, seq LIMIT ?",
                [run, summary.pipeline, timelineLimit]) { EventRow.storedEvent($0) }
            return (summary, events)
        }
    }
}

/// What a consequence writes through: the commit's own session.
struct ConsequenceTransaction: StoreTransaction {
    let db: any SQLSession
    var gates: any GateTransaction { SQLGateRepository.Transaction(db: db) }
    var datasets: any DatasetTransaction { SQLDatasetRepository.Transaction(db: db) }
}
