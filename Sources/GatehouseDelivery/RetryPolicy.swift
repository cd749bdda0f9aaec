import GatehouseCore

/// The one place an attempt's fate is decided (docs/delivery.md): from the receiver's verdict on
/// the answer (`Receiver.classify`) and the delivery's age, whether it is delivered, goes again
/// and when, or is dead; and what the answer says about the receiver itself, for its health.
/// Pure: the dispatcher applies what it answers.
public struct RetryPolicy: Sendable {
    public var schedule: RetrySchedule

    public init(schedule: RetrySchedule = RetrySchedule()) { self.schedule = schedule }

    public enum Decision: Sendable, Equatable {
        case delivered(messageID: String?)
        case retry(at: Timestamp, reason: String)
        case dead(reason: String)
    }

    /// What an answer says about the receiver itself.
    public enum Verdict: Sendable, Equatable {
        /// It answered (delivered, or refused for good): it is up.
        case answered
        /// Connection error, timeout, 408 or 5xx.
        case failed
        /// It asked us to wait this many seconds (429, `Retry-After`, Discord's rate-limit headers).
        case rateLimited(Double)
    }

    /// Whether a message first created at `created` has outlived `max_age` at `now`: held back
    /// while its receiver failed, it then ends unsent.
    public func expired(created: Timestamp, at now: Timestamp) -> Bool {
        !schedule.allows(next: now, created: created)
    }

    /// The fate of a message after its `attempts`-th attempt (1-based) ended in `outcome` at
    /// `now`; `random` in [0, 1) spreads retries (jitter).
    public func decide(_ outcome: DeliveryOutcome, attempts: Int, created: Timestamp, now: Timestamp, random: Double) -> Decision {
        switch outcome {
        case .delivered(let messageID): return .delivered(messageID: messageID)
        case .dead(let reason): return .dead(reason: reason)
        case .retry(let after, let reason):
            let next = now.adding(milliseconds: schedule.delay(afterAttempt: attempts, retryAfter: after, random: random).milliseconds)
            guard schedule.allows(next: next, created: created) else {
                return .dead(reason: "gave up after \(attempts) attempts (max_age \(schedule.maxAge)): \(reason)")
            }
            return .retry(at: next, reason: reason)
        }
    }

    /// The receiver's health from one answer: `pause` is a wait the receiver's platform asked
    /// for beyond `Retry-After` (Discord's rate-limit headers), even on a success.
    public static func verdict(_ outcome: DeliveryOutcome, status: Int, pause platformPause: Double?) -> Verdict {
        var pause = platformPause
        if case .retry(let after?, _) = outcome { pause = max(pause ?? 0, after) }
        switch outcome {
        case .delivered, .dead: return pause.map { .rateLimited($0) } ?? .answered
        case .retry: return status == 429 || pause != nil ? .rateLimited(pause ?? 1) : .failed
        }
    }
}
