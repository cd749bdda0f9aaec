import GatehouseCore
import GatehouseStore
import Metrics

/// The gate use cases — open, decide, cancel, expire/remind/escalate — with their rules: the
/// pure state machine (`Gate.apply`), `auto_approve` policy, supersession by digest, the audit
/// entries, the wording of `gate.*` events, the bus and the metrics. The API, the web page,
/// the chat callbacks and the scheduler all come here; the repository only persists, each
/// change in one transaction with its audit entries, its event and the deliveries it causes.
public final class GateService: Sendable {
    public let repository: any GateRepository
    let bus: Bus
    /// GATEHOUSE_AUTO_DECIDE: approve or reject every new gate at once (pipelines under test).
    public let autoDecide: String?
    static let decisionLatency = Metrics.Timer(label: "gatehouse_gate_decision_latency_seconds", preferredDisplayUnit: .seconds)

    public init(repository: any GateRepository, bus: Bus, autoDecide: String? = nil) {
        self.repository = repository
        self.bus = bus
        self.autoDecide = autoDecide
    }

    public struct Opened: Sendable {
        public var gate: Gate
        /// false: the `key` named an existing gate for the same subject; it is returned as is.
        public var created: Bool
        public var superseded: Gate?
    }

    public enum Change: Sendable, Equatable {
        case applied(Gate, Gate.Applied)
        case refused(Gate.Refusal, Gate)
        case notFound
    }

    // MARK: Open

    /// Opens a gate, or returns the one already opened with the same `key` for the same
    /// subject. A changed `subject.digest` supersedes a pending gate of that key: an approval
    /// is bound to what was shown. `autoDecide` (GATEHOUSE_AUTO_DECIDE) and `auto_approve.when`
    /// close it at once, recorded like a person's decision.
    /// `token` names the API token that opened the gate: the audit keeps it beside the
    /// `requested_by` the request claims, which nothing checks.
    public func open(_ spec: GateSpec, requestedVia: String, token: String? = nil, now: Timestamp = .now()) async throws -> Opened {
        let autoDecide = autoDecide
        let opened: Opened = try await repository.transact { tx in
            try Self.open(spec, requestedVia: requestedVia, token: token, autoDecide: autoDecide, eventAttributes: nil, now: now, tx: tx)
        }
        announce(opened)
        return opened
    }

    /// Tells waiters and streams about an opened gate (after its commit).
    public func announce(_ opened: Opened) {
        if opened.created {
            bus.publish(.gateChanged(id: opened.gate.id))
            if let old = opened.superseded { bus.publish(.gateChanged(id: old.id)) }
        }
        if let key = opened.gate.spec.key { bus.publish(.gateKeyChanged(key: key)) }
    }

    /// Opening, inside a transaction: the API's and the gate rules' (which run in the commit
    /// of the event that triggers them). `eventAttributes`: what `auto_approve` sees as the
    /// event's attributes (a rule's triggering event); nil reads the run's latest event.
    public static func open(
        _ spec: GateSpec, requestedVia: String, token: String?, autoDecide: String?, eventAttributes: JSONObject?, now: Timestamp,
        tx: any GateTransaction
    ) throws -> (Opened, [Event]) {
        var events: [Event] = []
        var superseded: Gate?
        let id = "gate_" + EventValidator.generateID().dropFirst(4)
        if let key = spec.key, var latest = try tx.latestGate(key: key) {
            if latest.spec.subjectDigest == spec.subjectDigest {
                return (Opened(gate: latest, created: false, superseded: nil), [])
            }
            if latest.state == .pending {
                latest.supersededBy = id
                latest.close(GateOutcome(state: .superseded, reason: .superseded, choice: nil, by: nil, at: now))
                try tx.save(latest)
                try tx.appendAudit(gateID: latest.id, action: "superseded", actor: nil, detail: JSONObject([
                    ("superseded_by", .string(id)), ("old_digest", latest.spec.subjectDigest.map(JSONValue.string) ?? .null),
                    ("new_digest", spec.subjectDigest.map(JSONValue.string) ?? .null),
                ]), at: now)
                events.append(GateEvents.closing(latest, at: now))
                superseded = latest
            }
        }
        var gate = Gate(id: id, spec: spec, createdAt: now)
        gate.supersedes = superseded?.id
        try tx.appendAudit(gateID: id, action: "opened", actor: spec.requestedBy, detail: JSONObject([
            ("via", .string(requestedVia)), ("token", token.map(JSONValue.string) ?? .null), ("spec", spec.json),
        ]), at: now)
        events.append(GateEvents.event("gate.opened", gate: gate, at: now))

        var auto: GateDecision?
        if let autoDecide {
            auto = GateDecision(by: "policy:auto-decide", decision: autoDecide, comment: "GATEHOUSE_AUTO_DECIDE=\(autoDecide)", via: "policy", at: now)
        } else if let when = spec.autoApprove, let policy = try? PolicyExpression(when) {
            if policy.evaluate(try Self.policyContext(for: spec, eventAttributes: eventAttributes, tx: tx)) {
                auto = GateDecision(by: "policy:auto", decision: spec.isBranching ? spec.choices[0] : "approve", comment: "auto_approve: \(when)", via: "policy", at: now)
            }
        }
        if let auto, case .success = gate.apply(auto) {
            try tx.appendAudit(gateID: id, action: "decided", actor: auto.by, detail: JSONObject([
                ("decision", .string(auto.decision)), ("via", .string("policy")), ("comment", .string(auto.comment ?? "")),
            ]), at: now)
            try tx.appendAudit(gateID: id, action: "closed", actor: auto.by, detail: JSONObject([("outcome", gate.outcome!.json)]), at: now)
            events.append(GateEvents.closing(gate, at: now))
        }
        try tx.save(gate)
        return (Opened(gate: gate, created: true, superseded: superseded), events)
    }

    /// What `auto_approve.when` sees: the gate's fields and attributes, and the attributes of
    /// the latest event of the same run (`event.attributes`); `attributes.x` falls back to the
    /// event's when the gate does not set it.
    static func policyContext(for spec: GateSpec, eventAttributes given: JSONObject? = nil, tx: any GateTransaction) throws -> JSONObject {
        let eventAttributes = try given ?? spec.run.flatMap { try tx.latestRunAttributes(pipeline: spec.pipeline, run: $0) } ?? JSONObject()
        var merged = eventAttributes
        for (k, v) in spec.attributes ?? JSONObject() { merged[k] = v }
        var context = spec.json.objectValue ?? JSONObject()
        context["attributes"] = .object(merged)
        context["event"] = .object(JSONObject([("attributes", .object(eventAttributes))]))
        return context
    }

    // MARK: Decide, cancel

    /// Applies one decision — from the API, the web page or a chat button alike; a refusal is
    /// audited too (who tried, and why not).
    public func decide(_ id: String, _ decision: GateDecision, aliases: [String] = [], now: Timestamp = .now()) async throws -> Change {
        if Self.namesNoGate(id) { return .notFound }
        let change: Change = try await repository.transact { tx in
            guard var gate = try tx.gate(id) else { return (.notFound, []) }
            switch gate.apply(decision, aliases: aliases) {
            case .failure(let refusal):
                var detail = JSONObject([("decision", .string(decision.decision)), ("via", .string(decision.via))])
                switch refusal {
                case .closed(let outcome): detail.append("reason", .string("already closed: \(outcome?.sentence ?? "closed")"))
                case .forbidden(let why): detail.append("reason", .string(why))
                case .invalid(let errors): detail.append("reason", .string(errors.map(\.description).joined(separator: "; ")))
                }
                try tx.appendAudit(gateID: id, action: "refused", actor: decision.by, detail: detail, at: now)
                return (.refused(refusal, gate), [])
            case .success(let applied):
                var events: [Event] = []
                if applied != .duplicate {
                    var detail = JSONObject([("decision", .string(decision.decision)), ("via", .string(decision.via))])
                    if let c = decision.comment { detail.append("comment", .string(c)) }
                    if let i = decision.inputs { detail.append("inputs", .object(i)) }
                    try tx.appendAudit(gateID: id, action: "decided", actor: decision.by, detail: detail, at: now)
                    if applied == .closed {
                        try tx.appendAudit(gateID: id, action: "closed", actor: decision.by, detail: JSONObject([("outcome", gate.outcome!.json)]), at: now)
                        events.append(GateEvents.closing(gate, at: now))
                    }
                    try tx.save(gate)
                }
                return (.applied(gate, applied), events)
            }
        }
        if case .applied(let gate, let applied) = change, applied != .duplicate {
            if applied == .closed, let closed = gate.outcome?.at {
                Self.decisionLatency.recordMilliseconds(max(0, closed.milliseconds - gate.createdAt.milliseconds))
            }
            publishChange(gate)
        }
        return change
    }

    /// Waiters on the gate, and on its key.
    func publishChange(_ gate: Gate) {
        bus.publish(.gateChanged(id: gate.id))
        if let key = gate.spec.key { bus.publish(.gateKeyChanged(key: key)) }
    }

    public func cancel(_ id: String, by: String, comment: String?, now: Timestamp = .now()) async throws -> Change {
        if Self.namesNoGate(id) { return .notFound }
        let change: Change = try await repository.transact { tx in
            guard var gate = try tx.gate(id) else { return (.notFound, []) }
            guard gate.state == .pending else {
                try tx.appendAudit(gateID: id, action: "refused", actor: by, detail: JSONObject([("decision", .string("cancel")), ("reason", .string("already closed"))]), at: now)
                return (.refused(.closed(gate.outcome), gate), [])
            }
            gate.close(GateOutcome(state: .canceled, reason: .canceled, choice: nil, by: by, at: now, comment: comment))
            try tx.save(gate)
            try tx.appendAudit(gateID: id, action: "canceled", actor: by, detail: JSONObject(comment.map { [("comment", .string($0))] } ?? []), at: now)
            return (.applied(gate, .closed), [GateEvents.closing(gate, at: now)])
        }
        if case .applied(let gate, _) = change { publishChange(gate) }
        return change
    }

    // MARK: Timers: expiry, reminders, escalation

    /// Everything due at `now`: expires gates past their timeout (with `on_timeout`), sends
    /// reminders and escalations. One transaction per batch; safe to run again after a crash
    /// (each step moves the gate's deadline on in the same commit). Returns the gates touched.
    @discardableResult
    public func runDue(now: Timestamp = .now(), limit: Int = 500) async throws -> [Gate] {
        let touched: [Gate] = try await repository.transact { tx in
            var events: [Event] = []
            var touched: [Gate] = []
            for id in try tx.dueGateIDs(at: now, limit: limit) {
                guard var gate = try tx.gate(id), gate.state == .pending else { continue }
                if let expires = gate.expiresAt, expires <= now {
                    // Expired while we were down too: the outcome carries the deadline, not the restart time.
                    gate.expire(at: expires)
                    try tx.appendAudit(gateID: id, action: "expired", actor: nil, detail: JSONObject([("on_timeout", .string(gate.spec.onTimeout.rawValue)), ("outcome", gate.outcome!.json)]), at: now)
                    events.append(GateEvents.closing(gate, at: now))
                } else {
                    if !gate.escalated, let at = gate.escalateAt, at <= now {
                        gate.escalated = true
                        try tx.appendAudit(gateID: id, action: "escalated", actor: nil, detail: JSONObject([("to", .array(gate.spec.escalateTo.map { .string($0) }))]), at: now)
                        events.append(GateEvents.event("gate.escalated", gate: gate, at: now, extra: JSONObject([("escalate_to", .array(gate.spec.escalateTo.map { .string($0) }))])))
                    }
                    if let at = gate.nextReminderAt, at <= now, let every = gate.spec.remindEvery {
                        gate.reminders += 1
                        // Missed reminders (server down) are not sent in a burst: one now, the next a period later.
                        var next = at.adding(milliseconds: every.milliseconds)
                        if next <= now { next = now.adding(milliseconds: every.milliseconds) }
                        gate.nextReminderAt = next
                        try tx.appendAudit(gateID: id, action: "reminded", actor: nil, detail: JSONObject([("reminder", .int(gate.reminders))]), at: now)
                        events.append(GateEvents.event("gate.reminder", gate: gate, suffix: "reminder.\(gate.reminders)", at: now))
                    }
                }
                try tx.save(gate)
                touched.append(gate)
            }
            return (touched, events)
        }
        for gate in touched { publishChange(gate) }
        return touched
    }

    // MARK: Audit of what is not a decision

    /// Records something refused before any gate could be touched (a forged callback). The
    /// entry names the gate only when it exists (a forged callback may name anything).
    public func auditRefusal(gateID: String?, action: String, actor: String?, detail: JSONObject, now: Timestamp = .now()) async throws {
        try await repository.transact { tx in
            let known = try gateID.map { try !Self.namesNoGate($0) && tx.gateExists($0) } ?? false
            var detail = detail
            if !known, let gateID { detail.append("claimed_gate", .string(gateID)) }
            try tx.appendAudit(gateID: known ? gateID : nil, action: action, actor: actor, detail: detail, at: now)
            return ((), [])
        }
    }

    /// Records a notification or message update about a gate.
    public func auditNotification(gateID: String, action: String, detail: JSONObject, now: Timestamp = .now()) async throws {
        try await repository.transact { tx in
            try tx.appendAudit(gateID: gateID, action: action, actor: nil, detail: detail, at: now)
            return ((), [])
        }
    }

    /// Marks a signed callback as used; false when it was already (a replay). Kept an hour.
    /// The platforms' ids are plain text (signatures, snowflakes, trigger ids): one holding a
    /// control character is a malformed request, refused before the store (PostgreSQL's text
    /// cannot hold a NUL).
    public func claimNonce(_ nonce: String, now: Timestamp = .now()) async throws -> Bool {
        if ControlCharacters.contains(nonce) { throw Problem.badRequest("a callback id must not contain \(ControlCharacters.described)") }
        return try await repository.claimNonce(nonce, now: now, keep: 3_600_000)
    }

    // MARK: Reads

    public func get(_ id: String) async throws -> Gate? { Self.namesNoGate(id) ? nil : try await repository.get(id) }
    /// The newest gate opened with `key` (after a supersede, the one that replaced it).
    public func latest(key: String) async throws -> Gate? { try await repository.latest(key: key) }
    public func list(_ filter: GateFilter) async throws -> [Gate] { try await repository.list(filter) }
    public func pendingCount() async throws -> Int { try await repository.pendingCount() }
    public func nextDeadline() async throws -> Timestamp? { try await repository.nextDeadline() }
    public func audit(_ id: String) async throws -> [AuditEntry] { Self.namesNoGate(id) ? [] : try await repository.audit(id) }

    /// Gate ids are generated (`gate_` and hex): one holding a control character names no
    /// gate and is not looked up. A forged callback may name anything, and PostgreSQL's text
    /// cannot even hold the NUL it may send.
    static func namesNoGate(_ id: String) -> Bool { ControlCharacters.containsC0(id) }
    public func verifyAudit() async throws -> AuditLedger.Verification { try await repository.verifyAudit() }
}

/// The `gate.*` events a gate emits, and their wording.
enum GateEvents {
    /// The event for a change. Ids are derived from the gate, so a change is never announced
    /// twice.
    static func event(_ type: String, gate: Gate, suffix: String? = nil, at: Timestamp, extra: JSONObject = JSONObject()) -> Event {
        var attributes = JSONObject()
        attributes.append("gate_id", .string(gate.id))
        attributes.append("gate_state", .string(gate.state.rawValue))
        // What event-driven pipelines correlate on: they know the key, not the id.
        if let key = gate.spec.key { attributes.append("gate_key", .string(key)) }
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

    static func closing(_ gate: Gate, at: Timestamp) -> Event {
        event("gate.\(gate.state.rawValue)", gate: gate, at: at)
    }
}
