import Crypto
import Foundation
import GatehouseCore

/// The outbox in the store's database. Outcomes join the event log's group commits (one
/// writer for everything), so thousands of deliveries a second cost a few hundred commits, not
/// thousands, and no second queue contends for the database's writer.
public final class SQLOutbox: Outbox {
    public let log: EventLog
    public var database: any StoreDatabase { log.database }

    public init(log: EventLog) { self.log = log }

    /// Saves an attempt's outcome for every delivery it carried (and the fallbacks replacing
    /// dead ones); returns once committed.
    public func record(_ deliveries: [Delivery], fallbacks: [Delivery], flushedGroup: (receiver: String, groupKey: String, at: Timestamp)?) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            record(deliveries, fallbacks: fallbacks, flushedGroup: flushedGroup) { error in
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            }
        }
    }

    /// The same, calling `completion` (on the writer's queue: quick, never blocking) once the
    /// outcome is committed or has failed.
    public func record(
        _ deliveries: [Delivery], fallbacks: [Delivery], flushedGroup: (receiver: String, groupKey: String, at: Timestamp)?,
        completion: @escaping @Sendable ((any Error)?) -> Void
    ) {
        let flushed = flushedGroup.map { ($0.receiver, $0.groupKey, $0.at.milliseconds) }
        log.write({ db in try Self.write(deliveries, fallbacks: fallbacks, flushed: flushed, db: db) }, completion: completion)
    }

    /// What an attempt changes, bound by hand.
    static func write(_ deliveries: [Delivery], fallbacks: [Delivery], flushed: (String, String, Int64)?, db: any SQLSession) throws {
        // An outcome ends the claim of the process that sent (PostgreSQL: see `claimDue`), so
        // a retry may go out from whichever process then holds the receiver.
        let endClaim = db.dialect == .postgres ? ", claimed_by = NULL, claim_until = NULL" : ""
        for d in deliveries {
            try db.execute("""
                UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at = ?, updated_at = ?, delivered_at = ?, last_status = ?,
                    last_error = ?, response_body = ?, message_id = ?, batch_id = ?\(endClaim) WHERE id = ?
                """, [
                    d.state.rawValue, d.attempts, d.next_attempt_at, d.updated_at, d.delivered_at, d.last_status,
                    d.last_error.map(Delivery.storable), d.response_body.map(Delivery.storable), d.message_id.map(Delivery.storable), d.batch_id, d.id,
                ])
        }
        // A dead delivery goes to its fallback once: one retried by hand that dies again does
        // not page the fallback a second time (deliveries_by_fallback_of finds the first).
        for fallback in fallbacks {
            if let original = fallback.fallback_of, try db.exists("SELECT 1 FROM deliveries WHERE fallback_of = ?", [original]) { continue }
            try db.execute(Delivery.insertSQL, fallback.arguments)
        }
        if let (receiver, group, at) = flushed {
            // Later events of the group wait for group_interval after this flush; rows that
            // joined a flush already scheduled keep their time. A slow flush answered after a
            // later one does not move the group's last flush back.
            try db.execute("""
                UPDATE alert_groups SET last_flush_at = CASE WHEN last_flush_at > ? THEN last_flush_at ELSE ? END,
                    next_flush_at = CASE WHEN next_flush_at <= ? THEN NULL ELSE next_flush_at END
                WHERE receiver = ? AND group_key = ?
                """, [at, at, at, receiver, Self.groupRowKey(group)])
        }
    }

    /// A group's key in `alert_groups`: as built up to 1,024 bytes, a longer one (`group_by`
    /// over long labels: up to 1,024 characters each) cut to its first 900 bytes and followed by
    /// the SHA-256 of the whole — PostgreSQL's B-tree refuses a key past ~2.7 KB. Messages
    /// keep showing the whole key (it is the delivery's `group_key`).
    static func groupRowKey(_ key: String) -> String {
        guard key.utf8.count > 1024 else { return key }
        var cut = ""
        for scalar in key.unicodeScalars {
            guard cut.utf8.count + UTF8.width(scalar) <= 900 else { break }
            cut.unicodeScalars.append(scalar)
        }
        return cut + "…sha256:" + SHA256.hash(data: Array(key.utf8)).hexString
    }

    /// Writes an event's deliveries (inside its commit). Each joins its aggregation group: a
    /// new group flushes after `group_wait`; a group with a flush still to come adds to it; a
    /// group whose flush has come, or that flushed lately, waits for its next tick,
    /// `group_interval` on (Alertmanager's rules).
    /// Returns the rows it inserted.
    static func insert(_ plans: [PlannedDelivery], eventSeq: Int64, pipeline: String, isFailure: Bool, now: Timestamp, db: any SQLSession) throws -> [Delivery] {
        var inserted: [Delivery] = []
        inserted.reserveCapacity(plans.count)
        for plan in plans {
            // (next_flush_at, last_flush_at) of the plan's group, when it has one.
            let group: (Int64?, Int64?)? = plan.alone ? nil : try db.first(
                "SELECT next_flush_at, last_flush_at FROM alert_groups WHERE receiver = ? AND group_key = ?", [plan.receiver, Self.groupRowKey(plan.groupKey)]
            ) { ($0[0] as Int64?, $0[1] as Int64?) }
            let due: Int64
            let interval = plan.groupInterval.milliseconds
            if let next = group?.0, next >= now.milliseconds || interval <= 0 {
                due = next
            } else if let next = group?.0 {
                // The flush has come and may be on its way: its outcome, which records it,
                // comes only with the receiver's answer. The event waits for the group's next
                // tick, as in Alertmanager — not a message of its own at once.
                let behind = now.milliseconds - next
                due = next + (behind + interval - 1) / interval * interval
            } else if let last = group?.1 {
                // Flushed, nothing pending since: within its interval the event waits for the
                // interval's end. A group idle longer than that starts afresh, as Alertmanager's
                // new group does: it waits group_wait, so a burst goes as one digest (the first
                // event went alone at once, the rest an interval later).
                due = now.milliseconds >= last + interval ? now.milliseconds + plan.groupWait.milliseconds : last + interval
            } else {
                due = now.milliseconds + plan.groupWait.milliseconds
            }
            if !plan.alone && group?.0 != due {
                try db.execute("""
                    INSERT INTO alert_groups (receiver, group_key, next_flush_at, last_flush_at, group_interval_ms) VALUES (?, ?, ?, NULL, ?)
                    ON CONFLICT (receiver, group_key) DO UPDATE SET next_flush_at = excluded.next_flush_at, group_interval_ms = excluded.group_interval_ms
                    """, [plan.receiver, Self.groupRowKey(plan.groupKey), due, plan.groupInterval.milliseconds])
            }
            let delivery = Delivery(
                id: Delivery.newID(), event_seq: eventSeq, receiver: plan.receiver, route: plan.route, group_key: plan.groupKey, kind: "event",
                state: .pending, attempts: 0, next_attempt_at: due, created_at: now.milliseconds, updated_at: now.milliseconds,
                delivered_at: nil, last_status: nil, last_error: nil, response_body: nil, message_id: nil, fallback: plan.fallback,
                fallback_of: nil, batch_id: nil)
            try db.execute("""
                INSERT INTO deliveries (id, event_seq, receiver, route, group_key, kind, state, attempts, next_attempt_at, created_at, updated_at, fallback)
                VALUES (?, ?, ?, ?, ?, 'event', 'pending', 0, ?, ?, ?, ?)
                """, SQLArguments(values: [
                    .text(delivery.id), .int(eventSeq), .text(plan.receiver), .text(plan.route), .text(plan.groupKey), .int(due),
                    .int(now.milliseconds), .int(now.milliseconds), plan.fallback.map(SQLValue.text) ?? .null,
                ]))
            inserted.append(delivery)
            if isFailure {
                // The pipeline is failing for this receiver until a run succeeds; a fresh
                // failure restarts the reminder clock.
                try db.execute("""
                    INSERT INTO failing_pipelines (receiver, pipeline, route, since, last_event_seq, repeat_ms, next_repeat_at, send_resolved)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (receiver, pipeline) DO UPDATE SET route = excluded.route, last_event_seq = excluded.last_event_seq,
                        repeat_ms = excluded.repeat_ms, next_repeat_at = excluded.next_repeat_at, send_resolved = excluded.send_resolved
                    """, SQLArguments(values: [
                        .text(plan.receiver), .text(pipeline), .text(plan.route), .int(now.milliseconds), .int(eventSeq),
                        .int(plan.repeatInterval.milliseconds), .int(due + plan.repeatInterval.milliseconds), .int(plan.sendResolved ? 1 : 0),
                    ]))
            }
        }
        return inserted
    }

    /// A successful run of a pipeline that receivers were told was failing: one `resolved`
    /// delivery to each of them, and the pipeline is no longer failing for them.
    /// Returns how many it created.
    @discardableResult
    static func resolve(pipeline: String, eventSeq: Int64, now: Timestamp, db: any SQLSession) throws -> Int {
        let failing = try db.all("SELECT receiver, route FROM failing_pipelines WHERE pipeline = ? AND send_resolved <> 0", [pipeline]) {
            ($0[0] as String, $0[1] as String)
        }
        try db.execute("DELETE FROM failing_pipelines WHERE pipeline = ?", [pipeline])
        for (receiver, route) in failing {
            let id = Delivery.newID()
            try db.execute("""
                INSERT INTO deliveries (id, event_seq, receiver, route, group_key, kind, state, attempts, next_attempt_at, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, 'resolved', 'pending', 0, ?, ?, ?)
                """, [id, eventSeq, receiver, route, "resolved|\(pipeline)|\(id)", now.milliseconds, now.milliseconds, now.milliseconds])
        }
        return failing.count
    }

    /// Reminders that fell due: for each pipeline still failing past its receiver's
    /// repeat_interval, a `repeat` delivery of its latest failure. Returns how many.
    @discardableResult
    public func fireRepeats(now: Timestamp, receivers: [String]) async throws -> Int {
        guard !receivers.isEmpty else { return 0 }
        return try await database.write { db in
            let due = try db.all(
                "SELECT receiver, pipeline, route, last_event_seq, repeat_ms FROM failing_pipelines WHERE next_repeat_at <= ? AND receiver IN (\(Self.placeholders(receivers.count)))",
                [now.milliseconds] + SQLArguments(receivers)
            ) { ($0[0] as String, $0[1] as String, $0[2] as String, $0[3] as Int64, $0[4] as Int64) }
            for (receiver, pipeline, route, lastEventSeq, repeatMs) in due {
                let id = Delivery.newID()
                try db.execute("""
                    INSERT INTO deliveries (id, event_seq, receiver, route, group_key, kind, state, attempts, next_attempt_at, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, 'repeat', 'pending', 0, ?, ?, ?)
                    """, [id, lastEventSeq, receiver, route, "repeat|\(pipeline)|\(id)", now.milliseconds, now.milliseconds, now.milliseconds])
                try db.execute(
                    "UPDATE failing_pipelines SET next_repeat_at = ? WHERE receiver = ? AND pipeline = ?",
                    [now.milliseconds + repeatMs, receiver, pipeline])
            }
            return due.count
        }
    }

    /// When the next reminder falls due, if any pipeline is failing.
    public func nextRepeatTime(receivers: [String]) async throws -> Timestamp? {
        guard !receivers.isEmpty else { return nil }
        return try await database.read { db in
            try db.value(
                Int64.self, "SELECT MIN(next_repeat_at) FROM failing_pipelines WHERE receiver IN (\(Self.placeholders(receivers.count)))",
                SQLArguments(receivers)
            ).map(Timestamp.init(milliseconds:))
        }
    }

    private static func placeholders(_ count: Int) -> String {
        Array(repeating: "?", count: count).joined(separator: ",")
    }

    /// The deliveries of a message being retried, as first sent (same content under the same
    /// `webhook-id`), with their events; the leader first.
    public func batch(_ batchID: String) async throws -> [(Delivery, StoredEvent)] {
        try await database.read { db in
            var members = try db.all(
                "SELECT \(Delivery.selectColumns) FROM deliveries WHERE batch_id = ? AND state IN ('pending','failed') ORDER BY rowid", [batchID]
            ) { Delivery($0) }
            if let index = members.firstIndex(where: { $0.id == batchID }) { members.insert(members.remove(at: index), at: 0) }
            let seqs = Array(Set(members.map(\.event_seq)))
            guard !seqs.isEmpty else { return [] }
            var bySeq: [Int64: StoredEvent] = [:]
            let sql = "SELECT \(EventRow.selectColumns) FROM events WHERE seq IN (\(seqs.map { _ in "?" }.joined(separator: ",")))"
            try db.query(sql, SQLArguments(seqs)) { row in
                let e = EventRow.storedEvent(row)
                bySeq[e.cursor] = e
            }
            return members.compactMap { m in bySeq[m.event_seq].map { (m, $0) } }
        }
    }

    /// A receiver's due rows with their events, oldest first: one cached statement, rows
    /// decoded by column index (this runs for every batch the dispatcher claims).
    public func due(receiver: String, now: Timestamp, limit: Int, claim: DeliveryClaim?) async throws -> [(Delivery, StoredEvent)] {
        try await dueAndNext(receiver: receiver, now: now, limit: limit, claim: claim).rows
    }

    /// One statement reads the receiver's rows in due order, due or not, one more than
    /// `limit`: the due ones come first, and the first that is not due yet (if the read got
    /// that far) says when the next one falls due. Only that one row is decoded past the due ones.
    public func dueAndNext(receiver: String, now: Timestamp, limit: Int, claim: DeliveryClaim?) async throws -> DueRows {
        if let claim, database.dialect == .postgres {
            return DueRows(rows: try await claimDue(receiver: receiver, now: now, limit: limit, claim: claim), later: .unknown)
        }
        return try await database.read { db in
            var rows: [(Delivery, StoredEvent)] = []
            var seen = 0
            var later = DueRows.Later.none
            try db.query("""
                SELECT \(Delivery.columns("d")), \(EventRow.columns("e"))
                FROM deliveries d JOIN events e ON e.seq = d.event_seq
                WHERE d.receiver = ? AND d.state IN ('pending','failed') AND (d.batch_id IS NULL OR d.batch_id = d.id)
                ORDER BY d.next_attempt_at, d.rowid LIMIT ?
                """, [receiver, limit + 1]) { row in
                seen += 1
                let at: Int64 = row[8]
                if at > now.milliseconds {
                    if later == .none { later = .at(Timestamp(milliseconds: at)) }
                } else if rows.count < limit {
                    rows.append((Delivery(row, at: 0), EventRow.storedEvent(row, at: Delivery.columnCount)))
                }
            }
            // limit + 1 rows all due: more are due than were asked for, and what comes after
            // them is unknown.
            if seen > limit, later == .none { later = .unknown }
            return DueRows(rows: rows, later: later)
        }
    }

    /// Rows nobody else holds: unclaimed, claimed by this process, or claimed by a process whose
    /// claim ran out or whose `process:` lease lapsed (it died, or was cut off long enough for
    /// another to take its receivers). PostgreSQL only (`owners` is its table).
    static let claimable = """
        (d.claimed_by IS NULL OR d.claimed_by = ? OR d.claim_until < \(databaseNowMilliseconds)
         OR NOT EXISTS (SELECT 1 FROM owners o WHERE o.name = 'process:' || d.claimed_by AND o.until > \(databaseNowMilliseconds)))
        """

    /// Due rows claimed in one statement: `FOR UPDATE SKIP LOCKED` passes over rows another
    /// statement holds (an outcome being written, another process's claim being taken), and
    /// the claim is written before the rows are handed out. It runs outside the commit lock —
    /// it changes only the claim columns, under row locks — so claiming never waits on commits.
    private func claimDue(receiver: String, now: Timestamp, limit: Int, claim: DeliveryClaim) async throws -> [(Delivery, StoredEvent)] {
        let rowidIndex = Delivery.columnCount + EventRow.columnCount
        let rows = try await database.read { db in
            try db.all("""
                WITH due AS (
                    SELECT d.rowid FROM deliveries d
                    WHERE d.receiver = ? AND d.state IN ('pending','failed') AND d.next_attempt_at <= ? AND (d.batch_id IS NULL OR d.batch_id = d.id)
                      AND \(Self.claimable)
                    ORDER BY d.next_attempt_at, d.rowid LIMIT ?
                    FOR UPDATE OF d SKIP LOCKED
                )
                UPDATE deliveries d SET claimed_by = ?, claim_until = \(databaseNowMilliseconds) + ?
                FROM due, events e WHERE d.rowid = due.rowid AND e.seq = d.event_seq
                RETURNING \(Delivery.columns("d")), \(EventRow.columns("e")), d.rowid
                """, [receiver, now.milliseconds, claim.owner, limit, claim.owner, claim.lastsFor]) { row in
                (Delivery(row, at: 0), EventRow.storedEvent(row, at: Delivery.columnCount), row.int64(rowidIndex))
            }
        }
        // RETURNING has no order: put them back in the order they fell due.
        return rows.sorted { ($0.0.next_attempt_at, $0.2) < ($1.0.next_attempt_at, $1.2) }.map { ($0.0, $0.1) }
    }

    public func release(_ ids: [String], claim: DeliveryClaim) async throws -> [String] {
        try await updateClaims(ids, claim: claim, set: "claimed_by = NULL, claim_until = NULL", [])
    }

    public func renew(_ ids: [String], claim: DeliveryClaim) async throws -> [String] {
        _ = try await updateClaims(ids, claim: claim, set: "claim_until = \(databaseNowMilliseconds) + ?", [claim.lastsFor])
        // Which are still this process's, locked or not at this moment (a row another
        // statement held was passed over above, keeps its claim, and is renewed next time).
        let arguments: SQLArguments = [claim.owner, ids.joined(separator: "\n")]
        return try await database.read { db in
            try db.values(String.self, "SELECT id FROM deliveries WHERE claimed_by = ? AND id = ANY(string_to_array(?, E'\\n'))", arguments)
        }
    }

    /// Changes this process's claims on `ids` with one statement whatever their count (ids
    /// hold no newline). Rows another statement holds are passed over, never waited for, as in
    /// `claimDue`: a multi-row update waiting on row locks could deadlock with a commit's.
    /// Returns the ids changed.
    private func updateClaims(_ ids: [String], claim: DeliveryClaim, set: String, _ values: SQLArguments) async throws -> [String] {
        guard database.dialect == .postgres, !ids.isEmpty else { return [] }
        // In the order the placeholders appear: the CTE's two, then those of `set`.
        let arguments = [claim.owner, ids.joined(separator: "\n")] + values
        return try await database.read { db in
            try db.values(String.self, """
                WITH mine AS (
                    SELECT rowid FROM deliveries WHERE claimed_by = ? AND id = ANY(string_to_array(?, E'\\n'))
                    ORDER BY rowid FOR UPDATE SKIP LOCKED
                )
                UPDATE deliveries d SET \(set) FROM mine WHERE d.rowid = mine.rowid RETURNING d.id
                """, arguments)
        }
    }

    /// A receiver came back after failing: the deliveries that failed with it are due again
    /// now, in the order they were created, instead of each on its own back-off. A delivery
    /// that failed three times or more keeps its back-off: it may be the message, not the
    /// receiver, that fails, and must not pause the receiver again at every recovery.
    /// Returns how many.
    public func reviveBacklog(receiver: String) async throws -> Int {
        try await database.write { db in
            try db.execute("""
                UPDATE deliveries SET next_attempt_at = created_at
                WHERE receiver = ? AND state IN ('pending', 'failed') AND state = 'failed' AND attempts < 3 AND next_attempt_at > created_at
                """, [receiver])
        }
    }

    /// When a receiver's next row falls due, if it has any.
    public func nextDueTime(receiver: String, claim: DeliveryClaim?) async throws -> Timestamp? {
        let claimant = database.dialect == .postgres ? claim?.owner : nil
        let arguments: SQLArguments = claimant.map { [receiver, $0] } ?? [receiver]
        return try await database.read { db in
            try db.value(
                Int64.self,
                """
                SELECT MIN(d.next_attempt_at) FROM deliveries d WHERE d.receiver = ? AND d.state IN ('pending','failed') AND (d.batch_id IS NULL OR d.batch_id = d.id)
                \(claimant != nil ? "AND " + Self.claimable : "")
                """,
                arguments
            ).map(Timestamp.init(milliseconds:))
        }
    }

    /// Forgets groups that have nothing pending and flushed longer than their group_interval
    /// ago: their next event opens the group afresh (with group_wait), as in Alertmanager.
    @discardableResult
    public func forgetIdleGroups(now: Timestamp) async throws -> Int {
        try await database.write { db in
            try db.execute("DELETE FROM alert_groups WHERE next_flush_at IS NULL AND last_flush_at + group_interval_ms < ?", [now.milliseconds])
        }
    }

    /// Ends deliveries to receivers the config no longer has (they could never be sent), and
    /// forgets those receivers' groups and failing pipelines: a group with a flush still to
    /// come is never swept (`forgetIdleGroups`), and a failing pipeline would be reminded of
    /// forever. Returns how many deliveries it ended.
    @discardableResult
    public func killOrphans(known: [String], now: Timestamp) async throws -> Int {
        try await database.write { db in
            let filter = known.isEmpty ? "" : "receiver NOT IN (\(Self.placeholders(known.count)))"
            let ended = try db.execute(
                "UPDATE deliveries SET state = 'dead', last_error = 'receiver ' || receiver || ' is not configured', updated_at = ? WHERE state IN ('pending','failed') \(filter.isEmpty ? "" : "AND " + filter)",
                [now.milliseconds] + SQLArguments(known))
            try db.execute("DELETE FROM alert_groups \(filter.isEmpty ? "" : "WHERE " + filter)", SQLArguments(known))
            try db.execute("DELETE FROM failing_pipelines \(filter.isEmpty ? "" : "WHERE " + filter)", SQLArguments(known))
            try db.execute("DELETE FROM receiver_holds \(filter.isEmpty ? "" : "WHERE " + filter)", SQLArguments(known))
            return ended
        }
    }

    public func saveHold(_ hold: ReceiverHold?, receiver: String, completion: @escaping @Sendable ((any Error)?) -> Void) {
        log.write({ db in
            if let hold {
                try db.execute("""
                    INSERT INTO receiver_holds (receiver, state, until, consecutive_failures) VALUES (?, ?, ?, ?)
                    ON CONFLICT (receiver) DO UPDATE SET state = excluded.state, until = excluded.until,
                        consecutive_failures = excluded.consecutive_failures
                    """, [receiver, hold.state, hold.until?.milliseconds, hold.consecutiveFailures])
            } else {
                try db.execute("DELETE FROM receiver_holds WHERE receiver = ?", [receiver])
            }
        }, completion: completion)
    }

    public func holds() async throws -> [String: ReceiverHold] {
        try await database.read { db in
            var holds: [String: ReceiverHold] = [:]
            try db.query("SELECT receiver, state, until, consecutive_failures FROM receiver_holds", []) { row in
                holds[row[0] as String] = ReceiverHold(
                    state: row[1], until: (row[2] as Int64?).map { Timestamp(milliseconds: $0) }, consecutiveFailures: row[3])
            }
            return holds
        }
    }

    public func list(state: Delivery.State?, receiver: String?, limit: Int) async throws -> [Delivery] {
        try await database.read { db in
            var clauses: [String] = []
            var arguments: SQLArguments = []
            if let state { clauses.append("state = ?"); arguments.append(state.rawValue) }
            if let receiver { clauses.append("receiver = ?"); arguments.append(receiver) }
            arguments.append(limit)
            // Unfiltered, newest first by insertion: no index gives `created_at` order over all
            // rows, so that sorted the whole table (0.1 s at 90,000 deliveries, growing with
            // it); rows are inserted with the commit's time, so the two orders agree.
            let order = clauses.isEmpty ? "rowid DESC" : "created_at DESC, rowid DESC"
            let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            return try db.all(
                "SELECT \(Delivery.selectColumns) FROM deliveries \(whereClause) ORDER BY \(order) LIMIT ?", arguments
            ) { Delivery($0) }
        }
    }

    public func list(pipeline: String, run: String, limit: Int) async throws -> [Delivery] {
        try await database.read { db in
            try db.all("""
                SELECT \(Delivery.columns("d")) FROM deliveries d JOIN events e ON e.seq = d.event_seq
                WHERE e.run = ? AND e.pipeline = ? ORDER BY d.created_at DESC, d.rowid DESC LIMIT ?
                """, [run, pipeline, limit]) { Delivery($0) }
        }
    }

    /// Puts a dead or failed delivery back in line now. nil when there is no such delivery;
    /// the row unchanged when it is not retryable (pending or delivered).
    public func retry(_ id: String, now: Timestamp) async throws -> Delivery? {
        try await database.write { db in
            let select = "SELECT \(Delivery.selectColumns) FROM deliveries WHERE id = ?"
            guard let row = try db.first(select, [id], { Delivery($0) }) else { return nil }
            guard row.state == .dead || row.state == .failed || row.state == .muted else { return row }
            // A retry is its own message: it leaves its old batch and the dispatcher groups it
            // afresh with whatever else of its group is due.
            try db.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, updated_at = ?, retried_at = ?, batch_id = NULL WHERE id = ? OR (batch_id = ? AND state = ?)",
                [now.milliseconds, now.milliseconds, now.milliseconds, id, row.batch_id ?? id, row.state.rawValue])
            return try db.first(select, [id], { Delivery($0) })
        }
    }

    public func depth() async throws -> Int {
        try await database.read { db in try db.value(Int.self, "SELECT COUNT(*) FROM deliveries WHERE state IN ('pending','failed')") ?? 0 }
    }

    /// Recent events of a pipeline/run, for inhibition checks: of its last `limit` events,
    /// those received since `since`.
    ///
    /// The last `limit` are taken first, then filtered by time: with the time a condition of
    /// the index walk itself, newest first, SQLite cannot know that once one row is older all
    /// the rest are, and with fewer than `limit` recent events it read the pipeline's whole
    /// history — per message sent while inhibition rules are set (2.5 ms at 1,800 events in the
    /// pipeline, growing with it). Events are received in `seq` order, so the last `limit` hold
    /// every recent one there is room for.
    public func recentEvents(pipeline: String, run: String?, since: Timestamp, limit: Int) async throws -> [Event] {
        try await database.read { db in
            let last = run == nil
                ? "SELECT * FROM events WHERE pipeline = ? ORDER BY seq DESC LIMIT ?"
                : "SELECT * FROM events WHERE run = ? AND pipeline = ? ORDER BY seq DESC LIMIT ?"
            let arguments: SQLArguments = run.map { [$0, pipeline, limit, since.milliseconds] } ?? [pipeline, limit, since.milliseconds]
            return try db.all(
                "SELECT \(EventRow.selectColumns) FROM (\(last)) AS recent WHERE received_at >= ? ORDER BY seq DESC", arguments
            ) { EventRow.storedEvent($0).event }
        }
    }

    /// The platform message id recorded for the delivery of event `eventID` to `receiver`
    /// (Discord answers it with `?wait=true`): what a later edit addresses.
    public func messageID(eventID: String, receiver: String) async throws -> String? {
        try await database.read { db in
            try db.value(String.self, """
                SELECT d.message_id FROM deliveries d JOIN events e ON e.seq = d.event_seq
                WHERE e.id = ? AND d.receiver = ? AND d.message_id IS NOT NULL ORDER BY d.delivered_at DESC LIMIT 1
                """, [eventID, receiver])
        }
    }
}
