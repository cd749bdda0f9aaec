import Foundation
import GatehouseCore

/// Slack incoming webhook: Block Kit with a `text` fallback; success is 200 with body `ok`.
public struct SlackReceiver: Receiver {
    public let name: String
    public let platform = GatehouseConfig.ReceiverKind.slack
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

    /// Section text is capped at 3,000 characters and `text` should stay under 4,000.
    static let limits = MessageContext.Limits(title: 150, summary: 1000, details: 2900)

    /// Slack's three control characters; escaping `<` also neutralises `<!channel>` and
    /// `<@U…>` mentions smuggled in event text.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            default: out.append(c)
            }
        }
        return out
    }

    public func request(for message: OutboundMessage, now: Timestamp) throws -> OutboundRequest {
        let context = MessageContext.build(for: message, limits: Self.limits, buttons: buttons, escape: Self.escape) { url, text in "<\(url)|\(text)>" }
        let body = try poster.apply(to: templates.renderJSON("slack/\(message.template)", context))
        return OutboundRequest(url: webhookURL.value, headers: [("Content-Type", "application/json; charset=utf-8")], body: Array(body.utf8))
    }

    public func classify(_ response: OutboundResponse) -> DeliveryOutcome {
        Classifier.classify(response, successBodyMustBe: "ok")
    }
}
