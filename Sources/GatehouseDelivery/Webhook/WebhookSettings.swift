import GatehouseCore

/// `webhook:` in a receiver: where to POST, and the `whsec_` secret that signs each request
/// (Standard Webhooks); without a secret requests go unsigned.
public struct WebhookSettings: PlatformReceiverSettings {
    public static let kind = GatehouseConfig.ReceiverKind.webhook
    public var url: Secret
    public var secret: Secret?

    enum CodingKeys: String, CodingKey { case url, secret }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        url = try c.decodeHTTPURL(.url)
        secret = try c.decodeIfPresent(Secret.self, forKey: .secret)
        if let secret, WebhookReceiver.key(fromSecret: secret.value) == nil {
            throw DecodingError.dataCorruptedError(forKey: .secret, in: c, debugDescription: "must be whsec_ followed by base64")
        }
    }

    public func makeReceiver(name: String, templates: TemplateSet) throws -> any Receiver {
        try WebhookReceiver(name: name, url: url, secret: secret, templates: templates)
    }
}
