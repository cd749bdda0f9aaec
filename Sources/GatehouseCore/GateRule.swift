/// A gate rule (`gates:` in gatehouse.yml): events that match its matchers open the gate its
/// template describes — every field of a gate (docs/gates.md) may be a template over the
/// event — in the same transaction as the event itself.
public struct GateRule: Sendable {
    public var name: String
    public var matchers: [Matcher]
    /// The gate's fields; strings may hold `{{path}}` tags over the event.
    public var template: JSONObject
    public var line: Int

    public init(name: String, matchers: [Matcher], template: JSONObject, line: Int = 0) {
        self.name = name
        self.matchers = matchers
        self.template = template
        self.line = line
    }

    public func matches(_ event: Event) -> Bool { matchers.allSatisfy { $0.matches(event) } }

    /// The gate this rule opens for `event`: its template rendered, the event's pipeline, run
    /// and step by default, checked as `POST /v1/gates` checks a gate. Every problem names the
    /// rule and the field (`gates[deploy].key: …`).
    public func gate(for event: Event) -> Result<GateSpec, InvalidEvent> {
        var rendered: JSONObject
        switch EventTemplate.render(template, for: event, naming: { "gates[\(name)].\($0)" }) {
        case .success(let object): rendered = object
        case .failure(let invalid): return .failure(invalid)
        }
        if rendered["pipeline"] == nil { rendered.append("pipeline", .string(event.pipeline)) }
        if rendered["run"] == nil, let run = event.run { rendered.append("run", .string(run)) }
        if rendered["step"] == nil, let step = event.step { rendered.append("step", .string(step)) }
        switch GateSpec.parseNew(.object(rendered)) {
        case .success(let spec): return .success(spec)
        case .failure(let problem):
            let fields = problem.errors.isEmpty ? [FieldError(field: "(gate)", detail: problem.detail)] : problem.errors
            return .failure(InvalidEvent(fields.map { FieldError(field: "gates[\(name)].\($0.field)", detail: "\($0.detail) (as rendered for this event)") }))
        }
    }
}

/// `{{path}}` tags over an event (`type`, `pipeline`, `run`, `step`, `labels.team`,
/// `attributes.model`…), the variables of Mustache. Strict where Mustache is lenient: a tag
/// whose value the event does not have is an error, not an empty string — an empty key or
/// title would open the wrong gate. A string that is one tag alone takes the value as it is
/// (a number stays a number, a list a list).
public enum EventTemplate {
    public struct RenderError: Error, Sendable, Equatable {
        public var detail: String
    }

    /// The template's tags, or what is wrong with its syntax.
    public static func tags(in text: String) -> Result<[String], RenderError> {
        var tags: [String] = []
        var rest = Substring(text)
        while let open = rest.range(of: "{{") {
            let triple = rest[open.upperBound...].hasPrefix("{")
            let start = triple ? rest.index(after: open.upperBound) : open.upperBound
            guard let close = rest[start...].range(of: triple ? "}}}" : "}}") else {
                return .failure(RenderError(detail: "has a {{ without its }}"))
            }
            let name = String(rest[start..<close.lowerBound].trimmingASCIIWhitespace)
            if let sigil = name.first, "#^/>!&=".contains(sigil) {
                return .failure(RenderError(detail: "uses {{\(name)}}: gate rules take variables ({{attributes.model}}), not sections or partials"))
            }
            if name.isEmpty { return .failure(RenderError(detail: "has an empty {{}}")) }
            tags.append(name)
            rest = rest[close.upperBound...]
        }
        return .success(tags)
    }

    /// What tags see: the event as the API shows it.
    public static func context(of event: Event) -> JSONObject {
        StoredEvent(cursor: 0, event: event, receivedAt: event.time).json.objectValue ?? JSONObject()
    }

    /// Renders each field of a rule's template for `event`; every field that cannot be
    /// rendered is a problem named by `naming(field)`.
    public static func render(_ template: JSONObject, for event: Event, naming: (String) -> String) -> Result<JSONObject, InvalidEvent> {
        let context = context(of: event)
        var rendered = JSONObject()
        var errors: [FieldError] = []
        for (field, value) in template {
            do {
                rendered.append(field, try render(value, context: context))
            } catch {
                errors.append(FieldError(field: naming(field), detail: error.detail))
            }
        }
        return errors.isEmpty ? .success(rendered) : .failure(InvalidEvent(errors))
    }

    /// Renders every string in `value` (recursively through lists and objects).
    public static func render(_ value: JSONValue, context: JSONObject) throws(RenderError) -> JSONValue {
        switch value {
        case .string(let text):
            let names = try tags(in: text).get()
            if names.isEmpty { return value }
            if names.count == 1, isSingleTag(text.trimmingASCIIWhitespace) { return try lookup(names[0], in: context) }
            var out = ""
            var rest = Substring(text)
            while let open = rest.range(of: "{{") {
                out += rest[..<open.lowerBound]
                let triple = rest[open.upperBound...].hasPrefix("{")
                let start = triple ? rest.index(after: open.upperBound) : open.upperBound
                let close = rest[start...].range(of: triple ? "}}}" : "}}")!
                let found = try lookup(String(rest[start..<close.lowerBound].trimmingASCIIWhitespace), in: context)
                out += found.stringValue ?? found.serialized()
                rest = rest[close.upperBound...]
            }
            return .string(out + rest)
        case .array(let items):
            var out: [JSONValue] = []
            for item in items { out.append(try render(item, context: context)) }
            return .array(out)
        case .object(let object):
            var out = JSONObject()
            for (k, v) in object { out.append(k, try render(v, context: context)) }
            return .object(out)
        default:
            return value
        }
    }

    /// `{{x}}` (or `{{{x}}}`) and nothing else.
    static func isSingleTag(_ text: Substring) -> Bool {
        guard text.hasPrefix("{{"), text.hasSuffix("}}") else { return false }
        let inner = text.hasPrefix("{{{") ? text.dropFirst(3).dropLast(3) : text.dropFirst(2).dropLast(2)
        return !inner.contains("{") && !inner.contains("}")
    }

    public static func lookup(_ path: String, in context: JSONObject) throws(RenderError) -> JSONValue {
        var current: JSONValue = .object(context)
        for part in path.split(separator: ".", omittingEmptySubsequences: false) {
            guard let next = current.objectValue?[String(part)], next != .null else {
                throw RenderError(detail: "uses {{\(path)}}, which this event does not have")
            }
            current = next
        }
        return current
    }
}

/// A labelling rule (`labelling:` in gatehouse.yml): events that match it create its dataset
/// on first use and add the items they carry, in the same transaction as the event.
public struct LabellingRule: Sendable {
    public var name: String
    public var matchers: [Matcher]
    /// The dataset's fields (`name` from the rule's `dataset:`, `task`, `labels`,
    /// `annotators_per_item`, `instructions`); strings may hold `{{path}}` tags.
    public var template: JSONObject
    /// Where the event carries its items (`attributes.items`): a list of items as
    /// `POST /v1/datasets/{name}/items` takes them.
    public var items: String
    public var line: Int

    public init(name: String, matchers: [Matcher], template: JSONObject, items: String, line: Int = 0) {
        self.name = name
        self.matchers = matchers
        self.template = template
        self.items = items
        self.line = line
    }

    public func matches(_ event: Event) -> Bool { matchers.allSatisfy { $0.matches(event) } }

    /// The dataset and the items this rule takes from `event`; every problem names the rule
    /// and the field (`labelling[review].items[2].data`).
    public func work(for event: Event) -> Result<(DatasetSpec, [DatasetItem]), InvalidEvent> {
        let context = EventTemplate.context(of: event)
        var errors: [FieldError] = []
        let rendered: JSONObject
        switch EventTemplate.render(template, for: event, naming: { "labelling[\(name)].\($0 == "name" ? "dataset" : $0)" }) {
        case .success(let object): rendered = object
        case .failure(let invalid): return .failure(invalid)
        }
        let spec: DatasetSpec
        switch DatasetSpec.parseNew(.object(rendered)) {
        case .success(let s): spec = s
        case .failure(let problem):
            return .failure(InvalidEvent(problem.errors.map {
                FieldError(field: "labelling[\(name)].\($0.field == "name" ? "dataset" : $0.field)", detail: "\($0.detail) (as rendered for this event)")
            }))
        }
        let list: [JSONValue]
        do {
            list = try EventTemplate.lookup(items, in: context).arrayValue ?? []
            if list.isEmpty { errors.append(FieldError(field: "labelling[\(name)].items", detail: "\(items) must be a non-empty list of items")) }
        } catch {
            errors.append(FieldError(field: "labelling[\(name)].items", detail: "reads \(items), which this event does not have"))
            list = []
        }
        var parsed: [DatasetItem] = []
        for (i, value) in list.enumerated() where errors.count < 20 {
            switch DatasetItem.parse(value, for: spec) {
            case .success(let item): parsed.append(item)
            case .failure(let invalid):
                for e in invalid.errors { errors.append(FieldError(field: "labelling[\(name)].items[\(i)].\(e.field)", detail: e.detail)) }
            }
        }
        return errors.isEmpty ? .success((spec, parsed)) : .failure(InvalidEvent(errors))
    }
}
