import Foundation
import GatehouseCore
import GatehouseStore
import Logging
import Metrics
import Synchronization

/// Sends what the outbox holds. Claims due rows, sends them through libcurl, and records each
/// outcome: delivered, retry later (backoff, `Retry-After`), or dead (then the route's
/// fallback). Woken by commits on the bus and by its own timers — it never polls on a fixed
/// beat. Each receiver has its own concurrency and pace, so a slow or dead receiver never
/// holds up the others.
public final class Dispatcher: Sendable {
    public struct Settings: Sendable {
        public var schedule = RetrySchedule()
        public var publicURL: String?
        /// Concurrent attempts per receiver.
        public var concurrency = 4
        /// How far back inhibition looks for a source event.
        public var inhibitionWindow = GatehouseDuration.seconds(3600)
        public init() {}
    }

    let outbox: Outbox
    let receivers: [String: any Receiver]
    let client: CurlMultiClient
    let bus: Bus
    let silences: SilenceStore
    let inhibitor: Inhibitor
    let settings: Settings
    let logger: Logger
    let clock: @Sendable () -> Timestamp
    private let state = Mutex(State())
    private let wakeup: BusSubscriber
    private let stopped = Atomic<Bool>(false)

    struct State {
        var inFlight: Set<String> = []
        var perReceiver: [String: Int] = [:]
        var pacers: [String: Pacer] = [:]
        var pausedUntil: [String: Timestamp] = [:]
        /// Attempts finished since the current due-query began: that query may have read their
        /// rows before the outcome was saved, so they must not be claimed from it.
        var finishedDuringQuery: Set<String> = []
    }

    public init(
        outbox: Outbox, receivers: [String: any Receiver], client: CurlMultiClient, bus: Bus, silences: SilenceStore,
        inhibitor: Inhibitor, settings: Settings, logger: Logger, clock: @escaping @Sendable () -> Timestamp = { .now() }
    ) {
        self.outbox = outbox
        self.receivers = receivers
        self.client = client
        self.bus = bus
        self.silences = silences
        self.inhibitor = inhibitor
        self.settings = settings
        self.logger = logger
        self.clock = clock
        self.wakeup = bus.subscribe()
        state.withLock { s in
            for (name, receiver) in receivers { s.pacers[name] = Pacer.for(receiver.platform) }
        }
    }

    /// Runs until the task is cancelled or `stop()`; in-flight attempts finish first.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            while !Task.isCancelled && !stopped.load(ordering: .relaxed) {
                let now = clock()
                let blocked = state.withLock { s -> Set<String> in
                    var names = Set(s.perReceiver.filter { $0.value >= settings.concurrency }.keys)
                    for (name, until) in s.pausedUntil where until > now { names.insert(name) }
                    return names
                }
                var started = 0
                state.withLock { $0.finishedDuringQuery.removeAll() }
                if let due = try? await outbox.due(now: now, limit: 256, excluding: blocked) {
                    for delivery in due {
                        guard let wait = claim(delivery, now: now) else { continue }
                        if wait > 0 { continue }
                        started += 1
                        group.addTask { await self.attempt(delivery) }
                    }
                }
                Gauge(label: "gatehouse_outbox_depth").record((try? await outbox.depth()) ?? 0)
                // Sleep until the next row is due, a receiver's pause ends, a commit arrives, or
                // an attempt finishes (it wakes us).
                var next = (try? await outbox.nextDueTime()) ?? now.adding(milliseconds: 60_000)
                let pauses = state.withLock { s in s.pausedUntil.values.filter { $0 > now } }
                if let soonest = pauses.min() { next = min(next, soonest) }
                let wait = max(1, min(60_000, next.milliseconds - clock().milliseconds))
                if started == 0 || wait > 0 {
                    _ = await wakeup.next(timeout: .milliseconds(wait))
                }
            }
            await group.waitForAll()
        }
    }

    /// Stops claiming new work; attempts in flight finish and are recorded.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
        wakeup.close()
    }

    /// Reserves a slot for the delivery: nil when it is in flight or its receiver is full;
    /// a positive wait (ms) when pacing says not yet (the receiver is paused until then).
    private func claim(_ delivery: Delivery, now: Timestamp) -> Int64? {
        state.withLock { s -> Int64? in
            if s.inFlight.contains(delivery.id) || s.finishedDuringQuery.contains(delivery.id) { return nil }
            if s.perReceiver[delivery.receiver, default: 0] >= settings.concurrency { return nil }
            if let until = s.pausedUntil[delivery.receiver], until > now { return nil }
            if var pacer = s.pacers[delivery.receiver] {
                let wait = pacer.take(now: now)
                s.pacers[delivery.receiver] = pacer
                if wait > 0 {
                    s.pausedUntil[delivery.receiver] = now.adding(milliseconds: wait)
                    return wait
                }
            }
            s.inFlight.insert(delivery.id)
            s.perReceiver[delivery.receiver, default: 0] += 1
            return 0
        }
    }

    private func release(_ delivery: Delivery, pause: Double?) {
        state.withLock { s in
            s.inFlight.remove(delivery.id)
            s.finishedDuringQuery.insert(delivery.id)
            s.perReceiver[delivery.receiver, default: 1] -= 1
            if let pause, pause > 0 {
                let until = clock().adding(milliseconds: Int64(pause * 1000))
                s.pausedUntil[delivery.receiver] = max(s.pausedUntil[delivery.receiver] ?? until, until)
            }
        }
        wakeup.wake()
    }

    func attempt(_ delivery: Delivery) async {
        var row = delivery
        var pause: Double?
        defer { release(delivery, pause: pause) }
        let now = clock()
        row.updated_at = now.milliseconds
        guard let receiver = receivers[row.receiver] else {
            row.state = .dead
            row.last_error = "receiver \"\(row.receiver)\" is not configured"
            await save(row, outcome: "dead")
            return
        }
        guard let stored = try? await outbox.event(seq: row.event_seq) else { return }
        if let reason = await muteReason(stored.event, now: now) {
            row.state = .muted
            row.last_error = reason
            await save(row, outcome: "muted")
            return
        }
        let message = OutboundMessage(kind: .event, deliveryID: row.id, receiver: row.receiver, groupKey: row.group_key, events: [stored], publicURL: settings.publicURL)
        let request: OutboundRequest
        do {
            request = try receiver.request(for: message, now: now)
        } catch {
            row.state = .dead
            row.last_error = "could not build the message: \(error)"
            await save(row, outcome: "dead")
            return
        }
        let response = await client.send(request)
        row.attempts += 1
        row.last_status = response.status == 0 ? nil : response.status
        row.response_body = response.body.isEmpty ? nil : String(response.text.prefix(2000))
        let outcome = receiver.classify(response)
        if let discordPause = DiscordReceiver.pause(after: response), receiver.platform == .discord { pause = discordPause }
        let finished = clock()
        switch outcome {
        case .delivered(let messageID):
            row.state = .delivered
            row.delivered_at = finished.milliseconds
            row.last_error = nil
            row.message_id = messageID
            Metrics.Timer(label: "gatehouse_delivery_latency_seconds", dimensions: [("receiver", row.receiver)], preferredDisplayUnit: .seconds)
                .recordMilliseconds(max(0, finished.milliseconds - stored.receivedAt.milliseconds))
            await save(row, outcome: "delivered")
        case .retry(let after, let reason):
            if let after { pause = max(pause ?? 0, after) }
            let delay = settings.schedule.delay(afterAttempt: row.attempts, retryAfter: after, random: Double.random(in: 0..<1))
            let next = finished.adding(milliseconds: delay.milliseconds)
            row.last_error = reason
            if settings.schedule.allows(next: next, created: Timestamp(milliseconds: row.created_at)) {
                row.state = .failed
                row.next_attempt_at = next.milliseconds
                logger.info("delivery failed; will retry", metadata: ["delivery": .string(row.id), "receiver": .string(row.receiver), "reason": .string(reason), "in_ms": .stringConvertible(delay.milliseconds)])
                await save(row, outcome: "retry")
            } else {
                row.state = .dead
                row.last_error = "gave up after \(row.attempts) attempts (max_age \(settings.schedule.maxAge)): \(reason)"
                await saveDead(row)
            }
        case .dead(let reason):
            row.state = .dead
            row.last_error = reason
            await saveDead(row)
        }
    }

    private func muteReason(_ event: Event, now: Timestamp) async -> String? {
        if let active = try? await silences.current(at: now), let silence = active.first(where: { $0.mutes(event, at: now) }) {
            return "silenced by \(silence.id) (\(silence.matchers.map(\.description).joined(separator: ", ")))"
        }
        guard !inhibitor.rules.isEmpty else { return nil }
        let since = event.time.adding(milliseconds: -settings.inhibitionWindow.milliseconds)
        let sources = (try? await outbox.recentEvents(pipeline: event.pipeline, run: event.run, since: since)) ?? []
        if let (rule, source) = inhibitor.mutingRule(for: event, among: sources) {
            return "inhibited by inhibit_rules[\(rule)]: \(source.type) \(source.id)"
        }
        return nil
    }

    private func saveDead(_ row: Delivery) async {
        var fallback: Delivery?
        if let name = row.fallback, name != row.receiver, row.fallback_of == nil {
            fallback = row.fallbackDelivery(to: name, now: clock())
        }
        logger.warning("delivery dead", metadata: ["delivery": .string(row.id), "receiver": .string(row.receiver), "reason": .string(row.last_error ?? "")])
        do {
            try await outbox.saveDead(row, fallback: fallback)
            Counter(label: "gatehouse_deliveries_total", dimensions: [("receiver", row.receiver), ("outcome", "dead")]).increment()
        } catch {
            logger.error("could not record a delivery outcome", metadata: ["delivery": .string(row.id), "error": "\(error)"])
        }
    }

    private func save(_ row: Delivery, outcome: String) async {
        do {
            try await outbox.save(row)
            Counter(label: "gatehouse_deliveries_total", dimensions: [("receiver", row.receiver), ("outcome", outcome)]).increment()
        } catch {
            // The row stays due and is sent again: at-least-once.
            logger.error("could not record a delivery outcome", metadata: ["delivery": .string(row.id), "error": "\(error)"])
        }
    }
}

/// A token bucket per receiver: Slack allows about one message a second with short bursts.
struct Pacer: Sendable {
    var perSecond: Double
    var burst: Double
    var tokens: Double
    var last: Int64 = 0

    static func `for`(_ platform: GatehouseConfig.ReceiverKind) -> Pacer? {
        switch platform {
        case .slack: return Pacer(perSecond: 1, burst: 3, tokens: 3)
        default: return nil
        }
    }

    /// Takes a token: 0 when one was there, else the wait in ms until one is.
    mutating func take(now: Timestamp) -> Int64 {
        if last > 0 { tokens = min(burst, tokens + Double(now.milliseconds - last) / 1000 * perSecond) }
        last = now.milliseconds
        if tokens >= 1 {
            tokens -= 1
            return 0
        }
        return Int64(((1 - tokens) / perSecond * 1000).rounded(.up))
    }
}
