import Foundation
import GatehouseCore
import Hummingbird
import Metrics
import NIOCore
import NIOHTTPTypes
import Synchronization

/// What a wait is waiting on: a gate to close, or a dataset to reach its target.
enum WaitTopic: Hashable, Sendable {
    case gate(String)
    /// The newest gate of a key, which may not exist yet.
    case gateKey(String)
    case dataset(String)
}

/// Where waits sit — `GET /v1/gates/{id}/wait` until the gate closes, `GET
/// /v1/datasets/{name}/wait` until enough items are labelled — woken by the bus; and the fast
/// way out for gates.
///
/// Waking a thousand waiters through the ordinary path costs a thousand task switches, each
/// followed by middleware, the response writer's hop to the event loop and the next read —
/// about 25 µs of server work apiece, so the last waiter heard 25 ms after the first. Here
/// the answer is written at once from each connection's event loop (one hop per loop for
/// all its waiters, not one per waiter); the request's task resumes afterwards, and what it
/// returns is dropped by the connection's `EarlyAnswerHandler`. A thousand answers now leave
/// about as fast as a bare loop of write(2) calls sends them (README, Benchmark). Everything else about a wait
/// — authorisation, validation, the first read, timeouts, 404s — stays in the route handler.
final class WaitRoom: Sendable {
    /// The answer for a gate that has closed, nil while it is pending or unknown.
    typealias ClosedAnswer = @Sendable (_ gateID: String) async -> ByteBuffer?

    private let parked = Mutex<[WaitTopic: [ObjectIdentifier: ParkedWait]]>([:])
    private let closedAnswer: ClosedAnswer
    private let parkedCount = Atomic(0)
    private let waiters = Gauge(label: "gatehouse_gate_waiters")

    init(bus: Bus, closedAnswer: @escaping ClosedAnswer) {
        self.closedAnswer = closedAnswer
        bus.observe { [weak self] message in
            guard let self else { return }
            switch message {
            case .gateChanged(let id) where self.hasWaiters(.gate(id)):
                Task { await self.release(id) }
            case .datasetChanged(let name):
                // Each dataset wait has its own target: wake them to read the stats again.
                for wait in self.waits(on: .dataset(name)) { wait.wake() }
            case .gateKeyChanged(let key):
                for wait in self.waits(on: .gateKey(key)) { wait.wake() }
            case .resync:
                // Something may have been missed (the bus across replicas reconnected): every
                // wait looks again.
                for topic in self.topics() {
                    switch topic {
                    case .gate(let id): Task { await self.release(id) }
                    case .gateKey, .dataset: for wait in self.waits(on: topic) { wait.wake() }
                    }
                }
            default:
                break
            }
        }
    }

    private func hasWaiters(_ topic: WaitTopic) -> Bool { parked.withLock { $0[topic]?.isEmpty == false } }

    private func topics() -> [WaitTopic] { parked.withLock { Array($0.keys) } }

    /// Parks a wait before what it waits on is read, so a change landing in between still
    /// wakes it. `answerer` is the connection's handler, for gates (nil: the wait is only woken
    /// and answers the ordinary way); `requestID` goes in its answer.
    func park(_ topic: WaitTopic, answerer: EarlyAnswerHandler.Reference?, requestID: String) -> ParkedWait {
        let wait = ParkedWait(topic: topic, answerer: answerer, requestID: requestID)
        parked.withLock { $0[topic, default: [:]][ObjectIdentifier(wait)] = wait }
        waiters.record(parkedCount.add(1, ordering: .relaxed).newValue)
        return wait
    }

    func unpark(_ wait: ParkedWait) {
        wait.cancelTimer()
        parked.withLock { rooms in
            rooms[wait.topic]?.removeValue(forKey: ObjectIdentifier(wait))
            if rooms[wait.topic]?.isEmpty == true { rooms.removeValue(forKey: wait.topic) }
        }
        waiters.record(parkedCount.subtract(1, ordering: .relaxed).newValue)
    }

    /// The gate changed: if it closed, answer everyone waiting on it.
    func release(_ gateID: String) async {
        guard let body = await closedAnswer(gateID) else {
            // Still pending (a decision short of its quorum, a reminder): waits without an
            // answerer re-read it; the others need not.
            for wait in waits(on: .gate(gateID)) where wait.answerer == nil { wait.wake() }
            return
        }
        // Grouped by event loop: one hop per loop. (Appending through a dictionary of tuples
        // copied the array on every append — quadratic, 8 ms for a thousand waiters.)
        var loops: [any EventLoop] = []
        var waitsByLoop: [[ParkedWait]] = []
        var slot: [ObjectIdentifier: Int] = [:]
        for wait in waits(on: .gate(gateID)) {
            guard let answerer = wait.answerer else {
                wait.wake()
                continue
            }
            guard wait.claimForEarlyAnswer() else { continue }
            let key = ObjectIdentifier(answerer.eventLoop)
            if let i = slot[key] {
                waitsByLoop[i].append(wait)
            } else {
                slot[key] = loops.count
                loops.append(answerer.eventLoop)
                waitsByLoop.append([wait])
            }
        }
        // What the route would have answered, less the request's own id (added per waiter).
        let head = HTTPResponse(status: .ok, headerFields: [
            .contentType: "application/json", .contentLength: String(body.readableBytes), .date: HTTPDate.now(),
        ])
        // The requests' tasks go on only once every loop has written its answers: what they
        // return must reach each handler after its answer (to be recognised and dropped), and
        // a thousand tasks resuming would otherwise compete with the writes still to come.
        let loopsLeft = Countdown(loops.count)
        let all = waitsByLoop.flatMap { $0 }
        for (loop, waits) in zip(loops, waitsByLoop) {
            loop.execute {
                for wait in waits {
                    var answer = head
                    answer.headerFields[.init("X-Request-Id")!] = wait.requestID
                    wait.noteWritten(wait.answerer?.handler.value.answer(answer, body: body) ?? false)
                }
                if loopsLeft.done() {
                    for wait in all { wait.markAnswered() }
                }
            }
        }
    }

    private func waits(on topic: WaitTopic) -> [ParkedWait] {
        parked.withLock { $0[topic].map { Array($0.values) } ?? [] }
    }
}

/// One parked wait. Exactly one side answers it: the room, early (`claimForEarlyAnswer`), or
/// the route handler, the ordinary way (`claimForHandler`).
final class ParkedWait: Sendable {
    enum Wake: Equatable {
        /// The room wrote the answer; whatever the handler returns is dropped.
        case answered
        /// The gate changed; read it again.
        case changed
        /// The deadline passed, the task was cancelled or the wait interrupted.
        case timedOut
    }

    /// waiting → answering (the room claimed it) → answered (written) or released (could not
    /// be written: the handler answers after all); waiting or released → handler.
    private enum Phase { case waiting, answering, answered, released, handler }
    private struct State {
        var phase = Phase.waiting
        var changes = 0
        var written = false
        /// The server is shutting down: every later `next` returns at once.
        var interrupted = false
        var continuation: CheckedContinuation<Void, Never>?
        var timer: BusTimer?
    }

    let topic: WaitTopic
    let answerer: EarlyAnswerHandler.Reference?
    let requestID: String
    private let state = Mutex(State())

    init(topic: WaitTopic, answerer: EarlyAnswerHandler.Reference?, requestID: String) {
        self.topic = topic
        self.answerer = answerer
        self.requestID = requestID
    }

    func claimForEarlyAnswer() -> Bool {
        state.withLock { s in
            guard s.phase == .waiting else { return false }
            s.phase = .answering
            return true
        }
    }

    /// The handler is about to answer itself. False when the room got there first: the
    /// handler must then `untilAnswered()` before returning.
    func claimForHandler() -> Bool {
        state.withLock { s in
            switch s.phase {
            case .waiting, .released, .handler:
                s.phase = .handler
                return true
            case .answering, .answered:
                return false
            }
        }
    }

    func noteWritten(_ written: Bool) {
        state.withLock { $0.written = written }
    }

    /// The room is done with this wait: answered if its answer was written, else released
    /// (the connection was gone) for the handler to answer after all.
    func markAnswered() {
        resume { $0.phase = $0.written ? .answered : .released }
    }

    func wake() {
        resume { $0.changes += 1 }
    }

    /// Ends the wait early (the server is shutting down): the handler answers with the gate as
    /// it is, as on a timeout.
    func interrupt() {
        resume { $0.interrupted = true }
    }

    var isInterrupted: Bool { state.withLock { $0.interrupted } }

    func cancelTimer() {
        state.withLock { s in
            s.timer?.cancel()
            s.timer = nil
        }
    }

    private func resume(_ change: (inout State) -> Void) {
        let continuation = state.withLock { s in
            change(&s)
            defer { s.continuation = nil }
            return s.continuation
        }
        continuation?.resume()
    }

    /// Suspends until the room answers, the gate changes, `timeout` passes or the task is
    /// cancelled.
    func next(timeout: Duration) async -> Wake {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { s -> Bool in
                    if s.phase == .answered || s.phase == .released || s.changes > 0 || s.interrupted || Task.isCancelled { return true }
                    s.continuation = continuation
                    s.timer = BusTimer(after: timeout) { [weak self] in self?.resume { _ in } }
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            resume { _ in }
        }
        return state.withLock { s in
            s.timer?.cancel()
            s.timer = nil
            if s.phase == .answered { return .answered }
            if s.phase == .released || s.changes > 0 {
                s.changes = 0
                return .changed
            }
            return .timedOut
        }
    }

    /// After losing `claimForHandler`: waits for the room to finish (its write is already
    /// queued on the event loop), cancellation or not. True if it wrote the answer.
    func untilAnswered() async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.phase == .answered || s.phase == .released { return true }
                s.continuation = continuation
                return false
            }
            if done { continuation.resume() }
        }
        return state.withLock { $0.phase == .answered }
    }
}

/// Sits in each HTTP/1 connection's pipeline, after the HTTP codec: writes the answers the
/// `WaitRoom` hands it, and drops the response the application then writes for the same
/// request (Hummingbird always writes one when its handler returns).
final class EarlyAnswerHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// How another thread reaches a connection's handler: through its event loop only.
    struct Reference: Sendable {
        let eventLoop: any EventLoop
        let handler: NIOLoopBound<EarlyAnswerHandler>
    }

    /// Handlers by channel, so a route handler can find its connection's.
    private static let registry = Mutex<[ObjectIdentifier: Reference]>([:])

    static func find(_ channel: any Channel) -> Reference? {
        registry.withLock { $0[ObjectIdentifier(channel)] }
    }

    private var context: ChannelHandlerContext?
    /// Responses the application has yet to write for requests answered here.
    private var owed = 0
    private var dropping = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let reference = Reference(eventLoop: context.eventLoop, handler: NIOLoopBound(self, eventLoop: context.eventLoop))
        Self.registry.withLock { $0[ObjectIdentifier(context.channel)] = reference }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        _ = Self.registry.withLock { $0.removeValue(forKey: ObjectIdentifier(context.channel)) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        _ = Self.registry.withLock { $0.removeValue(forKey: ObjectIdentifier(context.channel)) }
        context.fireChannelInactive()
    }

    /// Writes a whole answer now (on the event loop). False if it could not (the connection
    /// is gone). It goes through the HTTP encoder like any response: the encoder pairs each
    /// response with its request's method (a HEAD's answer carries no body), so a response
    /// that bypassed it would put every later one on this connection out of step.
    func answer(_ head: HTTPResponse, body: ByteBuffer) -> Bool {
        guard let context, context.channel.isActive else { return false }
        owed += 1
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        return true
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard dropping || owed > 0 else {
            context.write(data, promise: promise)
            return
        }
        switch unwrapOutboundIn(data) {
        case .head:
            dropping = true
            owed -= 1
        case .body:
            break
        case .end:
            dropping = false
        }
        promise?.succeed(())
    }
}

/// Shared by the closures of several threads; `done()` is true for the call that reaches zero.
final class Countdown: Sendable {
    private let left: Atomic<Int>
    init(_ count: Int) { left = Atomic(count) }
    func done() -> Bool { left.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 }
}

/// The `Date` header's format (RFC 9110 §5.6.7), made without a formatter.
enum HTTPDate {
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// The last second formatted: answers on the fast path of `POST /v1/events` come by the
    /// thousand each second.
    private static let last = Mutex<(second: time_t, text: String)>((-1, ""))

    static func now() -> String {
        let second = time(nil)
        if let text = last.withLock({ $0.second == second ? $0.text : nil }) { return text }
        let text = format(second)
        last.withLock { $0 = (second, text) }
        return text
    }

    static func format(_ seconds: time_t) -> String {
        var t = seconds
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
