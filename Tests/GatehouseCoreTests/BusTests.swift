import Synchronization
import GatehouseCore
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
}
