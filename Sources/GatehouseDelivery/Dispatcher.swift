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
        /// Deliveries to receivers this config lacks die at start. Only where this process is
        /// the database's one user: a replica's config may lag or lead the others' (a rolling
        /// upgrade), and its view must not end their deliveries.
        public var endOrphans = true
        /// Concurrent attempts per receiver.
        public var concurrency = 32
        /// How far back inhibition looks for a source event.
        public var inhibitionWindow = GatehouseDuration.seconds(3600)
        /// The routes that group by everything (`group_by: ['...']`): each of their events is
        /// a group of its own, with no `alert_groups` row (`DeliveryPlanner`).
        public var routesGroupingEverything: Set<String> = []
        /// Resolves what a `gate.*` message shows (gate id, receiver, event type).
        public var gateNotice: (@Sendable (String, String, String) async -> GateNotice?)?
        /// Told when a gate message was delivered or given up (gate id, receiver, event type,
        /// outcome, message id): the gate's audit trail records its notifications.
        public var gateNotified: (@Sendable (String, String, String, String, String?) async -> Void)?
        public init() {}

        /// The paths of the routes in `routes` that group by everything.
        public static func routesGroupingEverything(in routes: RouteTree?) -> Set<String> {
            Set((routes?.allNodes ?? []).filter { $0.groupBy == .everything }.map(\.path))
        }

        /// Whether `delivery`'s group is its event alone — a gate's message, or a route's that
        /// groups by everything — so that sending it flushes no group: no `alert_groups` row
        /// exists to mark. (Marking it anyway was a statement per alert that changed nothing.)
        /// The key must also be the one such a group gets (`RouteTree.Node.groupKey`), so a
        /// row planned under an older config that grouped by fields still marks its group. A
        /// field grouping's key always has a `=` after the path, so an event id with one could
        /// spell such a key: then the group is marked anyway (a no-op if it is alone).
        func groupsAlone(_ delivery: Delivery, event: Event) -> Bool {
            if delivery.group_key == "gate|" + event.id { return true }
            return routesGroupingEverything.contains(delivery.route) && !event.id.utf8.contains(UInt8(ascii: "="))
                && delivery.group_key == delivery.route + "|" + event.id
        }

        /// The retry policy of `receiver`: the shared schedule with its own `max_age`.
        func policy(for receiver: String) -> RetryPolicy {
            var schedule = schedule
            if let maxAge = maxAge[receiver] { schedule.maxAge = maxAge }
            return RetryPolicy(schedule: schedule)
        }
    }

    let outbox: any Outbox
    let receivers: [String: any Receiver]
    let client: CurlMultiClient
    let bus: Bus
    let silences: any SilenceStore
    let inhibitor: Inhibitor
    let settings: Settings
    let logger: Logger
    let clock: @Sendable () -> Timestamp
    /// Which receivers this process sends to, and whether it runs the reminders (with
    /// replicas on one database, each receiver is sent to by one process at a time).
    let ownership: any Ownership
    let state = Mutex(State())
    let wakeup: BusSubscriber
    private let stopped = Atomic<Bool>(false)
    let metrics = DeliveryMetrics()
    /// Attempts started and not yet ended (the run waits for them before it returns).
    let attemptsRunning = Atomic<Int>(0)
    /// Grows whenever rows may have become due that a read before did not see: events
    /// committed (here or, with replicas, elsewhere), a retry scheduled, a fallback added, a
    /// backlog revived, a manual retry. A receiver whose last read drained what was due is
    /// read again only when this moved, its next row's time came, or a second passed — not
    /// after every attempt (two reads per event on PostgreSQL, where each is a round trip).
    let workEpoch = Atomic<Int>(0)
    /// Per receiver, the same for work only that receiver has: a commit's rows it could not
    /// take from the hand-off (`takeCommitted`). A receiver's epoch is the sum of both, so one
    /// failing receiver, whose rows no commit hands over, does not send every other receiver
    /// back to reading after each commit.
    let receiverEpochs: [String: EpochCounter]

    final class EpochCounter: Sendable {
        let value = Atomic<Int>(0)
    }
    /// Silences not yet over, kept fresh by the bus (`silencesChanged`) and a periodic re-read.
    let activeSilences = Mutex<[Silence]>([])
    /// Set by the bus the moment a silence changes (before its API call answers), so the loop
    /// re-reads them before it starts another attempt: a subscriber's queue can drop the
    /// message, or hold it behind a burst of commits, while the loop starts the very event the
    /// new silence should mute.
    let silencesStale = Atomic<Bool>(false)
    /// The last cursor of the latest commit whose deliveries were all taken from the event
    /// log's hand-off (`takeCommitted`): the bus's news of that commit needs no read.
    let handedOffThrough = Atomic<Int64>(0)
    /// Rows queued to send, by how they came: read from the outbox, or handed over by the
    /// commit that created them.
    let rowsRead = Counter(label: "gatehouse_dispatcher_rows_total", dimensions: [("source", "read")])
    let rowsHandedOver = Counter(label: "gatehouse_dispatcher_rows_total", dimensions: [("source", "handoff")])

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
        /// Per receiver, the rows this process has claimed in the database and may still act
        /// on (with replicas: `DeliveryClaim`): renewed while held, given back when the
        /// receiver goes to another process, forgotten once the database shows them unclaimed.
        var claims: [String: Set<String>] = [:]
        /// Per receiver, from its last read that found everything due (fewer rows than it
        /// asked for), recorded with that read's rows: the work epoch at its start, and when
        /// its next row that was not yet due falls due. While the epoch is still that and the
        /// time not yet come, every due row is in memory (queued, in flight or finished) — so
        /// rows a commit hands over can join the queue behind them, oldest first, unread.
        var caughtUp: [String: CaughtUp] = [:]
    }

    struct CaughtUp {
        var epoch: Int
        /// Milliseconds; Int64.max when the receiver had no row that was not yet due.
        var until: Int64
    }

    public init(
        outbox: any Outbox, receivers: [String: any Receiver], client: CurlMultiClient, bus: Bus, silences: any SilenceStore,
        inhibitor: Inhibitor, settings: Settings, logger: Logger, ownership: any Ownership = SoleProcess(),
        clock: @escaping @Sendable () -> Timestamp = { .now() }
    ) {
        self.ownership = ownership
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
        receiverEpochs = Dictionary(uniqueKeysWithValues: receivers.keys.map { ($0, EpochCounter()) })
        for name in receivers.keys { Self.reportHealth(name, ReceiverHealth()) }
        state.withLock { s in
            for (name, receiver) in receivers {
                s.pacers[name] = Pacer.for(receiver.platform)
                s.health[name] = ReceiverHealth()
            }
        }
        bus.observe { [weak self] message in
            guard let self else { return }
            switch message {
            case .eventsCommitted(let cursor):
                // A commit whose deliveries were all handed over (told just before, on the
                // writer's thread) left nothing new to read.
                if cursor != self.handedOffThrough.load(ordering: .relaxed) { self.newWork() }
            case .wake, .resync: self.newWork()
            case .silencesChanged: self.silencesStale.store(true, ordering: .relaxed)
            default: break
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
        if settings.endOrphans, let killed = try? await outbox.killOrphans(known: names, now: clock()), killed > 0 {
            logger.warning("deliveries to receivers no longer configured were marked dead", metadata: ["count": .stringConvertible(killed)])
        }
        // Attempts are not tasks: each runs its stages up to the send here, in this loop, and
        // the rest in libcurl's and the outbox writer's callbacks (see Attempt.swift). A task
        // per delivery cost three thread hand-overs and ~16 KB of task until it was reaped.
        do {
            var lastDepthReport: Int64 = 0
            var lastGroupSweep: Int64 = 0
            var nextRepeat: Timestamp? = nil
            var repeatsRead: Int64 = 0
            var silencesRead: Int64 = 0
            // Per receiver: the work epoch and time of its last read that drained what was
            // due, and when its next row falls due (as last read).
            var drained: [String: (epoch: Int, at: Int64)] = [:]
            var nextDue: [String: (epoch: Int, at: Timestamp?)] = [:]
            let claim = deliveryClaim()
            var claimsRenewed = clock().milliseconds
            // Per receiver: when a read that the next-due time said would find rows found none
            // it may take (rows another transaction holds are skipped, not waited for), and at
            // which work epoch. Such a receiver is not read again for 100 ms unless new work
            // came, instead of at once and forever while those rows stay locked.
            var fruitless: [String: (epoch: Int, at: Int64)] = [:]
            // Receivers this process serves and whose kept hold it has taken up.
            var serving: Set<String> = []
            while !Task.isCancelled && !stopped.load(ordering: .relaxed) {
                var now = clock()
                // Refill the queues of receivers that are running low and not paused.
                for name in names {
                    guard ownership.owns(receiver: name) else {
                        if serving.remove(name) != nil { forgetHealth(name) }
                        relinquish(name, claim: claim)
                        continue
                    }
                    if serving.insert(name).inserted {
                        await takeUpHold(name)
                        now = clock()
                    }
                    let room = state.withLock { s -> Int in
                        if let until = s.pacedUntil[name], until > now { return 0 }
                        if s.reviving.contains(name) { return 0 }
                        if let health = s.health[name], !health.acceptsWork(now: now) { return 0 }
                        let queued = s.queues[name]?.count ?? 0
                        return queued < Self.refillBelow ? Self.batch - queued : 0
                    }
                    guard room > 0 else { continue }
                    let epoch = epoch(of: name)
                    if let last = drained[name], last.epoch == epoch, now.milliseconds - last.at < 1000,
                       nextDue[name].map({ $0.epoch == epoch && ($0.at.map { $0 > now } ?? true) }) ?? false {
                        continue
                    }
                    if let last = fruitless[name], last.epoch == epoch, now.milliseconds - last.at < 100 { continue }
                    state.withLock { $0.finishedDuringQuery[name] = [] }
                    let read = try? await outbox.dueAndNext(receiver: name, now: now, limit: room, claim: claim)
                    let due = read?.rows
                    drained[name] = (due?.count ?? room) < room ? (epoch, now.milliseconds) : nil
                    // Only where rows can be claimed elsewhere or locked (PostgreSQL), and only
                    // when the next-due time had said rows were due: elsewhere an empty read
                    // is just an idle receiver, and must not delay a row falling due soon.
                    let promised = nextDue[name].map { $0.epoch == epoch && ($0.at.map { $0 <= now } ?? false) } ?? false
                    fruitless[name] = claim != nil && promised && (due?.isEmpty ?? false) ? (epoch, now.milliseconds) : nil
                    var caughtUp: CaughtUp?
                    if drained[name] != nil, let later = read?.later {
                        switch later {
                        case .none: caughtUp = CaughtUp(epoch: epoch, until: .max)
                        case .at(let time): caughtUp = CaughtUp(epoch: epoch, until: time.milliseconds)
                        case .unknown: caughtUp = nil
                        }
                    }
                    guard let due, !due.isEmpty else {
                        state.withLock { s in
                            s.finishedDuringQuery[name] = nil
                            s.caughtUp[name] = caughtUp
                        }
                        continue
                    }
                    if now.milliseconds - silencesRead > 5000 {
                        // Silences are read per batch, not per delivery, and again at once when
                        // the bus says one changed; this re-read only catches their time windows.
                        await refreshSilences(now: now)
                        silencesRead = now.milliseconds
                    }
                    let queued = state.withLock { s -> Int in
                        let finished = s.finishedDuringQuery[name] ?? []
                        // Rows of one group fetched together leave as one message: batch them
                        // here, oldest first, so sending needs no further read.
                        var batches: [[(Delivery, StoredEvent)]] = []
                        var openBatch: [String: Int] = [:]
                        for (delivery, event) in due where !s.inFlight.contains(delivery.id) && !finished.contains(delivery.id) && !s.carried.contains(delivery.id) {
                            s.inFlight.insert(delivery.id)
                            // Tracked from here to its outcome (rows passed over are either
                            // tracked already, in flight, or claimed again by the next read).
                            if claim != nil { s.claims[name, default: []].insert(delivery.id) }
                            if delivery.batch_id == nil, let index = openBatch[delivery.group_key], batches[index].count < Self.maxBatch {
                                batches[index].append((delivery, event))
                            } else {
                                if delivery.batch_id == nil { openBatch[delivery.group_key] = batches.count }
                                batches.append([(delivery, event)])
                            }
                        }
                        if !batches.isEmpty { s.queues[name, default: []].append(contentsOf: batches) }
                        s.finishedDuringQuery[name] = nil
                        s.caughtUp[name] = caughtUp
                        return batches.reduce(0) { $0 + $1.count }
                    }
                    if queued > 0 { rowsRead.increment(by: queued) }
                }
                now = clock()
                if silencesStale.exchange(false, ordering: .relaxed) {
                    await refreshSilences(now: now)
                    silencesRead = now.milliseconds
                } else if now.milliseconds - silencesRead > 5000, state.withLock({ !$0.queues.isEmpty }) {
                    // Rows handed over by commits are queued without a read: catch the silences'
                    // time windows here too.
                    await refreshSilences(now: now)
                    silencesRead = now.milliseconds
                }
                for (batch, paced) in takeStartable(now: now) {
                    attemptsRunning.wrappingAdd(1, ordering: .relaxed)
                    await start(batch, paced: paced)
                }
                if now.milliseconds - lastDepthReport >= 1000 {
                    lastDepthReport = now.milliseconds
                    Gauge(label: "gatehouse_outbox_depth").record((try? await outbox.depth()) ?? 0)
                    for (map, size) in trackedSizes() { Gauge(label: "gatehouse_dispatcher_tracked", dimensions: [("map", map)]).record(size) }
                    // A pause that ends with nothing left to send changes no state by itself:
                    // the gauge shows what the API shows.
                    for (name, health) in receiverHealth() { Self.reportHealth(name, health) }
                }
                if let claim, now.milliseconds - claimsRenewed >= Self.claimRenewal {
                    claimsRenewed = now.milliseconds
                    renewClaims(claim)
                }
                // Reminders for pipelines still failing (repeat_interval).
                // Re-read at most once a second: commits can come thousands of times a second,
                // and a reminder is always repeat_interval away from the failure it repeats.
                if now.milliseconds - repeatsRead >= 1000 {
                    nextRepeat = ownership.isLeader ? try? await outbox.nextRepeatTime(receivers: names) : nil
                    repeatsRead = now.milliseconds
                }
                if let due = nextRepeat, due <= now {
                    _ = try? await outbox.fireRepeats(now: now, receivers: names)
                    newWork()
                    nextRepeat = try? await outbox.nextRepeatTime(receivers: names)
                    continue
                }
                if now.milliseconds - lastGroupSweep >= 60_000, ownership.isLeader {
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
                    guard idle, ownership.owns(receiver: name) else { continue }
                    let epoch = epoch(of: name)
                    if let known = nextDue[name], known.epoch == epoch, known.at.map({ $0 > now }) ?? true {
                        if let due = known.at { next = min(next, due) }
                        continue
                    }
                    let due = try? await outbox.nextDueTime(receiver: name, claim: claim)
                    nextDue[name] = (epoch, due)
                    if let due {
                        let held = fruitless[name].flatMap { $0.epoch == epoch ? Timestamp(milliseconds: $0.at + 100) : nil }
                        next = min(next, max(due, held ?? due))
                    }
                }
                let wait = max(1, min(60_000, next.milliseconds - clock().milliseconds))
                // (A changed silence is read at the top of the loop: `silencesStale`.)
                _ = await wakeup.next(timeout: .milliseconds(wait))
            }
            // Rows still queued were never attempted: they stay due in the database. The
            // attempts in flight end (answered, or abandoned at the client's shutdown) and are
            // recorded before the run returns.
        }
        while attemptsRunning.load(ordering: .relaxed) > 0 {
            await withCheckedContinuation { (resume: CheckedContinuation<Void, Never>) in
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(5)) { resume.resume() }
            }
        }
    }

    /// Something may have become due that earlier reads did not see.
    func newWork() { workEpoch.wrappingAdd(1, ordering: .relaxed) }

    /// Something may have become due for `receiver` alone.
    func newWork(for receiver: String) {
        if let counter = receiverEpochs[receiver] { counter.value.wrappingAdd(1, ordering: .relaxed) } else { newWork() }
    }

    /// `receiver`'s work epoch: moves with everyone's and with its own (both only grow).
    func epoch(of receiver: String) -> Int {
        workEpoch.load(ordering: .relaxed) &+ (receiverEpochs[receiver]?.value.load(ordering: .relaxed) ?? 0)
    }

    /// The event log's hand-off (`EventLog.DeliveryHandoff`): a commit's new deliveries join
    /// their receivers' queues as a read would have queued them, so the commit costs no read
    /// of the outbox. Per receiver it takes them only when it holds every other due row of it
    /// in memory (its last read found all that was due, no other work came since, and no row
    /// that read saw as not yet due has fallen due since), the receiver is healthy and is this
    /// process's to send to, the rows are due now, and its queue has room; otherwise the rows
    /// stay for the next read. True when it took all. Not with replicas: their rows are
    /// claimed in the database as they are read.
    public func takeCommitted(_ rows: [(Delivery, StoredEvent)], lastCursor: Int64, now: Timestamp) -> Bool {
        guard ownership.claimant == nil, !stopped.load(ordering: .relaxed) else { return false }
        var order: [String] = []
        var byReceiver: [String: [(Delivery, StoredEvent)]] = [:]
        for row in rows {
            if byReceiver[row.0.receiver] == nil { order.append(row.0.receiver) }
            byReceiver[row.0.receiver, default: []].append(row)
        }
        let (tookAll, taken, left) = state.withLock { s -> (Bool, Int, [String]) in
            var left: [String] = []
            var taken = 0
            for name in order {
                let mine = byReceiver[name]!
                guard let caughtUp = s.caughtUp[name], caughtUp.epoch == epoch(of: name), now.milliseconds < caughtUp.until,
                      ownership.owns(receiver: name), !s.reviving.contains(name),
                      (s.health[name]?.state ?? .ok) == .ok, (s.queues[name]?.count ?? 0) + mine.count <= Self.batch,
                      mine.allSatisfy({ $0.0.next_attempt_at <= now.milliseconds && $0.0.batch_id == nil })
                else {
                    left.append(name)
                    continue
                }
                // Batched by group as a read's rows are (`run`).
                var batches: [[(Delivery, StoredEvent)]] = []
                var openBatch: [String: Int] = [:]
                for (delivery, event) in mine where !s.inFlight.contains(delivery.id) {
                    s.inFlight.insert(delivery.id)
                    taken += 1
                    if let index = openBatch[delivery.group_key], batches[index].count < Self.maxBatch {
                        batches[index].append((delivery, event))
                    } else {
                        openBatch[delivery.group_key] = batches.count
                        batches.append([(delivery, event)])
                    }
                }
                s.queues[name, default: []].append(contentsOf: batches)
            }
            return (left.isEmpty, taken, left)
        }
        if taken > 0 { rowsHandedOver.increment(by: taken) }
        // Rows left are found by the next read of their own receivers; the others stay caught
        // up, and the bus's news of this commit needs no read at all.
        for name in left { newWork(for: name) }
        handedOffThrough.store(lastCursor, ordering: .relaxed)
        return tookAll
    }

    /// How this process claims the rows it reads, where processes share the database: for as
    /// long as it lives, and at most a minute past the longest answer it waits for (a claim a
    /// live process somehow never ended must not hold its rows for ever).
    private func deliveryClaim() -> DeliveryClaim? {
        ownership.claimant.map { owner in
            let longest = ([GatehouseDuration.seconds(15)] + settings.timeout.values).max()!
            return DeliveryClaim(owner: owner, lastsFor: longest.milliseconds + 60_000)
        }
    }

    /// Forgets the rows queued for a receiver another process now sends to, and gives back
    /// the claims on every row it holds and is not sending (they were read, not started: that
    /// process finds them due). Attempts in flight end here and their claims with their outcomes.
    private func relinquish(_ name: String, claim: DeliveryClaim?) {
        let dropped = state.withLock { s -> [String] in
            s.caughtUp[name] = nil
            for batch in s.queues.removeValue(forKey: name) ?? [] {
                for (delivery, _) in batch { s.inFlight.remove(delivery.id) }
            }
            guard let held = s.claims[name] else { return [] }
            let sending = held.filter { s.inFlight.contains($0) || s.carried.contains($0) }
            s.claims[name] = sending.isEmpty ? nil : sending
            return Array(held.subtracting(sending))
        }
        guard let claim, !dropped.isEmpty else { return }
        release(dropped, of: name, claim: claim)
    }

    /// Gives back claims; those it could not (rows another statement held, or the database
    /// unreachable) stay tracked, and the next renewal tries again.
    private func release(_ ids: [String], of name: String, claim: DeliveryClaim) {
        let (outbox, logger) = (outbox, logger)
        Task {
            var kept = Set(ids)
            do { kept.subtract(try await outbox.release(ids, claim: claim)) } catch {
                logger.warning("could not give back claimed deliveries", metadata: ["receiver": .string(name), "error": .string("\(error)")])
            }
            if !kept.isEmpty { self.state.withLock { s in s.claims[name, default: []].formUnion(kept) } }
        }
    }

    /// How often the claims still held are renewed (they last `deliveryClaim().lastsFor`).
    static let claimRenewal: Int64 = 10_000

    /// Renews the claims on the rows this process still holds; the database's answer (the
    /// rows still claimed by it) prunes the ones whose outcome ended their claim.
    private func renewClaims(_ claim: DeliveryClaim) {
        // Receivers now another process's: give back what is not being sent (a release that
        // was passed over before is retried here).
        for name in state.withLock({ Array($0.claims.keys) }) where !ownership.owns(receiver: name) {
            relinquish(name, claim: claim)
        }
        let snapshot = state.withLock { $0.claims }
        let ids = snapshot.values.flatMap { $0 }
        guard !ids.isEmpty else { return }
        let (outbox, logger) = (outbox, logger)
        Task {
            do {
                let still = Set(try await outbox.renew(ids, claim: claim))
                self.state.withLock { s in
                    for (name, sent) in snapshot {
                        // Ids added since the snapshot are kept (they were not asked about); ids
                        // finished meanwhile stay gone (their outcome ended the claim).
                        let current = s.claims[name] ?? []
                        let kept = current.subtracting(sent).union(current.intersection(sent).intersection(still))
                        s.claims[name] = kept.isEmpty ? nil : kept
                    }
                }
            } catch {
                logger.warning("could not renew claimed deliveries", metadata: ["error": .string("\(error)")])
            }
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
    /// Messages whose receivers have room and a pacer token now, each with whether it took a
    /// token (given back if it is not sent after all: `refundPacer`).
    private func takeStartable(now: Timestamp) -> [(batch: [(Delivery, StoredEvent)], paced: Bool)] {
        let silences = activeSilences.withLock { $0 }
        return state.withLock { s in
            var out: [(batch: [(Delivery, StoredEvent)], paced: Bool)] = []
            for name in Array(s.queues.keys) {
                while var queue = s.queues[name], !queue.isEmpty {
                    if s.perReceiver[name, default: 0] >= settings.concurrency { break }
                    if s.reviving.contains(name) { break }
                    if let until = s.pacedUntil[name], until > now { break }
                    // A receiver that is failing gets one probe at a time, after its back-off.
                    let admission = s.health[name]?.admit(queue[0][0].0.id, now: now) ?? .open
                    if case .closed = admission { break }
                    var paced = false
                    if var pacer = s.pacers[name], !Self.silenced(queue[0], by: silences, now: now) {
                        let wait = pacer.take(now: now)
                        s.pacers[name] = pacer
                        if wait > 0 {
                            s.pacedUntil[name] = now.adding(milliseconds: wait)
                            s.health[name]?.released(queue[0][0].0.id)
                            break
                        }
                        paced = true
                    }
                    s.pacedUntil[name] = nil
                    let item = queue.removeFirst()
                    s.queues[name] = queue.isEmpty ? nil : queue
                    s.perReceiver[name, default: 0] += 1
                    out.append((item, paced))
                    if admission == .probe { break }
                }
            }
            return out
        }
    }

    /// A message whose every event a silence mutes at its first send (the mute stage's rule):
    /// it is recorded muted without a request, so it takes no pacer token — 100 silenced
    /// Slack alerts held the next live one back ~100 s.
    static func silenced(_ batch: [(Delivery, StoredEvent)], by silences: [Silence], now: Timestamp) -> Bool {
        guard !silences.isEmpty, let lead = batch.first, lead.0.batch_id == nil else { return false }
        return batch.allSatisfy { member in silences.contains { $0.mutes(member.1.event, at: now) } }
    }

    /// Gives back the pacer token an attempt took and did not use: its message was not sent
    /// (every event muted — inhibition is known only once the attempt has read its sources —,
    /// too old, or taken along by another message). 100 inhibited Slack alerts held the next
    /// live one back ~100 s.
    func refundPacer(_ receiver: String) {
        state.withLock { s in
            guard var pacer = s.pacers[receiver] else { return }
            pacer.refund()
            s.pacers[receiver] = pacer
            s.pacedUntil[receiver] = nil
        }
        wakeup.wake()
    }

    /// Frees the receiver's slot as soon as its answer is in (the receiver is done with us) and
    /// updates its health. True when the answer ends a failure episode.
    func releaseSlot(_ delivery: Delivery, verdict: RetryPolicy.Verdict?) -> Bool {
        let now = clock()
        let (recovered, health, kept) = state.withLock { s -> (Bool, ReceiverHealth?, ReceiverHold??) in
            s.perReceiver[delivery.receiver, default: 1] -= 1
            if s.perReceiver[delivery.receiver] == 0 { s.perReceiver[delivery.receiver] = nil }
            guard var health = s.health[delivery.receiver] else { return (false, nil, nil) }
            let before = health
            var recovered = false
            switch verdict {
            case nil: health.released(delivery.id)
            case .answered, .answeredButPaused:
                var pause: Double?
                if case .answeredButPaused(let seconds) = verdict { pause = seconds }
                recovered = health.answered(delivery.id, pausing: pause, now: now)
                if recovered {
                    // Hold the receiver until its backlog is in order (see `attempt`), and let go
                    // of the rows claimed while it was held: the next read takes everything in
                    // the database's order, oldest first.
                    s.reviving.insert(delivery.receiver)
                    s.caughtUp[delivery.receiver] = nil
                    for batch in s.queues.removeValue(forKey: delivery.receiver) ?? [] {
                        for (member, _) in batch { s.inFlight.remove(member.id) }
                    }
                }
            case .failed(let retryAfter): health.failed(delivery.id, retryAfter: retryAfter, now: now, random: PooledRandom.fraction())
            case .rateLimited(let seconds): health.rateLimited(delivery.id, for: seconds, now: now)
            }
            s.health[delivery.receiver] = health
            // The hold is kept across restarts whenever it changes (a few times per back-off
            // step at most; never for a receiver that stays ok, whose hold stays nil).
            let hold = health.hold
            return (recovered, health.state != before.state ? health : nil, hold != before.hold ? .some(hold) : nil)
        }
        // Only the receiver's owner keeps its hold (PostgreSQL: late answers to a process that
        // has handed the receiver over say nothing about the new owner's episode).
        if let kept, ownership.owns(receiver: delivery.receiver) { keep(kept, receiver: delivery.receiver) }
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

    /// Saves a receiver's hold (nil: it is ok again) for the next start.
    func keep(_ hold: ReceiverHold?, receiver: String) {
        let logger = logger
        outbox.saveHold(hold, receiver: receiver) { error in
            if let error {
                logger.error("could not keep a receiver's hold", metadata: ["receiver": .string(receiver), "error": "\(error)"])
            }
        }
    }

    /// Takes up a receiver's kept hold as this process starts serving it (at start, or on
    /// PostgreSQL when its lease comes here): a receiver that was held waits out the rest of its
    /// hold (`ReceiverHealth.longestHoldTakenUp` at most), then is probed with one delivery.
    func takeUpHold(_ name: String) async {
        let kept: ReceiverHold?
        do {
            kept = try await outbox.holds()[name]
        } catch {
            logger.error("could not read a receiver's kept hold", metadata: ["receiver": .string(name), "error": "\(error)"])
            return
        }
        guard let kept else { return }
        let health = ReceiverHealth(restoring: kept, now: clock())
        guard health.state != .ok else { return }
        // Held first, so that no row brought forward below can go before the probe.
        state.withLock { $0.health[name] = health }
        Self.reportHealth(name, health)
        if let asked = kept.until, let shortened = health.until, shortened < asked {
            // The hold was shortened, but the rows that failed with the receiver still wait as
            // long as it asked (an hour, say): with none of them due, nothing would probe at the
            // shortened hold's end. They are due again — and, the receiver being held, go one
            // probe at a time, as after any hold.
            do {
                _ = try await outbox.reviveBacklog(receiver: name)
            } catch {
                logger.error("could not bring a held receiver's backlog forward", metadata: ["receiver": .string(name), "error": "\(error)"])
            }
        }
        logger.warning("receiver still held back", metadata: [
            "receiver": .string(name), "state": .string(health.state.rawValue),
            "until": .string(health.until?.rfc3339 ?? ""), "failures": .stringConvertible(health.consecutiveFailures)])
    }

    /// This process no longer serves the receiver (PostgreSQL: its lease went to another
    /// process): its health here is forgotten, as that process's answers will not reach it.
    func forgetHealth(_ name: String) {
        let health = ReceiverHealth()
        state.withLock { $0.health[name] = health }
        Self.reportHealth(name, health)
    }

    static func reportHealth(_ receiver: String, _ health: ReceiverHealth) {
        for state in ReceiverHealth.State.allCases {
            Gauge(label: "gatehouse_receiver_state", dimensions: [("receiver", receiver), ("state", state.rawValue)]).record(health.state == state ? 1 : 0)
        }
    }

    /// Whether `receiver` is sending freely: healthy, not paced, not reviving. Only such a
    /// receiver is handed to another process (which would start with fresh pacing and health,
    /// and re-learn a back-off or a 429 pause from the receiver).
    public func isSteady(receiver: String) -> Bool {
        let now = clock()
        return state.withLock { s in
            (s.health[receiver]?.isSettled(now: now) ?? true) && !s.reviving.contains(receiver) && (s.pacedUntil[receiver].map { $0 <= now } ?? true)
        }
    }

    /// Each receiver's health, for the deliveries API (a pause that a success asked for and
    /// that has passed shows as `ok`).
    public func receiverHealth() -> [(name: String, health: ReceiverHealth)] {
        let now = clock()
        return state.withLock { s in s.health.sorted { $0.key < $1.key }.map { ($0.key, $0.value.settled(now: now)) } }
    }

    /// Entries in each in-memory map: all of them are back to their idle size once the work
    /// that created them is done (tests and `/metrics` watch this).
    public func trackedSizes() -> [(String, Int)] {
        state.withLock { s in
            [("in_flight", s.inFlight.count), ("carried", s.carried.count), ("queues", s.queues.count),
             ("finished_during_query", s.finishedDuringQuery.count), ("busy_receivers", s.perReceiver.count),
             ("paced", s.pacedUntil.count), ("reviving", s.reviving.count), ("claims", s.claims.values.reduce(0) { $0 + $1.count })]
        }
    }

    /// Forgets the deliveries once their outcome is committed; until then they cannot be
    /// claimed again.
    func finish(_ deliveries: [Delivery]) {
        state.withLock { s in
            for delivery in deliveries {
                s.inFlight.remove(delivery.id)
                s.finishedDuringQuery[delivery.receiver]?.insert(delivery.id)
                // Its outcome ended its claim. (An attempt that ended without one leaves the row
                // claimed and due: the next read claims it again.)
                if s.claims[delivery.receiver]?.remove(delivery.id) != nil, s.claims[delivery.receiver]?.isEmpty == true {
                    s.claims[delivery.receiver] = nil
                }
            }
        }
        attemptsRunning.wrappingSubtract(1, ordering: .relaxed)
        wakeup.wake()
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

    /// Gives back a token taken for a message that was not sent.
    mutating func refund() { tokens = min(burst, tokens + 1) }
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
