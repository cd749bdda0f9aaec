import GatehouseCore
import GatehouseStore

/// One receiver's health as the dispatcher sees it — a circuit breaker per receiver, not per
/// delivery. After a retryable failure (connection error, timeout, 408, 5xx) the whole
/// receiver backs off exponentially — at least as long as the failure's `Retry-After` asked —
/// and is then probed with one delivery at a time; a 429 (or Discord's rate-limit answer)
/// pauses it until the time it gave, a second at least. The probe's answer, if it is not a
/// retryable failure, ends the episode, and the backlog drains at full speed. So a receiver
/// that is down or refusing draws about one request per back-off step or pause, whatever its
/// backlog and whatever it asks for.
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
    /// Retryable failures and 429s in a row (probes included); 0 once the receiver answers.
    public private(set) var consecutiveFailures = 0
    /// The delivery sent as the probe, while it is in flight.
    public private(set) var probe: String?
    /// Back-off between probes: from 1 s, doubling, capped at 30 s so a receiver that comes back
    /// is noticed within half a minute.
    public var backoff = RetrySchedule(base: .seconds(1), cap: .seconds(30), jitter: 0.2)

    public init() {}

    /// The receiver as it was kept before a restart or by the process that served it before
    /// (`hold`): its failures counted, held until the same time but at most
    /// `longestHoldTakenUp` from `now`, and probed with one delivery once the hold has passed —
    /// also when it passed meanwhile, as the receiver was failing when last heard from.
    public init(restoring kept: ReceiverHold, now: Timestamp) {
        guard let state = State(rawValue: kept.state), state != .ok, kept.consecutiveFailures > 0 else { return }
        self.state = state
        let latest = now.adding(milliseconds: Self.longestHoldTakenUp.milliseconds)
        until = kept.until.map { $0 > latest ? latest : $0 }
        consecutiveFailures = kept.consecutiveFailures
    }

    /// The most of a kept hold a restarted server waits before its probe. A receiver that asked
    /// for an hour and still refuses costs one request (and asks again); one fixed meanwhile —
    /// the usual reason to restart — is back within half a minute. It also bounds what a clock
    /// stepped back, or another process's clock, can make of a kept `until`.
    public static let longestHoldTakenUp = GatehouseDuration.seconds(30)

    /// What is kept across restarts: a failure episode (failures or 429s in a row) and its hold;
    /// nil once the receiver answers. A pause a success asked for (Discord's empty bucket) is
    /// not kept: it lasts seconds, and Discord's answers come often.
    public var hold: ReceiverHold? {
        guard state != .ok, consecutiveFailures > 0 else { return nil }
        return ReceiverHold(state: state.rawValue, until: until, consecutiveFailures: consecutiveFailures)
    }

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
    /// `pausing`: it asked for a wait all the same (Discord's empty bucket) — it is paused that
    /// long, one delivery at a time after, but not failing: its failures are forgotten, and a
    /// pause that follows only such answers is no episode to recover from.
    ///
    /// While the receiver is held, only the probe's answer ends the hold. An attempt already in
    /// flight when the hold began may still succeed (a rate limit that takes some requests and
    /// refuses others): that says nothing about now, and letting it end the hold sent the whole
    /// backlog again at once. It may lengthen the hold, never shorten it.
    public mutating func answered(_ id: String, pausing seconds: Double? = nil, now: Timestamp? = nil) -> Bool {
        let wait = seconds.map { RetrySchedule.askedWait(seconds: $0).milliseconds } ?? 0
        guard state == .ok || probe == id else {
            if wait > 0, let now { hold(until: now.adding(milliseconds: wait)) }
            return false
        }
        let recovering = state == .backingOff || consecutiveFailures > 0
        state = .ok
        until = nil
        probe = nil
        consecutiveFailures = 0
        if wait > 0, let now {
            state = .pausedByRateLimit
            until = now.adding(milliseconds: wait)
        }
        return recovering
    }

    /// A retryable failure of delivery `id` (connection error, timeout, 408, 5xx), which may have
    /// asked for a wait (`retryAfter`, seconds): the back-off waits at least that long. Only
    /// the first failure of an episode and failed probes lengthen the back-off: attempts that
    /// were already in flight when the receiver went down fail too, and must not multiply it
    /// (though the wait one of them asks for still counts).
    public mutating func failed(_ id: String, retryAfter: Double? = nil, now: Timestamp, random: Double) {
        let asked = RetrySchedule.askedWait(seconds: retryAfter ?? 0).milliseconds
        let wasProbe = probe == id
        guard state == .ok || wasProbe else {
            if asked > 0 { hold(until: now.adding(milliseconds: asked)) }
            return
        }
        consecutiveFailures += 1
        let step = backoff.delay(afterAttempt: consecutiveFailures, random: random).milliseconds
        if state == .ok { until = nil }
        state = .backingOff
        hold(until: now.adding(milliseconds: max(step, asked)))
        probe = nil
    }

    /// The shortest pause a 429 gets. A receiver that answers `429` with `Retry-After: 0` (or
    /// a date in the past) is still refusing: unpaused, each of its probes' answers let the next
    /// go at once, a request per round trip for as long as it refused.
    public static let shortestRateLimitPause = 1.0

    /// The receiver refused with a 429, asking us to wait `seconds` (`Retry-After`, Discord's
    /// `retry_after`): it is paused that long, at least `shortestRateLimitPause`, and then
    /// probed. It counts as a failure, as `failed` counts them.
    public mutating func rateLimited(_ id: String, for seconds: Double, now: Timestamp) {
        let wasProbe = probe == id
        if state == .ok || wasProbe { consecutiveFailures += 1 }
        let wait = max(RetrySchedule.askedWait(seconds: seconds).milliseconds, Int64(Self.shortestRateLimitPause * 1000))
        if state == .ok { until = nil }
        state = .pausedByRateLimit
        hold(until: now.adding(milliseconds: wait))
        if wasProbe { probe = nil }
    }

    /// Holds the receiver until `end`, or longer if it is held longer already (a shorter wait
    /// never cuts a longer one short; one that has passed counts for nothing).
    private mutating func hold(until end: Timestamp) {
        if let until, until > end { return }
        until = end
    }

    /// Whether the receiver is as good as `ok` at `now`: nothing failed, and the only hold was a
    /// pause asked for by a success that has passed (Discord's bucket after its last message
    /// stays "paused" until more work comes, having nothing to probe with).
    public func isSettled(now: Timestamp) -> Bool {
        state == .ok || (state == .pausedByRateLimit && consecutiveFailures == 0 && probe == nil && (until.map { $0 <= now } ?? true))
    }

    /// This health as it stands at `now`: a settled pause shown as `ok`.
    public func settled(now: Timestamp) -> ReceiverHealth {
        guard state != .ok, isSettled(now: now) else { return self }
        var copy = self
        copy.state = .ok
        copy.until = nil
        return copy
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
