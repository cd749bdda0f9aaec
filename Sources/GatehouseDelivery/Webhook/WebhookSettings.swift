import GatehouseCore

/// `webhook:` in a receiver: where to POST, the `whsec_` secret that signs each request
/// (Standard Webhooks; without a secret requests go unsigned), and the body's `format`:
/// `webhook` (Gatehouse's JSON, the default), `cloudevents` or `cloudevents-binary`.
public struct WebhookSettings: PlatformReceiverSettings {
    public static let kind = GatehouseConfig.ReceiverKind.webhook
    public var url: Secret
    public var secret: Secret?
    public var format = WebhookReceiver.Format.webhook

    enum CodingKeys: String, CodingKey { case url, secret, format }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        url = try c.decodeHTTPURL(.url)
        secret = try c.decodeIfPresent(Secret.self, forKey: .secret)
        if let secret, WebhookReceiver.key(fromSecret: secret.value) == nil {
            throw DecodingError.dataCorruptedError(forKey: .secret, in: c, debugDescription: "must be whsec_ followed by base64")
        }
        if let text = try c.decodeIfPresent(String.self, forKey: .format) {
            guard let format = WebhookReceiver.Format(rawValue: text) else {
                throw DecodingError.dataCorruptedError(
                    forKey: .format, in: c, debugDescription: "must be \(WebhookReceiver.Format.allCases.map(\.rawValue).joined(separator: ", ")) (got \"\(text)\")")
            }
            self.format = format
        }
    }

    public func makeReceiver(name: String, templates: TemplateSet) throws -> any Receiver {
        try WebhookReceiver(name: name, url: url, secret: secret, templates: templates, format: format)
    }
}
