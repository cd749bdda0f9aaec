import GatehouseCore

/// Discord's interaction responses: type 4 with flag 64 (ephemeral) for the clicker alone, type
/// 7 to edit the message the button is on. Mentions are never parsed.
public enum DiscordReplies: CallbackReplies {
    static let noMentions: JSONValue = .object(JSONObject([("parse", .array([]))]))

    public static func privateNote(_ text: String) -> JSONValue {
        .object(JSONObject([("type", .int(4)), ("data", .object(JSONObject([
            ("content", .string(text)), ("flags", .int(64)), ("allowed_mentions", noMentions),
        ])))]))
    }

    public static func closed(_ line: String, gateID: String, state: String) -> JSONValue {
        .object(JSONObject([("type", .int(7)), ("data", .object(JSONObject([
            ("content", .string(line)), ("embeds", .array([])), ("components", .array([])), ("allowed_mentions", noMentions),
        ])))]))
    }

    /// The answer to Discord's PING (type 1), which it sends to check the endpoint.
    public static let pong: JSONValue = .object(JSONObject([("type", .int(1))]))
}
