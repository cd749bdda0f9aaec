/// Request bodies the server decodes and the CLI sends: one type for both sides, so a field
/// cannot be renamed on one and not the other. Free-form parts stay `JSONObject`.

/// `POST /v1/gates/{id}/decisions`: what `gatehouse gate approve|reject|decide` sends.
public struct DecisionRequest: Codable, Sendable, Equatable, JSONStrictKeys, JSONOmitsAbsentFields {
    /// `approve`, `reject`, or one of a branching gate's choices.
    public var decision: String
    /// Who decides; a token decides as itself unless it is an admin token (see `decider`).
    public var by: String?
    public var comment: String?
    /// Values for the gate's declared inputs, checked against its `input_spec`.
    public var inputs: JSONObject?

    public static let knownKeys: Set<String> = ["decision", "by", "comment", "inputs"]

    public init(decision: String, by: String? = nil, comment: String? = nil, inputs: JSONObject? = nil) {
        self.decision = decision
        self.by = by
        self.comment = comment
        self.inputs = inputs
    }
}

/// `POST /v1/gates/{id}/cancel` (the body is optional): what `gatehouse gate cancel` sends.
public struct CancelRequest: Codable, Sendable, Equatable, JSONStrictKeys, JSONOmitsAbsentFields {
    /// Who cancels; a token cancels as `web:<token name>` by default.
    public var by: String?
    public var comment: String?

    public static let knownKeys: Set<String> = ["by", "comment"]

    public init(by: String? = nil, comment: String? = nil) {
        self.by = by
        self.comment = comment
    }
}

/// `POST /v1/gates/{id}/links`: a personal decision link, as `gatehouse gate link` asks for it.
public struct LinkRequest: Codable, Sendable, Equatable, JSONStrictKeys, JSONOmitsAbsentFields {
    /// The `web:<name>` the link decides as.
    public var by: String
    /// How long the link works, e.g. `24h` (default: a day past the gate's deadline).
    public var ttl: String?

    public static let knownKeys: Set<String> = ["by", "ttl"]

    public init(by: String, ttl: String? = nil) {
        self.by = by
        self.ttl = ttl
    }
}

/// `201` from `POST /v1/gates/{id}/links`.
public struct LinkResponse: Encodable, Sendable, Equatable {
    public var url: String
    public var by: String
    public var expires_at: Timestamp

    public init(url: String, by: String, expires_at: Timestamp) {
        self.url = url
        self.by = by
        self.expires_at = expires_at
    }
}

/// `POST /v1/silences`: what `gatehouse silence add` sends. Every field is checked on decoding
/// (one `422` naming them all); the window is fixed against the clock by `silence(id:now:…)`.
public struct SilenceRequest: Codable, Sendable, Equatable, JSONOmitsAbsentFields {
    /// Alertmanager matchers (`pipeline="train"`, `type=~"step.*"`); one string may hold several,
    /// comma-separated.
    public var matchers: [String]
    /// RFC 3339; default: now.
    public var starts_at: String?
    /// RFC 3339; or give `duration`.
    public var ends_at: String?
    /// How long from `starts_at` (`2h`) when `ends_at` is not given.
    public var duration: String?
    /// Who adds it; default: the token's name.
    public var created_by: String?
    /// Why, as free text.
    public var comment: String?

    enum CodingKeys: String, CodingKey, CaseIterable { case matchers, starts_at, ends_at, duration, created_by, comment }

    public init(matchers: [String], starts_at: String? = nil, ends_at: String? = nil, duration: String? = nil, created_by: String? = nil, comment: String? = nil) {
        self.matchers = matchers
        self.starts_at = starts_at
        self.ends_at = ends_at
        self.duration = duration
        self.created_by = created_by
        self.comment = comment
    }

    public init(from decoder: any Decoder) throws {
        var body = try FieldReader<CodingKeys>(decoder)
        let matchersRule = "is required: a non-empty list of matchers"
        var matchers: [String] = []
        if let items = body.required([JSONValue].self, .matchers, otherwise: matchersRule, missing: matchersRule) {
            if items.isEmpty { body.refuse(.matchers, matchersRule) }
            for (i, item) in items.enumerated() {
                guard let text = item.stringValue else {
                    body.refuse(field: "matchers[\(i)]", "must be a string such as pipeline=\"train\"")
                    continue
                }
                do { _ = try Matcher.parseList(text) } catch { body.refuse(field: "matchers[\(i)]", error.message) }
                matchers.append(text)
            }
            // As Alertmanager: a silence whose every matcher matches the empty string (`a=~".*"`,
            // `pipeline!="x"`) would also mute what has none of its labels — nearly everything.
            let parsed = matchers.compactMap { try? Matcher.parseList($0) }
            if !parsed.isEmpty, parsed.count == matchers.count, parsed.joined().allSatisfy({ $0.matches(value: "") }) {
                body.refuse(.matchers, "must hold one matcher that does not match the empty string (a silence of nearly everything), such as pipeline=\"train\"")
            }
        }
        let timeRule = "must be an RFC 3339 time"
        let startsAt = body.optional(String.self, .starts_at, otherwise: timeRule)
        if let startsAt, Timestamp(rfc3339: startsAt) == nil { body.refuse(.starts_at, timeRule) }
        let endsAt = body.optional(String.self, .ends_at, otherwise: timeRule)
        if let endsAt, Timestamp(rfc3339: endsAt) == nil { body.refuse(.ends_at, timeRule) }
        let durationRule = "is not a duration such as 2h"
        let duration = body.optional(String.self, .duration, otherwise: durationRule)
        if let duration, GatehouseDuration(duration) == nil { body.refuse(.duration, durationRule) }
        if !body.has(.ends_at) && !body.has(.duration) { body.refuse(.ends_at, "is required (or give duration)") }
        // Both times given: their order is known now, and reported with the rest. (With
        // starts_at left to the clock, `silence(id:now:…)` checks it.)
        if let start = startsAt.flatMap(Timestamp.init(rfc3339:)), let end = endsAt.flatMap(Timestamp.init(rfc3339:)), end <= start {
            body.refuse(.ends_at, "must be after starts_at")
        }
        // created_by names a person; the comment is free text, kept as sent.
        let createdBy = body.optional(String.self, .created_by, otherwise: "must be a string")
        if let createdBy { body.record(ControlCharacters.fieldError(body.field(.created_by), createdBy)) }
        let comment = body.optional(String.self, .comment, otherwise: "must be a string")
        try body.finish()
        self.init(matchers: matchers, starts_at: startsAt, ends_at: endsAt, duration: duration, created_by: createdBy, comment: comment)
    }

    /// The silence asked for, starting `now` unless `starts_at` says otherwise; refused when it
    /// would end before it starts.
    public func silence(id: String, now: Timestamp, defaultCreator: String) -> Result<Silence, Problem> {
        let start = starts_at.flatMap(Timestamp.init(rfc3339:)) ?? now
        let end = ends_at.flatMap(Timestamp.init(rfc3339:))
            ?? duration.flatMap(GatehouseDuration.init).map { start.adding(milliseconds: $0.milliseconds) }
        guard let end, end > start else { return .failure(.invalid([FieldError(field: "ends_at", detail: "must be after starts_at")])) }
        return .success(Silence(
            id: id, matchers: matchers.flatMap { (try? Matcher.parseList($0)) ?? [] }, startsAt: start, endsAt: end,
            createdBy: created_by ?? defaultCreator, comment: comment ?? ""))
    }
}

/// `POST /v1/datasets/{name}/items/{id}/labels`. Which field holds the answer follows the
/// dataset's task: `label` (classification), `labels` (multilabel; `label` also taken),
/// `spans`; the value itself is checked against the dataset, so it stays a `JSONValue` here.
public struct LabelRequest: Codable, Sendable, Equatable, JSONStrictKeys, JSONOmitsAbsentFields {
    public var label: JSONValue?
    public var labels: JSONValue?
    public var spans: JSONValue?
    /// Who labels, `web:<name>` or a bare name; only an admin token may name someone else.
    public var annotator: String?

    public static let knownKeys: Set<String> = ["label", "labels", "spans", "annotator"]

    public init(label: JSONValue? = nil, labels: JSONValue? = nil, spans: JSONValue? = nil, annotator: String? = nil) {
        self.label = label
        self.labels = labels
        self.spans = spans
        self.annotator = annotator
    }

    /// The answer for a dataset of `task`; `null` when the right field is missing (the dataset
    /// then says what it expects).
    public func value(for task: LabelTask) -> JSONValue {
        switch task {
        case .classification: label ?? .null
        case .multilabel: labels ?? label ?? .null
        case .spans: spans ?? .null
        }
    }
}

/// `201` from `POST /v1/datasets/{name}/items/{id}/labels`.
public struct LabelResponse: Encodable, Sendable, Equatable {
    public var item: String
    public var annotator: String
    /// The label as stored (spans with their text).
    public var value: JSONValue
    public var item_complete: Bool
    public var dataset_complete: Bool

    public init(item: String, annotator: String, value: JSONValue, item_complete: Bool, dataset_complete: Bool) {
        self.item = item
        self.annotator = annotator
        self.value = value
        self.item_complete = item_complete
        self.dataset_complete = dataset_complete
    }
}

/// `200` from `POST /v1/datasets/{name}/items`.
public struct ImportResponse: Codable, Sendable, Equatable {
    /// Items new to the dataset.
    public var added: Int
    /// Items already there (same id), left as they were.
    public var duplicates: Int
    /// Items in the dataset now.
    public var items: Int

    public init(added: Int, duplicates: Int, items: Int) {
        self.added = added
        self.duplicates = duplicates
        self.items = items
    }
}

/// `202` from `POST /v1/events`.
public struct IngestResponse: Codable, Sendable, Equatable {
    /// Events stored by this request.
    public var accepted: Int
    /// Events already stored under the same id with the same content (a retry), not stored again.
    public var duplicates: Int
    /// The id of every event sent, in order (generated where none was given).
    public var ids: [String]

    public init(accepted: Int, duplicates: Int, ids: [String]) {
        self.accepted = accepted
        self.duplicates = duplicates
        self.ids = ids
    }

    /// The same document the Codable encoding gives, built directly: every accepted event
    /// answers with one, and the generic encoder cost ~1 % of the server's CPU on that path.
    public var json: JSONValue {
        .object(JSONObject([("accepted", .int(accepted)), ("duplicates", .int(duplicates)), ("ids", .array(ids.map(JSONValue.string)))]))
    }
}
