import GatehouseCore

/// `slack:` in a receiver. `channel`, `username` and `icon_emoji` are sent with every message;
/// only legacy custom-integration webhooks honour them — a Slack app's webhook posts to its
/// own channel as the app (PROTOCOLS.md).
public struct SlackSettings: PlatformReceiverSettings {
    public static let kind = GatehouseConfig.ReceiverKind.slack
    public var webhookURL: Secret
    /// The Slack app's signing secret: its buttons' clicks are verified with it, so gate
    /// messages carry buttons only when it is set.
    public var signingSecret: Secret?
    public var channel: String?
    public var username: String?
    public var iconEmoji: String?

    enum CodingKeys: String, CodingKey {
        case webhookURL = "webhook_url", signingSecret = "signing_secret", channel, username, iconEmoji = "icon_emoji"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        webhookURL = try c.decodeHTTPURL(.webhookURL)
        signingSecret = try c.decodeIfPresent(Secret.self, forKey: .signingSecret).flatMap { $0.value.trimmingASCIIWhitespace.isEmpty ? nil : $0 }
        channel = try c.decodeIfPresent(String.self, forKey: .channel)
        username = try c.decodeIfPresent(String.self, forKey: .username)
        iconEmoji = try c.decodeIfPresent(String.self, forKey: .iconEmoji)
    }

    public func makeReceiver(name: String, templates: TemplateSet) throws -> any Receiver {
        SlackReceiver(
            name: name, webhookURL: webhookURL, templates: templates, buttons: signingSecret != nil,
            poster: PosterOverrides([("channel", channel), ("username", username), ("icon_emoji", iconEmoji)]))
    }
}
