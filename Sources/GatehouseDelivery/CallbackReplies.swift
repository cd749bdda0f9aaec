import GatehouseCore

/// What a chat platform answers a click on a gate button with. Each platform folder says it
/// (`SlackReplies`, `DiscordReplies`, `MattermostReplies`); the callback route only decides.
public protocol CallbackReplies {
    /// Shown to the clicker alone: a refusal, or an approval counted short of the quorum.
    static func privateNote(_ text: String) -> JSONValue
    /// The message that held the buttons, replaced by the outcome, without buttons.
    static func closed(_ line: String, gateID: String, state: String) -> JSONValue
}
