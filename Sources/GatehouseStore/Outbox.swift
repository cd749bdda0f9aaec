import Dispatch
import Foundation
import GRDB
import GatehouseCore
import Synchronization

/// A delivery the routing decided on at commit time, before it has an id.
/// What an event causes at delivery, decided by Delivery's planner inside the event's commit;
/// the store only persists it, in the same transaction.
public struct DeliveryPlan: Sendable, Equatable {
    public var deliveries: [PlannedDelivery]
    /// The event reports a failure: receivers with `send_resolved` or a `repeat_interval`
    /// track its pipeline as failing.
    public var isFailure: Bool
    /// The event reports the pipeline healthy again: what was failing is resolved.
    public var resolvesFailures: Bool

    public init(deliveries: [PlannedDelivery], isFailure: Bool = false, resolvesFailures: Bool = false) {
        self.deliveries = deliveries
        self.isFailure = isFailure
        self.resolvesFailures = resolvesFailures
    }
}

public struct PlannedDelivery: Sendable, Equatable {
    public var receiver: String
    public var route: String
    public var groupKey: String
    /// A new group waits this long for more events before its first message.
    public var groupWait: GatehouseDuration
    /// After a message, a group's new events wait until this long after it.
    public var groupInterval: GatehouseDuration
    public var fallback: String?
    /// `group_by: ['...']`: the event is a group of its own, so there is no group to track.
    public var alone: Bool
    /// The receiver has `send_resolved`: it is told when the failing pipeline next succeeds.
    public var sendResolved = false
    /// While the pipeline keeps failing, remind the receiver this often.
    public var repeatInterval = GatehouseDuration.seconds(4 * 3600)

    public init(receiver: String, route: String, groupKey: String, groupWait: GatehouseDuration, groupInterval: GatehouseDuration, fallback: String?, alone: Bool = false) {
        self.receiver = receiver
        self.route = route
        self.groupKey = groupKey
        self.groupWait = groupWait
        self.groupInterval = groupInterval
        self.fallback = fallback
        self.alone = alone
    }
}

/// One message to one receiver. `id` is stable for the life of the row: it is the
/// `webhook-id` of every attempt.
public struct Delivery: Sendable, Equatable, Codable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "deliveries"

    public enum State: String, Sendable, Codable, CaseIterable {
        /// Waiting for its first attempt.
        case pending
        /// An attempt failed; another is scheduled.
        case failed
        case delivered
        /// Refused for good, or out of time (`max_age`).
        case dead
        /// Not sent: a silence or an inhibition muted it.
        case muted
    }

    public var id: String
    public var event_seq: Int64
    public var receiver: String
    public var route: String
    public var group_key: String
    public var kind: String
    public var state: State
    public var attempts: Int
    public var next_attempt_at: Int64
    public var created_at: Int64
    public var updated_at: Int64
    public var delivered_at: Int64?
    public var last_status: Int?
    public var last_error: String?
    public var response_body: String?
    public var message_id: String?
    public var fallback: String?
    /// For a fallback delivery: the dead delivery it stands in for.
    public var fallback_of: String?
    /// The leader of the message this delivery was sent in (see the schema).
    public var batch_id: String?

    /// A delivery as `GET /v1/deliveries` shows it.
    public struct Resource: Encodable {
        var id: String
        var event_cursor: String
        var receiver: String
        var route: String
        var group_key: String
        var kind: String
        var state: State
        var attempts: Int
        /// Only while another attempt is due.
        var next_attempt_at: Timestamp?
        var created_at: Timestamp
        var delivered_at: Timestamp?
        var last_status: Int?
        var last_error: String?
        var response_body: String?
        var message_id: String?
        var fallback_of: String?
        var batch_id: String?
    }

    public var resource: Resource {
        Resource(
            id: id, event_cursor: String(event_seq), receiver: receiver, route: route, group_key: group_key, kind: kind,
            state: state, attempts: attempts,
            next_attempt_at: state == .pending || state == .failed ? Timestamp(milliseconds: next_attempt_at) : nil,
            created_at: Timestamp(milliseconds: created_at), delivered_at: delivered_at.map(Timestamp.init(milliseconds:)),
            last_status: last_status, last_error: last_error, response_body: response_body, message_id: message_id,
            fallback_of: fallback_of, batch_id: batch_id)
    }

    public var json: JSONValue { JSONValueEncoder.value(resource) }

    /// A new pending delivery of the same message to the route's fallback receiver.
    public func fallbackDelivery(to receiver: String, now: Timestamp) -> Delivery {
        Delivery(
            id: Delivery.newID(), event_seq: event_seq, receiver: receiver, route: route, group_key: group_key, kind: kind,
            state: .pending, attempts: 0, next_attempt_at: now.milliseconds, created_at: now.milliseconds, updated_at: now.milliseconds,
            delivered_at: nil, last_status: nil, last_error: nil, response_body: nil, message_id: nil, fallback: nil, fallback_of: id, batch_id: nil)
    }

    public static func newID() -> String {
        "msg_" + EventValidator.generateID().dropFirst(4)
    }
}

extension Delivery {
    static let columnNames = [
        "id", "event_seq", "receiver", "route", "group_key", "kind", "state", "attempts", "next_attempt_at", "created_at", "updated_at",
        "delivered_at", "last_status", "last_error", "response_body", "message_id", "fallback", "fallback_of", "batch_id",
    ]
    static let columnCount = columnNames.count

    /// The columns `init(_:at:)` reads, in its order, for a table aliased `alias`.
    static func columns(_ alias: String) -> String { columnNames.map { "\(alias).\($0)" }.joined(separator: ", ") }

    /// A row read by column index from `row[offset...]` (see `columns`), without Codable.
    init(_ row: Row, at o: Int) {
        id = row[o]
        event_seq = row[o + 1]
        receiver = row[o + 2]
        route = row[o + 3]
        group_key = row[o + 4]
        kind = row[o + 5]
        state = State(rawValue: row[o + 6]) ?? .pending
        attempts = row[o + 7]
        next_attempt_at = row[o + 8]
        created_at = row[o + 9]
        updated_at = row[o + 10]
        delivered_at = row[o + 11]
        last_status = row[o + 12]
        last_error = row[o + 13]
        response_body = row[o + 14]
        message_id = row[o + 15]
        fallback = row[o + 16]
        fallback_of = row[o + 17]
        batch_id = row[o + 18]
    }
}

/// The durable outbox, as the dispatcher, the delivery API and the gate notices use it: rows
/// are written in the same transaction as their event (by the event store), claimed when due,
/// and updated with each attempt's outcome.
public protocol Outbox: Sendable {
    /// Saves an attempt's outcome for every delivery it carried (and the fallbacks replacing
    /// dead ones); returns once committed.
    func record(_ deliveries: [Delivery], fallbacks: [Delivery], flushedGroup: (receiver: String, groupKey: String, at: Timestamp)?) async throws
    /// The same, calling `completion` (quick, never blocking) once the outcome is committed or
    /// has failed: the dispatcher's hot path, with no task per delivery.
    func record(
        _ deliveries: [Delivery], fallbacks: [Delivery], flushedGroup: (receiver: String, groupKey: String, at: Timestamp)?,
        completion: @escaping @Sendable ((any Error)?) -> Void)
    /// Re-sends due `repeat_interval` reminders; returns how many.
    func fireRepeats(now: Timestamp) async throws -> Int
    func nextRepeatTime() async throws -> Timestamp?
    /// The deliveries sent as one message (a digest) with their events.
    func batch(_ batchID: String) async throws -> [(Delivery, StoredEvent)]
    /// A receiver's due deliveries, oldest first, with their events.
    func due(receiver: String, now: Timestamp, limit: Int) async throws -> [(Delivery, StoredEvent)]
    /// A recovered receiver's backlog becomes due at once; returns how many.
    func reviveBacklog(receiver: String) async throws -> Int
    func nextDueTime(receiver: String) async throws -> Timestamp?
    /// Drops group state idle past its `group_interval`; returns how many.
    func forgetIdleGroups(now: Timestamp) async throws -> Int
    /// Deliveries to receivers no longer configured die; returns how many.
    func killOrphans(known: [String], now: Timestamp) async throws -> Int
    func list(state: Delivery.State?, receiver: String?, limit: Int) async throws -> [Delivery]
    /// The deliveries a run's events caused, newest first.
    func list(pipeline: String, run: String, limit: Int) async throws -> [Delivery]
    /// A dead or failed delivery due again now; nil when there is no such delivery.
    func retry(_ id: String, now: Timestamp) async throws -> Delivery?
    /// Deliveries still to send.
    func depth() async throws -> Int
    /// A pipeline's recent events (inhibition and resolve notices read them).
    func recentEvents(pipeline: String, run: String?, since: Timestamp, limit: Int) async throws -> [Event]
    /// The chat message id a delivery of this event got (to edit it later).
    func messageID(eventID: String, receiver: String) async throws -> String?
}

// Shorthands with fewer arguments than the requirements (never the same signature: that would
// become a default implementation calling itself in a store that lacks the method).
extension Outbox {
    public func record(_ deliveries: [Delivery]) async throws {
        try await record(deliveries, fallbacks: [], flushedGroup: nil)
    }

    public func record(_ deliveries: [Delivery], flushedGroup: (receiver: String, groupKey: String, at: Timestamp)) async throws {
        try await record(deliveries, fallbacks: [], flushedGroup: flushedGroup)
    }

    public func recentEvents(pipeline: String, run: String?, since: Timestamp) async throws -> [Event] {
        try await recentEvents(pipeline: pipeline, run: run, since: since, limit: 200)
    }
}

/// The SQLite outbox. Outcomes join the event log's group commits (one writer for everything),
/// so thousands of deliveries a second cost a few hundred commits, not thousands, and no
/// second queue contends for SQLite's writer.
public final class SQLiteOutbox: Outbox {
    public let log: EventLog
    public var database: GatehouseDatabase { log.database }

    public init(log: EventLog) { self.log = log }

    /// Saves an attempt's outcome for every delivery it carried (and the fallbacks replacing
    /// dead ones); returns once committed.
    public func record(_ deliveries: [Delivery], fallbacks: [Delivery], flushedGroup: (receiver: String, groupKey: String, at: Timestamp)?) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            record(deliveries, fallbacks: fallbacks, flushedGroup: flushedGroup) { error in
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            }
        }
    }

    /// The same, calling `completion` (on the writer's queue: quick, never blocking) once the
    /// outcome is committed or has failed.
    public func record(
        _ deliveries: [Delivery], fallbacks: [Delivery], flushedGroup: (receiver: String, groupKey: String, at: Timestamp)?,
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        let flushed = flushedGroup.map { ($0.receiver, $0.groupKey, $0.at.milliseconds) }
        log.write({ db in try Self.write(deliveries, fallbacks: fallbacks, flushed: flushed, db: db) }, completion: completion)
    }

    /// What an attempt changes, bound by hand: a record update would encode every column
    /// through Codable for each delivery.
    static func write(_ deliveries: [Delivery], fallbacks: [Delivery], flushed: (String, String, Int64)?, db: Database) throws {
        let update = try db.cachedStatement(sql: """
            UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at = ?, updated_at = ?, delivered_at = ?, last_status = ?,
                last_error = ?, response_body = ?, message_id = ?, batch_id = ? WHERE id = ?
            """)
        for d in deliveries {
            try update.execute(arguments: [
                d.state.rawValue, d.attempts, d.next_attempt_at, d.updated_at, d.delivered_at, d.last_status,
                d.last_error, d.response_body, d.message_id, d.batch_id, d.id,
            ])
        }
        for fallback in fallbacks { try fallback.insert(db) }
        if let (receiver, group, at) = flushed {
            // Later events of the group wait for group_interval after this flush; rows that
            // joined a flush already scheduled keep their time.
            try db.cachedStatement(sql: """
                UPDATE alert_groups SET last_flush_at = ?, next_flush_at = CASE WHEN next_flush_at <= ? THEN NULL ELSE next_flush_at END
                WHERE receiver = ? AND group_key = ?
                """).execute(arguments: [at, at, receiver, group])
        }
    }

    /// Writes an event's deliveries (inside its commit). Each joins its aggregation group: a
    /// new group flushes after `group_wait`; a group with a flush pending adds to it; a group
    /// that flushed lately waits until `group_interval` after that flush (Alertmanager's rules).
    static func insert(_ plans: [PlannedDelivery], eventSeq: Int64, pipeline: String, isFailure: Bool, now: Timestamp, db: Database) throws {
        // Cached statements: this runs inside the ingest commit, once per delivery.
        let lookup = try db.cachedStatement(sql: "SELECT next_flush_at, last_flush_at FROM alert_groups WHERE receiver = ? AND group_key = ?")
        let upsert = try db.cachedStatement(sql: """
            INSERT INTO alert_groups (receiver, group_key, next_flush_at, last_flush_at, group_interval_ms) VALUES (?, ?, ?, NULL, ?)
            ON CONFLICT (receiver, group_key) DO UPDATE SET next_flush_at = excluded.next_flush_at, group_interval_ms = excluded.group_interval_ms
            """)
        let insert = try db.cachedStatement(sql: """
            INSERT INTO deliveries (id, event_seq, receiver, route, group_key, kind, state, attempts, next_attempt_at, created_at, updated_at, fallback)
            VALUES (?, ?, ?, ?, ?, 'event', 'pending', 0, ?, ?, ?, ?)
            """)
        for plan in plans {
            let group = plan.alone ? nil : try Row.fetchOne(lookup, arguments: [plan.receiver, plan.groupKey])
            let due: Int64
            if let next: Int64 = group?["next_flush_at"] {
                due = next
            } else if let last: Int64 = group?["last_flush_at"] {
                due = max(now.milliseconds, last + plan.groupInterval.milliseconds)
            } else {
                due = now.milliseconds + plan.groupWait.milliseconds
            }
            if !plan.alone && group?["next_flush_at"] as Int64? != due {
                try upsert.execute(arguments: [plan.receiver, plan.groupKey, due, plan.groupInterval.milliseconds])
            }
            try insert.execute(arguments: [
                Delivery.newID(), eventSeq, plan.receiver, plan.route, plan.groupKey, due, now.milliseconds, now.milliseconds, plan.fallback,
            ])
            if isFailure {
                // The pipeline is failing for this receiver until a run succeeds; a fresh
                // failure restarts the reminder clock.
                let failing = try db.cachedStatement(sql: """
                    INSERT INTO failing_pipelines (receiver, pipeline, route, since, last_event_seq, repeat_ms, next_repeat_at, send_resolved)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (receiver, pipeline) DO UPDATE SET route = excluded.route, last_event_seq = excluded.last_event_seq,
                        repeat_ms = excluded.repeat_ms, next_repeat_at = excluded.next_repeat_at, send_resolved = excluded.send_resolved
                    """)
                try failing.execute(arguments: [
                    plan.receiver, pipeline, plan.route, now.milliseconds, eventSeq, plan.repeatInterval.milliseconds,
                    due + plan.repeatInterval.milliseconds, plan.sendResolved,
                ])
            }
        }
    }

    /// A successful run of a pipeline that receivers were told was failing: one `resolved`
    /// delivery to each of them, and the pipeline is no longer failing for them.
    static func resolve(pipeline: String, eventSeq: Int64, now: Timestamp, db: Database) throws {
        // Runs once per `run.succeeded` inside the ingest commit: cached statements only.
        let select = try db.cachedStatement(sql: "SELECT receiver, route FROM failing_pipelines WHERE pipeline = ? AND send_resolved")
        let failing = try Row.fetchAll(select, arguments: [pipeline])
        try db.cachedStatement(sql: "DELETE FROM failing_pipelines WHERE pipeline = ?").execute(arguments: [pipeline])
        guard !failing.isEmpty else { return }
        let insert = try db.cachedStatement(sql: """
            INSERT INTO deliveries (id, event_seq, receiver, route, group_key, kind, state, attempts, next_attempt_at, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, 'resolved', 'pending', 0, ?, ?, ?)
            """)
        for row in failing {
            let receiver: String = row[0]
            let id = Delivery.newID()
            try insert.execute(arguments: [id, eventSeq, receiver, row[1] as String, "resolved|\(pipeline)|\(id)", now.milliseconds, now.milliseconds, now.milliseconds])
        }
    }

    /// Reminders that fell due: for each pipeline still failing past its receiver's
    /// repeat_interval, a `repeat` delivery of its latest failure. Returns how many.
    @discardableResult
    public func fireRepeats(now: Timestamp) async throws -> Int {
        try await database.pool.write { db in
            let due = try Row.fetchAll(
                db, sql: "SELECT receiver, pipeline, route, last_event_seq, repeat_ms FROM failing_pipelines WHERE next_repeat_at <= ?",
                arguments: [now.milliseconds])
            for row in due {
                let id = Delivery.newID()
                let receiver: String = row["receiver"]
                let pipeline: String = row["pipeline"]
                try db.execute(
                    sql: """
                        INSERT INTO deliveries (id, event_seq, receiver, route, group_key, kind, state, attempts, next_attempt_at, created_at, updated_at)
                        VALUES (?, ?, ?, ?, ?, 'repeat', 'pending', 0, ?, ?, ?)
                        """,
                    arguments: [id, row["last_event_seq"] as Int64, receiver, row["route"] as String, "repeat|\(pipeline)|\(id)",
                                now.milliseconds, now.milliseconds, now.milliseconds])
                try db.execute(
                    sql: "UPDATE failing_pipelines SET next_repeat_at = ? WHERE receiver = ? AND pipeline = ?",
                    arguments: [now.milliseconds + (row["repeat_ms"] as Int64), receiver, pipeline])
            }
            return due.count
        }
    }

    /// When the next reminder falls due, if any pipeline is failing.
    public func nextRepeatTime() async throws -> Timestamp? {
        try await database.pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT MIN(next_repeat_at) FROM failing_pipelines").map(Timestamp.init(milliseconds:))
        }
    }

    /// The deliveries of a message being retried, as first sent (same content under the same
    /// `webhook-id`), with their events; the leader first.
    public func batch(_ batchID: String) async throws -> [(Delivery, StoredEvent)] {
        try await database.pool.read { db in
            var members = try Delivery.fetchAll(
                db, sql: "SELECT * FROM deliveries WHERE batch_id = ? AND state IN ('pending','failed') ORDER BY rowid", arguments: [batchID])
            if let index = members.firstIndex(where: { $0.id == batchID }) { members.insert(members.remove(at: index), at: 0) }
            let seqs = Array(Set(members.map(\.event_seq)))
            guard !seqs.isEmpty else { return [] }
            var bySeq: [Int64: StoredEvent] = [:]
            for e in try EventRow.fetchAll(db, sql: "SELECT * FROM events WHERE seq IN (\(seqs.map { _ in "?" }.joined(separator: ",")))", arguments: StatementArguments(seqs)) {
                bySeq[e.seq] = e.stored
            }
            return members.compactMap { m in bySeq[m.event_seq].map { (m, $0) } }
        }
    }

    /// A receiver's due rows with their events, oldest first: one cached statement, rows
    /// decoded by column index (this runs for every batch the dispatcher claims).
    public func due(receiver: String, now: Timestamp, limit: Int) async throws -> [(Delivery, StoredEvent)] {
        try await database.pool.read { db in
            let statement = try db.cachedStatement(sql: """
                SELECT \(Delivery.columns("d")), \(EventRow.columns("e"))
                FROM deliveries d JOIN events e ON e.seq = d.event_seq
                WHERE d.receiver = ? AND d.state IN ('pending','failed') AND d.next_attempt_at <= ? AND (d.batch_id IS NULL OR d.batch_id = d.id)
                ORDER BY d.next_attempt_at, d.rowid LIMIT ?
                """)
            var due: [(Delivery, StoredEvent)] = []
            let rows = try Row.fetchCursor(statement, arguments: [receiver, now.milliseconds, limit])
            while let row = try rows.next() {
                due.append((Delivery(row, at: 0), EventRow.storedEvent(row, at: Delivery.columnCount)))
            }
            return due
        }
    }

    /// A receiver came back after failing: the deliveries that failed with it are due again
    /// now, in the order they were created, instead of each on its own back-off. A delivery
    /// that failed three times or more keeps its back-off: it may be the message, not the
    /// receiver, that fails, and must not pause the receiver again at every recovery.
    /// Returns how many.
    public func reviveBacklog(receiver: String) async throws -> Int {
        try await database.pool.write { db in
            try db.execute(
                sql: """
                    UPDATE deliveries SET next_attempt_at = created_at
                    WHERE receiver = ? AND state IN ('pending', 'failed') AND state = 'failed' AND attempts < 3 AND next_attempt_at > created_at
                    """,
                arguments: [receiver])
            return db.changesCount
        }
    }

    /// When a receiver's next row falls due, if it has any.
    public func nextDueTime(receiver: String) async throws -> Timestamp? {
        try await database.pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT MIN(next_attempt_at) FROM deliveries WHERE receiver = ? AND state IN ('pending','failed') AND (batch_id IS NULL OR batch_id = id)", arguments: [receiver])
                .map(Timestamp.init(milliseconds:))
        }
    }

    /// Forgets groups that have nothing pending and flushed longer than their group_interval
    /// ago: their next event opens the group afresh (with group_wait), as in Alertmanager.
    @discardableResult
    public func forgetIdleGroups(now: Timestamp) async throws -> Int {
        try await database.pool.write { db in
            try db.execute(
                sql: "DELETE FROM alert_groups WHERE next_flush_at IS NULL AND last_flush_at + group_interval_ms < ?",
                arguments: [now.milliseconds])
            return db.changesCount
        }
    }

    /// Ends deliveries to receivers the config no longer has (they could never be sent).
    @discardableResult
    public func killOrphans(known: [String], now: Timestamp) async throws -> Int {
        try await database.pool.write { db in
            let placeholders = known.map { _ in "?" }.joined(separator: ",")
            let filter = known.isEmpty ? "" : "AND receiver NOT IN (\(placeholders))"
            try db.execute(
                sql: "UPDATE deliveries SET state = 'dead', last_error = 'receiver ' || receiver || ' is not configured', updated_at = ? WHERE state IN ('pending','failed') \(filter)",
                arguments: StatementArguments([now.milliseconds]) + StatementArguments(known))
            return db.changesCount
        }
    }

    public func list(state: Delivery.State?, receiver: String?, limit: Int) async throws -> [Delivery] {
        try await database.pool.read { db in
            var clauses: [String] = []
            var arguments: StatementArguments = []
            if let state { clauses.append("state = ?"); arguments += [state.rawValue] }
            if let receiver { clauses.append("receiver = ?"); arguments += [receiver] }
            arguments += [limit]
            let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            return try Delivery.fetchAll(db, sql: "SELECT * FROM deliveries \(whereClause) ORDER BY created_at DESC, rowid DESC LIMIT ?", arguments: arguments)
        }
    }

    public func list(pipeline: String, run: String, limit: Int) async throws -> [Delivery] {
        try await database.pool.read { db in
            try Delivery.fetchAll(db, sql: """
                SELECT d.* FROM deliveries d JOIN events e ON e.seq = d.event_seq
                WHERE e.run = ? AND e.pipeline = ? ORDER BY d.created_at DESC, d.rowid DESC LIMIT ?
                """, arguments: [run, pipeline, limit])
        }
    }

    /// Puts a dead or failed delivery back in line now. nil when there is no such delivery;
    /// the row unchanged when it is not retryable (pending or delivered).
    public func retry(_ id: String, now: Timestamp) async throws -> Delivery? {
        try await database.pool.write { db in
            guard let row = try Delivery.fetchOne(db, key: id) else { return nil }
            guard row.state == .dead || row.state == .failed || row.state == .muted else { return row }
            // A retry is its own message: it leaves its old batch and the dispatcher groups it
            // afresh with whatever else of its group is due.
            try db.execute(
                sql: "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, updated_at = ?, batch_id = NULL WHERE id = ? OR (batch_id = ? AND state = ?)",
                arguments: [now.milliseconds, now.milliseconds, id, row.batch_id ?? id, row.state.rawValue])
            return try Delivery.fetchOne(db, key: id)
        }
    }

    public func depth() async throws -> Int {
        try await database.pool.read { db in try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM deliveries WHERE state IN ('pending','failed')")) ?? 0 }
    }

    /// Recent events of a pipeline/run, for inhibition checks.
    public func recentEvents(pipeline: String, run: String?, since: Timestamp, limit: Int) async throws -> [Event] {
        try await database.pool.read { db in
            let rows: [EventRow]
            if let run {
                rows = try EventRow.fetchAll(db.cachedStatement(sql: "SELECT * FROM events WHERE run = ? AND pipeline = ? AND received_at >= ? ORDER BY seq DESC LIMIT ?"), arguments: [run, pipeline, since.milliseconds, limit])
            } else {
                rows = try EventRow.fetchAll(db.cachedStatement(sql: "SELECT * FROM events WHERE pipeline = ? AND received_at >= ? ORDER BY seq DESC LIMIT ?"), arguments: [pipeline, since.milliseconds, limit])
            }
            return rows.map(\.stored.event)
        }
    }

    /// The platform message id recorded for the delivery of event `eventID` to `receiver`
    /// (Discord answers it with `?wait=true`): what a later edit addresses.
    public func messageID(eventID: String, receiver: String) async throws -> String? {
        try await database.pool.read { db in
            try String.fetchOne(db, sql: """
                SELECT d.message_id FROM deliveries d JOIN events e ON e.seq = d.event_seq
                WHERE e.id = ? AND d.receiver = ? AND d.message_id IS NOT NULL ORDER BY d.delivered_at DESC LIMIT 1
                """, arguments: [eventID, receiver])
        }
    }
}
