import GatehouseCore

/// Mattermost's integration-action responses: `ephemeral_text` for the clicker alone, and an
/// `update` whose empty `props` clears the attachments — and with them the buttons.
public enum MattermostReplies: CallbackReplies {
    public static func privateNote(_ text: String) -> JSONValue {
        .object(JSONObject([("ephemeral_text", .string(text)), ("skip_slack_parsing", .bool(true))]))
    }

    public static func closed(_ line: String, gateID: String, state: String) -> JSONValue {
        let update = JSONObject([("message", .string("**\(MattermostReceiver.escape(line))**")), ("props", .object(JSONObject()))])
        return .object(JSONObject([("update", .object(update)), ("ephemeral_text", .string("Recorded: \(state).")), ("skip_slack_parsing", .bool(true))]))
    }
}
