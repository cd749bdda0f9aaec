import Dispatch
import Synchronization

/// What the in-process bus carries. Messages are notifications, not data: a subscriber reads
/// what it needs from the store from its own cursor, so a coalesced or dropped notice loses
/// nothing.
public enum BusMessage: Sendable, Equatable {
    /// Events up to and including this cursor are committed.
    case eventsCommitted(lastCursor: Int64)
    /// A nudge with no data (a worker telling its own loop to look again).
    case wake
    /// Something may have been missed (the bus across processes reconnected): every listener
    /// re-reads what it waits on. Never forwarded to other processes.
    case resync
    /// A silence was added or expired.
    case silencesChanged
    /// A gate changed (decision, close, reminder): its waiters re-read it.
    case gateChanged(id: String)
    /// A gate with this key opened or changed: waits by key re-read the key's latest gate.
    case gateKeyChanged(key: String)
    /// A dataset got items or labels: its waiters re-check their condition.
    case datasetChanged(name: String)
}

/// Wakes subscribers the moment something is committed, so nothing has to poll the database.
public final class Bus: Sendable {
    private let subscribers = Mutex<[ObjectIdentifier: BusSubscriber]>([:])
    private let observers = Mutex<[@Sendable (BusMessage) -> Void]>([])

    public init() {}

    /// `interest` filters at publish time: a subscriber is not even woken for messages it
    /// would ignore (a thousand gate waiters need not wake for every event commit).
    public func subscribe(interest: (@Sendable (BusMessage) -> Bool)? = nil) -> BusSubscriber {
        let subscriber = BusSubscriber(bus: self, interest: interest)
        subscribers.withLock { $0[ObjectIdentifier(subscriber)] = subscriber }
        return subscriber
    }

    func remove(_ subscriber: BusSubscriber) {
        _ = subscribers.withLock { $0.removeValue(forKey: ObjectIdentifier(subscriber)) }
    }

    /// Calls `observer` with every message, inline on the publishing thread, for as long as
    /// the bus lives. For listeners that only hand work on (start a task, queue on an event
    /// loop) and must not depend on a task of their own being scheduled to listen.
    public func observe(_ observer: @escaping @Sendable (BusMessage) -> Void) {
        observers.withLock { $0.append(observer) }
    }

    /// Observers first: what they note (the dispatcher's work epoch) must be visible to a
    /// subscriber the same message wakes.
    public func publish(_ message: BusMessage) {
        for observer in observers.withLock({ $0 }) { observer(message) }
        let all = subscribers.withLock { Array($0.values) }
        for subscriber in all { subscriber.deliver(message) }
    }

    public var subscriberCount: Int { subscribers.withLock { $0.count } }
}

/// One listener. `next(timeout:)` suspends until a message arrives, the timeout passes, the
/// task is cancelled or the subscriber is closed; it never polls.
public final class BusSubscriber: Sendable {
    private struct State {
        var queue: [BusMessage] = []
        var waiter: CheckedContinuation<BusMessage?, Never>?
        /// When the current wait ends (uptime nanoseconds).
        var deadline: UInt64 = 0
        /// When the earliest timer armed for this subscriber and not yet fired goes off. A
        /// wait ending later arms none: that timer, when it fires, arms one for the wait then
        /// current. The dispatcher waits thousands of times a second, nearly always woken by a
        /// message long before its timeout; a timer per wait (`asyncAfter`) cost a wake-up of
        /// libdispatch's timer thread each (0.3 per alert, measured) and a queued no-op each
        /// when its time came.
        var armedFor: UInt64?
        var closed = false
    }
    private let state = Mutex(State())
    private weak let bus: Bus?
    /// Bounded so an idle subscriber cannot grow without limit; the newest message wins.
    private static let queueLimit = 64

    private let interest: (@Sendable (BusMessage) -> Bool)?

    init(bus: Bus, interest: (@Sendable (BusMessage) -> Bool)? = nil) {
        self.bus = bus
        self.interest = interest
    }

    func deliver(_ message: BusMessage) {
        if let interest, message != .wake, message != .resync, !interest(message) { return }
        let waiter = state.withLock { s -> CheckedContinuation<BusMessage?, Never>? in
            if s.closed { return nil }
            if let waiter = s.waiter {
                s.waiter = nil
                return waiter
            }
            if s.queue.count >= Self.queueLimit { s.queue.removeFirst() }
            s.queue.append(message)
            return nil
        }
        waiter?.resume(returning: message)
    }

    /// Forgets the messages queued so far (a listener that re-reads everything anyway takes a
    /// burst of them as one).
    public func drain() {
        state.withLock { $0.queue.removeAll() }
    }

    /// Wakes this subscriber alone.
    public func wake() { deliver(.wake) }

    /// Whether a `next` is suspended waiting (tests).
    var isWaiting: Bool { state.withLock { $0.waiter != nil } }

    /// The next message, or nil on timeout, cancellation or close.
    public func next(timeout: Duration) async -> BusMessage? {
        let deadline = DispatchTime.now().uptimeNanoseconds &+ Self.nanoseconds(timeout)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<BusMessage?, Never>) in
                let (ready, arm) = state.withLock { s -> (BusMessage??, Bool) in
                    if !s.queue.isEmpty { return (.some(s.queue.removeFirst()), false) }
                    if s.closed || Task.isCancelled { return (.some(nil), false) }
                    s.waiter = continuation
                    s.deadline = deadline
                    guard s.armedFor.map({ $0 > deadline }) ?? true else { return (nil, false) }
                    s.armedFor = deadline
                    return (nil, true)
                }
                if let ready {
                    continuation.resume(returning: ready)
                } else if arm {
                    self.arm(deadline)
                }
            }
        } onCancel: {
            wakeWaiter()
        }
    }

    /// A timer armed in `next` goes off at `deadline` (the bus's timers are never cancelled:
    /// cancelling a dispatch work item leaves it queued anyway).
    private func arm(_ deadline: UInt64) {
        _ = BusTimer(at: deadline) { [weak self] in self?.timerFired(deadline) }
    }

    /// Ends the current wait if its time has come (a millisecond early counts: no timer is
    /// armed again for less), else arms the timer its deadline needs.
    private func timerFired(_ firedFor: UInt64) {
        let now = DispatchTime.now().uptimeNanoseconds
        let (expired, rearm) = state.withLock { s -> (CheckedContinuation<BusMessage?, Never>?, UInt64?) in
            if s.armedFor == firedFor { s.armedFor = nil }
            guard let waiter = s.waiter else { return (nil, nil) }
            if s.deadline <= now &+ 1_000_000 {
                s.waiter = nil
                return (waiter, nil)
            }
            guard s.armedFor.map({ $0 > s.deadline }) ?? true else { return (nil, nil) }
            s.armedFor = s.deadline
            return (nil, s.deadline)
        }
        expired?.resume(returning: nil)
        if let rearm { arm(rearm) }
    }

    /// Resumes the current waiter, if any, with nil.
    private func wakeWaiter() {
        let waiter = state.withLock { s -> CheckedContinuation<BusMessage?, Never>? in
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// Ends the subscription: a pending `next` returns nil at once, later ones too.
    public func close() {
        state.withLock { $0.closed = true }
        wakeWaiter()
        bus?.remove(self)
    }

    /// A timeout in nanoseconds: negative is none, at most a year.
    static func nanoseconds(_ timeout: Duration) -> UInt64 {
        let (seconds, attoseconds) = timeout.components
        return UInt64(max(0, min(seconds, 86_400 * 365)) * 1_000_000_000 + max(0, attoseconds / 1_000_000_000))
    }
}

/// A one-shot timer on a shared dispatch queue; cancelling it wakes nothing.
public final class BusTimer: @unchecked Sendable {
    static let queue = DispatchQueue(label: "gatehouse.bus.timers")
    /// Timers armed since the process started (tests watch how few a busy subscriber needs).
    public static let armed = Atomic<Int>(0)
    // DispatchWorkItem is thread-safe; it is only not marked Sendable.
    private let item: DispatchWorkItem

    public convenience init(after timeout: Duration, _ fire: @escaping @Sendable () -> Void) {
        self.init(at: DispatchTime.now().uptimeNanoseconds &+ BusSubscriber.nanoseconds(timeout), fire)
    }

    /// Goes off at `uptime` (nanoseconds, DispatchTime's clock).
    public init(at uptime: UInt64, _ fire: @escaping @Sendable () -> Void) {
        item = DispatchWorkItem(block: fire)
        Self.armed.add(1, ordering: .relaxed)
        Self.queue.asyncAfter(deadline: DispatchTime(uptimeNanoseconds: uptime), execute: item)
    }

    public func cancel() { item.cancel() }
}
