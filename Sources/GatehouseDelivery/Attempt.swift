import Foundation
import GatehouseCore
import GatehouseStore
import Logging

/// One message on its way to a receiver, with what its later stages need.
struct Attempt: Sendable {
    /// The queue entry it was started for: freed from the in-flight set when the attempt ends.
    let claimed: [Delivery]
    /// The first claimed row: it holds its receiver's slot for the attempt.
    let lead: Delivery
    let receiver: any Receiver
    /// The deliveries the message carries (its group members due with it), with their events.
    let live: [(Delivery, StoredEvent)]
    /// The rows as they are recorded: `live`'s, named after the message (`batch_id`).
    let rows: [Delivery]
    /// Rows this attempt marked as carried: nobody else sends them until it ends.
    let carried: [String]
    let policy: RetryPolicy
    /// When the oldest carried delivery was created, or retried by an operator (`max_age`
    /// counts from it).
    let oldest: Timestamp
    /// A first send of a group: when it flushed (the group's next flush waits group_interval).
    let flushed: (receiver: String, groupKey: String, at: Timestamp)?
    /// A gate message: its gate and event, for the gate's audit of its notifications.
    let gate: (id: String, event: Event)?
    let request: OutboundRequest
    /// Group members muted at this first send: recorded before the message goes.
    let muted: [Delivery]
}

/// The attempt's stages, as in Alertmanager's notification pipeline: claim its group → mute
/// (silences, inhibition) → check its age → render → send → classify → record. Everything up to
/// the send runs in the dispatcher's loop, in queue order, and awaits only what needs the
/// database (a retried batch, inhibition sources, a gate's notice); the answer is classified
/// and recorded in libcurl's callback and the outcome writer's, so a delivery costs no task of
/// its own and no thread hand-over beyond the send and the commit.
extension Dispatcher {
    /// Starts an attempt for a claimed queue entry (its receiver's slot is already taken).
    /// Attempts are prepared one after another, in queue order, so a receiver's messages leave
    /// oldest first (a recovered receiver's backlog included). The price: a preparation that
    /// reads the database (a retried batch, inhibition sources, a gate's notice) holds the loop
    /// for that read.
    /// `paced`: it took its receiver's pacer token, given back when nothing is sent.
    func start(_ queued: [(Delivery, StoredEvent)], paced: Bool = false) async {
        if let attempt = await prepare(queued) {
            send(attempt)
        } else if paced {
            refundPacer(queued[0].0.receiver)
        }
    }

    /// Muted members are committed before the message goes, so a crash in between cannot
    /// send them later.
    func send(_ attempt: Attempt) {
        let submit: @Sendable () -> Void = { self.client.submit(attempt.request) { response in self.complete(attempt, response) } }
        if attempt.muted.isEmpty { submit() } else { record(attempt.muted, outcome: "muted") { submit() } }
    }

    /// Runs follow-up work of an attempt (a gate's audit of its notification, a recovered
    /// receiver's backlog) as a task the dispatcher waits for before `run` returns.
    func followUp(_ work: @escaping @Sendable () async -> Void) {
        attemptsRunning.wrappingAdd(1, ordering: .relaxed)
        Task {
            await work()
            attemptsRunning.wrappingSubtract(1, ordering: .relaxed)
        }
    }

    /// Claim → mute → age → render. Nil when the attempt ended here: it has then recorded what
    /// it must and freed its slot and rows itself.
    func prepare(_ queued: [(Delivery, StoredEvent)]) async -> Attempt? {
        let lead = queued[0].0
        let claimed = queued.map(\.0)
        let now = clock()
        /// Ends the attempt without an answer from the receiver.
        @Sendable func end(carried: [String]) {
            releaseCarried(carried)
            _ = releaseSlot(lead, verdict: nil)
            newWork(for: lead.receiver)
            finish(claimed)
        }
        guard let receiver = receivers[lead.receiver] else {
            var row = lead
            row.state = .dead
            row.last_error = "receiver \"\(row.receiver)\" is not configured"
            let flushed = lead.batch_id == nil ? (receiver: lead.receiver, groupKey: lead.group_key, at: now) : nil
            record([row], flushed: flushed, outcome: "dead") { end(carried: []) }
            return nil
        }
        // Deliveries carried by a message in flight are not anyone else's to send.
        if state.withLock({ $0.carried.contains(lead.id) }) {
            end(carried: [])
            return nil
        }
        var candidates = queued
        if let batchID = lead.batch_id {
            // A retry sends the batch as it was first sent.
            do {
                candidates = try await outbox.batch(batchID)
            } catch {
                logger.error("could not read a delivery batch", metadata: ["delivery": .string(lead.id), "error": "\(error)"])
                end(carried: [])
                return nil
            }
        }
        let batch = state.withLock { s -> [(Delivery, StoredEvent)] in
            guard !s.carried.contains(lead.id) else { return [] }
            let free = candidates.filter { !s.carried.contains($0.0.id) }
            for (member, _) in free { s.carried.insert(member.id) }
            return free
        }
        // Empty: another message took this delivery along already.
        guard !batch.isEmpty else {
            end(carried: [])
            return nil
        }
        let carried = batch.map(\.0.id)
        let firstSend = lead.batch_id == nil
        // A first send is its group's flush — also when it ends up sending nothing (every
        // event muted, or too old): the group's next events wait for its next tick. A group
        // of one event alone has no next tick to set.
        let flushed = firstSend && !settings.groupsAlone(lead, event: queued[0].1.event)
            ? (receiver: lead.receiver, groupKey: lead.group_key, at: now) : nil

        // Mute: silences and inhibition decide at the first send; a retry repeats what was sent.
        var muted: [Delivery] = []
        var live: [(Delivery, StoredEvent)] = []
        let silences = activeSilences.withLock { $0 }
        for (member, event) in batch {
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
        guard !live.isEmpty else {
            record(muted, flushed: flushed, outcome: "muted") { end(carried: carried) }
            return nil
        }
        // Age: held back while its receiver failed, a message that outlived max_age before its
        // next attempt ends here, unsent (and its fallback takes over). Judged row by row: a
        // row an operator retried, regrouped with older rows of its group, is not given up
        // with them.
        let policy = settings.policy(for: lead.receiver)
        let expired = live.filter { policy.expired(created: Timestamp(milliseconds: $0.0.ageCountsFrom), at: now) }
        if !expired.isEmpty {
            var rows = expired.map(\.0)
            for i in rows.indices {
                rows[i].state = .dead
                rows[i].updated_at = now.milliseconds
                let reason = rows[i].last_error.map { $0.hasPrefix("gave up after ") ? ($0.split(separator: ": ", maxSplits: 1).last.map(String.init) ?? $0) : $0 }
                rows[i].last_error = "gave up after \(rows[i].attempts) attempts (max_age \(policy.schedule.maxAge)): \(reason ?? "never sent")"
            }
            if expired.count == live.count {
                recordDead(rows, flushed: flushed) { end(carried: carried) }
                return nil
            }
            // The rest goes; these stay carried (nobody else takes them) until it has.
            recordDead(rows) {}
            let gone = Set(rows.map(\.id))
            live.removeAll { gone.contains($0.0.id) }
        }
        let oldest = Timestamp(milliseconds: live.map(\.0.ageCountsFrom).min() ?? now.milliseconds)

        // Render. The message is named after its first live delivery: that row leads the batch
        // in the outbox, so a retry finds the whole batch through it.
        let batchID = lead.batch_id ?? live[0].0.id
        let kind: OutboundMessage.Kind = switch lead.kind {
        case "resolved": .resolved
        case "repeat": .repeat
        default: live.count == 1 ? .event : .digest
        }
        var message = OutboundMessage(
            kind: kind, deliveryID: batchID, receiver: lead.receiver,
            groupKey: lead.group_key, events: live.map(\.1), publicURL: settings.publicURL)
        let gateEvent = live.count == 1 ? live[0].1.event : nil
        let gate = gateEvent.flatMap { event in
            event.type.hasPrefix("gate.") ? event.attributes?["gate_id"]?.stringValue.map { (id: $0, event: event) } : nil
        }
        if let gate, let notice = settings.gateNotice {
            message.gate = await notice(gate.id, lead.receiver, gate.event.type)
        }
        var rows = live.map(\.0)
        for i in rows.indices { rows[i].batch_id = batchID }
        var request: OutboundRequest
        do {
            request = try receiver.request(for: message, now: now)
            if let timeout = settings.timeout[lead.receiver] { request.timeout = timeout.seconds }
        } catch {
            for i in rows.indices {
                rows[i].state = .dead
                rows[i].last_error = "could not build the message: \(error)"
                rows[i].updated_at = now.milliseconds
            }
            recordDead(rows, flushed: flushed) { end(carried: carried) }
            return nil
        }
        return Attempt(
            claimed: claimed, lead: lead, receiver: receiver, live: live, rows: rows, carried: carried,
            policy: policy, oldest: oldest, flushed: flushed, gate: gate, request: request, muted: muted)
    }

    /// Classify → record, on libcurl's thread as the answer arrives: quick, never blocking.
    func complete(_ attempt: Attempt, _ response: OutboundResponse) {
        let lead = attempt.lead
        // Abandoned at shutdown: nothing is recorded, the rows stay due and are sent again
        // after the restart under the same webhook-id.
        if response.abandoned {
            releaseCarried(attempt.carried)
            _ = releaseSlot(lead, verdict: nil)
            newWork(for: lead.receiver)
            finish(attempt.claimed)
            return
        }
        let outcome = attempt.receiver.classify(response)
        let verdict = RetryPolicy.verdict(outcome, status: response.status, pause: attempt.receiver.pause(after: response))
        if releaseSlot(lead, verdict: verdict) {
            // The receiver is back: what it missed goes now, oldest first, not on each row's
            // own retry schedule. Rows claimed while it was held are let go, so the next read
            // takes everything in the database's (creation) order.
            followUp {
                if let revived = try? await self.outbox.reviveBacklog(receiver: lead.receiver), revived > 0 {
                    self.logger.info("receiver recovered; sending its backlog", metadata: ["receiver": .string(lead.receiver), "deliveries": .stringConvertible(revived)])
                }
                _ = self.state.withLock { $0.reviving.remove(lead.receiver) }
                self.newWork(for: lead.receiver)
                self.wakeup.wake()
            }
        }
        let finished = clock()
        let attempts = (attempt.rows.map(\.attempts).max() ?? 0) + 1
        var rows = attempt.rows
        for i in rows.indices {
            rows[i].attempts = attempts
            rows[i].updated_at = finished.milliseconds
            rows[i].last_status = response.status == 0 ? nil : response.status
            rows[i].response_body = response.body.isEmpty ? nil : String(response.text.prefix(2000))
        }
        let gate = attempt.gate
        let gateNotified = settings.gateNotified
        /// Ends the attempt once its outcome is committed, and tells the gate's audit.
        @Sendable func end(_ notice: (outcome: String, messageID: String?)?) {
            releaseCarried(attempt.carried)
            finish(attempt.claimed)
            if let gate, let notice, let gateNotified {
                followUp { await gateNotified(gate.id, lead.receiver, gate.event.type, notice.outcome, notice.messageID) }
            }
        }
        @Sendable func dead(_ rows: [Delivery]) {
            let reason = rows.first?.last_error ?? ""
            recordDead(rows, flushed: attempt.flushed) { end(("dead: " + reason, nil)) }
        }
        let decision = attempt.policy.decide(outcome, attempts: attempts, created: attempt.oldest, now: finished, random: PooledRandom.fraction())
        switch decision {
        case .delivered(let messageID):
            for i in rows.indices {
                rows[i].state = .delivered
                rows[i].delivered_at = finished.milliseconds
                rows[i].last_error = nil
                rows[i].message_id = messageID
            }
            let latency = metrics.latency(lead.receiver)
            for (_, event) in attempt.live { latency.recordMilliseconds(max(0, finished.milliseconds - event.receivedAt.milliseconds)) }
            record(rows, flushed: attempt.flushed, outcome: "delivered") { end(("delivered", messageID)) }
        case .retry(let next, let reason):
            for i in rows.indices {
                rows[i].state = .failed
                rows[i].next_attempt_at = next.milliseconds
                rows[i].last_error = reason
            }
            logger.info("delivery failed; will retry", metadata: [
                "delivery": .string(lead.id), "receiver": .string(lead.receiver), "reason": .string(reason),
                "in_ms": .stringConvertible(next.milliseconds - finished.milliseconds)])
            record(rows, flushed: attempt.flushed, outcome: "retry") { end(nil) }
        case .dead(let reason):
            for i in rows.indices {
                rows[i].state = .dead
                rows[i].last_error = reason
            }
            dead(rows)
        }
    }

    func releaseCarried(_ ids: [String]) {
        guard !ids.isEmpty else { return }
        state.withLock { s in for id in ids { s.carried.remove(id) } }
    }

    func muteReason(_ event: Event, now: Timestamp, silences active: [Silence]) async -> String? {
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
    func recordDead(_ rows: [Delivery], flushed: (receiver: String, groupKey: String, at: Timestamp)? = nil, then: @escaping @Sendable () -> Void) {
        let now = clock()
        let fallbacks = rows.compactMap { row -> Delivery? in
            guard let name = row.fallback, name != row.receiver, row.fallback_of == nil else { return nil }
            return row.fallbackDelivery(to: name, now: now)
        }
        logger.warning("delivery dead", metadata: ["deliveries": .stringConvertible(rows.count), "receiver": .string(rows.first?.receiver ?? ""), "reason": .string(rows.first?.last_error ?? "")])
        record(rows, fallbacks: fallbacks, flushed: flushed, outcome: "dead", then: then)
    }

    /// Saves an outcome; `then` runs once it is committed or has failed (then the rows stay
    /// due and are sent again: at-least-once).
    func record(
        _ rows: [Delivery], fallbacks: [Delivery] = [], flushed: (receiver: String, groupKey: String, at: Timestamp)? = nil, outcome: String,
        then: @escaping @Sendable () -> Void
    ) {
        let metrics = metrics
        let logger = logger
        outbox.record(rows, fallbacks: fallbacks, flushedGroup: flushed) { error in
            if let error {
                logger.error("could not record a delivery outcome", metadata: ["delivery": .string(rows.first?.id ?? ""), "error": "\(error)"])
            } else if let receiver = rows.first?.receiver {
                metrics.outcomes(receiver, outcome).increment(by: rows.count)
            }
            // A retry scheduled, a fallback added, or rows left due by a failed write: the
            // next read may find something (a delivered or muted row only leaves).
            // The rows are all their receiver's; a fallback is another receiver's.
            if !fallbacks.isEmpty {
                self.newWork()
            } else if error != nil || (outcome != "delivered" && outcome != "muted") {
                if let receiver = rows.first?.receiver { self.newWork(for: receiver) } else { self.newWork() }
            }
            then()
        }
    }
}
