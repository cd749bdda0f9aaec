import Foundation
import GatehouseCore

/// What a receiver is asked to send: one event, a digest of a group, or a "resolved" notice.
public struct OutboundMessage: Sendable {
    public enum Kind: String, Sendable {
        case event, digest, resolved
        /// A reminder that a pipeline is still failing (rendered with the event template).
        case `repeat`

        /// The template file this kind renders with.
        public var template: String { self == .repeat ? "event" : rawValue }
    }
    public var kind: Kind
    /// Stable across retries: sent as `webhook-id`, the receiver's idempotency key.
    public var deliveryID: String
    public var receiver: String
    public var groupKey: String
    public var events: [StoredEvent]
    public var publicURL: String?
    /// Set when the message is about an approval gate (a `gate.*` event): rendered with the
    /// `gate` template, with links and, where the receiver can take clicks, buttons.
    public var gate: GateNotice?

    /// The template file: `gate` for gate messages, else the kind's.
    public var template: String { gate != nil ? "gate" : kind.template }

    public init(kind: Kind, deliveryID: String, receiver: String, groupKey: String, events: [StoredEvent], publicURL: String?) {
        self.kind = kind
        self.deliveryID = deliveryID
        self.receiver = receiver
        self.groupKey = groupKey
        self.events = events
        self.publicURL = publicURL
    }
}

/// What a gate message shows, resolved by the server when the message is built (so a retry
/// shows the gate as it stands, and the links are signed with the server's key).
public struct GateNotice: Sendable {
    public struct Choice: Sendable {
        public var name: String
        public var label: String
        /// Signed link to the web decision page with this choice selected.
        public var url: String
        /// Mattermost: the per-gate, per-action secret carried in the button's context.
        public var contextToken: String
        public var style: String
        public init(name: String, label: String, url: String, contextToken: String, style: String) {
            self.name = name
            self.label = label
            self.url = url
            self.contextToken = contextToken
            self.style = style
        }
    }
    public var id: String
    public var title: String
    public var details: String?
    public var state: String
    public var isOpen: Bool
    /// "Approval needed", "Reminder", "Escalated", or the outcome.
    public var headline: String
    public var approvers: String
    public var approvals: String
    public var deadline: String?
    public var outcome: String?
    public var pageURL: String
    public var choices: [Choice]
    /// Where Mattermost buttons post (`public_url` + `/v1/callbacks/mattermost`).
    public var mattermostCallbackURL: String
    /// Discord: the id of the message that announced the gate on this receiver, to edit it
    /// when the gate closes instead of posting again.
    public var discordMessageID: String?

    public init(id: String, title: String, details: String?, state: String, isOpen: Bool, headline: String, approvers: String, approvals: String,
                deadline: String?, outcome: String?, pageURL: String, choices: [Choice], mattermostCallbackURL: String, discordMessageID: String? = nil) {
        self.id = id
        self.title = title
        self.details = details
        self.state = state
        self.isOpen = isOpen
        self.headline = headline
        self.approvers = approvers
        self.approvals = approvals
        self.deadline = deadline
        self.outcome = outcome
        self.pageURL = pageURL
        self.choices = choices
        self.mattermostCallbackURL = mattermostCallbackURL
        self.discordMessageID = discordMessageID
    }

    /// A representative notice: `config check` and the golden files render it.
    public static func sample(open: Bool) -> GateNotice {
        let base = "https://gatehouse.example.org"
        let id = "gate_0123456789abcdef0123456789abcdef"
        return GateNotice(
            id: id, title: "Deploy fraud-model v7 to production?", details: "AUC 0.91 (+0.02) <b>bold</b> & \"quoted\"",
            state: open ? "pending" : "approved", isOpen: open, headline: open ? "Approval needed" : "Approved",
            approvers: "slack:U024BE7LH, mattermost:@alice, web:bob", approvals: open ? "0/2" : "2/2",
            deadline: "2026-11-29T12:00:00.000Z", outcome: open ? nil : "Approved by slack:U024BE7LH at 2026-11-29T10:30:00.000Z",
            pageURL: "\(base)/gates/\(id)?t=v1.sample.sig",
            choices: ["approve", "reject"].map { name in
                Choice(name: name, label: name == "approve" ? "Approve" : "Reject", url: "\(base)/gates/\(id)?t=v1.sample.sig&choice=\(name)",
                       contextToken: String(repeating: name == "approve" ? "a" : "b", count: 64), style: name == "approve" ? "primary" : "danger")
            },
            mattermostCallbackURL: "\(base)/v1/callbacks/mattermost", discordMessageID: open ? nil : "1180000000000000000")
    }

    public var json: JSONValue {
        var o = JSONObject()
        o.append("id", .string(id))
        o.append("title", .string(title))
        if let details { o.append("details", .string(details)) }
        o.append("state", .string(state))
        o.append("approvers", .string(approvers))
        o.append("approvals", .string(approvals))
        if let deadline { o.append("expires_at", .string(deadline)) }
        if let outcome { o.append("outcome", .string(outcome)) }
        o.append("url", .string(pageURL))
        if isOpen { o.append("links", .object(JSONObject(choices.map { ($0.name, .string($0.url)) }))) }
        return .object(o)
    }
}

/// The verdict on one attempt. Deciding it is each platform's job, on top of the shared rules
/// in `Classifier`.
public enum DeliveryOutcome: Sendable, Equatable {
    case delivered(messageID: String?)
    /// Try again; `after` is the wait the receiver asked for (seconds), if it said.
    case retry(after: Double?, reason: String)
    /// Final: the receiver refused this message.
    case dead(reason: String)
}

/// One platform: builds the HTTP request for a message and judges the answer.
public protocol Receiver: Sendable {
    var name: String { get }
    var platform: GatehouseConfig.ReceiverKind { get }
    func request(for message: OutboundMessage, now: Timestamp) throws -> OutboundRequest
    func classify(_ response: OutboundResponse) -> DeliveryOutcome
    /// A wait the platform asks for beyond `Retry-After` (seconds), even on a success.
    func pause(after response: OutboundResponse) -> Double?
}

extension Receiver {
    public func pause(after response: OutboundResponse) -> Double? { nil }
}

public struct DeliveryError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The shared "retry or not" rules (docs/delivery.md): transport errors, timeouts, 408, 429
/// and 5xx retry, honouring `Retry-After`; 3xx and other 4xx are final.
public enum Classifier {
    public static func classify(_ response: OutboundResponse, successBodyMustBe expected: String? = nil) -> DeliveryOutcome {
        if let error = response.transportError {
            return .retry(after: nil, reason: response.timedOut ? "timed out after \(String(format: "%.1f", response.seconds))s" : error)
        }
        let status = response.status
        switch status {
        case 200..<300:
            if let expected, response.text.trimmingASCIIWhitespace != expected {
                return .dead(reason: "HTTP \(status) but the body was \"\(snippet(response.text))\", not \"\(expected)\"")
            }
            return .delivered(messageID: nil)
        case 408, 429, 500...599:
            return .retry(after: retryAfter(response), reason: "HTTP \(status)\(response.body.isEmpty ? "" : ": \(snippet(response.text))")")
        case 300..<400:
            return .dead(reason: "HTTP \(status) redirect (not followed; fix the URL)")
        default:
            return .dead(reason: "HTTP \(status)\(response.body.isEmpty ? "" : ": \(snippet(response.text))")")
        }
    }

    /// `Retry-After` as seconds or an HTTP date.
    public static func retryAfter(_ response: OutboundResponse, now: Date = Date()) -> Double? {
        guard let value = response.header("Retry-After").map({ String($0.trimmingASCIIWhitespace) }) else { return nil }
        if let seconds = Double(value), seconds >= 0 { return seconds }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        if let date = formatter.date(from: value) { return max(0, date.timeIntervalSince(now)) }
        return nil
    }

    static func snippet(_ text: String) -> String {
        let flat = text.replacingOccurrences(of: "\n", with: " ")
        return flat.count > 200 ? String(flat.prefix(200)) + "…" : flat
    }
}
