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
        /// The timers armed for this wait and the ones before (see `SharedTimer`).
        var timer = SharedTimer()
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

    /// Whether a `next` is suspended waiting, and how many timers this subscriber armed (tests).
    var isWaiting: Bool { state.withLock { $0.waiter != nil } }
    var timersArmed: Int { state.withLock { $0.timer.count } }

    /// The next message, or nil on timeout, cancellation or close. One wait at a time per
    /// subscriber (it has one waiter's place).
    public func next(timeout: Duration) async -> BusMessage? {
        let delay = Self.nanoseconds(timeout)
        let deadline = DispatchTime.now().uptimeNanoseconds &+ delay
        let slack = Self.leeway(delay)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<BusMessage?, Never>) in
                let (ready, arm) = state.withLock { s -> (BusMessage??, Bool) in
                    if !s.queue.isEmpty { return (.some(s.queue.removeFirst()), false) }
                    if s.closed || Task.isCancelled { return (.some(nil), false) }
                    assert(s.waiter == nil, "two waits at once on one subscriber")
                    s.waiter = continuation
                    s.deadline = deadline
                    return (nil, s.timer.needed(for: deadline, slack: slack))
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
            s.timer.fired(firedFor)
            guard let waiter = s.waiter else { return (nil, nil) }
            if s.deadline <= now &+ 1_000_000 {
                s.waiter = nil
                return (waiter, nil)
            }
            return (nil, s.timer.needed(for: s.deadline, slack: Self.leeway(s.deadline &- now)) ? s.deadline : nil)
        }
        expired?.resume(returning: nil)
        if let rearm { arm(rearm) }
    }

    /// How late libdispatch may run a timer armed `delay` ahead (`dispatch_after`'s leeway).
    static func leeway(_ delay: UInt64) -> UInt64 {
        min(max(delay / 10, 1_000_000), 60_000_000_000)
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

/// Which of a subscriber's waits need a timer of their own. The dispatcher waits thousands of
/// times a second, nearly always woken by a message long before its timeout; a timer per wait
/// (`asyncAfter`) cost a wake-up of libdispatch's timer thread each (0.3 per alert, measured)
/// and a queued no-op each when its time came. So a timer armed for one wait serves the later
/// ones it ends in time: when it fires, the subscriber ends the wait then current or arms one
/// for it. Times are uptime nanoseconds.
struct SharedTimer {
    /// Of the timers armed and not yet fired, the one that goes off first at the latest: its
    /// deadline, and that plus the leeway dispatch may run it late by.
    private(set) var armed: (deadline: UInt64, latest: UInt64)?
    /// Timers armed so far.
    private(set) var count = 0

    /// Whether a wait ending at `deadline` — which its own timer could end up to `slack` late —
    /// needs a timer armed for it. Not when the one armed goes off no earlier than needed… no
    /// later than the wait's own would, or than 100 ms past its deadline: the dispatcher waits
    /// again and again for one time (its next look at the reminders), each wait a little
    /// shorter, so allowing it only its own ever smaller leeway would arm a timer every time.
    /// When it does, that timer is counted and recorded here.
    mutating func needed(for deadline: UInt64, slack: UInt64) -> Bool {
        let latest = deadline &+ slack
        if let armed, armed.deadline <= deadline, armed.latest <= deadline &+ max(slack, Self.tolerated) { return false }
        if armed.map({ latest < $0.latest }) ?? true { armed = (deadline, latest) }
        count += 1
        return true
    }

    /// Lateness a wait may inherit from a timer armed before it (at most).
    static let tolerated: UInt64 = 100_000_000

    /// The timer armed for `deadline` went off.
    mutating func fired(_ deadline: UInt64) {
        if armed?.deadline == deadline { armed = nil }
    }
}

/// A one-shot timer on a shared dispatch queue; cancelling it wakes nothing.
public final class BusTimer: @unchecked Sendable {
    static let queue = DispatchQueue(label: "gatehouse.bus.timers")
    // DispatchWorkItem is thread-safe; it is only not marked Sendable.
    private let item: DispatchWorkItem

    public convenience init(after timeout: Duration, _ fire: @escaping @Sendable () -> Void) {
        self.init(at: DispatchTime.now().uptimeNanoseconds &+ BusSubscriber.nanoseconds(timeout), fire)
    }

    /// Goes off at `uptime` (nanoseconds, DispatchTime's clock).
    public init(at uptime: UInt64, _ fire: @escaping @Sendable () -> Void) {
        item = DispatchWorkItem(block: fire)
        Self.queue.asyncAfter(deadline: DispatchTime(uptimeNanoseconds: uptime), execute: item)
    }

    public func cancel() { item.cancel() }
}
