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

    public init(kind: Kind, deliveryID: String, receiver: String, groupKey: String, events: [StoredEvent], publicURL: String?) {
        self.kind = kind
        self.deliveryID = deliveryID
        self.receiver = receiver
        self.groupKey = groupKey
        self.events = events
        self.publicURL = publicURL
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
}

public struct DeliveryError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The shared "retry or not" rules (PROTOCOLS.md §4.4): transport errors, timeouts, 408, 429
/// and 5xx retry, honouring `Retry-After`; 3xx and other 4xx are final.
public enum Classifier {
    public static func classify(_ response: OutboundResponse, successBodyMustBe expected: String? = nil) -> DeliveryOutcome {
        if let error = response.transportError {
            return .retry(after: nil, reason: response.timedOut ? "timed out after \(String(format: "%.1f", response.seconds))s" : error)
        }
        let status = response.status
        switch status {
        case 200..<300:
            if let expected, response.text.trimmingCharacters(in: .whitespacesAndNewlines) != expected {
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
        guard let value = response.header("Retry-After")?.trimmingCharacters(in: .whitespaces) else { return nil }
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
