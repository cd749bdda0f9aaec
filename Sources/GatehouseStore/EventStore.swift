import GatehouseCore

/// The event log, persisted: append (idempotent by id, durable when it returns, with the
/// deliveries each new event causes) and read back by cursor, filter or run.
public protocol EventStore: Sendable {
    /// Told after each commit (SSE streams, waiters, the dispatcher listen).
    var bus: Bus { get }
    func append(_ events: [Event]) async throws -> AppendOutcome
    func events(_ filter: EventFilter) async throws -> [StoredEvent]
    func lastCursor() async throws -> Int64
    func count() async throws -> Int
    func runs(pipeline: String?, status: RunSummary.Status?, limit: Int) async throws -> [RunSummary]
    /// A run's summary and its timeline, oldest first (at most `timelineLimit` events).
    func run(_ run: String, pipeline: String?, timelineLimit: Int) async throws -> (RunSummary, [StoredEvent])?
}

extension EventLog: EventStore {}
