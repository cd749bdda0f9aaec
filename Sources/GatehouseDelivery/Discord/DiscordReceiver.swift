import Foundation
import GatehouseCore

/// Discord execute-webhook: embeds, no mentions, `?wait=true` so the answer carries the message
/// id (needed to edit it later), and the `User-Agent` Discord requires.
public struct DiscordReceiver: Receiver {
    public let name: String
    public let platform = GatehouseConfig.ReceiverKind.discord
    let webhookURL: Secret
    let templates: TemplateSet
    /// Gate messages carry native buttons (the receiver can deliver clicks back to us).
    public let buttons: Bool
    /// Channel, name or icon set on each new message (from the receiver's settings).
    let poster: PosterOverrides

    public init(name: String, webhookURL: Secret, templates: TemplateSet, buttons: Bool = false, poster: PosterOverrides = .none) {
        self.name = name
        self.webhookURL = webhookURL
        self.templates = templates
        self.buttons = buttons
        self.poster = poster
    }

    /// Embed title ≤ 256, description ≤ 4,096, and ≤ 6,000 over the embed: keep well inside.
    static let limits = MessageContext.Limits(title: 250, summary: 1000, details: 3000)

    public func request(for message: OutboundMessage, now: Timestamp) throws -> OutboundRequest {
        let context = MessageContext.build(for: message, limits: Self.limits, buttons: buttons, escape: { $0 }) { url, text in "[\(text)](\(url))" }
        var body = try templates.renderJSON("discord/\(message.template)", context)
        var url = webhookURL.value
        var method = "POST"
        if let gate = message.gate, !gate.isOpen, let messageID = gate.discordMessageID.flatMap(Self.snowflake) {
            // The gate closed: edit the message that asked, dropping its buttons, rather than post again.
            let parts = url.split(separator: "?", maxSplits: 1)
            url = "\(parts[0])/messages/\(messageID)" + (parts.count > 1 ? "?\(parts[1])" : "")
            method = "PATCH"
        } else {
            url += url.contains("?") ? "&wait=true" : "?wait=true"
            // A new message may name its poster; an edit keeps the original's.
            body = try poster.apply(to: body)
        }
        return OutboundRequest(
            method: method,
            url: url,
            headers: [("Content-Type", "application/json"), ("User-Agent", "DiscordBot (https://github.com/gatehouse, 1.0)")],
            body: Array(body.utf8))
    }

    public func classify(_ response: OutboundResponse) -> DeliveryOutcome {
        if response.status == 429 {
            // Discord puts the precise wait in the body; the headers round it. A wait that is
            // not a positive finite number is unusable: the next source is asked (docs/platforms/
            // discord.md), not the backoff alone.
            func usable(_ seconds: Double?) -> Double? { seconds.flatMap { $0 > 0 && $0.isFinite ? $0 : nil } }
            let body = try? JSONValue.parse(bytes: response.body)
            let after = usable(body?.objectValue?["retry_after"]?.doubleValue)
                ?? usable(response.header("X-RateLimit-Reset-After").flatMap(Double.init))
                ?? Classifier.retryAfter(response)
            return .retry(after: after, reason: "HTTP 429 rate limited")
        }
        let outcome = Classifier.classify(response)
        if case .delivered = outcome {
            let id = (try? JSONValue.parse(bytes: response.body))?.objectValue?["id"]?.stringValue.flatMap(Self.snowflake)
            return .delivered(messageID: id)
        }
        return outcome
    }

    /// When the bucket is empty, the wait until it refills (`X-RateLimit-Remaining: 0`).
    public func pause(after response: OutboundResponse) -> Double? { Self.pause(after: response) }

    public static func pause(after response: OutboundResponse) -> Double? {
        guard response.header("X-RateLimit-Remaining") == "0", let reset = response.header("X-RateLimit-Reset-After").flatMap(Double.init) else { return nil }
        return reset
    }

    /// A Discord id (a snowflake: decimal digits) or nil. The id goes into a later edit's URL
    /// path: a receiver's answer of "../../x?y" would have steered that PATCH elsewhere.
    static func snowflake(_ id: String) -> String? {
        !id.isEmpty && id.utf8.count <= 20 && id.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) ? id : nil
    }
}
