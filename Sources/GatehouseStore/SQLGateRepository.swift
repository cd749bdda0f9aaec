import Crypto
import Foundation
import GatehouseCore
import Synchronization

/// Approval gates in the store's database. Every transaction goes through the event log's group commit, so
/// the gate, its audit entry, its `gate.*` event and the deliveries that event causes are
/// written in one transaction.
public final class SQLGateRepository: GateRepository {
    public let log: EventLog
    var database: any StoreDatabase { log.database }
    /// Closed gates never change again: waiters woken together read them from here, not 1,000
    /// times from SQLite.
    private let closedCache = Mutex<[String: Gate]>([:])

    public init(log: EventLog) { self.log = log }

    public func transact<T: Sendable>(_ work: @escaping @Sendable (any GateTransaction) throws -> (T, [Event])) async throws -> T {
        let (value, saved): (T, [Gate]) = try await log.transact { db in
            let transaction = Transaction(db: db)
            let (value, events) = try work(transaction)
            return ((value, transaction.saved), events)
        }
        for gate in saved where gate.state.isClosed { remember(gate) }
        return value
    }

    /// One gate transaction on the commit's session; remembers what it saved so closed gates can be
    /// cached once the commit is done.
    final class Transaction: GateTransaction {
        let db: any SQLSession
        var saved: [Gate] = []
        init(db: any SQLSession) { self.db = db }

        func gate(_ id: String) throws -> Gate? { try SQLGateRepository.fetch(id, db: db) }

        func latestGate(key: String) throws -> Gate? {
            guard let id = try db.value(String.self, "SELECT id FROM gates WHERE key = ? ORDER BY rowid DESC LIMIT 1", [key]) else { return nil }
            return try gate(id)
        }

        func gateExists(_ id: String) throws -> Bool {
            try db.exists("SELECT 1 FROM gates WHERE id = ?", [id])
        }

        func save(_ gate: Gate) throws {
            try SQLGateRepository.save(gate, db: db)
            saved.append(gate)
        }

        func appendAudit(gateID: String?, action: String, actor: String?, detail: JSONObject, at: Timestamp) throws {
            try AuditLedger.append(gateID: gateID, action: action, actor: actor, detail: detail, at: at, db: db)
        }

        func dueGateIDs(at now: Timestamp, limit: Int) throws -> [String] {
            try db.values(
                String.self, "SELECT id FROM gates WHERE next_deadline IS NOT NULL AND next_deadline <= ? ORDER BY next_deadline LIMIT ?",
                [now.milliseconds, limit])
        }

        func latestRunAttributes(pipeline: String, run: String) throws -> JSONObject? {
            try db.value(
                String.self,
                "SELECT attributes FROM events WHERE pipeline = ? AND run = ? AND attributes IS NOT NULL AND substr(type, 1, 5) <> 'gate.' ORDER BY seq DESC LIMIT 1",
                [pipeline, run]).flatMap { (try? JSONValue.parse($0))?.objectValue }
        }
    }

    // MARK: Storage encoding

    static func encode(_ gate: Gate) -> String {
        var o = JSONObject()
        o.append("spec", gate.spec.json)
        o.append("created_at", .int64(gate.createdAt.milliseconds))
        if let e = gate.expiresAt { o.append("expires_at", .int64(e.milliseconds)) }
        o.append("decisions", .array(gate.decisions.map(\.json)))
        if let outcome = gate.outcome { o.append("outcome", outcome.json) }
        if let s = gate.supersededBy { o.append("superseded_by", .string(s)) }
        if let s = gate.supersedes { o.append("supersedes", .string(s)) }
        if let r = gate.nextReminderAt { o.append("next_reminder_at", .int64(r.milliseconds)) }
        o.append("reminders", .int(gate.reminders))
        if let e = gate.escalateAt { o.append("escalate_at", .int64(e.milliseconds)) }
        o.append("escalated", .bool(gate.escalated))
        return JSONValue.object(o).serialized()
    }

    static func decode(id: String, state: String, doc: String) -> Gate? {
        guard let o = (try? JSONValue.parse(doc))?.objectValue, let specValue = o["spec"], let spec = GateSpec(stored: specValue),
              let created = o["created_at"]?.doubleValue else { return nil }
        func ms(_ key: String) -> Timestamp? { o[key]?.doubleValue.map { Timestamp(milliseconds: Int64($0)) } }
        var gate = Gate(id: id, spec: spec, createdAt: Timestamp(milliseconds: Int64(created)))
        gate.state = GateState(rawValue: state) ?? .pending
        gate.expiresAt = ms("expires_at")
        gate.decisions = (o["decisions"]?.arrayValue ?? []).compactMap(GateDecision.init(json:))
        gate.outcome = o["outcome"].flatMap(GateOutcome.init(json:))
        gate.supersededBy = o["superseded_by"]?.stringValue
        gate.supersedes = o["supersedes"]?.stringValue
        gate.nextReminderAt = ms("next_reminder_at")
        gate.reminders = o["reminders"]?.doubleValue.map { Int($0) } ?? 0
        gate.escalateAt = ms("escalate_at")
        gate.escalated = o["escalated"]?.boolValue ?? false
        return gate
    }

    static func fetch(_ id: String, db: any SQLSession) throws -> Gate? {
        try db.first("SELECT id, state, doc FROM gates WHERE id = ?", [id], decode) ?? nil
    }

    static func decode(_ row: any SQLRow) -> Gate? { decode(id: row[0], state: row[1], doc: row[2]) }

    static func save(_ gate: Gate, db: any SQLSession) throws {
        try db.execute(
            """
                INSERT INTO gates (id, key, state, pipeline, run, created_at, next_deadline, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET state = excluded.state, next_deadline = excluded.next_deadline, doc = excluded.doc
                """,
            [gate.id, gate.spec.key, gate.state.rawValue, gate.spec.pipeline, gate.spec.run, gate.createdAt.milliseconds,
                        gate.nextDeadline?.milliseconds, encode(gate)])
    }

    // MARK: Reads

    public func nextDeadline() async throws -> Timestamp? {
        try await database.read { db in
            try db.value(Int64.self, "SELECT MIN(next_deadline) FROM gates WHERE next_deadline IS NOT NULL").map(Timestamp.init(milliseconds:))
        }
    }

    public func get(_ id: String) async throws -> Gate? {
        if let cached = closedCache.withLock({ $0[id] }) { return cached }
        let gate = try await database.read { db in try Self.fetch(id, db: db) }
        if let gate, gate.state.isClosed { remember(gate) }
        return gate
    }

    public func latest(key: String) async throws -> Gate? {
        try await database.read { db in try Transaction(db: db).latestGate(key: key) }
    }

    public func list(_ filter: GateFilter) async throws -> [Gate] {
        try await database.read { db in
            var clauses: [String] = []
            var arguments: SQLArguments = []
            if let s = filter.state { clauses.append("state = ?"); arguments.append(s.rawValue) }
            if let p = filter.pipeline { clauses.append("pipeline = ?"); arguments.append(p) }
            if let r = filter.run { clauses.append("run = ?"); arguments.append(r) }
            arguments.append(filter.limit)
            let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            return try db.all("SELECT id, state, doc FROM gates \(whereClause) ORDER BY created_at DESC, rowid DESC LIMIT ?", arguments, Self.decode)
                .compactMap { $0 }
        }
    }

    public func pendingCount() async throws -> Int {
        try await database.read { db in try db.value(Int.self, "SELECT COUNT(*) FROM gates WHERE state = 'pending'") ?? 0 }
    }

    public func audit(_ id: String) async throws -> [AuditEntry] {
        try await database.read { db in try AuditLedger.entries(gateID: id, db: db) }
    }

    public func verifyAudit() async throws -> AuditLedger.Verification {
        try await database.read { db in try AuditLedger.verify(db: db) }
    }

    public func claimNonce(_ nonce: String, now: Timestamp, keep: Int64) async throws -> Bool {
        let key = Self.nonceKey(nonce)
        return try await database.write { db in
            try db.execute("DELETE FROM callback_nonces WHERE at < ?", [now.milliseconds - keep])
            return try db.execute("INSERT INTO callback_nonces (nonce, at) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING", [key, now.milliseconds]) > 0
        }
    }

    /// A nonce as kept: as sent up to 256 bytes (a Slack signature, a Discord snowflake, a
    /// Mattermost trigger id), a longer one by its SHA-256 — PostgreSQL's B-tree refuses a
    /// key past ~2.7 KB, and an unsigned Mattermost action may send any length.
    static func nonceKey(_ nonce: String) -> String {
        nonce.utf8.count <= 256 ? nonce : "sha256:" + SHA256.hash(data: Array(nonce.utf8)).hexString
    }

    private func remember(_ gate: Gate) {
        closedCache.withLock { cache in
            if cache.count > 10_000 { cache.removeAll(keepingCapacity: true) }
            cache[gate.id] = gate
        }
    }
}
