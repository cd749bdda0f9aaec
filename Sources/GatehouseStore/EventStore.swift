import GatehouseCore

/// The event log, persisted: append (idempotent by id, durable when it returns, with the
/// deliveries each new event causes) and read back by cursor, filter or run.
public protocol EventStore: Sendable {
    /// Told after each commit (SSE streams, waiters, the dispatcher listen).
    var bus: Bus { get }
    func append(_ events: [Event]) async throws -> AppendOutcome
    /// The same; `consequences[i]` runs inside the commit if `events[i]` is new (not a
    /// duplicate), and the events it returns are inserted with it.
    func append(_ events: [Event], consequences: [EventConsequence?]) async throws -> AppendOutcome
    /// The same without a task: `completion` is called once the commit ended (on the writer's
    /// thread; it must be quick).
    func append(_ events: [Event], consequences: [EventConsequence?], completion: @escaping @Sendable (Result<AppendOutcome, any Error>) -> Void)
    func events(_ filter: EventFilter) async throws -> [StoredEvent]
    func lastCursor() async throws -> Int64
    func count() async throws -> Int
    func runs(pipeline: String?, status: RunSummary.Status?, limit: Int) async throws -> [RunSummary]
    /// A run's summary and its timeline, oldest first (at most `timelineLimit` events).
    func run(_ run: String, pipeline: String?, timelineLimit: Int) async throws -> (RunSummary, [StoredEvent])?
}

/// What a new event causes inside its own commit (a gate rule's gate): it may write through
/// the transaction and returns further events to insert with it (`gate.opened`). It must not
/// block on anything but the database.
public typealias EventConsequence = @Sendable (Event, any StoreTransaction) throws -> [Event]

/// What a consequence may write through, in the commit of the event that caused it.
public protocol StoreTransaction {
    var gates: any GateTransaction { get }
    var datasets: any DatasetTransaction { get }
}

extension EventLog: EventStore {}
