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
