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

    @Test func aBusySubscriberSharesOneTimerAcrossItsWaits() async {
        let bus = Bus()
        let subscriber = bus.subscribe()
        // 1,000 waits of a second, each suspended and then answered by a message: they must
        // not arm a timer each (the dispatcher waits like this thousands of times a second).
        let before = BusTimer.armed.load(ordering: .relaxed)
        for i in 0..<1_000 {
            let waiting = Task { await subscriber.next(timeout: .seconds(1)) }
            while !subscriber.isWaiting { await Task.yield() }
            bus.publish(.eventsCommitted(lastCursor: Int64(i)))
            #expect(await waiting.value == .eventsCommitted(lastCursor: Int64(i)))
        }
        // Other suites arm timers meanwhile (they run in parallel, one of them 200 at once):
        // a timer per wait would be 1,000 more.
        #expect(BusTimer.armed.load(ordering: .relaxed) - before < 500)
    }

    @Test func aShorterWaitAfterALongerOneStillEndsOnTime() async {
        let bus = Bus()
        let subscriber = bus.subscribe()
        // The first wait arms a timer a minute out and is answered at once.
        async let first = subscriber.next(timeout: .seconds(60))
        try? await Task.sleep(for: .milliseconds(10))
        bus.publish(.wake)
        #expect(await first == .wake)
        // A wait of 50 ms must not wait for that minute.
        let clock = ContinuousClock()
        let started = clock.now
        #expect(await subscriber.next(timeout: .milliseconds(50)) == nil)
        #expect(clock.now - started < .seconds(30))
    }

    @Test func aLongerWaitIsNotEndedByAnEarlierWaitsTimer() async {
        let bus = Bus()
        let subscriber = bus.subscribe()
        // The first wait's timer goes off at 150 ms, after it was answered…
        async let first = subscriber.next(timeout: .milliseconds(150))
        try? await Task.sleep(for: .milliseconds(10))
        bus.publish(.wake)
        #expect(await first == .wake)
        // …while a second wait of 600 ms is under way: that wait must last its own time.
        let clock = ContinuousClock()
        let started = clock.now
        #expect(await subscriber.next(timeout: .milliseconds(600)) == nil)
        #expect(clock.now - started >= .milliseconds(590))
    }
}
