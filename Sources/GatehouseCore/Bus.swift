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
        var waiterID = 0
        var timer: BusTimer?
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
        let (waiter, timer) = state.withLock { s -> (CheckedContinuation<BusMessage?, Never>?, BusTimer?) in
            if s.closed { return (nil, nil) }
            if let waiter = s.waiter {
                s.waiter = nil
                defer { s.timer = nil }
                return (waiter, s.timer)
            }
            if s.queue.count >= Self.queueLimit { s.queue.removeFirst() }
            s.queue.append(message)
            return (nil, nil)
        }
        timer?.cancel()
        waiter?.resume(returning: message)
    }

    /// Forgets the messages queued so far (a listener that re-reads everything anyway takes a
    /// burst of them as one).
    public func drain() {
        state.withLock { $0.queue.removeAll() }
    }

    /// Wakes this subscriber alone.
    public func wake() { deliver(.wake) }

    /// The next message, or nil on timeout, cancellation or close.
    public func next(timeout: Duration) async -> BusMessage? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<BusMessage?, Never>) in
                let outcome = state.withLock { s -> (BusMessage?, Int?) in
                    if !s.queue.isEmpty { return (s.queue.removeFirst(), nil) }
                    if s.closed || Task.isCancelled { return (nil, nil) }
                    s.waiterID += 1
                    s.waiter = continuation
                    return (nil, s.waiterID)
                }
                guard let id = outcome.1 else {
                    continuation.resume(returning: outcome.0)
                    return
                }
                // A dispatch timer, not a sleeping Task: cancelling it when a message arrives
                // costs nothing, where a cancelled Task would still be scheduled to finish —
                // a thousand woken waiters would mean a thousand more task switches.
                let timer = BusTimer(after: timeout) { [weak self] in self?.wake(id: id) }
                let orphan = state.withLock { s -> Bool in
                    if s.waiterID == id, s.waiter != nil { s.timer = timer; return false }
                    return true
                }
                if orphan { timer.cancel() }
            }
        } onCancel: {
            wake(id: nil)
        }
    }

    /// Resumes the current waiter with nil (`id` nil: whichever is waiting).
    private func wake(id: Int?) {
        let (waiter, timer) = state.withLock { s -> (CheckedContinuation<BusMessage?, Never>?, BusTimer?) in
            guard s.waiter != nil, id == nil || s.waiterID == id else { return (nil, nil) }
            let w = s.waiter
            s.waiter = nil
            defer { s.timer = nil }
            return (w, s.timer)
        }
        if id == nil { timer?.cancel() }
        waiter?.resume(returning: nil)
    }

    /// Ends the subscription: a pending `next` returns nil at once, later ones too.
    public func close() {
        state.withLock { $0.closed = true }
        wake(id: nil)
        bus?.remove(self)
    }
}

/// A one-shot timer on a shared dispatch queue; cancelling it wakes nothing.
public final class BusTimer: @unchecked Sendable {
    static let queue = DispatchQueue(label: "gatehouse.bus.timers")
    // DispatchWorkItem is thread-safe; it is only not marked Sendable.
    private let item: DispatchWorkItem

    public init(after timeout: Duration, _ fire: @escaping @Sendable () -> Void) {
        item = DispatchWorkItem(block: fire)
        let (seconds, attoseconds) = timeout.components
        let nanoseconds = max(0, min(seconds, 86_400 * 365)) * 1_000_000_000 + max(0, attoseconds / 1_000_000_000)
        Self.queue.asyncAfter(deadline: .now() + .nanoseconds(Int(nanoseconds)), execute: item)
    }

    public func cancel() { item.cancel() }
}
