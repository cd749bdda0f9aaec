import GatehouseCore

/// `discord:` in a receiver. `username` names the poster of new messages (Discord's execute
/// webhook takes it; an edit keeps the original's).
public struct DiscordSettings: PlatformReceiverSettings {
    public static let kind = GatehouseConfig.ReceiverKind.discord
    public var webhookURL: Secret
    /// The application's Ed25519 public key (64 hex digits): its interactions are verified with
    /// it, so gate messages carry buttons only when it is set (an application-owned webhook).
    public var publicKey: String?
    public var applicationID: String?
    public var username: String?

    enum CodingKeys: String, CodingKey {
        case webhookURL = "webhook_url", publicKey = "public_key", applicationID = "application_id", username
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        webhookURL = try c.decodeHTTPURL(.webhookURL)
        publicKey = try c.decodeIfPresent(String.self, forKey: .publicKey)
        if let key = publicKey, key.count != 64 || !key.allSatisfy(\.isHexDigit) {
            throw DecodingError.dataCorruptedError(forKey: .publicKey, in: c, debugDescription: "must be the application's Ed25519 public key (64 hex digits)")
        }
        // Kept as given (configs had it before anything used it).
        applicationID = try c.decodeIfPresent(String.self, forKey: .applicationID)
        username = try c.decodeIfPresent(String.self, forKey: .username)
    }

    public func makeReceiver(name: String, templates: TemplateSet) throws -> any Receiver {
        DiscordReceiver(name: name, webhookURL: webhookURL, templates: templates, buttons: publicKey != nil, poster: PosterOverrides([("username", username)]))
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
