import Crypto
import Foundation
import GatehouseCore

/// A generic JSON webhook signed per Standard Webhooks: `webhook-id` (stable across retries),
/// `webhook-timestamp` (this attempt) and `webhook-signature` = `v1,<base64 HMAC-SHA256>` over
/// `id.timestamp.body` with the `whsec_` secret.
public struct WebhookReceiver: Receiver {
    public let name: String
    public let platform = GatehouseConfig.ReceiverKind.webhook
    let url: Secret
    let key: SymmetricKey?
    /// The key's HMAC, keyed once and copied per message: keying hashes the key's two pads,
    /// which per message cost about as much as signing its body.
    let keyed: HMAC<SHA256>?
    let templates: TemplateSet
    /// Templates (`event`, `gate`…) whose text is the shipped one: their body is written directly.
    let shipped: Set<String>
    let format: Format

    /// What the body is: Gatehouse's own JSON (the templates), or CloudEvents 1.0.
    public enum Format: String, Sendable, CaseIterable {
        case webhook
        case cloudevents
        case cloudeventsBinary = "cloudevents-binary"
    }

    public init(name: String, url: Secret, secret: Secret?, templates: TemplateSet, format: Format = .webhook) throws {
        self.name = name
        self.url = url
        self.templates = templates
        self.format = format
        shipped = Set(["event", "digest", "resolved", "gate"].filter { templates.isShipped("webhook/\($0).mustache") })
        if let secret {
            guard let key = Self.key(fromSecret: secret.value) else { throw DeliveryError("receiver \(name): webhook.secret must be whsec_ followed by base64") }
            self.key = key
            keyed = HMAC<SHA256>(key: key)
        } else {
            key = nil
            keyed = nil
        }
    }

    static func key(fromSecret secret: String) -> SymmetricKey? {
        let encoded = secret.hasPrefix("whsec_") ? String(secret.dropFirst(6)) : secret
        guard let data = Data(base64Encoded: encoded), !data.isEmpty else { return nil }
        return SymmetricKey(data: data)
    }

    /// `v1,<base64>` for the signed content `id.timestamp.body`.
    public static func signature(id: String, timestamp: Int64, body: [UInt8], key: SymmetricKey) -> String {
        signature(id: id, timestamp: timestamp, body: body, keyed: HMAC<SHA256>(key: key))
    }

    /// The same, from the key's HMAC as `init` keyed it.
    static func signature(id: String, timestamp: Int64, body: [UInt8], keyed: HMAC<SHA256>) -> String {
        var mac = keyed
        mac.update(data: Array("\(id).\(timestamp).".utf8))
        mac.update(data: body)
        return "v1," + Data(mac.finalize()).base64EncodedString()
    }

    public func request(for message: OutboundMessage, now: Timestamp) throws -> OutboundRequest {
        var headers: [(String, String)]
        let text: String
        switch format {
        case .webhook:
            text = try shipped.contains(message.template) ? Self.shippedBody(message) : templatedBody(message)
            headers = [("Content-Type", "application/json")]
        case .cloudevents:
            let (contentType, body) = CloudEvents.structured(message)
            (headers, text) = ([("Content-Type", contentType)], body)
        case .cloudeventsBinary:
            (headers, text) = CloudEvents.binary(message)
        }
        let body = Array(text.utf8)
        let timestamp = now.milliseconds / 1000
        // Signed per Standard Webhooks in every format.
        headers += [("webhook-id", message.deliveryID), ("webhook-timestamp", String(timestamp))]
        if let keyed { headers.append(("webhook-signature", Self.signature(id: message.deliveryID, timestamp: timestamp, body: body, keyed: keyed))) }
        return OutboundRequest(url: url.value, headers: headers, body: body)
    }

    /// The body rendered through the (overridden) template.
    func templatedBody(_ message: OutboundMessage) throws -> String {
        var context = MessageContext.build(for: message, limits: .init(title: 1000, summary: 1000, details: 20000), escape: { $0 }) { url, _ in url }
        context["events_json"] = JSONValue.array(message.events.map(\.json)).serialized()
        context["group_key"] = message.groupKey
        return try templates.renderJSON("webhook/\(message.template)", context)
    }

    /// Exactly what the shipped `webhook/*.mustache` templates render, compacted, written
    /// without Mustache and without parsing the result again: this runs once per alert, and the
    /// template path cost a tenth of the server's CPU under load. A test holds the two equal.
    static func shippedBody(_ message: OutboundMessage) -> String {
        var out = "{\"kind\":"
        out.reserveCapacity(512)
        JSONValue.writeString(message.gate != nil ? "gate" : message.kind.rawValue, to: &out)
        out += ",\"delivery_id\":"
        JSONValue.writeString(message.deliveryID, to: &out)
        out += ",\"receiver\":"
        JSONValue.writeString(message.receiver, to: &out)
        out += ",\"group_key\":"
        JSONValue.writeString(message.groupKey, to: &out)
        out += ",\"events\":["
        for (i, event) in message.events.enumerated() {
            if i > 0 { out += "," }
            event.json.write(to: &out)
        }
        out += "]"
        if let gate = message.gate {
            out += ",\"gate\":"
            gate.json.write(to: &out)
        }
        out += "}"
        return out
    }

    public func classify(_ response: OutboundResponse) -> DeliveryOutcome {
        // Standard Webhooks: 410 means the endpoint is gone for good.
        if response.status == 410 { return .dead(reason: "HTTP 410 Gone: the endpoint was removed") }
        return Classifier.classify(response)
    }
}
