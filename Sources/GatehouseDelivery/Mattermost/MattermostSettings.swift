import GatehouseCore

/// `mattermost:` in a receiver. `channel`, `username` and `icon_url` are sent with every
/// message (Mattermost's incoming webhooks take them unless the server forbids overrides).
public struct MattermostSettings: PlatformReceiverSettings {
    public static let kind = GatehouseConfig.ReceiverKind.mattermost
    public var webhookURL: Secret
    public var channel: String?
    public var username: String?
    public var iconURL: String?

    enum CodingKeys: String, CodingKey {
        case webhookURL = "webhook_url", channel, username, iconURL = "icon_url"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        webhookURL = try c.decodeHTTPURL(.webhookURL)
        channel = try c.decodeIfPresent(String.self, forKey: .channel)
        username = try c.decodeIfPresent(String.self, forKey: .username)
        iconURL = try c.decodeIfPresent(String.self, forKey: .iconURL)
    }

    /// Every Mattermost receiver gets buttons: clicks come back through its integration
    /// actions, proved by a signed context token (docs/gates.md).
    public func makeReceiver(name: String, templates: TemplateSet) throws -> any Receiver {
        MattermostReceiver(
            name: name, webhookURL: webhookURL, templates: templates, buttons: true,
            poster: PosterOverrides([("channel", channel), ("username", username), ("icon_url", iconURL)]))
    }
}
