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
        /// It answered, and asked us to wait this many seconds before the next (Discord's
        /// empty bucket, `X-RateLimit-Remaining: 0`): up, but paused.
        case answeredButPaused(Double)
        /// Connection error, timeout, 408 or 5xx, with the wait it asked for if any
        /// (`Retry-After`, Discord's rate-limit headers): it is failing.
        case failed(retryAfter: Double?)
        /// 429: it asked us to slow down, for this many seconds (`Retry-After`, Discord's
        /// `retry_after`; 0 when it did not say).
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
    /// for beyond `Retry-After` (Discord's rate-limit headers), even on a success. Only a 429
    /// is a rate limit: a 5xx or 408 that carries `Retry-After` is a failure whose back-off
    /// waits at least that long (it used to pause the receiver as a rate limit, so that
    /// `Retry-After: 0` on a 503 let every held delivery go at once, and nothing counted the
    /// failures).
    public static func verdict(_ outcome: DeliveryOutcome, status: Int, pause platformPause: Double?) -> Verdict {
        switch outcome {
        case .delivered, .dead:
            return platformPause.map { .answeredButPaused($0) } ?? .answered
        case .retry(let after, _):
            let asked = [after, platformPause].compactMap { $0 }.max()
            return status == 429 ? .rateLimited(asked ?? 0) : .failed(retryAfter: asked)
        }
    }
}
