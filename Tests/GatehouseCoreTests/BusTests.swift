import Synchronization
@testable import GatehouseCore
import Testing

struct BusTests {
    @Test func wakesAWaiterAtOnce() async {
        let bus = Bus()
        let subscriber = bus.subscribe()
        // The timeout only bounds a failure: a publish answers at once. It is long because at
        // the suite's start the machine is saturated and this task may wait seconds to resume.
        async let message = subscriber.next(timeout: .seconds(120))
        try? await Task.sleep(for: .milliseconds(20))
        bus.publish(.eventsCommitted(lastCursor: 7))
        // A timed-out wait answers nil, so receiving the message proves the publish woke it.
        #expect(await message == .eventsCommitted(lastCursor: 7))
    }

    @Test func queuesWhileNobodyWaitsAndTimesOut() async {
        let bus = Bus()
        let subscriber = bus.subscribe()
        bus.publish(.eventsCommitted(lastCursor: 1))
        bus.publish(.eventsCommitted(lastCursor: 2))
        #expect(await subscriber.next(timeout: .seconds(1)) == .eventsCommitted(lastCursor: 1))
        #expect(await subscriber.next(timeout: .seconds(1)) == .eventsCommitted(lastCursor: 2))
        #expect(await subscriber.next(timeout: .milliseconds(30)) == nil)
    }

    @Test func manyWaitersAllWake() async {
        let bus = Bus()
        await withTaskGroup(of: BusMessage?.self) { group in
            for _ in 0..<200 {
                let s = bus.subscribe()
                group.addTask { await s.next(timeout: .seconds(120)) }
            }
            try? await Task.sleep(for: .milliseconds(50))
            bus.publish(.eventsCommitted(lastCursor: 3))
            var woken = 0
            for await m in group where m == .eventsCommitted(lastCursor: 3) { woken += 1 }
            #expect(woken == 200)
        }
    }

    @Test func closeAndCancellationEndTheWait() async {
        let bus = Bus()
        let s = bus.subscribe()
        let task = Task { await s.next(timeout: .seconds(30)) }
        try? await Task.sleep(for: .milliseconds(20))
        task.cancel()
        #expect(await task.value == nil)
        let closing = Task { await s.next(timeout: .seconds(30)) }
        try? await Task.sleep(for: .milliseconds(20))
        s.close()
        #expect(await closing.value == nil)
        #expect(bus.subscriberCount == 0)
    }

    @Test func observersSeeEveryMessageInline() {
        let bus = Bus()
        let seen = Mutex<[BusMessage]>([])
        bus.observe { message in seen.withLock { $0.append(message) } }
        bus.publish(.gateChanged(id: "g1"))
        bus.publish(.silencesChanged)
        // Inline on the publishing thread: already there when publish returns.
        #expect(seen.withLock { $0 } == [.gateChanged(id: "g1"), .silencesChanged])
    }

    /// Suspends `subscriber.next(timeout:)` in a task and returns once it is waiting.
    private func waiting(_ subscriber: BusSubscriber, _ timeout: Duration) async -> Task<BusMessage?, Never> {
        let task = Task { await subscriber.next(timeout: timeout) }
        // Bounded: a wait that never starts fails the test rather than hanging it.
        var tries = 0
        while !subscriber.isWaiting, tries < 1_000_000 {
            tries += 1
            await Task.yield()
        }
        #expect(subscriber.isWaiting)
        return task
    }

    @Test func aBusySubscriberSharesOneTimerAcrossItsWaits() async {
        let bus = Bus()
        let subscriber = bus.subscribe()
        // 1,000 waits, each suspended and then answered by a message (as the dispatcher waits,
        // thousands of times a second): one timer serves them all, not one each.
        for i in 0..<1_000 {
            let wait = await waiting(subscriber, .seconds(120))
            bus.publish(.eventsCommitted(lastCursor: Int64(i)))
            #expect(await wait.value == .eventsCommitted(lastCursor: Int64(i)))
        }
        #expect(subscriber.timersArmed == 1)
    }

    @Test func aShorterWaitAfterALongerOneArmsItsOwnTimer() async {
        let bus = Bus()
        let subscriber = bus.subscribe()
        // The first wait arms a timer a minute out (dispatch may run it 6 s late) and is
        // answered at once.
        let first = await waiting(subscriber, .seconds(60))
        bus.publish(.wake)
        #expect(await first.value == .wake)
        // A wait of 50 ms must not wait for that minute, nor its lateness.
        let clock = ContinuousClock()
        let started = clock.now
        #expect(await subscriber.next(timeout: .milliseconds(50)) == nil)
        #expect(clock.now - started < .seconds(30))
        #expect(subscriber.timersArmed == 2)
    }

    @Test func aLongerWaitIsNotEndedByAnEarlierWaitsTimer() async {
        let bus = Bus()
        let subscriber = bus.subscribe()
        // A wait of 150 ms arms a timer and is answered by a message — or, if the machine
        // starves this task that long, times out first (then the message stays queued).
        let first = Task { await subscriber.next(timeout: .milliseconds(150)) }
        try? await Task.sleep(for: .milliseconds(10))
        bus.publish(.wake)
        _ = await first.value
        subscriber.drain()
        // A wait of 600 ms, relying on that timer while it is pending: when it goes off, the
        // wait must go on (a timer is armed for it), not end. Whatever the scheduling, no wait
        // ends before its time.
        let clock = ContinuousClock()
        let started = clock.now
        #expect(await subscriber.next(timeout: .milliseconds(600)) == nil)
        #expect(clock.now - started >= .milliseconds(590))
    }

    @Test func aTimerServesALaterWaitOnlyIfItsLatenessStillEndsItInTime() {
        let ms: UInt64 = 1_000_000
        var timer = SharedTimer()
        // A wait of a minute from 0: dispatch may run its timer 6 s late.
        do { let needed = timer.needed(for: 60_000 * ms, slack: BusSubscriber.leeway(60_000 * ms)); #expect(needed) }
        // Waits ending later, allowed as much lateness, are served by it.
        do { let needed = timer.needed(for: 60_001 * ms, slack: BusSubscriber.leeway(60_000 * ms)); #expect(!needed) }
        // A 50 ms wait starting just before it goes off is not: 6 s late is too late for it.
        do { let needed = timer.needed(for: 60_040 * ms, slack: BusSubscriber.leeway(50 * ms)); #expect(needed) }
        #expect(timer.armed?.deadline == 60_040 * ms)
        // Now that one is the timer to beat; the minute's still goes off, ending nothing.
        timer.fired(60_000 * ms)
        #expect(timer.armed?.deadline == 60_040 * ms)
        timer.fired(60_040 * ms)
        #expect(timer.armed == nil)
        do { let needed = timer.needed(for: 61_000 * ms, slack: ms); #expect(needed) }
        #expect(timer.count == 3)
    }

    @Test func waitsForOneTimeEachShorterShareItsTimer() {
        // The dispatcher's loop: every wait in a second ends at the same time (its next look at
        // the reminders), each started later, so each would allow itself less leeway.
        let ms: UInt64 = 1_000_000
        var timer = SharedTimer()
        let end = 1_000 * ms
        do { let needed = timer.needed(for: end, slack: BusSubscriber.leeway(end)); #expect(needed) }
        for started in stride(from: 1 * ms, to: end, by: Int(7 * ms)) {
            let needed = timer.needed(for: end, slack: BusSubscriber.leeway(end - started))
            #expect(!needed)
        }
        // A wait ending a little earlier (the loop's millisecond rounding) arms its own.
        do { let needed = timer.needed(for: end - ms / 2, slack: ms); #expect(needed) }
        #expect(timer.count == 2)
    }

    @Test func leewayIsATenthBetweenAMillisecondAndAMinute() {
        #expect(BusSubscriber.leeway(0) == 1_000_000)
        #expect(BusSubscriber.leeway(1_000_000_000) == 100_000_000)
        #expect(BusSubscriber.leeway(3_600_000_000_000) == 60_000_000_000)
    }
}
