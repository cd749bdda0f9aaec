import Synchronization

/// What the in-process bus carries. Messages are notifications, not data: a subscriber reads
/// what it needs from the store from its own cursor, so a coalesced or dropped notice loses
/// nothing.
public enum BusMessage: Sendable, Equatable {
    /// Events up to and including this cursor are committed.
    case eventsCommitted(lastCursor: Int64)
    /// A nudge with no data (a worker telling its own loop to look again).
    case wake
    /// A silence was added or expired.
    case silencesChanged
    /// A gate changed (decision, close, reminder): its waiters re-read it.
    case gateChanged(id: String)
}

/// Wakes subscribers the moment something is committed, so nothing has to poll the database.
public final class Bus: Sendable {
    private let subscribers = Mutex<[ObjectIdentifier: BusSubscriber]>([:])

    public init() {}

    public func subscribe() -> BusSubscriber {
        let subscriber = BusSubscriber(bus: self)
        subscribers.withLock { $0[ObjectIdentifier(subscriber)] = subscriber }
        return subscriber
    }

    func remove(_ subscriber: BusSubscriber) {
        _ = subscribers.withLock { $0.removeValue(forKey: ObjectIdentifier(subscriber)) }
    }

    public func publish(_ message: BusMessage) {
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
        var timer: Task<Void, Never>?
        var closed = false
    }
    private let state = Mutex(State())
    private weak let bus: Bus?
    /// Bounded so an idle subscriber cannot grow without limit; the newest message wins.
    private static let queueLimit = 64

    init(bus: Bus) { self.bus = bus }

    func deliver(_ message: BusMessage) {
        let (waiter, timer) = state.withLock { s -> (CheckedContinuation<BusMessage?, Never>?, Task<Void, Never>?) in
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
                let timer = Task { [weak self] in
                    try? await Task.sleep(for: timeout)
                    if !Task.isCancelled { self?.wake(id: id) }
                }
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
        let (waiter, timer) = state.withLock { s -> (CheckedContinuation<BusMessage?, Never>?, Task<Void, Never>?) in
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
