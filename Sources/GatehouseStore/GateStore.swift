import Foundation
import GRDB
import GatehouseCore
import Synchronization

/// Approval gates in SQLite. Every change goes through the event log's group commit, so the
/// gate, its audit entry, its `gate.*` event and the deliveries that event causes are written
/// in one transaction; then the bus wakes the gate's waiters.
public final class GateStore: Sendable {
    public let log: EventLog
    var database: GatehouseDatabase { log.database }
    /// Closed gates never change again: waiters woken together read them from here, not 1,000
    /// times from SQLite.
    private let closedCache = Mutex<[String: Gate]>([:])

    public init(log: EventLog) { self.log = log }

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

    static func fetch(_ id: String, db: Database) throws -> Gate? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT id, state, doc FROM gates WHERE id = ?"), arguments: [id]) else { return nil }
        return decode(id: row["id"], state: row["state"], doc: row["doc"])
    }

    static func save(_ gate: Gate, db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO gates (id, key, state, pipeline, run, created_at, next_deadline, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET state = excluded.state, next_deadline = excluded.next_deadline, doc = excluded.doc
                """,
            arguments: [gate.id, gate.spec.key, gate.state.rawValue, gate.spec.pipeline, gate.spec.run, gate.createdAt.milliseconds,
                        gate.nextDeadline?.milliseconds, encode(gate)])
    }

    // MARK: Events a gate emits

    /// The `gate.*` event for a change. Ids are derived from the gate, so a change is never
    /// announced twice.
    static func event(_ type: String, gate: Gate, suffix: String? = nil, at: Timestamp, extra: JSONObject = JSONObject()) -> Event {
        var attributes = JSONObject()
        attributes.append("gate_id", .string(gate.id))
        attributes.append("gate_state", .string(gate.state.rawValue))
        if let outcome = gate.outcome { attributes.append("outcome", outcome.json) }
        for (k, v) in extra { attributes.append(k, v) }
        let summary: String = switch type {
        case "gate.opened": "Approval needed: \(gate.spec.title)"
        case "gate.reminder": "Reminder: approval still needed: \(gate.spec.title)"
        case "gate.escalated": "Escalated: approval still needed: \(gate.spec.title)"
        default: "\(gate.spec.title): \(gate.outcome?.sentence ?? gate.state.rawValue)"
        }
        let severity: Severity = type == "gate.escalated" ? .warning : .info
        return Event(
            id: "\(gate.id).\(suffix ?? String(type.dropFirst(5)))", type: type, pipeline: gate.spec.pipeline, run: gate.spec.run,
            step: gate.spec.step, severity: severity, summary: String(summary.prefix(1000)), details: nil, labels: gate.spec.labels,
            attributes: attributes, url: nil, time: at)
    }

    static func closingEvent(for gate: Gate, at: Timestamp) -> Event {
        event("gate.\(gate.state.rawValue)", gate: gate, at: at)
    }

    // MARK: Open

    public struct Opened: Sendable {
        public var gate: Gate
        /// false: the `key` named an existing gate for the same subject; it is returned as is.
        public var created: Bool
        public var superseded: Gate?
    }

    /// Opens a gate, or returns the one already opened with the same `key` for the same
    /// subject. A changed `subject.digest` supersedes a pending gate of that key: an approval
    /// is bound to what was shown. `autoDecide` (GATEHOUSE_AUTO_DECIDE) and `auto_approve.when`
    /// close it at once, recorded like a person's decision.
    /// `token` names the API token that opened the gate: the audit keeps it beside the
    /// `requested_by` the request claims, which nothing checks.
    public func open(_ spec: GateSpec, requestedVia: String, token: String? = nil, autoDecide: String? = nil, now: Timestamp = .now()) async throws -> Opened {
        let opened: Opened = try await log.transact { db in
            var events: [Event] = []
            var superseded: Gate?
            let id = "gate_" + EventValidator.generateID().dropFirst(4)
            if let key = spec.key,
               let latestID = try String.fetchOne(db.cachedStatement(sql: "SELECT id FROM gates WHERE key = ? ORDER BY created_at DESC, rowid DESC LIMIT 1"), arguments: [key]),
               var latest = try Self.fetch(latestID, db: db) {
                if latest.spec.subjectDigest == spec.subjectDigest {
                    return (Opened(gate: latest, created: false, superseded: nil), [])
                }
                if latest.state == .pending {
                    latest.supersededBy = id
                    latest.close(GateOutcome(state: .superseded, reason: .superseded, choice: nil, by: nil, at: now))
                    try Self.save(latest, db: db)
                    try AuditLedger.append(gateID: latest.id, action: "superseded", actor: nil, detail: JSONObject([
                        ("superseded_by", .string(id)), ("old_digest", latest.spec.subjectDigest.map(JSONValue.string) ?? .null),
                        ("new_digest", spec.subjectDigest.map(JSONValue.string) ?? .null),
                    ]), at: now, db: db)
                    events.append(Self.closingEvent(for: latest, at: now))
                    superseded = latest
                }
            }
            var gate = Gate(id: id, spec: spec, createdAt: now)
            gate.supersedes = superseded?.id
            try AuditLedger.append(gateID: id, action: "opened", actor: spec.requestedBy, detail: JSONObject([
                ("via", .string(requestedVia)), ("token", token.map(JSONValue.string) ?? .null), ("spec", spec.json),
            ]), at: now, db: db)
            events.append(Self.event("gate.opened", gate: gate, at: now))

            var auto: GateDecision?
            if let autoDecide {
                auto = GateDecision(by: "policy:auto-decide", decision: autoDecide, comment: "GATEHOUSE_AUTO_DECIDE=\(autoDecide)", via: "policy", at: now)
            } else if let when = spec.autoApprove, let policy = try? PolicyExpression(when) {
                let context = try Self.policyContext(for: spec, db: db)
                if policy.evaluate(context) {
                    auto = GateDecision(by: "policy:auto", decision: spec.isBranching ? spec.choices[0] : "approve", comment: "auto_approve: \(when)", via: "policy", at: now)
                }
            }
            if let auto, case .success = gate.apply(auto) {
                try AuditLedger.append(gateID: id, action: "decided", actor: auto.by, detail: JSONObject([
                    ("decision", .string(auto.decision)), ("via", .string("policy")), ("comment", .string(auto.comment ?? "")),
                ]), at: now, db: db)
                try AuditLedger.append(gateID: id, action: "closed", actor: auto.by, detail: JSONObject([("outcome", gate.outcome!.json)]), at: now, db: db)
                events.append(Self.closingEvent(for: gate, at: now))
            }
            try Self.save(gate, db: db)
            return (Opened(gate: gate, created: true, superseded: superseded), events)
        }
        if opened.created {
            if opened.gate.state.isClosed { remember(opened.gate) }
            log.bus.publish(.gateChanged(id: opened.gate.id))
            if let old = opened.superseded { remember(old); log.bus.publish(.gateChanged(id: old.id)) }
        }
        return opened
    }

    /// What `auto_approve.when` sees: the gate's fields and attributes, and the attributes of
    /// the latest event of the same run (`event.attributes`); `attributes.x` falls back to the
    /// event's when the gate does not set it.
    static func policyContext(for spec: GateSpec, db: Database) throws -> JSONObject {
        var eventAttributes = JSONObject()
        if let run = spec.run, let text = try String.fetchOne(
            db, sql: "SELECT attributes FROM events WHERE pipeline = ? AND run = ? AND attributes IS NOT NULL AND type NOT LIKE 'gate.%' ORDER BY seq DESC LIMIT 1",
            arguments: [spec.pipeline, run]), let object = (try? JSONValue.parse(text))?.objectValue {
            eventAttributes = object
        }
        var merged = eventAttributes
        for (k, v) in spec.attributes ?? JSONObject() { merged[k] = v }
        var context = spec.json.objectValue ?? JSONObject()
        context["attributes"] = .object(merged)
        context["event"] = .object(JSONObject([("attributes", .object(eventAttributes))]))
        return context
    }

    // MARK: Decide, cancel

    public enum Change: Sendable, Equatable {
        case applied(Gate, Gate.Applied)
        case refused(Gate.Refusal, Gate)
        case notFound
    }

    /// Applies one decision; a refusal is audited too (who tried, and why not).
    public func decide(_ id: String, _ decision: GateDecision, aliases: [String] = [], now: Timestamp = .now()) async throws -> Change {
        let change: Change = try await log.transact { db in
            guard var gate = try Self.fetch(id, db: db) else { return (.notFound, []) }
            switch gate.apply(decision, aliases: aliases) {
            case .failure(let refusal):
                var detail = JSONObject([("decision", .string(decision.decision)), ("via", .string(decision.via))])
                switch refusal {
                case .closed(let outcome): detail.append("reason", .string("already closed: \(outcome?.sentence ?? "closed")"))
                case .forbidden(let why): detail.append("reason", .string(why))
                case .invalid(let errors): detail.append("reason", .string(errors.map(\.description).joined(separator: "; ")))
                }
                try AuditLedger.append(gateID: id, action: "refused", actor: decision.by, detail: detail, at: now, db: db)
                return (.refused(refusal, gate), [])
            case .success(let applied):
                var events: [Event] = []
                if applied != .duplicate {
                    var detail = JSONObject([("decision", .string(decision.decision)), ("via", .string(decision.via))])
                    if let c = decision.comment { detail.append("comment", .string(c)) }
                    if let i = decision.inputs { detail.append("inputs", .object(i)) }
                    try AuditLedger.append(gateID: id, action: "decided", actor: decision.by, detail: detail, at: now, db: db)
                    if applied == .closed {
                        try AuditLedger.append(gateID: id, action: "closed", actor: decision.by, detail: JSONObject([("outcome", gate.outcome!.json)]), at: now, db: db)
                        events.append(Self.closingEvent(for: gate, at: now))
                    }
                    try Self.save(gate, db: db)
                }
                return (.applied(gate, applied), events)
            }
        }
        if case .applied(let gate, let applied) = change, applied != .duplicate {
            if gate.state.isClosed { remember(gate) }
            log.bus.publish(.gateChanged(id: id))
        }
        return change
    }

    public func cancel(_ id: String, by: String, comment: String?, now: Timestamp = .now()) async throws -> Change {
        let change: Change = try await log.transact { db in
            guard var gate = try Self.fetch(id, db: db) else { return (.notFound, []) }
            guard gate.state == .pending else {
                try AuditLedger.append(gateID: id, action: "refused", actor: by, detail: JSONObject([("decision", .string("cancel")), ("reason", .string("already closed"))]), at: now, db: db)
                return (.refused(.closed(gate.outcome), gate), [])
            }
            gate.close(GateOutcome(state: .canceled, reason: .canceled, choice: nil, by: by, at: now, comment: comment))
            try Self.save(gate, db: db)
            try AuditLedger.append(gateID: id, action: "canceled", actor: by, detail: JSONObject(comment.map { [("comment", .string($0))] } ?? []), at: now, db: db)
            return (.applied(gate, .closed), [Self.closingEvent(for: gate, at: now)])
        }
        if case .applied(let gate, _) = change {
            remember(gate)
            log.bus.publish(.gateChanged(id: id))
        }
        return change
    }

    // MARK: Timers: expiry, reminders, escalation

    /// The earliest moment any pending gate needs the scheduler.
    public func nextDeadline() async throws -> Timestamp? {
        try await database.pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT MIN(next_deadline) FROM gates WHERE next_deadline IS NOT NULL").map(Timestamp.init(milliseconds:))
        }
    }

    /// Everything due at `now`: expires gates past their timeout (with `on_timeout`), sends
    /// reminders and escalations. One transaction per batch; safe to run again after a crash
    /// (each step moves the gate's deadline on in the same commit). Returns the gates touched.
    @discardableResult
    public func runDue(now: Timestamp = .now(), limit: Int = 500) async throws -> [Gate] {
        let touched: [Gate] = try await log.transact { db in
            let ids = try String.fetchAll(db.cachedStatement(sql: "SELECT id FROM gates WHERE next_deadline IS NOT NULL AND next_deadline <= ? ORDER BY next_deadline LIMIT ?"), arguments: [now.milliseconds, limit])
            var events: [Event] = []
            var touched: [Gate] = []
            for id in ids {
                guard var gate = try Self.fetch(id, db: db), gate.state == .pending else { continue }
                if let expires = gate.expiresAt, expires <= now {
                    // Expired while we were down too: the outcome carries the deadline, not the restart time.
                    gate.expire(at: expires)
                    try AuditLedger.append(gateID: id, action: "expired", actor: nil, detail: JSONObject([("on_timeout", .string(gate.spec.onTimeout.rawValue)), ("outcome", gate.outcome!.json)]), at: now, db: db)
                    events.append(Self.closingEvent(for: gate, at: now))
                } else {
                    if !gate.escalated, let at = gate.escalateAt, at <= now {
                        gate.escalated = true
                        try AuditLedger.append(gateID: id, action: "escalated", actor: nil, detail: JSONObject([("to", .array(gate.spec.escalateTo.map { .string($0) }))]), at: now, db: db)
                        events.append(Self.event("gate.escalated", gate: gate, at: now, extra: JSONObject([("escalate_to", .array(gate.spec.escalateTo.map { .string($0) }))])))
                    }
                    if let at = gate.nextReminderAt, at <= now, let every = gate.spec.remindEvery {
                        gate.reminders += 1
                        // Missed reminders (server down) are not sent in a burst: one now, the next a period later.
                        var next = at.adding(milliseconds: every.milliseconds)
                        if next <= now { next = now.adding(milliseconds: every.milliseconds) }
                        gate.nextReminderAt = next
                        try AuditLedger.append(gateID: id, action: "reminded", actor: nil, detail: JSONObject([("reminder", .int(gate.reminders))]), at: now, db: db)
                        events.append(Self.event("gate.reminder", gate: gate, suffix: "reminder.\(gate.reminders)", at: now))
                    }
                }
                try Self.save(gate, db: db)
                touched.append(gate)
            }
            return (touched, events)
        }
        for gate in touched {
            if gate.state.isClosed { remember(gate) }
            log.bus.publish(.gateChanged(id: gate.id))
        }
        return touched
    }

    // MARK: Reads

    public func get(_ id: String) async throws -> Gate? {
        if let cached = closedCache.withLock({ $0[id] }) { return cached }
        let gate = try await database.pool.read { db in try Self.fetch(id, db: db) }
        if let gate, gate.state.isClosed { remember(gate) }
        return gate
    }

    public struct Filter: Sendable {
        public var state: GateState?
        public var pipeline: String?
        public var run: String?
        public var limit = 100
        public init(state: GateState? = nil, pipeline: String? = nil, run: String? = nil, limit: Int = 100) {
            self.state = state
            self.pipeline = pipeline
            self.run = run
            self.limit = limit
        }
    }

    public func list(_ filter: Filter) async throws -> [Gate] {
        try await database.pool.read { db in
            var clauses: [String] = []
            var arguments: StatementArguments = []
            if let s = filter.state { clauses.append("state = ?"); arguments += [s.rawValue] }
            if let p = filter.pipeline { clauses.append("pipeline = ?"); arguments += [p] }
            if let r = filter.run { clauses.append("run = ?"); arguments += [r] }
            arguments += [filter.limit]
            let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            return try Row.fetchAll(db, sql: "SELECT id, state, doc FROM gates \(whereClause) ORDER BY created_at DESC, rowid DESC LIMIT ?", arguments: arguments)
                .compactMap { Self.decode(id: $0["id"], state: $0["state"], doc: $0["doc"]) }
        }
    }

    public func pendingCount() async throws -> Int {
        try await database.pool.read { db in try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM gates WHERE state = 'pending'")) ?? 0 }
    }

    public func audit(_ id: String) async throws -> [AuditEntry] {
        try await database.pool.read { db in try AuditLedger.entries(gateID: id, db: db) }
    }

    public func verifyAudit() async throws -> AuditLedger.Verification {
        try await database.pool.read { db in try AuditLedger.verify(db: db) }
    }

    /// Records something refused before any gate could be touched (a forged callback).
    /// The entry names the gate only when it exists (a forged callback may name anything).
    public func auditRefusal(gateID: String?, action: String, actor: String?, detail: JSONObject, now: Timestamp = .now()) async throws {
        try await log.transact { db in
            let known = try gateID.map { try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM gates WHERE id = ?"), arguments: [$0]) ?? false } ?? false
            var detail = detail
            if !known, let gateID { detail.append("claimed_gate", .string(gateID)) }
            try AuditLedger.append(gateID: known ? gateID : nil, action: action, actor: actor, detail: detail, at: now, db: db)
            return ((), [])
        }
    }

    /// Records a notification or message update about a gate.
    public func auditNotification(gateID: String, action: String, detail: JSONObject, now: Timestamp = .now()) async throws {
        try await log.transact { db in
            try AuditLedger.append(gateID: gateID, action: action, actor: nil, detail: detail, at: now, db: db)
            return ((), [])
        }
    }

    /// Marks a signed callback as used; false when it was already (a replay).
    public func claimNonce(_ nonce: String, now: Timestamp = .now(), keep: Int64 = 3_600_000) async throws -> Bool {
        try await database.pool.write { db in
            try db.cachedStatement(sql: "DELETE FROM callback_nonces WHERE at < ?").execute(arguments: [now.milliseconds - keep])
            try db.cachedStatement(sql: "INSERT INTO callback_nonces (nonce, at) VALUES (?, ?) ON CONFLICT(nonce) DO NOTHING").execute(arguments: [nonce, now.milliseconds])
            return db.changesCount > 0
        }
    }

    private func remember(_ gate: Gate) {
        closedCache.withLock { cache in
            if cache.count > 10_000 { cache.removeAll(keepingCapacity: true) }
            cache[gate.id] = gate
        }
    }
}

extension GatehouseDatabase {
    /// A secret the server keeps for itself, made on first use (32 random bytes, hex).
    public func serverSecret(_ name: String) throws -> [UInt8] {
        try pool.write { db in
            if let hex = try String.fetchOne(db.cachedStatement(sql: "SELECT value FROM server_secrets WHERE name = ?"), arguments: [name]) {
                return Array(hexString: hex)
            }
            var bytes = [UInt8](repeating: 0, count: 32)
            var generator = SystemRandomNumberGenerator()
            for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &generator) }
            try db.cachedStatement(sql: "INSERT INTO server_secrets (name, value) VALUES (?, ?)").execute(arguments: [name, bytes.map { String(format: "%02x", $0) }.joined()])
            return bytes
        }
    }
}
