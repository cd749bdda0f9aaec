import Dispatch
import Foundation
import GRDB
import GatehouseCore
import Synchronization

/// A delivery the routing decided on at commit time, before it has an id.
public struct PlannedDelivery: Sendable, Equatable {
    public var receiver: String
    public var route: String
    public var groupKey: String
    /// When it becomes due: commit time + the route's group_wait.
    public var delay: GatehouseDuration
    public var fallback: String?

    public init(receiver: String, route: String, groupKey: String, delay: GatehouseDuration, fallback: String?) {
        self.receiver = receiver
        self.route = route
        self.groupKey = groupKey
        self.delay = delay
        self.fallback = fallback
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

    public var json: JSONValue {
        var o = JSONObject()
        o.append("id", .string(id))
        o.append("event_cursor", .string(String(event_seq)))
        o.append("receiver", .string(receiver))
        o.append("route", .string(route))
        o.append("group_key", .string(group_key))
        o.append("kind", .string(kind))
        o.append("state", .string(state.rawValue))
        o.append("attempts", .int(attempts))
        o.append("next_attempt_at", state == .pending || state == .failed ? .string(Timestamp(milliseconds: next_attempt_at).rfc3339) : .null)
        o.append("created_at", .string(Timestamp(milliseconds: created_at).rfc3339))
        o.append("delivered_at", delivered_at.map { .string(Timestamp(milliseconds: $0).rfc3339) } ?? .null)
        o.append("last_status", last_status.map { .int($0) } ?? .null)
        o.append("last_error", last_error.map(JSONValue.string) ?? .null)
        o.append("response_body", response_body.map(JSONValue.string) ?? .null)
        o.append("message_id", message_id.map(JSONValue.string) ?? .null)
        o.append("fallback_of", fallback_of.map(JSONValue.string) ?? .null)
        return .object(o)
    }

    /// A new pending delivery of the same message to the route's fallback receiver.
    public func fallbackDelivery(to receiver: String, now: Timestamp) -> Delivery {
        Delivery(
            id: Delivery.newID(), event_seq: event_seq, receiver: receiver, route: route, group_key: group_key, kind: kind,
            state: .pending, attempts: 0, next_attempt_at: now.milliseconds, created_at: now.milliseconds, updated_at: now.milliseconds,
            delivered_at: nil, last_status: nil, last_error: nil, response_body: nil, message_id: nil, fallback: nil, fallback_of: id)
    }

    public static func newID() -> String {
        "msg_" + EventValidator.generateID().dropFirst(4)
    }
}

/// The durable outbox: rows are written in the same transaction as their event, claimed when
/// due, and updated with each attempt's outcome. Outcomes recorded while a write is in flight
/// share the next transaction (group commit), so thousands of deliveries a second cost a few
/// hundred commits, not thousands.
public final class Outbox: Sendable {
    public let database: GatehouseDatabase
    private let writer = GroupCommitQueue<Outcome>(label: "gatehouse.outbox")

    private struct Outcome: Sendable {
        var delivery: Delivery
        var fallback: Delivery?
        var continuation: CheckedContinuation<Void, any Error>
    }

    public init(database: GatehouseDatabase) { self.database = database }

    /// Saves an attempt's outcome (and, for a dead delivery, the fallback that replaces it);
    /// returns once it is committed.
    public func record(_ delivery: Delivery, fallback: Delivery? = nil) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            writer.submit(Outcome(delivery: delivery, fallback: fallback, continuation: continuation)) { self.write($0) }
        }
    }

    private func write(_ outcomes: [Outcome]) {
        do {
            try database.pool.write { db in
                for outcome in outcomes {
                    try outcome.delivery.update(db)
                    try outcome.fallback?.insert(db)
                }
            }
            for outcome in outcomes { outcome.continuation.resume() }
        } catch {
            for outcome in outcomes { outcome.continuation.resume(throwing: error) }
        }
    }

    static func insert(_ plans: [PlannedDelivery], eventSeq: Int64, now: Timestamp, db: Database) throws {
        for plan in plans {
            let row = Delivery(
                id: Delivery.newID(), event_seq: eventSeq, receiver: plan.receiver, route: plan.route, group_key: plan.groupKey,
                kind: "event", state: .pending, attempts: 0, next_attempt_at: now.milliseconds + plan.delay.milliseconds,
                created_at: now.milliseconds, updated_at: now.milliseconds, delivered_at: nil, last_status: nil, last_error: nil,
                response_body: nil, message_id: nil, fallback: plan.fallback, fallback_of: nil)
            try row.insert(db)
        }
    }

    /// A receiver's due rows with their events, oldest first.
    public func due(receiver: String, now: Timestamp, limit: Int) async throws -> [(Delivery, StoredEvent)] {
        try await database.pool.read { db in
            let rows = try Delivery.fetchAll(
                db, sql: "SELECT * FROM deliveries WHERE receiver = ? AND state IN ('pending','failed') AND next_attempt_at <= ? ORDER BY next_attempt_at, rowid LIMIT ?",
                arguments: [receiver, now.milliseconds, limit])
            guard !rows.isEmpty else { return [] }
            let seqs = Array(Set(rows.map(\.event_seq)))
            var bySeq: [Int64: StoredEvent] = [:]
            for e in try EventRow.fetchAll(db, sql: "SELECT * FROM events WHERE seq IN (\(seqs.map { _ in "?" }.joined(separator: ",")))", arguments: StatementArguments(seqs)) {
                bySeq[e.seq] = e.stored
            }
            return rows.compactMap { row in bySeq[row.event_seq].map { (row, $0) } }
        }
    }

    /// When a receiver's next row falls due, if it has any.
    public func nextDueTime(receiver: String) async throws -> Timestamp? {
        try await database.pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT MIN(next_attempt_at) FROM deliveries WHERE receiver = ? AND state IN ('pending','failed')", arguments: [receiver])
                .map(Timestamp.init(milliseconds:))
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

    public func get(_ id: String) async throws -> Delivery? {
        try await database.pool.read { db in try Delivery.fetchOne(db, key: id) }
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

    /// Puts a dead or failed delivery back in line now. nil when there is no such delivery;
    /// the row unchanged when it is not retryable (pending or delivered).
    public func retry(_ id: String, now: Timestamp) async throws -> Delivery? {
        try await database.pool.write { db in
            guard var row = try Delivery.fetchOne(db, key: id) else { return nil }
            guard row.state == .dead || row.state == .failed || row.state == .muted else { return row }
            row.state = .pending
            row.next_attempt_at = now.milliseconds
            row.updated_at = now.milliseconds
            try row.update(db)
            return row
        }
    }

    public func depth() async throws -> Int {
        try await database.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM deliveries WHERE state IN ('pending','failed')") ?? 0 }
    }

    /// Recent events of a pipeline/run, for inhibition checks.
    public func recentEvents(pipeline: String, run: String?, since: Timestamp, limit: Int = 200) async throws -> [Event] {
        try await database.pool.read { db in
            let rows: [EventRow]
            if let run {
                rows = try EventRow.fetchAll(db, sql: "SELECT * FROM events WHERE run = ? AND pipeline = ? AND received_at >= ? ORDER BY seq DESC LIMIT ?", arguments: [run, pipeline, since.milliseconds, limit])
            } else {
                rows = try EventRow.fetchAll(db, sql: "SELECT * FROM events WHERE pipeline = ? AND received_at >= ? ORDER BY seq DESC LIMIT ?", arguments: [pipeline, since.milliseconds, limit])
            }
            return rows.map(\.stored.event)
        }
    }
}
