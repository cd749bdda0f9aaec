import Foundation
import GatehouseCore

/// Mattermost incoming webhook: Slack-compatible attachments; success is 200 with body `ok`.
public struct MattermostReceiver: Receiver {
    public let name: String
    public let platform = GatehouseConfig.ReceiverKind.mattermost
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

    /// A post holds 16,383 characters.
    static let limits = MessageContext.Limits(title: 250, summary: 1000, details: 12000)

    /// `@channel`, `@all`, `@here` and Slack-style `<!channel>` notify everyone in Mattermost:
    /// a zero-width space after the `@` / `<` keeps the text and drops the ping.
    public static func escape(_ s: String) -> String {
        var out = s
        for word in ["@channel", "@all", "@here"] {
            out = out.replacingOccurrences(of: word, with: "@\u{200B}" + word.dropFirst(), options: .caseInsensitive)
        }
        return out.replacingOccurrences(of: "<!", with: "<\u{200B}!")
    }

    public func request(for message: OutboundMessage, now: Timestamp) throws -> OutboundRequest {
        let context = MessageContext.build(for: message, limits: Self.limits, buttons: buttons, escape: Self.escape) { url, text in "[\(text)](\(url))" }
        let body = try poster.apply(to: templates.renderJSON("mattermost/\(message.template)", context))
        return OutboundRequest(url: webhookURL.value, headers: [("Content-Type", "application/json")], body: Array(body.utf8))
    }

    public func classify(_ response: OutboundResponse) -> DeliveryOutcome {
        // 501 means incoming webhooks are switched off on that server: final, not transient.
        if response.status == 501 { return .dead(reason: "HTTP 501: incoming webhooks are disabled on the Mattermost server") }
        return Classifier.classify(response, successBodyMustBe: "ok")
    }
}
