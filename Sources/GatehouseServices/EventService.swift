import GatehouseCore
import GatehouseStore

/// The event use cases: ingest (validate, then append durably — bad input is refused naming
/// the field and writes nothing) and the reads behind the events and runs API.
public final class EventService: Sendable {
    public let store: any EventStore
    let intake: EventIntake

    public init(store: any EventStore, intake: EventIntake) {
        self.store = store
        self.intake = intake
    }

    /// Parses `body` as `mediaType` (JSON, NDJSON, CloudEvents structured, batch or binary —
    /// `header` answers lower-case header names for binary mode), validates every event and
    /// appends them in one commit. Throws the `Problem` that says what is wrong.
    public func ingest(_ body: [UInt8], mediaType: EventIntake.MediaType, header: (String) -> String? = { _ in nil }) async throws -> AppendOutcome {
        let events = try intake.events(from: body, mediaType: mediaType, headers: header).get()
        return try await store.append(events)
    }

    public func events(_ filter: EventFilter) async throws -> [StoredEvent] { try await store.events(filter) }

    public func runs(pipeline: String?, status: RunSummary.Status?, limit: Int) async throws -> [RunSummary] {
        try await store.runs(pipeline: pipeline, status: status, limit: limit)
    }

    public func run(_ run: String, pipeline: String?, timelineLimit: Int = 1000) async throws -> (RunSummary, [StoredEvent])? {
        try await store.run(run, pipeline: pipeline, timelineLimit: timelineLimit)
    }

    /// Wakes on every commit (for streams).
    public func subscribe() -> BusSubscriber { store.bus.subscribe() }
}
