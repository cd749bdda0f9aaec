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
            guard case .number(let text) = value, let number = Double(text), number.isFinite else { return "must be \(kind == .integer ? "an integer" : "a number")" }
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
            // A number only in JSON's own grammar: Double() also reads "nan", "inf", "0x10" and
            // "+5", and a stored "nan" made the gate unreadable JSON — lost after a restart.
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            if case .number? = try? JSONValue.parse(trimmed) { return .number(trimmed) }
            return .string(text)
        case .string: return .string(text)
        case .boolean: return .bool(["on", "true", "yes", "1"].contains(text.lowercased()))
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case name, type, min, max, options, `default`, required }

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
    public static let fields: [String] = CodingKeys.allCases.map(\.rawValue)

    enum CodingKeys: String, CodingKey, CaseIterable {
        case title, details, pipeline, run, step, key, subject, choices, inputs, required_approvals, approvers, requested_by
        case allow_self_approval, timeout, on_timeout, remind_every, escalate_after, escalate_to, labels, attributes, auto_approve
    }

    /// `auto_approve`: one policy expression, kept as written.
    struct AutoApproveRequest: Decodable {
        var when: String
        enum CodingKeys: String, CodingKey { case when }
        init(from decoder: any Decoder) throws {
            let shape = "must be {\"when\": \"<expression>\"}"
            var body = try FieldReader<CodingKeys>(decoder, notAnObject: shape)
            let when = body.required(String.self, .when, otherwise: shape, missing: shape)
            if let when {
                do { _ = try PolicyExpression(when) } catch { body.refuse(.when, "\(error)") }
            }
            try body.finish()
            self.when = when ?? ""
        }
    }

    /// Validates a request body (`POST /v1/gates`, a gate rule's rendered template), naming
    /// every bad field.
    public static func parse(_ value: JSONValue) -> Result<GateSpec, Problem> {
        Result { () throws(Problem) in try JSONValueDecoder().decode(GateSpec.self, from: value) }
    }

    /// A gate about to be opened: `parse`, and what `parse` let through before these rules (it
    /// also reads back gates stored then) refused — inputs whose bounds no value meets (nobody
    /// could approve the gate: only a rejection or its timeout would close it), and a quorum on
    /// a gate with choices, which closes on its first decision.
    public static func parseNew(_ value: JSONValue) -> Result<GateSpec, Problem> {
        parse(value).flatMap { spec in
            var errors = spec.inputs.enumerated().compactMap { index, input -> FieldError? in
                guard let low = input.min, let high = input.max else { return nil }
                let shown = high == high.rounded() && abs(high) < 1e15 ? String(Int64(high)) : String(high)
                if low > high { return FieldError(field: "inputs[\(index)].min", detail: "must not be greater than max (\(shown))") }
                if input.kind == .integer, low.rounded(.up) > high.rounded(.down) {
                    return FieldError(field: "inputs[\(index)].min", detail: "leaves no whole number up to max (\(shown))")
                }
                return nil
            }
            // A gate with choices closes on its first decision: a quorum it would ignore (one
            // person deciding where two were asked for) is refused instead.
            if spec.isBranching && spec.requiredApprovals > 1 {
                errors.append(FieldError(
                    field: "required_approvals",
                    detail: "applies to approve/reject gates: a gate with choices (\(spec.choices.joined(separator: ", "))) closes on its first decision"))
            }
            return errors.isEmpty ? .success(spec) : .failure(.invalid(errors))
        }
    }
}

extension GateSpec: Decodable {
    public init(from decoder: any Decoder) throws {
        var body = try FieldReader<CodingKeys>(decoder)
        self.init(title: body.text(.title, max: 300, required: true) ?? "", pipeline: "default")
        details = body.text(.details, max: 10_000)
        if let p = body.text(.pipeline, max: 200, identifier: true) { pipeline = p }
        run = body.text(.run, max: 200, identifier: true)
        step = body.text(.step, max: 200, identifier: true)
        key = body.text(.key, max: 500, identifier: true)
        if let subject = body.optional(JSONObject.self, .subject, otherwise: "must be an object") {
            if subject["digest"] != nil, subject["digest"]?.stringValue == nil { body.refuse(field: "subject.digest", "must be a string") }
            self.subject = subject
        }
        if let choices = body.optional([String].self, .choices, otherwise: "must be an array of strings") {
            if choices.isEmpty { body.refuse(.choices, "must not be empty") }
            if Set(choices).count != choices.count { body.refuse(.choices, "must not repeat a choice") }
            if let bad = choices.first(where: { !$0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" } || $0.isEmpty || $0.count > 50 }) {
                body.refuse(.choices, "\"\(bad)\" must be 1–50 letters, digits, - or _")
            }
            if !choices.isEmpty { self.choices = choices }
        }
        for (i, input) in body.each(GateInput.self, .inputs, otherwise: "must be an array") ?? [] {
            if inputs.contains(where: { $0.name == input.name }) { body.refuse(field: "inputs[\(i)].name", "repeats \"\(input.name)\"") }
            inputs.append(input)
        }
        if let n = body.integer(.required_approvals, in: 1...100) { requiredApprovals = n }
        if let approvers = body.optional([String].self, .approvers, otherwise: "must be an array of strings") {
            if approvers.isEmpty { body.refuse(.approvers, "must not be empty (use [\"*\"] for anyone)") }
            for (i, a) in approvers.enumerated() where a != "*" && Identity(a) == nil {
                body.refuse(field: "approvers[\(i)]", "\"\(a)\" is not an identity such as slack:U024BE7LH, discord:80351110224678912, mattermost:@alice or web:bob")
            }
            if !approvers.isEmpty { self.approvers = approvers }
        }
        if let r = body.text(.requested_by, max: 200) {
            if Identity(r) == nil { body.refuse(.requested_by, "\"\(r)\" is not an identity such as web:carol") } else { requestedBy = r }
        }
        if let b = body.optional(Bool.self, .allow_self_approval, otherwise: "must be true or false") { allowSelfApproval = b }
        timeout = body.duration(.timeout, max: Self.maxTimeout, maxText: "90d")
        if let t = body.text(.on_timeout, max: 20) {
            if let outcome = TimeoutOutcome(rawValue: t) { onTimeout = outcome } else { body.refuse(.on_timeout, "must be reject, approve or expire") }
        }
        remindEvery = body.duration(.remind_every, max: Self.maxTimeout, maxText: "90d")
        if let r = remindEvery, r.milliseconds < 1000 { body.refuse(.remind_every, "must be at least 1s") }
        escalateAfter = body.duration(.escalate_after, max: Self.maxTimeout, maxText: "90d")
        escalateTo = body.optional([String].self, .escalate_to, otherwise: "must be an array of strings") ?? []
        if escalateAfter != nil && escalateTo.isEmpty { body.refuse(.escalate_to, "is required with escalate_after: the receivers to escalate to") }
        if let labels = body.optional([String: String].self, .labels, otherwise: "must be an object of strings") {
            self.labels = labels.map { ($0.key, $0.value) }.sorted { $0.0 < $1.0 }
            for (k, value) in self.labels {
                body.record(ControlCharacters.fieldError(body.field(.labels), k) ?? ControlCharacters.fieldError(body.field("labels.\(k)"), value))
            }
        }
        attributes = body.optional(JSONObject.self, .attributes, otherwise: "must be an object")
        autoApprove = body.optional(AutoApproveRequest.self, .auto_approve)?.when
        if !isBranching, requiredApprovals > 1, !approvers.contains("*"), approvers.count < requiredApprovals {
            body.refuse(.required_approvals, "is \(requiredApprovals) but only \(approvers.count) approvers are listed")
        }
        try body.finish()
    }
}

extension GateSpec {
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

extension GateInput: Decodable {
    public init(from decoder: any Decoder) throws {
        var body = try FieldReader<CodingKeys>(decoder, notAnObject: "must be an object with name and type")
        let nameRule = "must be 1–64 letters, digits or _"
        let name = body.required(String.self, .name, otherwise: nameRule, missing: nameRule)
        if let name, name.isEmpty || name.count > 64 || !name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) {
            body.refuse(.name, nameRule)
        }
        let typeRule = "must be integer, number, string or boolean"
        let typeName = body.required(String.self, .type, otherwise: typeRule, missing: typeRule)
        guard let kind = typeName.flatMap(Kind.init(rawValue:)) else {
            if typeName != nil { body.refuse(.type, typeRule) }
            throw Problem.invalid(body.errors)
        }
        self.init(name: name ?? "", kind: kind)
        for bound in [CodingKeys.min, .max] where body.has(bound) {
            guard kind == .integer || kind == .number else {
                body.refuse(bound, "only applies to integer and number inputs")
                continue
            }
            let value = body.optional(Double.self, bound, otherwise: "must be a number")
            if bound == .min { min = value } else { max = value }
        }
        let optionsRule = "must be a non-empty array of strings on a string input"
        if body.has(.options) {
            if kind != .string {
                body.refuse(.options, optionsRule)
            } else if let list = body.optional([String].self, .options, otherwise: optionsRule) {
                if list.isEmpty { body.refuse(.options, optionsRule) } else { options = list }
            }
        }
        if let b = body.optional(Bool.self, .required, otherwise: "must be true or false") { required = b }
        if let v = body.optional(JSONValue.self, .default) {
            if let problem = check(v) { body.refuse(.default, problem) } else { defaultValue = v }
        }
        try body.finish()
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
        guard Self.platforms.contains(platform), !id.isEmpty, id.unicodeScalars.count <= 128, !ControlCharacters.contains(id),
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
