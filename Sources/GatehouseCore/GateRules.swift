import Foundation

/// One person's (or policy's) answer to a gate.
public struct GateDecision: Sendable, Equatable, Encodable, JSONOmitsAbsentFields {
    public var by: String
    public var decision: String
    public var comment: String?
    public var inputs: JSONObject?
    /// Where it came from: api, cli, web, slack, discord, mattermost, policy.
    public var via: String
    public var at: Timestamp

    public init(by: String, decision: String, comment: String? = nil, inputs: JSONObject? = nil, via: String, at: Timestamp) {
        self.by = by
        self.decision = decision
        self.comment = comment
        self.inputs = inputs
        self.via = via
        self.at = at
    }

    /// Also the stored form (`init?(json:)` reads it back) and part of audit entries, whose
    /// hashes cover it: the key order is the declaration order above.
    public var json: JSONValue { JSONValueEncoder.value(self) }

    public init?(json: JSONValue) {
        guard let o = json.objectValue, let by = o["by"]?.stringValue, let decision = o["decision"]?.stringValue,
              let at = o["at"]?.stringValue.flatMap(Timestamp.init(rfc3339:)) else { return nil }
        self.init(by: by, decision: decision, comment: o["comment"]?.stringValue, inputs: o["inputs"]?.objectValue, via: o["via"]?.stringValue ?? "api", at: at)
    }
}

/// How a gate closed. A timeout names no one: it was the clock.
public struct GateOutcome: Sendable, Equatable, Encodable, JSONOmitsAbsentFields {
    public enum Reason: String, Sendable, Encodable { case decision, policy, timeout, canceled, superseded }
    public var state: GateState
    public var reason: Reason
    /// The closing choice (approve, reject, or a branch); nil for cancel/supersede/expire.
    public var choice: String?
    public var by: String?
    public var at: Timestamp
    public var comment: String?

    public init(state: GateState, reason: Reason, choice: String?, by: String?, at: Timestamp, comment: String? = nil) {
        self.state = state
        self.reason = reason
        self.choice = choice
        self.by = by
        self.at = at
        self.comment = comment
    }

    /// Part of audit entries, whose hashes cover it: the key order is the declaration order above.
    public var json: JSONValue { JSONValueEncoder.value(self) }

    public init?(json: JSONValue) {
        guard let o = json.objectValue, let state = o["state"]?.stringValue.flatMap(GateState.init(rawValue:)),
              let reason = o["reason"]?.stringValue.flatMap(Reason.init(rawValue:)),
              let at = o["at"]?.stringValue.flatMap(Timestamp.init(rfc3339:)) else { return nil }
        self.init(state: state, reason: reason, choice: o["choice"]?.stringValue, by: o["by"]?.stringValue, at: at, comment: o["comment"]?.stringValue)
    }

    /// One line for people: "approved by slack:U1", "rejected (timeout)".
    public var sentence: String {
        switch reason {
        case .timeout: return "\(state.rawValue) (timed out)"
        case .canceled: return "canceled" + (by.map { " by \($0)" } ?? "")
        case .superseded: return "superseded by a new gate"
        case .decision, .policy:
            let verb = choice.map { $0 == "approve" || $0 == "reject" ? state.rawValue : "chose \($0)" } ?? state.rawValue
            return verb + (by.map { " by \($0)" } ?? "")
        }
    }
}

/// A gate as stored: what it was opened with, where it stands, who said what.
public struct Gate: Sendable, Equatable {
    public var id: String
    public var spec: GateSpec
    public var state: GateState = .pending
    public var createdAt: Timestamp
    public var expiresAt: Timestamp?
    public var decisions: [GateDecision] = []
    public var outcome: GateOutcome?
    public var supersededBy: String?
    public var supersedes: String?
    /// Next reminder due (nil: none). Kept with the gate so reminders survive restarts.
    public var nextReminderAt: Timestamp?
    public var reminders = 0
    public var escalateAt: Timestamp?
    public var escalated = false

    public init(id: String, spec: GateSpec, createdAt: Timestamp) {
        self.id = id
        self.spec = spec
        self.createdAt = createdAt
        expiresAt = spec.timeout.map { createdAt.adding(milliseconds: $0.milliseconds) }
        nextReminderAt = spec.remindEvery.map { createdAt.adding(milliseconds: $0.milliseconds) }
        escalateAt = spec.escalateAfter.map { createdAt.adding(milliseconds: $0.milliseconds) }
    }

    /// Distinct identities that approved.
    public var approvals: [String] {
        var seen: [String] = []
        for d in decisions where d.decision == "approve" && !seen.contains(d.by) { seen.append(d.by) }
        return seen
    }

    /// Values given by the deciders: defaults, overridden by each decision in order.
    public var inputValues: JSONObject {
        var values = JSONObject()
        for input in spec.inputs { if let d = input.defaultValue { values[input.name] = d } }
        for decision in decisions where decision.decision != "reject" {
            for (k, v) in decision.inputs ?? JSONObject() { values[k] = v }
        }
        return values
    }

    /// The next moment the scheduler must look at this gate (expiry, reminder, escalation).
    public var nextDeadline: Timestamp? {
        guard state == .pending else { return nil }
        return [expiresAt, nextReminderAt, escalated ? nil : escalateAt].compactMap { $0 }.min()
    }

    /// Why a decision is refused; each maps to an HTTP status.
    public enum Refusal: Error, Sendable, Equatable {
        /// 409: the gate is already closed (first closing decision wins).
        case closed(GateOutcome?)
        /// 403: not on the allow-list, or the requester deciding their own gate.
        case forbidden(String)
        /// 422: a bad choice or input.
        case invalid([FieldError])

        public var problem: Problem {
            switch self {
            case .closed(let outcome):
                var p = Problem(status: 409, title: "Conflict", detail: "the gate is already closed: \(outcome?.sentence ?? "closed")")
                if let outcome { p.extensions.append("outcome", outcome.json) }
                return p
            case .forbidden(let why): return .forbidden(why)
            case .invalid(let errors): return .invalid(errors)
            }
        }
    }

    /// The result of applying a decision.
    public enum Applied: Sendable, Equatable {
        /// Counted; the gate is still pending (more approvals needed).
        case counted
        /// This decision closed the gate.
        case closed
        /// The same identity already gave this answer: it counts once, nothing changes.
        case duplicate
    }

    /// Why `by` (also known as `aliases`) may not decide this gate, or nil when they may: the
    /// one rule behind decisions and the personal links that make them.
    public func refusal(of by: String, aliases: [String] = []) -> String? {
        let names = [by] + aliases
        guard spec.approvers.contains("*") || names.contains(where: spec.approvers.contains) else {
            return "\(by) is not an approver of this gate (approvers: \(spec.approvers.joined(separator: ", ")))"
        }
        if let requester = spec.requestedBy, !spec.allowSelfApproval, names.contains(requester) {
            return "\(by) requested this gate and may not decide it (allow_self_approval is false)"
        }
        return nil
    }

    /// Applies a decision by `decision.by` (also known as `aliases`, e.g. a Mattermost user's id
    /// and @name). Pure: the caller stores the result. docs/gates.md rules, in order: closed gates
    /// answer with their outcome; choices and inputs must be valid; only allowed identities,
    /// never the requester unless allowed; each identity counts once; one rejection rejects;
    /// `required_approvals` approvals approve; a branching gate closes on its first choice.
    public mutating func apply(_ decision: GateDecision, aliases: [String] = []) -> Result<Applied, Refusal> {
        guard state == .pending else { return .failure(.closed(outcome)) }
        var errors: [FieldError] = []
        if !spec.choices.contains(decision.decision) {
            errors.append(FieldError(field: "decision", detail: "must be one of \(spec.choices.joined(separator: ", "))"))
        }
        if Identity(decision.by) == nil { errors.append(FieldError(field: "by", detail: "\"\(decision.by)\" is not an identity such as web:bob")) }
        if let c = decision.comment, c.count > 2000 { errors.append(FieldError(field: "comment", detail: "must be at most 2000 characters")) }
        if !errors.isEmpty { return .failure(.invalid(errors)) }

        let isPolicy = decision.by.hasPrefix("policy:")
        if !isPolicy, let refusal = refusal(of: decision.by, aliases: aliases) { return .failure(.forbidden(refusal)) }
        let closing = spec.isBranching || decision.decision == "reject" || isPolicy
            || Set(approvals + [decision.by]).count >= spec.requiredApprovals
        if let inputErrors = checkInputs(decision.inputs, closing: closing && decision.decision != "reject"), !inputErrors.isEmpty {
            return .failure(.invalid(inputErrors))
        }
        if !spec.isBranching, decision.decision == "approve", approvals.contains(decision.by), !isPolicy {
            return .success(.duplicate)
        }
        decisions.append(decision)
        guard closing else { return .success(.counted) }
        let state: GateState = decision.decision == "reject" ? .rejected : .approved
        close(GateOutcome(state: state, reason: isPolicy ? .policy : .decision, choice: decision.decision, by: decision.by, at: decision.at, comment: decision.comment))
        return .success(.closed)
    }

    /// Unknown names and bad values are refused; a required input must have a value (given or
    /// by default) by the time the gate closes with an approval.
    func checkInputs(_ given: JSONObject?, closing: Bool) -> [FieldError]? {
        var errors: [FieldError] = []
        for (name, value) in given ?? JSONObject() {
            guard let input = spec.inputs.first(where: { $0.name == name }) else {
                errors.append(FieldError(field: "inputs.\(name)", detail: "is not an input of this gate" + (spec.inputs.isEmpty ? "" : " (inputs: \(spec.inputs.map(\.name).joined(separator: ", ")))")))
                continue
            }
            if let problem = input.check(value) { errors.append(FieldError(field: "inputs.\(name)", detail: problem)) }
        }
        if closing {
            let have = inputValues
            for input in spec.inputs where input.required && have[input.name] == nil && given?[input.name] == nil {
                errors.append(FieldError(field: "inputs.\(input.name)", detail: "is required"))
            }
        }
        return errors
    }

    public mutating func close(_ outcome: GateOutcome) {
        state = outcome.state
        self.outcome = outcome
        nextReminderAt = nil
    }

    /// The timeout passed: `on_timeout` decides, and the outcome names the clock, not a person.
    public mutating func expire(at now: Timestamp) {
        close(GateOutcome(state: spec.onTimeout.state, reason: .timeout, choice: nil, by: nil, at: now))
    }

    /// A gate as the API shows it: id and state, the spec it was opened with, then its
    /// progress. `url` is the web decision page when the server knows its public URL.
    public struct Resource: Encodable, JSONOmitsAbsentFields {
        var id: String
        var state: GateState
        var url: String?
        var spec: GateSpec.Document
        var created_at: Timestamp
        var expires_at: Timestamp?
        var approvals: Int
        var decisions: [GateDecision]
        var inputs: JSONObject
        var outcome: GateOutcome?
        var closed_at: Timestamp?
        var superseded_by: String?
        var supersedes: String?
        var next_reminder_at: Timestamp?
        var escalated: Bool?

        enum CodingKeys: String, CodingKey {
            case id, state, url, created_at, expires_at, approvals, decisions, inputs, outcome, closed_at, superseded_by, supersedes, next_reminder_at, escalated
        }

        /// The spec's fields sit at the top level, between the identity and the progress.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(state, forKey: .state)
            try c.encodeIfPresent(url, forKey: .url)
            try spec.encode(to: encoder)
            try c.encode(created_at, forKey: .created_at)
            try c.encodeIfPresent(expires_at, forKey: .expires_at)
            try c.encode(approvals, forKey: .approvals)
            try c.encode(decisions, forKey: .decisions)
            try c.encode(inputs, forKey: .inputs)
            try c.encodeIfPresent(outcome, forKey: .outcome)
            try c.encodeIfPresent(closed_at, forKey: .closed_at)
            try c.encodeIfPresent(superseded_by, forKey: .superseded_by)
            try c.encodeIfPresent(supersedes, forKey: .supersedes)
            try c.encodeIfPresent(next_reminder_at, forKey: .next_reminder_at)
            try c.encodeIfPresent(escalated, forKey: .escalated)
        }
    }

    public func resource(url: String?) -> Resource {
        Resource(
            id: id, state: state, url: url, spec: spec.document, created_at: createdAt, expires_at: expiresAt,
            approvals: approvals.count, decisions: decisions, inputs: inputValues, outcome: outcome, closed_at: outcome?.at,
            superseded_by: supersededBy, supersedes: supersedes, next_reminder_at: state == .pending ? nextReminderAt : nil,
            escalated: escalated ? true : nil)
    }

    public func json(url: String?) -> JSONValue { JSONValueEncoder.value(resource(url: url)) }
}
