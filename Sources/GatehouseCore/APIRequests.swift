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
