import Foundation

/// The lifecycle of an approval gate (docs/gates.md).
public enum GateState: String, Sendable, CaseIterable, Encodable {
    case pending, approved, rejected, expired, canceled, superseded
    public var isClosed: Bool { self != .pending }
}

/// What a gate does when its timeout passes with no closing decision.
public enum TimeoutOutcome: String, Sendable, CaseIterable {
    case reject, approve, expire

    public var state: GateState {
        switch self {
        case .reject: .rejected
        case .approve: .approved
        case .expire: .expired
        }
    }
}

/// One typed value the deciders give with their decision (`traffic_percent: 10`).
public struct GateInput: Sendable, Equatable, Encodable {
    public enum Kind: String, Sendable, CaseIterable, Encodable { case integer, number, string, boolean }
    public var name: String
    public var kind: Kind
    public var min: Double?
    public var max: Double?
    /// Allowed values of a `string` input (a select on the web page).
    public var options: [String]?
    public var defaultValue: JSONValue?
    public var required: Bool

    public init(name: String, kind: Kind, min: Double? = nil, max: Double? = nil, options: [String]? = nil, defaultValue: JSONValue? = nil, required: Bool = false) {
        self.name = name
        self.kind = kind
        self.min = min
        self.max = max
        self.options = options
        self.defaultValue = defaultValue
        self.required = required
    }

    /// Checks one value against the input's type and bounds; the error says what is expected.
    public func check(_ value: JSONValue) -> String? {
        switch kind {
        case .integer, .number:
            guard case .number(let text) = value, let number = Double(text) else { return "must be \(kind == .integer ? "an integer" : "a number")" }
            if kind == .integer, number.rounded() != number || text.contains(".") || text.lowercased().contains("e") { return "must be an integer" }
            if let min, number < min { return "must be at least \(JSONValue.double(min).serialized())" }
            if let max, number > max { return "must be at most \(JSONValue.double(max).serialized())" }
        case .string:
            guard let text = value.stringValue else { return "must be a string" }
            if let options, !options.contains(text) { return "must be one of \(options.joined(separator: ", "))" }
            if text.count > 2000 { return "must be at most 2000 characters" }
        case .boolean:
            guard value.boolValue != nil else { return "must be true or false" }
        }
        return nil
    }

    /// Reads a value typed on a web form.
    public func parseForm(_ text: String) -> JSONValue {
        switch kind {
        case .integer, .number:
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            return Double(trimmed) != nil ? .number(trimmed) : .string(text)
        case .string: return .string(text)
        case .boolean: return .bool(["on", "true", "yes", "1"].contains(text.lowercased()))
        }
    }

    enum CodingKeys: String, CodingKey { case name, type, min, max, options, `default`, required }

    /// What was given, nothing more: `required` only when true.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(kind, forKey: .type)
        if let min { try c.encode(min, forKey: .min) }
        if let max { try c.encode(max, forKey: .max) }
        if let options { try c.encode(options, forKey: .options) }
        if let defaultValue { try c.encode(defaultValue, forKey: .default) }
        if required { try c.encode(true, forKey: .required) }
    }

    public var json: JSONValue { JSONValueEncoder.value(self) }
}

/// What a gate was opened with: everything `POST /v1/gates` accepts, validated.
public struct GateSpec: Sendable, Equatable {
    public var title: String
    public var details: String?
    public var pipeline: String
    public var run: String?
    public var step: String?
    public var key: String?
    public var subject: JSONObject?
    public var choices: [String] = ["approve", "reject"]
    public var inputs: [GateInput] = []
    public var requiredApprovals = 1
    public var approvers: [String] = ["*"]
    public var requestedBy: String?
    public var allowSelfApproval = false
    public var timeout: GatehouseDuration?
    public var onTimeout = TimeoutOutcome.reject
    public var remindEvery: GatehouseDuration?
    public var escalateAfter: GatehouseDuration?
    public var escalateTo: [String] = []
    public var labels: [(key: String, value: String)] = []
    public var attributes: JSONObject?
    /// `auto_approve.when`, kept as written; parsed once at validation.
    public var autoApprove: String?

    public init(title: String, pipeline: String) {
        self.title = title
        self.pipeline = pipeline
    }

    public var subjectDigest: String? { subject?["digest"]?.stringValue }

    /// Approve/reject gates count approvals; any other set of choices is a branch whose first
    /// valid choice closes the gate.
    public var isBranching: Bool { Set(choices) != ["approve", "reject"] }

    public static func == (a: GateSpec, b: GateSpec) -> Bool { a.json == b.json }

    public static let maxTimeout = GatehouseDuration.seconds(90 * 86_400)

    /// The fields a gate has (what `POST /v1/gates` and a gate rule's template may set).
    public static let fields: [String] = [
        "title", "details", "pipeline", "run", "step", "key", "subject", "choices", "inputs", "required_approvals",
        "approvers", "requested_by", "allow_self_approval", "timeout", "on_timeout", "remind_every", "escalate_after",
        "escalate_to", "labels", "attributes", "auto_approve",
    ]

    /// Validates a request body, naming every bad field. Unknown fields are refused so a typo
    /// (`timout`) is not silently a gate that never expires.
    public static func parse(_ value: JSONValue) -> Result<GateSpec, Problem> {
        guard let o = value.objectValue else { return .failure(.invalid([FieldError(field: "(body)", detail: "must be a JSON object")])) }
        var errors: [FieldError] = []
        for (k, _) in o where !fields.contains(k) { errors.append(FieldError(field: k, detail: "is not a known field")) }
        /// `identifier`: a name gates are found or grouped by (no control characters).
        func string(_ field: String, max: Int, required: Bool = false, identifier: Bool = false) -> String? {
            guard let v = o[field], v != .null else {
                if required { errors.append(FieldError(field: field, detail: "is required")) }
                return nil
            }
            guard let s = v.stringValue else { errors.append(FieldError(field: field, detail: "must be a string")); return nil }
            if required && s.trimmingCharacters(in: .whitespaces).isEmpty { errors.append(FieldError(field: field, detail: "must not be empty")); return nil }
            if s.count > max { errors.append(FieldError(field: field, detail: "must be at most \(max) characters")); return nil }
            if identifier, let error = ControlCharacters.fieldError(field, s) { errors.append(error); return nil }
            if identifier, s.isEmpty { errors.append(FieldError(field: field, detail: "must not be empty (leave it out instead)")); return nil }
            return s
        }
        func strings(_ field: String) -> [String]? {
            guard let v = o[field], v != .null else { return nil }
            guard let list = v.arrayValue, list.allSatisfy({ $0.stringValue != nil }) else {
                errors.append(FieldError(field: field, detail: "must be an array of strings"))
                return nil
            }
            return list.compactMap(\.stringValue)
        }
        func duration(_ field: String) -> GatehouseDuration? {
            guard let s = string(field, max: 40) else { return nil }
            guard let d = GatehouseDuration(s), d.milliseconds > 0 else {
                errors.append(FieldError(field: field, detail: "must be a positive duration such as 30m or 2h"))
                return nil
            }
            if d.milliseconds > maxTimeout.milliseconds { errors.append(FieldError(field: field, detail: "must be at most 90d")); return nil }
            return d
        }

        var spec = GateSpec(title: string("title", max: 300, required: true) ?? "", pipeline: "default")
        spec.details = string("details", max: 10_000)
        if let p = string("pipeline", max: 200, identifier: true) { spec.pipeline = p }
        spec.run = string("run", max: 200, identifier: true)
        spec.step = string("step", max: 200, identifier: true)
        spec.key = string("key", max: 500, identifier: true)
        if let v = o["subject"], v != .null {
            if let s = v.objectValue {
                if s["digest"] != nil, s["digest"]?.stringValue == nil { errors.append(FieldError(field: "subject.digest", detail: "must be a string")) }
                spec.subject = s
            } else {
                errors.append(FieldError(field: "subject", detail: "must be an object"))
            }
        }
        if let choices = strings("choices") {
            if choices.isEmpty { errors.append(FieldError(field: "choices", detail: "must not be empty")) }
            if Set(choices).count != choices.count { errors.append(FieldError(field: "choices", detail: "must not repeat a choice")) }
            if let bad = choices.first(where: { !$0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" } || $0.isEmpty || $0.count > 50 }) {
                errors.append(FieldError(field: "choices", detail: "\"\(bad)\" must be 1–50 letters, digits, - or _"))
            }
            if !choices.isEmpty { spec.choices = choices }
        }
        if let v = o["inputs"], v != .null {
            if let list = v.arrayValue {
                for (i, item) in list.enumerated() {
                    switch GateInput.parse(item, field: "inputs[\(i)]") {
                    case .success(let input):
                        if spec.inputs.contains(where: { $0.name == input.name }) { errors.append(FieldError(field: "inputs[\(i)].name", detail: "repeats \"\(input.name)\"")) }
                        spec.inputs.append(input)
                    case .failure(let e): errors += e.errors
                    }
                }
            } else {
                errors.append(FieldError(field: "inputs", detail: "must be an array"))
            }
        }
        if let v = o["required_approvals"], v != .null {
            if let n = v.doubleValue, n.rounded() == n, n >= 1, n <= 100 { spec.requiredApprovals = Int(n) } else {
                errors.append(FieldError(field: "required_approvals", detail: "must be an integer from 1 to 100"))
            }
        }
        if let approvers = strings("approvers") {
            if approvers.isEmpty { errors.append(FieldError(field: "approvers", detail: "must not be empty (use [\"*\"] for anyone)")) }
            for (i, a) in approvers.enumerated() where a != "*" && Identity(a) == nil {
                errors.append(FieldError(field: "approvers[\(i)]", detail: "\"\(a)\" is not an identity such as slack:U024BE7LH, discord:80351110224678912, mattermost:@alice or web:bob"))
            }
            if !approvers.isEmpty { spec.approvers = approvers }
        }
        if let r = string("requested_by", max: 200) {
            if Identity(r) == nil { errors.append(FieldError(field: "requested_by", detail: "\"\(r)\" is not an identity such as web:carol")) } else { spec.requestedBy = r }
        }
        if let v = o["allow_self_approval"], v != .null {
            if let b = v.boolValue { spec.allowSelfApproval = b } else { errors.append(FieldError(field: "allow_self_approval", detail: "must be true or false")) }
        }
        spec.timeout = duration("timeout")
        if let t = string("on_timeout", max: 20) {
            if let outcome = TimeoutOutcome(rawValue: t) { spec.onTimeout = outcome } else {
                errors.append(FieldError(field: "on_timeout", detail: "must be reject, approve or expire"))
            }
        }
        spec.remindEvery = duration("remind_every")
        if let r = spec.remindEvery, r.milliseconds < 1000 { errors.append(FieldError(field: "remind_every", detail: "must be at least 1s")) }
        spec.escalateAfter = duration("escalate_after")
        spec.escalateTo = strings("escalate_to") ?? []
        if spec.escalateAfter != nil && spec.escalateTo.isEmpty { errors.append(FieldError(field: "escalate_to", detail: "is required with escalate_after: the receivers to escalate to")) }
        if let v = o["labels"], v != .null {
            if let labels = v.objectValue, labels.allSatisfy({ $0.value.stringValue != nil }) {
                spec.labels = labels.map { ($0.key, $0.value.stringValue!) }.sorted { $0.0 < $1.0 }
                for (k, value) in spec.labels {
                    if let error = ControlCharacters.fieldError("labels", k) ?? ControlCharacters.fieldError("labels.\(k)", value) { errors.append(error) }
                }
            } else {
                errors.append(FieldError(field: "labels", detail: "must be an object of strings"))
            }
        }
        if let v = o["attributes"], v != .null {
            if let a = v.objectValue { spec.attributes = a } else { errors.append(FieldError(field: "attributes", detail: "must be an object")) }
        }
        if let v = o["auto_approve"], v != .null {
            if let a = v.objectValue, let when = a["when"]?.stringValue, a.count == 1 {
                do {
                    _ = try PolicyExpression(when)
                    spec.autoApprove = when
                } catch {
                    errors.append(FieldError(field: "auto_approve.when", detail: "\(error)"))
                }
            } else {
                errors.append(FieldError(field: "auto_approve", detail: "must be {\"when\": \"<expression>\"}"))
            }
        }
        if !spec.isBranching, spec.requiredApprovals > 1, !spec.approvers.contains("*"), spec.approvers.count < spec.requiredApprovals {
            errors.append(FieldError(field: "required_approvals", detail: "is \(spec.requiredApprovals) but only \(spec.approvers.count) approvers are listed"))
        }
        return errors.isEmpty ? .success(spec) : .failure(.invalid(errors))
    }

    /// The canonical stored form, also the API's view of what the gate was opened with (a
    /// gate's JSON starts with its id and state, then these fields). Durations as given
    /// (`"1h"`), labels sorted, absent fields left out.
    public struct Document: Encodable, JSONOmitsAbsentFields {
        public struct AutoApprove: Encodable { var when: String }
        var title: String
        var details: String?
        var pipeline: String
        var run: String?
        var step: String?
        var key: String?
        var subject: JSONObject?
        var choices: [String]
        var input_spec: [GateInput]
        var required_approvals: Int
        var approvers: [String]
        var requested_by: String?
        var allow_self_approval: Bool
        var timeout: String?
        var on_timeout: String
        var remind_every: String?
        var escalate_after: String?
        var escalate_to: [String]?
        var labels: JSONObject
        var attributes: JSONObject?
        var auto_approve: AutoApprove?
    }

    public var document: Document {
        Document(
            title: title, details: details, pipeline: pipeline, run: run, step: step, key: key, subject: subject,
            choices: choices, input_spec: inputs, required_approvals: requiredApprovals, approvers: approvers,
            requested_by: requestedBy, allow_self_approval: allowSelfApproval, timeout: timeout?.description,
            on_timeout: onTimeout.rawValue, remind_every: remindEvery?.description, escalate_after: escalateAfter?.description,
            escalate_to: escalateTo.isEmpty ? nil : escalateTo, labels: JSONObject(labels.map { ($0.0, .string($0.1)) }),
            attributes: attributes, auto_approve: autoApprove.map(Document.AutoApprove.init(when:)))
    }

    public var json: JSONValue { JSONValueEncoder.value(document) }

    /// Reads the stored form back (`input_spec` in place of the request's `inputs`).
    public init?(stored value: JSONValue) {
        guard var o = value.objectValue else { return nil }
        if let specs = o["input_spec"] { o["inputs"] = specs }
        var cleaned = JSONObject()
        for (k, v) in o where k != "input_spec" { cleaned.append(k, v) }
        guard case .success(let spec) = GateSpec.parse(.object(cleaned)) else { return nil }
        self = spec
    }
}

extension GateInput {
    static func parse(_ value: JSONValue, field: String) -> Result<GateInput, InvalidEvent> {
        guard let o = value.objectValue else { return .failure(InvalidEvent([FieldError(field: field, detail: "must be an object with name and type")])) }
        var errors: [FieldError] = []
        for (k, _) in o where !["name", "type", "min", "max", "options", "default", "required"].contains(k) {
            errors.append(FieldError(field: "\(field).\(k)", detail: "is not a known field"))
        }
        let name = o["name"]?.stringValue ?? ""
        if name.isEmpty || name.count > 64 || !name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) {
            errors.append(FieldError(field: "\(field).name", detail: "must be 1–64 letters, digits or _"))
        }
        guard let kind = o["type"]?.stringValue.flatMap(Kind.init(rawValue:)) else {
            errors.append(FieldError(field: "\(field).type", detail: "must be integer, number, string or boolean"))
            return .failure(InvalidEvent(errors))
        }
        var input = GateInput(name: name, kind: kind)
        for bound in ["min", "max"] {
            guard let v = o[bound], v != .null else { continue }
            guard kind == .integer || kind == .number, let d = v.doubleValue else {
                errors.append(FieldError(field: "\(field).\(bound)", detail: kind == .integer || kind == .number ? "must be a number" : "only applies to integer and number inputs"))
                continue
            }
            if bound == "min" { input.min = d } else { input.max = d }
        }
        if let v = o["options"], v != .null {
            if kind == .string, let list = v.arrayValue, !list.isEmpty, list.allSatisfy({ $0.stringValue != nil }) { input.options = list.compactMap(\.stringValue) } else {
                errors.append(FieldError(field: "\(field).options", detail: "must be a non-empty array of strings on a string input"))
            }
        }
        if let v = o["required"], v != .null {
            if let b = v.boolValue { input.required = b } else { errors.append(FieldError(field: "\(field).required", detail: "must be true or false")) }
        }
        if let v = o["default"], v != .null {
            if let problem = input.check(v) { errors.append(FieldError(field: "\(field).default", detail: problem)) } else { input.defaultValue = v }
        }
        return errors.isEmpty ? .success(input) : .failure(InvalidEvent(errors))
    }
}

/// Who decided: `slack:U024BE7LH`, `discord:80351110224678912`, `mattermost:<id>` or
/// `mattermost:@alice`, `web:bob`, and the system's own `policy:auto` / `policy:auto-decide`.
public struct Identity: Sendable, Hashable, CustomStringConvertible {
    public static let platforms: Set<String> = ["slack", "discord", "mattermost", "web", "policy"]
    public let platform: String
    public let id: String

    public init?(_ text: String) {
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let platform = String(text[..<colon])
        let id = String(text[text.index(after: colon)...])
        guard Self.platforms.contains(platform), !id.isEmpty, id.count <= 128, !ControlCharacters.contains(id),
              !id.contains(where: { $0.isWhitespace || $0.isNewline || $0 == "\"" || $0 == "<" || $0 == ">" }) else { return nil }
        self.platform = platform
        self.id = id
    }

    public var description: String { "\(platform):\(id)" }

    /// A person known by name — signed in on the web pages, holding an API token, labelling —
    /// is `web:<name>`, one form everywhere: a bare name means `web:<name>`, and `web:bob`
    /// stays `web:bob` (never `web:web:bob`).
    public static func web(_ nameOrIdentity: String) -> Identity? {
        let name = nameOrIdentity.hasPrefix("web:") ? String(nameOrIdentity.dropFirst(4)) : nameOrIdentity
        guard let identity = Identity("web:" + name), !identity.id.contains(":") else { return nil }
        return identity
    }

    /// Whoever the API is told decided: any identity (`slack:U1`, `web:bob`), or a bare name
    /// meaning `web:<name>`.
    public static func person(_ text: String) -> Identity? {
        if let colon = text.firstIndex(of: ":"), platforms.contains(String(text[..<colon])) { return Identity(text) }
        return web(text)
    }
}
