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
        /// Per-receiver `max_age`, overriding the schedule's.
        public var maxAge: [String: GatehouseDuration] = [:]
        /// Per-receiver answer timeout (otherwise the request's 15 s).
        public var timeout: [String: GatehouseDuration] = [:]
        public var publicURL: String?
        /// Concurrent attempts per receiver.
        public var concurrency = 32
        /// How far back inhibition looks for a source event.
        public var inhibitionWindow = GatehouseDuration.seconds(3600)
        /// Resolves what a `gate.*` message shows (gate id, receiver, event type).
        public var gateNotice: (@Sendable (String, String, String) async -> GateNotice?)?
        /// Told when a gate message was delivered or given up (gate id, receiver, event type,
        /// outcome, message id): the gate's audit trail records its notifications.
        public var gateNotified: (@Sendable (String, String, String, String, String?) async -> Void)?
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
    private let metrics = DeliveryMetrics()
    /// Silences not yet over, kept fresh by the bus (`silencesChanged`) and a periodic re-read.
    private let activeSilences = Mutex<[Silence]>([])

    struct State {
        var inFlight: Set<String> = []
        var perReceiver: [String: Int] = [:]
        var pacers: [String: Pacer] = [:]
        /// When a receiver's pacer has a token again (Slack's one message a second).
        var pacedUntil: [String: Timestamp] = [:]
        /// Per receiver: ok, backing off after failures, or paused by a rate limit.
        var health: [String: ReceiverHealth] = [:]
        /// Receivers just back from failing whose backlog is being put in order: nothing is
        /// read or started for them until that is committed.
        var reviving: Set<String> = []
        /// Attempts finished since the current due-query began: that query may have read their
        /// rows before the outcome was saved, so they must not be claimed from it.
        var finishedDuringQuery: [String: Set<String>] = [:]
        /// Claimed rows waiting for their receiver to have room, oldest first.
        var queues: [String: [[(Delivery, StoredEvent)]]] = [:]
        /// Deliveries inside a message being sent (leader and the group members it carries).
        var carried: Set<String> = []
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
        for name in receivers.keys { Self.reportHealth(name, ReceiverHealth()) }
        state.withLock { s in
            for (name, receiver) in receivers {
                s.pacers[name] = Pacer.for(receiver.platform)
                s.health[name] = ReceiverHealth()
            }
        }
    }

    /// Runs until the task is cancelled or `stop()`; in-flight attempts finish first.
    ///
    /// Due rows are read in batches into per-receiver queues held in memory (and marked in
    /// flight); attempts are started from those queues as receivers have room, so a finished
    /// attempt starts the next one without another database read. The database is read again
    /// when the queues run low, a commit announces new work, or the next row falls due.
    public func run() async {
        let names = Array(receivers.keys).sorted()
        if let killed = try? await outbox.killOrphans(known: names, now: clock()), killed > 0 {
            logger.warning("deliveries to receivers no longer configured were marked dead", metadata: ["count": .stringConvertible(killed)])
        }
        // A discarding group frees each attempt's task as soon as it ends: an ordinary task group
        // keeps every finished child until it is awaited, which grew the server by ~16 KB per
        // delivery for as long as it ran.
        await withDiscardingTaskGroup { group in
            var lastDepthReport: Int64 = 0
            var lastGroupSweep: Int64 = 0
            var nextRepeat: Timestamp? = nil
            var repeatsRead: Int64 = 0
            var silencesRead: Int64 = 0
            while !Task.isCancelled && !stopped.load(ordering: .relaxed) {
                var now = clock()
                // Refill the queues of receivers that are running low and not paused.
                for name in names {
                    let room = state.withLock { s -> Int in
                        if let until = s.pacedUntil[name], until > now { return 0 }
                        if s.reviving.contains(name) { return 0 }
                        if let health = s.health[name], !health.acceptsWork(now: now) { return 0 }
                        let queued = s.queues[name]?.count ?? 0
                        return queued < Self.refillBelow ? Self.batch - queued : 0
                    }
                    guard room > 0 else { continue }
                    state.withLock { $0.finishedDuringQuery[name] = [] }
                    guard let due = try? await outbox.due(receiver: name, now: now, limit: room), !due.isEmpty else {
                        state.withLock { $0.finishedDuringQuery[name] = nil }
                        continue
                    }
                    if now.milliseconds - silencesRead > 5000 {
                        // Silences are read per batch, not per delivery, and again at once when
                        // the bus says one changed; this re-read only catches their time windows.
                        await refreshSilences(now: now)
                        silencesRead = now.milliseconds
                    }
                    state.withLock { s in
                        let finished = s.finishedDuringQuery[name] ?? []
                        // Rows of one group fetched together leave as one message: batch them
                        // here, oldest first, so sending needs no further read.
                        var batches: [[(Delivery, StoredEvent)]] = []
                        var openBatch: [String: Int] = [:]
                        for (delivery, event) in due where !s.inFlight.contains(delivery.id) && !finished.contains(delivery.id) && !s.carried.contains(delivery.id) {
                            s.inFlight.insert(delivery.id)
                            if delivery.batch_id == nil, let index = openBatch[delivery.group_key], batches[index].count < Self.maxBatch {
                                batches[index].append((delivery, event))
                            } else {
                                if delivery.batch_id == nil { openBatch[delivery.group_key] = batches.count }
                                batches.append([(delivery, event)])
                            }
                        }
                        if !batches.isEmpty { s.queues[name, default: []].append(contentsOf: batches) }
                        s.finishedDuringQuery[name] = nil
                    }
                }
                now = clock()
                for batch in takeStartable(now: now) {
                    group.addTask { await self.attempt(batch) }
                }
                if now.milliseconds - lastDepthReport >= 1000 {
                    lastDepthReport = now.milliseconds
                    Gauge(label: "gatehouse_outbox_depth").record((try? await outbox.depth()) ?? 0)
                    for (map, size) in trackedSizes() { Gauge(label: "gatehouse_dispatcher_tracked", dimensions: [("map", map)]).record(size) }
                }
                // Reminders for pipelines still failing (repeat_interval).
                // Re-read at most once a second: commits can come thousands of times a second,
                // and a reminder is always repeat_interval away from the failure it repeats.
                if now.milliseconds - repeatsRead >= 1000 {
                    nextRepeat = try? await outbox.nextRepeatTime()
                    repeatsRead = now.milliseconds
                }
                if let due = nextRepeat, due <= now {
                    _ = try? await outbox.fireRepeats(now: now)
                    nextRepeat = try? await outbox.nextRepeatTime()
                    continue
                }
                if now.milliseconds - lastGroupSweep >= 60_000 {
                    lastGroupSweep = now.milliseconds
                    _ = try? await outbox.forgetIdleGroups(now: now)
                }
                // Sleep until a receiver with room has a row falling due, a pause ends, a commit
                // arrives, or an attempt finishes (each wakes us). Receivers that are full are
                // woken by their own attempts finishing.
                var next = now.adding(milliseconds: 60_000)
                if let due = nextRepeat { next = min(next, due) }
                // Without a known reminder, look again within a second (see above).
                next = min(next, Timestamp(milliseconds: repeatsRead + 1000))
                for name in names {
                    let (idle, pausedUntil) = state.withLock { s -> (Bool, Timestamp?) in
                        // With attempts in flight their completion wakes us; asking the database
                        // then would only find those same rows due and spin.
                        let idle = (s.queues[name]?.isEmpty ?? true) && s.perReceiver[name, default: 0] == 0
                        let paced = s.pacedUntil[name].flatMap { $0 > now ? $0 : nil }
                        let held = s.health[name]?.until.flatMap { $0 > now ? $0 : nil }
                        return (idle, [paced, held].compactMap { $0 }.max())
                    }
                    if let pausedUntil { next = min(next, pausedUntil); continue }
                    if idle, let due = try? await outbox.nextDueTime(receiver: name) { next = min(next, due) }
                }
                let wait = max(1, min(60_000, next.milliseconds - clock().milliseconds))
                if await wakeup.next(timeout: .milliseconds(wait)) == .silencesChanged {
                    await refreshSilences(now: clock())
                }
            }
            // Rows still queued were never attempted: they stay due in the database. The group
            // waits for the attempts in flight before it returns.
        }
    }

    private func refreshSilences(now: Timestamp) async {
        if let current = try? await silences.current(at: now) { activeSilences.withLock { $0 = current } }
    }

    static let batch = 256
    /// Events in one digest at most.
    static let maxBatch = 100
    static let refillBelow = 64

    /// Stops claiming new work; attempts in flight finish and are recorded.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
        wakeup.close()
    }

    /// Pops what may start now: per receiver, up to its concurrency, unless paused or paced.
    private func takeStartable(now: Timestamp) -> [[(Delivery, StoredEvent)]] {
        state.withLock { s in
            var out: [[(Delivery, StoredEvent)]] = []
            for name in Array(s.queues.keys) {
                while var queue = s.queues[name], !queue.isEmpty {
                    if s.perReceiver[name, default: 0] >= settings.concurrency { break }
                    if s.reviving.contains(name) { break }
                    if let until = s.pacedUntil[name], until > now { break }
                    // A receiver that is failing gets one probe at a time, after its back-off.
                    let admission = s.health[name]?.admit(queue[0][0].0.id, now: now) ?? .open
                    if case .closed = admission { break }
                    if var pacer = s.pacers[name] {
                        let wait = pacer.take(now: now)
                        s.pacers[name] = pacer
                        if wait > 0 {
                            s.pacedUntil[name] = now.adding(milliseconds: wait)
                            s.health[name]?.released(queue[0][0].0.id)
                            break
                        }
                    }
                    s.pacedUntil[name] = nil
                    let item = queue.removeFirst()
                    s.queues[name] = queue.isEmpty ? nil : queue
                    s.perReceiver[name, default: 0] += 1
                    out.append(item)
                    if admission == .probe { break }
                }
            }
            return out
        }
    }

    /// What an attempt's answer says about the receiver itself.
    enum Verdict {
        /// It answered (delivered, or refused for good): it is up.
        case answered
        /// Connection error, timeout, 408 or 5xx.
        case failed
        /// It asked us to wait this many seconds.
        case rateLimited(Double)
    }

    /// Frees the receiver's slot as soon as its answer is in (the receiver is done with us) and
    /// updates its health. True when the answer ends a failure episode.
    private func releaseSlot(_ delivery: Delivery, verdict: Verdict?) -> Bool {
        let now = clock()
        let (recovered, health) = state.withLock { s -> (Bool, ReceiverHealth?) in
            s.perReceiver[delivery.receiver, default: 1] -= 1
            if s.perReceiver[delivery.receiver] == 0 { s.perReceiver[delivery.receiver] = nil }
            guard var health = s.health[delivery.receiver] else { return (false, nil) }
            let before = health
            var recovered = false
            switch verdict {
            case nil: health.released(delivery.id)
            case .answered:
                recovered = health.answered(delivery.id)
                if recovered {
                    // Hold the receiver until its backlog is in order (see `attempt`), and let go
                    // of the rows claimed while it was held: the next read takes everything in
                    // the database's order, oldest first.
                    s.reviving.insert(delivery.receiver)
                    for batch in s.queues.removeValue(forKey: delivery.receiver) ?? [] {
                        for (member, _) in batch { s.inFlight.remove(member.id) }
                    }
                }
            case .failed: health.failed(delivery.id, now: now, random: Double.random(in: 0..<1))
            case .rateLimited(let seconds): health.rateLimited(delivery.id, for: seconds, now: now)
            }
            s.health[delivery.receiver] = health
            return (recovered, health.state != before.state ? health : nil)
        }
        if let health {
            Self.reportHealth(delivery.receiver, health)
            if health.state != .ok {
                logger.warning("receiver held back", metadata: [
                    "receiver": .string(delivery.receiver), "state": .string(health.state.rawValue),
                    "until": .string(health.until?.rfc3339 ?? ""), "failures": .stringConvertible(health.consecutiveFailures)])
            }
        }
        wakeup.wake()
        return recovered
    }

    static func reportHealth(_ receiver: String, _ health: ReceiverHealth) {
        for state in ReceiverHealth.State.allCases {
            Gauge(label: "gatehouse_receiver_state", dimensions: [("receiver", receiver), ("state", state.rawValue)]).record(health.state == state ? 1 : 0)
        }
    }

    /// Each receiver's health, for the deliveries API.
    public func receiverHealth() -> [(name: String, health: ReceiverHealth)] {
        state.withLock { s in s.health.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
    }

    /// Entries in each in-memory map: all of them are back to their idle size once the work
    /// that created them is done (tests and `/metrics` watch this).
    public func trackedSizes() -> [(String, Int)] {
        state.withLock { s in
            [("in_flight", s.inFlight.count), ("carried", s.carried.count), ("queues", s.queues.count),
             ("finished_during_query", s.finishedDuringQuery.count), ("busy_receivers", s.perReceiver.count),
             ("paced", s.pacedUntil.count), ("reviving", s.reviving.count)]
        }
    }

    /// Forgets the deliveries once their outcome is committed; until then they cannot be
    /// claimed again.
    private func finish(_ deliveries: [Delivery]) {
        state.withLock { s in
            for delivery in deliveries {
                s.inFlight.remove(delivery.id)
                s.finishedDuringQuery[delivery.receiver]?.insert(delivery.id)
            }
        }
        wakeup.wake()
    }

    /// Sends one message for `delivery` and whatever of its group is due with it (a digest when
    /// there are several), then records the outcome for all of them.
    func attempt(_ queued: [(Delivery, StoredEvent)]) async {
        let delivery = queued[0].0
        var slotHeld = true
        defer {
            if slotHeld { _ = releaseSlot(delivery, verdict: nil) }
            finish(queued.map(\.0))
        }
        let now = clock()
        guard let receiver = receivers[delivery.receiver] else {
            var row = delivery
            row.state = .dead
            row.last_error = "receiver \"\(row.receiver)\" is not configured"
            await record([row], outcome: "dead")
            return
        }
        // Deliveries carried by a message in flight are not anyone else's to send.
        if state.withLock({ $0.carried.contains(delivery.id) }) { return }
        var candidates = queued
        if let batchID = delivery.batch_id {
            // A retry sends the batch as it was first sent.
            do {
                candidates = try await outbox.batch(batchID)
            } catch {
                logger.error("could not read a delivery batch", metadata: ["delivery": .string(delivery.id), "error": "\(error)"])
                return
            }
        }
        let batch = state.withLock { s -> [(Delivery, StoredEvent)] in
            guard !s.carried.contains(delivery.id) else { return [] }
            let free = candidates.filter { !s.carried.contains($0.0.id) }
            for (member, _) in free { s.carried.insert(member.id) }
            return free
        }
        // Empty: another message took this delivery along already.
        guard !batch.isEmpty else { return }
        defer { state.withLock { s in for (member, _) in batch { s.carried.remove(member.id) } } }
        let firstSend = delivery.batch_id == nil

        var muted: [Delivery] = []
        var live: [(Delivery, StoredEvent)] = []
        let silences = activeSilences.withLock { $0 }
        for (member, event) in batch {
            // Silences and inhibition decide at the first send; a retry repeats what was sent.
            if firstSend, let reason = await muteReason(event.event, now: now, silences: silences) {
                var m = member
                m.state = .muted
                m.last_error = reason
                m.updated_at = now.milliseconds
                muted.append(m)
            } else {
                live.append((member, event))
            }
        }
        if !muted.isEmpty { await record(muted, outcome: "muted") }
        guard !live.isEmpty else { return }
        var schedule = settings.schedule
        if let maxAge = settings.maxAge[delivery.receiver] { schedule.maxAge = maxAge }
        let oldest = Timestamp(milliseconds: live.map(\.0.created_at).min() ?? now.milliseconds)
        if !schedule.allows(next: now, created: oldest) {
            // Held back while its receiver failed, the message outlived max_age before its
            // next attempt: it ends here, unsent (and its fallback takes over).
            var rows = live.map(\.0)
            for i in rows.indices {
                rows[i].state = .dead
                rows[i].updated_at = now.milliseconds
                rows[i].last_error = "gave up after \(rows[i].attempts) attempts (max_age \(schedule.maxAge)): \(rows[i].last_error ?? "never sent")"
            }
            await recordDead(rows)
            return
        }
        // The message is named after its first live delivery: that row leads the batch in the
        // outbox, so a retry finds the whole batch through it.
        let batchID = delivery.batch_id ?? live[0].0.id

        let kind: OutboundMessage.Kind = switch delivery.kind {
        case "resolved": .resolved
        case "repeat": .repeat
        default: live.count == 1 ? .event : .digest
        }
        var message = OutboundMessage(
            kind: kind, deliveryID: batchID, receiver: delivery.receiver,
            groupKey: delivery.group_key, events: live.map(\.1), publicURL: settings.publicURL)
        let gateEvent = live.count == 1 ? live[0].1.event : nil
        let gateID = gateEvent.flatMap { $0.type.hasPrefix("gate.") ? $0.attributes?["gate_id"]?.stringValue : nil }
        if let gateID, let gateEvent, let notice = settings.gateNotice {
            message.gate = await notice(gateID, delivery.receiver, gateEvent.type)
        }
        var rows = live.map(\.0)
        for i in rows.indices { rows[i].batch_id = batchID }
        let flushed = firstSend ? (receiver: delivery.receiver, groupKey: delivery.group_key, at: now) : nil
        var request: OutboundRequest
        do {
            request = try receiver.request(for: message, now: now)
            if let timeout = settings.timeout[delivery.receiver] { request.timeout = timeout.seconds }
        } catch {
            for i in rows.indices {
                rows[i].state = .dead
                rows[i].last_error = "could not build the message: \(error)"
                rows[i].updated_at = now.milliseconds
            }
            await recordDead(rows, flushed: flushed)
            return
        }
        let response = await client.send(request)
        // Abandoned at shutdown: nothing is recorded, the rows stay due and are sent again
        // after the restart under the same webhook-id.
        if response.abandoned { return }
        let outcome = receiver.classify(response)
        var pause: Double?
        if let discordPause = DiscordReceiver.pause(after: response), receiver.platform == .discord { pause = discordPause }
        if case .retry(let after?, _) = outcome { pause = max(pause ?? 0, after) }
        let verdict: Verdict = switch outcome {
        case .delivered, .dead: pause.map { Verdict.rateLimited($0) } ?? Verdict.answered
        case .retry: response.status == 429 || pause != nil ? .rateLimited(pause ?? 1) : .failed
        }
        let recovered = releaseSlot(delivery, verdict: verdict)
        slotHeld = false
        if recovered {
            // The receiver is back: what it missed goes now, oldest first, not on each row's
            // own retry schedule. Rows claimed while it was held are let go, so the next read
            // takes everything in the database's (creation) order.
            if let revived = try? await outbox.reviveBacklog(receiver: delivery.receiver), revived > 0 {
                logger.info("receiver recovered; sending its backlog", metadata: ["receiver": .string(delivery.receiver), "deliveries": .stringConvertible(revived)])
            }
            _ = state.withLock { $0.reviving.remove(delivery.receiver) }
            wakeup.wake()
        }
        let finished = clock()
        let attempts = (rows.map(\.attempts).max() ?? 0) + 1
        for i in rows.indices {
            rows[i].attempts = attempts
            rows[i].updated_at = finished.milliseconds
            rows[i].last_status = response.status == 0 ? nil : response.status
            rows[i].response_body = response.body.isEmpty ? nil : String(response.text.prefix(2000))
        }
        switch outcome {
        case .delivered(let messageID):
            for i in rows.indices {
                rows[i].state = .delivered
                rows[i].delivered_at = finished.milliseconds
                rows[i].last_error = nil
                rows[i].message_id = messageID
            }
            let latency = metrics.latency(delivery.receiver)
            for (_, event) in live { latency.recordMilliseconds(max(0, finished.milliseconds - event.receivedAt.milliseconds)) }
            await record(rows, flushed: flushed, outcome: "delivered")
            if let gateID, let gateEvent { await settings.gateNotified?(gateID, delivery.receiver, gateEvent.type, "delivered", messageID) }
        case .retry(let after, let reason):
            let delay = schedule.delay(afterAttempt: attempts, retryAfter: after, random: Double.random(in: 0..<1))
            let next = finished.adding(milliseconds: delay.milliseconds)
            if schedule.allows(next: next, created: oldest) {
                for i in rows.indices {
                    rows[i].state = .failed
                    rows[i].next_attempt_at = next.milliseconds
                    rows[i].last_error = reason
                }
                logger.info("delivery failed; will retry", metadata: ["delivery": .string(delivery.id), "receiver": .string(delivery.receiver), "reason": .string(reason), "in_ms": .stringConvertible(delay.milliseconds)])
                await record(rows, flushed: flushed, outcome: "retry")
            } else {
                for i in rows.indices {
                    rows[i].state = .dead
                    rows[i].last_error = "gave up after \(attempts) attempts (max_age \(schedule.maxAge)): \(reason)"
                }
                await recordDead(rows, flushed: flushed)
            }
        case .dead(let reason):
            for i in rows.indices {
                rows[i].state = .dead
                rows[i].last_error = reason
            }
            await recordDead(rows, flushed: flushed)
        }
        if let gateID, let gateEvent, let row = rows.first, row.state == .dead {
            await settings.gateNotified?(gateID, delivery.receiver, gateEvent.type, "dead: \(row.last_error ?? "")", nil)
        }
    }

    private func muteReason(_ event: Event, now: Timestamp, silences active: [Silence]) async -> String? {
        if let silence = active.first(where: { $0.mutes(event, at: now) }) {
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

    /// Records dead deliveries and, in the same transaction, their stand-ins at the route's
    /// fallback receiver.
    private func recordDead(_ rows: [Delivery], flushed: (receiver: String, groupKey: String, at: Timestamp)? = nil) async {
        let now = clock()
        let fallbacks = rows.compactMap { row -> Delivery? in
            guard let name = row.fallback, name != row.receiver, row.fallback_of == nil else { return nil }
            return row.fallbackDelivery(to: name, now: now)
        }
        logger.warning("delivery dead", metadata: ["deliveries": .stringConvertible(rows.count), "receiver": .string(rows.first?.receiver ?? ""), "reason": .string(rows.first?.last_error ?? "")])
        await record(rows, fallbacks: fallbacks, flushed: flushed, outcome: "dead")
    }

    private func record(_ rows: [Delivery], fallbacks: [Delivery] = [], flushed: (receiver: String, groupKey: String, at: Timestamp)? = nil, outcome: String) async {
        do {
            try await outbox.record(rows, fallbacks: fallbacks, flushedGroup: flushed)
            if let receiver = rows.first?.receiver { metrics.outcomes(receiver, outcome).increment(by: rows.count) }
        } catch {
            // The rows stay due and are sent again: at-least-once.
            logger.error("could not record a delivery outcome", metadata: ["delivery": .string(rows.first?.id ?? ""), "error": "\(error)"])
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

/// Metric handles per receiver (and outcome), made once: asking the metrics factory for every
/// delivery costs a lock and a dictionary of label strings each time.
final class DeliveryMetrics: Sendable {
    private let timers = Mutex<[String: Metrics.Timer]>([:])
    private let counters = Mutex<[String: Counter]>([:])

    func latency(_ receiver: String) -> Metrics.Timer {
        timers.withLock { t in
            if let timer = t[receiver] { return timer }
            let timer = Metrics.Timer(label: "gatehouse_delivery_latency_seconds", dimensions: [("receiver", receiver)], preferredDisplayUnit: .seconds)
            t[receiver] = timer
            return timer
        }
    }

    func outcomes(_ receiver: String, _ outcome: String) -> Counter {
        counters.withLock { c in
            let key = receiver + "\u{0}" + outcome
            if let counter = c[key] { return counter }
            let counter = Counter(label: "gatehouse_deliveries_total", dimensions: [("receiver", receiver), ("outcome", outcome)])
            c[key] = counter
            return counter
        }
    }
}
