/// When to try a failed delivery again: exponential backoff from 1 s, doubling, capped at one
/// hour, with ±20 % jitter so a receiver that comes back is not hit by every retry at once.
/// A receiver's own `Retry-After` wins when it asks for longer. Attempts stop at `max_age`.
public struct RetrySchedule: Sendable {
    public var base: GatehouseDuration
    public var cap: GatehouseDuration
    public var jitter: Double
    public var maxAge: GatehouseDuration

    public init(base: GatehouseDuration = .seconds(1), cap: GatehouseDuration = .seconds(3600), jitter: Double = 0.2, maxAge: GatehouseDuration = .seconds(86400)) {
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.maxAge = maxAge
    }

    /// The wait after failed attempt number `attempt` (1-based); `random` in [0, 1).
    public func delay(afterAttempt attempt: Int, retryAfter: Double? = nil, random: Double) -> GatehouseDuration {
        let exponent = min(max(attempt - 1, 0), 30)
        let raw = min(Double(base.milliseconds) * Double(1 << exponent), Double(cap.milliseconds))
        let jittered = raw * (1 - jitter + 2 * jitter * random)
        let asked = Double(Self.askedWait(seconds: retryAfter ?? 0).milliseconds)
        return GatehouseDuration(milliseconds: Int64(max(jittered, asked).rounded()))
    }

    /// The longest wait a receiver may ask for (`Retry-After`, Discord's `retry_after`): an
    /// hour. A real rate limit asks for seconds; a day (as before) let one absurd answer mute a
    /// receiver until its deliveries all died of old age. After an hour it is asked again (a
    /// probe), and may ask for another.
    public static let longestAskedWait = GatehouseDuration.seconds(3_600)

    /// A wait a receiver asked for, made safe to add to a time: negative or not a number is
    /// none, anything past an hour (`1e20`, `inf`, a date in 2099) an hour. Unchecked, `Retry-After: 1e20`
    /// overflowed the conversion to milliseconds — a crash, from any receiver's answer.
    public static func askedWait(seconds: Double) -> GatehouseDuration {
        guard seconds > 0 else { return GatehouseDuration(milliseconds: 0) }  // also NaN
        let longest = Double(longestAskedWait.milliseconds)
        return GatehouseDuration(milliseconds: Int64(min((seconds * 1000).rounded(.up), longest)))
    }

    /// Whether a delivery created at `created` may still be tried at `next`.
    public func allows(next: Timestamp, created: Timestamp) -> Bool {
        next.milliseconds - created.milliseconds <= maxAge.milliseconds
    }
}
