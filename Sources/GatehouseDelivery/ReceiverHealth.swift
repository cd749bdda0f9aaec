import GatehouseCore

/// One receiver's health as the dispatcher sees it — a circuit breaker per receiver, not per
/// delivery. After a retryable failure (connection error, timeout, 408, 5xx) the whole
/// receiver backs off exponentially and is then probed with one delivery at a time; a 429 (or
/// Discord's rate-limit answer) pauses it until the time it gave. The first answer that is not
/// a retryable failure ends the episode, and the backlog drains at full speed. So a receiver
/// that is down draws about one request per back-off step, whatever its backlog.
/// See docs/delivery.md.
public struct ReceiverHealth: Sendable {
    public enum State: String, Sendable, CaseIterable {
        case ok
        case backingOff = "backing_off"
        case pausedByRateLimit = "paused_by_rate_limit"
    }

    /// What the dispatcher may start for this receiver now.
    public enum Admission: Equatable {
        /// As many attempts as its concurrency allows.
        case open
        /// Exactly one attempt: the probe that tells whether the receiver is back.
        case probe
        /// Nothing now; look again at `until` (nil: when the probe in flight answers).
        case closed(until: Timestamp?)
    }

    public private(set) var state: State = .ok
    /// End of the current back-off or rate-limit pause.
    public private(set) var until: Timestamp?
    /// Retryable failures in a row (probes included); 0 once the receiver answers.
    public private(set) var consecutiveFailures = 0
    /// The delivery sent as the probe, while it is in flight.
    public private(set) var probe: String?
    /// Back-off between probes: from 1 s, doubling, capped at 30 s so a receiver that comes back
    /// is noticed within half a minute.
    public var backoff = RetrySchedule(base: .seconds(1), cap: .seconds(30), jitter: 0.2)

    public init() {}

    /// Whether delivery `id` may start now; when the answer is `.probe`, `id` is the probe.
    public mutating func admit(_ id: String, now: Timestamp) -> Admission {
        guard state != .ok else { return .open }
        if let until, until > now { return .closed(until: until) }
        if probe != nil { return .closed(until: nil) }
        probe = id
        return .probe
    }

    /// Whether the receiver may take more work from the database now (a refill).
    public func acceptsWork(now: Timestamp) -> Bool {
        state == .ok || ((until.map { $0 <= now } ?? true) && probe == nil)
    }

    /// The receiver answered (delivered, or a final refusal such as 400: it is up). True when
    /// this ends a failure episode, so its held-back deliveries should be brought forward.
    public mutating func answered(_ id: String) -> Bool {
        let recovering = state != .ok || consecutiveFailures > 0
        state = .ok
        until = nil
        probe = nil
        consecutiveFailures = 0
        return recovering
    }

    /// A retryable failure of delivery `id`. Only the first failure of an episode and failed
    /// probes lengthen the back-off: attempts that were already in flight when the receiver
    /// went down fail too, and must not multiply it.
    public mutating func failed(_ id: String, now: Timestamp, random: Double) {
        let wasProbe = probe == id
        guard state == .ok || wasProbe else { return }
        consecutiveFailures += 1
        state = .backingOff
        until = now.adding(milliseconds: backoff.delay(afterAttempt: consecutiveFailures, random: random).milliseconds)
        probe = nil
    }

    /// The receiver asked us to wait `seconds` (429 with Retry-After, Discord's retry_after).
    public mutating func rateLimited(_ id: String, for seconds: Double, now: Timestamp) {
        let end = now.adding(milliseconds: RetrySchedule.askedWait(seconds: seconds).milliseconds)
        if state == .pausedByRateLimit, let until, until > end {
            // Keep the longer pause.
        } else {
            until = end
        }
        state = .pausedByRateLimit
        if probe == id { probe = nil }
    }

    /// An attempt that sent nothing (muted, taken along by another message, abandoned at
    /// shutdown): if it was the probe, another may go.
    public mutating func released(_ id: String) {
        if probe == id { probe = nil }
    }

    /// How `GET /v1/deliveries` shows a receiver.
    struct Resource: Encodable {
        var state: String
        var until: Timestamp?
        var consecutive_failures: Int
    }

    public var json: JSONValue { JSONValueEncoder.value(Resource(state: state.rawValue, until: until, consecutive_failures: consecutiveFailures)) }
}
