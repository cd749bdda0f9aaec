import Dispatch
import Foundation
import GatehouseCore
import Synchronization

/// A delivery the routing decided on at commit time, before it has an id.
/// What an event causes at delivery, decided by Delivery's planner inside the event's commit;
/// the store only persists it, in the same transaction.
public struct DeliveryPlan: Sendable, Equatable {
    public var deliveries: [PlannedDelivery]
    /// The event reports a failure: receivers with `send_resolved` or a `repeat_interval`
    /// track its pipeline as failing.
    public var isFailure: Bool
    /// The event reports the pipeline healthy again: what was failing is resolved.
    public var resolvesFailures: Bool

    public init(deliveries: [PlannedDelivery], isFailure: Bool = false, resolvesFailures: Bool = false) {
        self.deliveries = deliveries
        self.isFailure = isFailure
        self.resolvesFailures = resolvesFailures
    }
}

public struct PlannedDelivery: Sendable, Equatable {
    public var receiver: String
    public var route: String
    public var groupKey: String
    /// A new group waits this long for more events before its first message.
    public var groupWait: GatehouseDuration
    /// After a message, a group's new events wait until this long after it.
    public var groupInterval: GatehouseDuration
    public var fallback: String?
    /// `group_by: ['...']`: the event is a group of its own, so there is no group to track.
    public var alone: Bool
    /// The receiver has `send_resolved`: it is told when the failing pipeline next succeeds.
    public var sendResolved = false
    /// While the pipeline keeps failing, remind the receiver this often.
    public var repeatInterval = GatehouseDuration.seconds(4 * 3600)

    public init(receiver: String, route: String, groupKey: String, groupWait: GatehouseDuration, groupInterval: GatehouseDuration, fallback: String?, alone: Bool = false) {
        self.receiver = receiver
        self.route = route
        self.groupKey = groupKey
        self.groupWait = groupWait
        self.groupInterval = groupInterval
        self.fallback = fallback
        self.alone = alone
    }
}

/// One message to one receiver. `id` is stable for the life of the row: it is the
/// `webhook-id` of every attempt.
public struct Delivery: Sendable, Equatable, Codable {
    public enum State: String, Sendable, Codable, CaseIterable {
        /// Waiting for its first attempt.
        case pending
        /// An attempt failed; another is scheduled.
        case failed
        case delivered
        /// Refused for good, or out of time (`max_age`).
        case dead
        /// Not sent: a silence or an inhibition muted it.
        case muted
    }

    public var id: String
    public var event_seq: Int64
    public var receiver: String
    public var route: String
    public var group_key: String
    public var kind: String
    public var state: State
    public var attempts: Int
    public var next_attempt_at: Int64
    public var created_at: Int64
    public var updated_at: Int64
    public var delivered_at: Int64?
    public var last_status: Int?
    public var last_error: String?
    public var response_body: String?
    public var message_id: String?
    public var fallback: String?
    /// For a fallback delivery: the dead delivery it stands in for.
    public var fallback_of: String?
    /// The leader of the message this delivery was sent in (see the schema).
    public var batch_id: String?
    /// When an operator last put it back in line: `max_age` counts from then, not from its
    /// creation, or a delivery that died of old age could never be retried.
    public var retried_at: Int64? = nil

    /// A delivery as `GET /v1/deliveries` shows it.
    public struct Resource: Encodable {
        var id: String
        var event_cursor: String
        var receiver: String
        var route: String
        var group_key: String
        var kind: String
        var state: State
        var attempts: Int
        /// Only while another attempt is due.
        var next_attempt_at: Timestamp?
        var created_at: Timestamp
        var delivered_at: Timestamp?
        var last_status: Int?
        var last_error: String?
        var response_body: String?
        var message_id: String?
        var fallback_of: String?
        var batch_id: String?
    }

    public var resource: Resource {
        Resource(
            id: id, event_cursor: String(event_seq), receiver: receiver, route: route, group_key: group_key, kind: kind,
            state: state, attempts: attempts,
            next_attempt_at: state == .pending || state == .failed ? Timestamp(milliseconds: next_attempt_at) : nil,
            created_at: Timestamp(milliseconds: created_at), delivered_at: delivered_at.map(Timestamp.init(milliseconds:)),
            last_status: last_status, last_error: last_error, response_body: response_body, message_id: message_id,
            fallback_of: fallback_of, batch_id: batch_id)
    }

    public var json: JSONValue { JSONValueEncoder.value(resource) }

    /// A new pending delivery of the same message to the route's fallback receiver.
    public func fallbackDelivery(to receiver: String, now: Timestamp) -> Delivery {
        Delivery(
            id: Delivery.newID(), event_seq: event_seq, receiver: receiver, route: route, group_key: group_key, kind: kind,
            state: .pending, attempts: 0, next_attempt_at: now.milliseconds, created_at: now.milliseconds, updated_at: now.milliseconds,
            delivered_at: nil, last_status: nil, last_error: nil, response_body: nil, message_id: nil, fallback: nil, fallback_of: id, batch_id: nil)
    }

    public static func newID() -> String {
        "msg_" + EventValidator.generateID().dropFirst(4)
    }
}

extension Delivery {
    static let columnNames = [
        "id", "event_seq", "receiver", "route", "group_key", "kind", "state", "attempts", "next_attempt_at", "created_at", "updated_at",
        "delivered_at", "last_status", "last_error", "response_body", "message_id", "fallback", "fallback_of", "batch_id", "retried_at",
    ]
    static let columnCount = columnNames.count

    /// The columns `init(_:at:)` reads, in its order, for a table aliased `alias`.
    static func columns(_ alias: String) -> String { columnNames.map { "\(alias).\($0)" }.joined(separator: ", ") }
    static let selectColumns = columnNames.joined(separator: ", ")

    /// A row read by column index from `row[offset...]` (see `columns`).
    init(_ row: any SQLRow, at o: Int = 0) {
        id = row[o]
        event_seq = row[o + 1]
        receiver = row[o + 2]
        route = row[o + 3]
        group_key = row[o + 4]
        kind = row[o + 5]
        state = State(rawValue: row[o + 6] as String) ?? .pending
        attempts = row[o + 7]
        next_attempt_at = row[o + 8]
        created_at = row[o + 9]
        updated_at = row[o + 10]
        delivered_at = row[o + 11]
        last_status = row[o + 12]
        last_error = row[o + 13]
        response_body = row[o + 14]
        message_id = row[o + 15]
        fallback = row[o + 16]
        fallback_of = row[o + 17]
        batch_id = row[o + 18]
        retried_at = row[o + 19]
    }

    /// Where `max_age` counts from: its creation, or its last retry by an operator.
    public var ageCountsFrom: Int64 { max(created_at, retried_at ?? created_at) }

    /// Every column, in `columnNames` order.
    var arguments: SQLArguments {
        [id, event_seq, receiver, route, group_key, kind, state.rawValue, attempts, next_attempt_at, created_at, updated_at,
         delivered_at, last_status, last_error, response_body, message_id, fallback, fallback_of, batch_id, retried_at]
    }

    /// What a receiver answered, as text both databases keep: PostgreSQL's text cannot hold a
    /// NUL (and SQLite's C-string binding would cut there), so a NUL becomes U+FFFD — a
    /// receiver's reply is shown to people, never compared.
    static func storable(_ text: String) -> String {
        text.utf8.contains(0) ? text.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : text
    }

    static let insertSQL = "INSERT INTO deliveries (\(selectColumns)) VALUES (\(columnNames.map { _ in "?" }.joined(separator: ", ")))"
}

/// A receiver's due rows, and what its later rows look like (see `Outbox.dueAndNext`).
public struct DueRows: Sendable {
    public enum Later: Sendable, Equatable {
        /// It has no row that is not yet due.
        case none
        /// Its next row that is not yet due falls due then.
        case at(Timestamp)
        /// Not known (rows claimed as read: PostgreSQL with replicas).
        case unknown
    }
    public var rows: [(Delivery, StoredEvent)]
    public var later: Later
    public init(rows: [(Delivery, StoredEvent)], later: Later) {
        self.rows = rows
        self.later = later
    }
}

/// A process's claim on the rows it reads to send, where several processes share the database.
/// The claim holds while its process is alive (its `process:` lease in `owners` is current) and
/// for `lastsFor` ms, which the process renews for the rows it still holds: rows a process has
/// queued or in flight are not sent again by another that takes their receiver over; a process
/// that dies mid-send leaves its claims to lapse, and the next holder sends those rows under
/// the same webhook-ids. A claim its process lost track of lapses after `lastsFor`.
public struct DeliveryClaim: Sendable, Equatable {
    public var owner: String
    public var lastsFor: Int64
    public init(owner: String, lastsFor: Int64) {
        self.owner = owner
        self.lastsFor = lastsFor
    }
}

/// A receiver held back after failures or a rate limit, as it is kept across restarts: a
/// restarted server waits out the pause a receiver asked for (a `429` asking for an hour) and
/// probes it first, rather than sending it its whole concurrency at once.
public struct ReceiverHold: Sendable, Equatable {
    /// `backing_off` or `paused_by_rate_limit` (ReceiverHealth.State).
    public var state: String
    public var until: Timestamp?
    public var consecutiveFailures: Int

    public init(state: String, until: Timestamp?, consecutiveFailures: Int) {
        self.state = state
        self.until = until
        self.consecutiveFailures = consecutiveFailures
    }
}

/// The durable outbox, as the dispatcher, the delivery API and the gate notices use it: rows
/// are written in the same transaction as their event (by the event store), claimed when due,
/// and updated with each attempt's outcome.
public protocol Outbox: Sendable {
    /// Saves an attempt's outcome for every delivery it carried (and the fallbacks replacing
    /// dead ones); returns once committed.
    func record(_ deliveries: [Delivery], fallbacks: [Delivery], flushedGroup: (receiver: String, groupKey: String, at: Timestamp)?) async throws
    /// The same, calling `completion` (quick, never blocking) once the outcome is committed or
    /// has failed: the dispatcher's hot path, with no task per delivery.
    func record(
        _ deliveries: [Delivery], fallbacks: [Delivery], flushedGroup: (receiver: String, groupKey: String, at: Timestamp)?,
        completion: @escaping @Sendable ((any Error)?) -> Void)
    /// Re-sends due `repeat_interval` reminders to `receivers` (the configured ones: a
    /// reminder to any other could never be sent); returns how many.
    func fireRepeats(now: Timestamp, receivers: [String]) async throws -> Int
    /// When the next reminder to one of `receivers` falls due.
    func nextRepeatTime(receivers: [String]) async throws -> Timestamp?
    /// The deliveries sent as one message (a digest) with their events.
    func batch(_ batchID: String) async throws -> [(Delivery, StoredEvent)]
    /// A receiver's due deliveries, oldest first, with their events. With `claim` (processes
    /// sharing the database), the rows are claimed for that process, and rows another live
    /// process has claimed are left out.
    func due(receiver: String, now: Timestamp, limit: Int, claim: DeliveryClaim?) async throws -> [(Delivery, StoredEvent)]
    /// The same, and when the receiver's next row that is not yet due falls due, as the same
    /// read saw it: a caller that got every due row (fewer than `limit`) then knows until when
    /// nothing else will be (the dispatcher's hand-off of new rows relies on it).
    func dueAndNext(receiver: String, now: Timestamp, limit: Int, claim: DeliveryClaim?) async throws -> DueRows
    /// Gives back claims on rows read and never attempted (their receiver went to another
    /// process); returns the ids given back (rows another statement held are passed over).
    func release(_ ids: [String], claim: DeliveryClaim) async throws -> [String]
    /// Extends this process's claims on rows it still holds (queued, or in flight) by
    /// `lastsFor`; returns the ids it still has claimed.
    func renew(_ ids: [String], claim: DeliveryClaim) async throws -> [String]
    /// A recovered receiver's backlog becomes due at once; returns how many.
    func reviveBacklog(receiver: String) async throws -> Int
    /// When the receiver's next row falls due (rows another live process claimed left out).
    func nextDueTime(receiver: String, claim: DeliveryClaim?) async throws -> Timestamp?
    /// Drops group state idle past its `group_interval`; returns how many.
    func forgetIdleGroups(now: Timestamp) async throws -> Int
    /// Keeps (or, with nil, forgets) a receiver's hold, with the next group commit; failures
    /// are logged by the caller's completion, never thrown (the hold in memory still rules).
    func saveHold(_ hold: ReceiverHold?, receiver: String, completion: @escaping @Sendable ((any Error)?) -> Void)
    /// Every receiver's kept hold.
    func holds() async throws -> [String: ReceiverHold]
    /// Deliveries to receivers no longer configured die (and their groups, failing pipelines
    /// and holds are forgotten); returns how many.
    func killOrphans(known: [String], now: Timestamp) async throws -> Int
    func list(state: Delivery.State?, receiver: String?, limit: Int) async throws -> [Delivery]
    /// The deliveries a run's events caused, newest first.
    func list(pipeline: String, run: String, limit: Int) async throws -> [Delivery]
    /// A dead or failed delivery due again now; nil when there is no such delivery.
    func retry(_ id: String, now: Timestamp) async throws -> Delivery?
    /// Deliveries still to send.
    func depth() async throws -> Int
    /// A pipeline's recent events (inhibition and resolve notices read them).
    func recentEvents(pipeline: String, run: String?, since: Timestamp, limit: Int) async throws -> [Event]
    /// The chat message id a delivery of this event got (to edit it later).
    func messageID(eventID: String, receiver: String) async throws -> String?
}

// Shorthands with fewer arguments than the requirements (never the same signature: that would
// become a default implementation calling itself in a store that lacks the method).
extension Outbox {
    public func record(_ deliveries: [Delivery]) async throws {
        try await record(deliveries, fallbacks: [], flushedGroup: nil)
    }

    public func record(_ deliveries: [Delivery], flushedGroup: (receiver: String, groupKey: String, at: Timestamp)) async throws {
        try await record(deliveries, fallbacks: [], flushedGroup: flushedGroup)
    }

    public func due(receiver: String, now: Timestamp, limit: Int) async throws -> [(Delivery, StoredEvent)] {
        try await due(receiver: receiver, now: now, limit: limit, claim: nil)
    }

    public func nextDueTime(receiver: String) async throws -> Timestamp? {
        try await nextDueTime(receiver: receiver, claim: nil)
    }

    public func recentEvents(pipeline: String, run: String?, since: Timestamp) async throws -> [Event] {
        try await recentEvents(pipeline: pipeline, run: run, since: since, limit: 200)
    }
}

