import GatehouseCore

/// Slack's answers to a button click, posted to the interaction's `response_url` (the 200 that
/// acknowledges the click carries nothing): `ephemeral` for the clicker alone, or
/// `replace_original` with the outcome.
public enum SlackReplies: CallbackReplies {
    public static func privateNote(_ text: String) -> JSONValue {
        .object(JSONObject([("response_type", .string("ephemeral")), ("replace_original", .bool(false)), ("text", .string(SlackReceiver.escape(text)))]))
    }

    public static func closed(_ line: String, gateID: String, state: String) -> JSONValue {
        let text = SlackReceiver.escape(line)
        return .object(JSONObject([
            ("replace_original", .bool(true)), ("text", .string(text)),
            ("blocks", .array([.object(JSONObject([
                ("type", .string("section")), ("block_id", .string("gate:\(gateID):\(state)")),
                ("text", .object(JSONObject([("type", .string("mrkdwn")), ("text", .string("*\(text)*"))]))),
            ]))])),
        ]))
    }
}
