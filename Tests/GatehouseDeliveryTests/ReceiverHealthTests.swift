import GatehouseCore
@testable import GatehouseDelivery
import GatehouseStore
import Testing

/// The per-receiver circuit breaker: a receiver that fails is held back as a whole and probed
/// one delivery at a time; a rate limit pauses it until the time it gave.
struct ReceiverHealthTests {
    let t0 = Timestamp(milliseconds: 1_795_946_400_000)

    @Test func aFailureHoldsTheWholeReceiverBackThenProbesOneAtATime() {
        var h = ReceiverHealth()
        let r1 = h.admit("a", now: t0)
        #expect(r1 == .open)
        let r2 = h.admit("b", now: t0)
        #expect(r2 == .open)
        h.failed("a", now: t0, random: 0.5)
        #expect(h.state == .backingOff)
        #expect(h.until == t0.adding(milliseconds: 1000))
        // Attempts already in flight that fail too do not lengthen the back-off.
        h.failed("b", now: t0, random: 0.5)
        #expect(h.consecutiveFailures == 1 && h.until == t0.adding(milliseconds: 1000))
        let r3 = h.admit("c", now: t0.adding(milliseconds: 500))
        #expect(r3 == .closed(until: t0.adding(milliseconds: 1000)))
        #expect(!h.acceptsWork(now: t0.adding(milliseconds: 500)))
        // After the back-off: one probe, and nothing else while it is in flight.
        let later = t0.adding(milliseconds: 1000)
        #expect(h.acceptsWork(now: later))
        let r4 = h.admit("c", now: later)
        #expect(r4 == .probe)
        let r5 = h.admit("d", now: later)
        #expect(r5 == .closed(until: nil))
        #expect(!h.acceptsWork(now: later))
        // A failed probe doubles the back-off.
        h.failed("c", now: later, random: 0.5)
        #expect(h.consecutiveFailures == 2 && h.until == later.adding(milliseconds: 2000))
        // A successful probe ends the episode: the backlog may go at full speed.
        let after = later.adding(milliseconds: 2000)
        let r6 = h.admit("c", now: after)
        #expect(r6 == .probe)
        let r7 = h.answered("c")
        #expect(r7)
        #expect(h.state == .ok && h.consecutiveFailures == 0 && h.until == nil)
        let r8 = h.admit("e", now: after)
        #expect(r8 == .open)
        let r9 = h.answered("e")
        #expect(!r9, "an answer while healthy is no recovery")
    }

    @Test func backOffIsCappedSoARecoveryIsNoticedSoon() {
        var h = ReceiverHealth()
        var now = t0
        _ = h.admit("a", now: now)
        for _ in 0..<12 {
            h.failed("a", now: now, random: 0.5)
            now = h.until!
            let r10 = h.admit("a", now: now)
            #expect(r10 == .probe)
        }
        #expect(h.until! <= now)
        h.failed("a", now: now, random: 0.99)
        #expect(h.until!.milliseconds - now.milliseconds <= 36_000)
    }

    @Test func aRateLimitPausesUntilTheTimeGiven() {
        var h = ReceiverHealth()
        _ = h.admit("a", now: t0)
        h.rateLimited("a", for: 2.5, now: t0)
        #expect(h.state == .pausedByRateLimit && h.until == t0.adding(milliseconds: 2500))
        // A shorter pause does not cut a longer one short.
        h.rateLimited("b", for: 0.5, now: t0)
        #expect(h.until == t0.adding(milliseconds: 2500))
        let r11 = h.admit("b", now: t0.adding(milliseconds: 2500))
        #expect(r11 == .probe)
        let r12 = h.answered("b")
        #expect(r12 && h.state == .ok)
    }

    /// A receiver asking for an absurd wait (`Retry-After: 1e20`, `inf`) pauses it an hour at
    /// most (then it is probed again); one that is not a number or negative, not at all. Unbounded, 1e20 overflowed the
    /// conversion to milliseconds and crashed the server.
    @Test func anAbsurdRateLimitIsBoundedToAnHour() {
        for seconds: Double in [1e20, .infinity, 9.3e15, 86_401, 3_601] {
            var h = ReceiverHealth()
            _ = h.admit("a", now: t0)
            h.rateLimited("a", for: seconds, now: t0)
            #expect(h.until == t0.adding(milliseconds: 3_600_000), "\(seconds)")
        }
        // One that asks for no wait (not a number, negative, 0, a date in the past) still
        // pauses it a second: it is refusing, and unpaused each probe's 429 let the next go at
        // once.
        for seconds: Double in [.nan, -5, -.infinity, 0, 0.001] {
            var h = ReceiverHealth()
            _ = h.admit("a", now: t0)
            h.rateLimited("a", for: seconds, now: t0)
            #expect(h.until == t0.adding(milliseconds: 1000), "\(seconds)")
        }
        let schedule = RetrySchedule()
        #expect(schedule.delay(afterAttempt: 1, retryAfter: 1e20, random: 0.5).milliseconds == 3_600_000)
        #expect(schedule.delay(afterAttempt: 1, retryAfter: Double.infinity, random: 0.5).milliseconds == 3_600_000)
        #expect(schedule.delay(afterAttempt: 1, retryAfter: Double.nan, random: 0.5).milliseconds == 1000)
    }

    /// A 5xx that carries `Retry-After` is a failure like any other — counted, backed off
    /// exponentially — and the back-off waits at least what it asked for.
    @Test func aFailureThatAsksForAWaitBacksOffAtLeastThatLong() {
        var h = ReceiverHealth()
        _ = h.admit("a", now: t0)
        h.failed("a", retryAfter: 0, now: t0, random: 0.5)
        #expect(h.state == .backingOff && h.consecutiveFailures == 1 && h.until == t0.adding(milliseconds: 1000))
        let later = t0.adding(milliseconds: 1000)
        let r1 = h.admit("b", now: later)
        #expect(r1 == .probe)
        h.failed("b", retryAfter: 120, now: later, random: 0.5)
        #expect(h.state == .backingOff && h.consecutiveFailures == 2 && h.until == later.adding(milliseconds: 120_000))
    }

    /// Repeated 429s count as failures in a row, and a probe's 429 pauses again.
    @Test func rateLimitsCountAndEachProbeIsPausedAgain() {
        var h = ReceiverHealth()
        _ = h.admit("a", now: t0)
        _ = h.admit("b", now: t0)
        h.rateLimited("a", for: 0, now: t0)
        // Another attempt that was in flight meets the same limit: one episode, one count.
        h.rateLimited("b", for: 0, now: t0)
        #expect(h.state == .pausedByRateLimit && h.consecutiveFailures == 1 && h.until == t0.adding(milliseconds: 1000))
        let later = t0.adding(milliseconds: 1000)
        let r1 = h.admit("c", now: later)
        #expect(r1 == .probe)
        h.rateLimited("c", for: 0, now: later)
        #expect(h.consecutiveFailures == 2 && h.until == later.adding(milliseconds: 1000))
        let r2 = h.admit("d", now: later.adding(milliseconds: 999))
        #expect(r2 == .closed(until: later.adding(milliseconds: 1000)))
    }

    /// Discord's empty bucket on a success: the receiver answered (its failures are forgotten,
    /// the episode over) but is paused until the bucket refills, then sent one at a time.
    /// Pauses that follow only such answers are no recovery (no backlog to bring forward).
    @Test func aSuccessThatAsksForAPauseEndsTheEpisodeAndPauses() {
        var h = ReceiverHealth()
        _ = h.admit("a", now: t0)
        h.failed("a", now: t0, random: 0.5)
        let later = t0.adding(milliseconds: 1000)
        let r1 = h.admit("b", now: later)
        #expect(r1 == .probe)
        let recovered = h.answered("b", pausing: 0.1, now: later)
        #expect(recovered)
        #expect(h.state == .pausedByRateLimit && h.consecutiveFailures == 0 && h.until == later.adding(milliseconds: 100))
        let r2 = h.admit("c", now: later.adding(milliseconds: 100))
        #expect(r2 == .probe)
        let again = h.answered("c", pausing: 0.1, now: later.adding(milliseconds: 100))
        #expect(!again, "a paused receiver that answers is not recovering from anything")
        // Once that pause has passed, with nothing failed, the receiver is as good as ok
        // (shown so, and steady) even before another delivery probes it.
        #expect(!h.isSettled(now: later.adding(milliseconds: 150)))
        #expect(h.isSettled(now: later.adding(milliseconds: 200)))
        #expect(h.settled(now: later.adding(milliseconds: 200)).state == .ok)
        let r3 = h.admit("d", now: later.adding(milliseconds: 200))
        #expect(r3 == .probe)
        let r4 = h.answered("d", pausing: 0, now: later.adding(milliseconds: 200))
        #expect(!r4 && h.state == .ok && h.until == nil)
    }

    /// While the receiver is held, an answer to an attempt sent before the hold began (still
    /// in flight then) does not end it — only the probe's answer does: a rate limit that
    /// takes some requests and refuses others would otherwise let the backlog go again at
    /// once. Such answers and failures may lengthen the hold, never shorten it.
    @Test func onlyTheProbeEndsAHoldAndNothingShortensIt() {
        var h = ReceiverHealth()
        for id in ["a", "b", "c", "d"] { _ = h.admit(id, now: t0) }
        h.rateLimited("a", for: 30, now: t0)
        #expect(h.until == t0.adding(milliseconds: 30_000))
        // An older request succeeds, asking for a short pause (Discord's empty bucket).
        let r1 = h.answered("b", pausing: 0.5, now: t0.adding(milliseconds: 10))
        #expect(!r1 && h.state == .pausedByRateLimit && h.until == t0.adding(milliseconds: 30_000) && h.consecutiveFailures == 1)
        // Another succeeds plainly: still held.
        let r2 = h.answered("c", now: t0.adding(milliseconds: 20))
        #expect(!r2 && h.state == .pausedByRateLimit && h.until == t0.adding(milliseconds: 30_000))
        // Another fails asking for longer: the hold grows, the count does not.
        h.failed("d", retryAfter: 60, now: t0.adding(milliseconds: 30), random: 0.5)
        #expect(h.until == t0.adding(milliseconds: 60_030) && h.consecutiveFailures == 1)
        // The probe, after the hold, fails with a short back-off: the hold does not shrink below
        // what an older answer asked for meanwhile.
        let end = t0.adding(milliseconds: 60_030)
        let r3 = h.admit("e", now: end)
        #expect(r3 == .probe)
        _ = h.admit("f", now: end)
        h.rateLimited("f", for: 120, now: end)
        h.failed("e", now: end, random: 0.5)
        #expect(h.state == .backingOff && h.consecutiveFailures == 2 && h.until == end.adding(milliseconds: 120_000))
        // The next probe's answer ends it.
        let later = end.adding(milliseconds: 120_000)
        let r4 = h.admit("g", now: later)
        #expect(r4 == .probe)
        let r5 = h.answered("g", now: later)
        #expect(r5 && h.state == .ok && h.until == nil && h.consecutiveFailures == 0)
    }

    @Test func aProbeThatSentNothingLetsAnotherGo() {
        var h = ReceiverHealth()
        _ = h.admit("a", now: t0)
        h.failed("a", now: t0, random: 0.5)
        let later = t0.adding(milliseconds: 1000)
        let r13 = h.admit("m", now: later)
        #expect(r13 == .probe)
        h.released("m")
        let r14 = h.admit("n", now: later)
        #expect(r14 == .probe)
    }

    /// What is kept across a restart: a failure episode and its hold, not a healthy receiver
    /// nor a pause a success asked for; restored, the receiver waits out the hold and is probed.
    @Test func aHoldIsKeptAndRestoredAcrossARestart() {
        var h = ReceiverHealth()
        #expect(h.hold == nil)
        h.answered("a", pausing: 2, now: t0)
        #expect(h.state == .pausedByRateLimit && h.hold == nil, "a pause asked for by a success is not kept")
        var limited = ReceiverHealth()
        limited.rateLimited("a", for: 3600, now: t0)
        let kept = limited.hold
        #expect(kept == ReceiverHold(state: "paused_by_rate_limit", until: t0.adding(milliseconds: 3_600_000), consecutiveFailures: 1))

        // Restarted a minute later: the hour asked for is waited out for half a minute more at
        // most, then probed (one request, which asks again if the receiver still refuses).
        let restart = t0.adding(milliseconds: 60_000)
        var restored = ReceiverHealth(restoring: kept!, now: restart)
        let after = restart.adding(milliseconds: 30_000)
        #expect(restored.state == .pausedByRateLimit && restored.until == after && restored.consecutiveFailures == 1)
        let early = restart.adding(milliseconds: 29_000)
        #expect(!restored.acceptsWork(now: early))
        let held = restored.admit("b", now: early)
        #expect(held == .closed(until: after))
        // A shorter hold is restored as it was.
        let short = ReceiverHold(state: "backing_off", until: restart.adding(milliseconds: 4_000), consecutiveFailures: 2)
        #expect(ReceiverHealth(restoring: short, now: restart).until == restart.adding(milliseconds: 4_000))
        let probe = restored.admit("b", now: after)
        #expect(probe == .probe)
        let second = restored.admit("c", now: after)
        #expect(second == .closed(until: nil))
        // The episode goes on where it was: a failed probe backs off from the second step.
        restored.failed("b", now: after, random: 0.5)
        #expect(restored.state == .backingOff && restored.consecutiveFailures == 2 && restored.until == after.adding(milliseconds: 2000))
        #expect(restored.hold?.consecutiveFailures == 2)
        let r = restored.admit("c", now: after.adding(milliseconds: 2000))
        #expect(r == .probe)
        let ended = restored.answered("c")
        #expect(ended && restored.hold == nil)

        // A hold that passed while the server was down still starts with a probe.
        var passed = ReceiverHealth(restoring: ReceiverHold(state: "backing_off", until: t0, consecutiveFailures: 4), now: after)
        let first = passed.admit("x", now: after)
        #expect(first == .probe)
        // Nothing to restore from an unknown state or an episode without failures.
        #expect(ReceiverHealth(restoring: ReceiverHold(state: "sleeping", until: after, consecutiveFailures: 2), now: t0).state == .ok)
        #expect(ReceiverHealth(restoring: ReceiverHold(state: "backing_off", until: after, consecutiveFailures: 0), now: t0).state == .ok)
    }
}
