import GatehouseCore
import GatehouseStore
import Synchronization

/// The event use cases: ingest (validate, then append durably — bad input is refused naming
/// the field and writes nothing) and the reads behind the events and runs API.
public final class EventService: Sendable {
    public let store: any EventStore
    let intake: EventIntake
    /// `gates:` rules, and the gate service that opens what they match.
    let gateRules: [GateRule]
    let gates: GateService?

    public init(store: any EventStore, intake: EventIntake, gateRules: [GateRule] = [], gates: GateService? = nil) {
        self.store = store
        self.intake = intake
        self.gateRules = gates == nil ? [] : gateRules
        self.gates = gates
    }

    /// Parses `body` as `mediaType` (JSON, NDJSON, CloudEvents structured, batch or binary —
    /// `header` answers lower-case header names for binary mode), validates every event and
    /// appends them in one commit. Throws the `Problem` that says what is wrong.
    public func ingest(_ body: [UInt8], mediaType: EventIntake.MediaType, header: (String) -> String? = { _ in nil }) async throws -> AppendOutcome {
        let events = try intake.events(from: body, mediaType: mediaType, headers: header).get()
        return try await append(events)
    }

    /// Appends validated events; those a gate rule matches open its gate in the same commit.
    /// A rule's template is rendered before anything is written: one that fails for an event
    /// refuses the whole request (422 naming the rule and field, and the event's index).
    public func append(_ events: [Event], now: Timestamp = .now()) async throws -> AppendOutcome {
        guard let gates, !gateRules.isEmpty else { return try await store.append(events) }
        var consequences: [EventConsequence?] = []
        var errors: [FieldError] = []
        var any = false
        let opened = OpenedGates()
        for (index, event) in events.enumerated() {
            var specs: [(rule: String, spec: GateSpec)] = []
            for rule in gateRules where rule.matches(event) {
                switch rule.gate(for: event) {
                case .success(let spec): specs.append((rule.name, spec))
                case .failure(let invalid):
                    for e in invalid.errors { errors.append(FieldError(index: events.count > 1 ? index : nil, field: e.field, detail: e.detail)) }
                }
            }
            consequences.append(specs.isEmpty ? nil : Self.openGates(specs, autoDecide: gates.autoDecide, record: opened, now: now))
            any = any || !specs.isEmpty
        }
        if !errors.isEmpty {
            var problem = Problem.invalid(errors)
            problem.detail = "a gate rule cannot be applied to this event, so it was not accepted: " + problem.detail
            throw problem
        }
        guard any else { return try await store.append(events) }
        let outcome = try await store.append(events, consequences: consequences)
        for gate in opened.all() { gates.announce(gate) }
        return outcome
    }

    /// The gates a commit opened, told to waiters once it is durable.
    final class OpenedGates: Sendable {
        private let list = Mutex<[GateService.Opened]>([])
        func add(_ opened: GateService.Opened) { list.withLock { $0.append(opened) } }
        func all() -> [GateService.Opened] { list.withLock { $0 } }
    }

    /// Opens (or resumes by key) each matched rule's gate inside the event's commit.
    static func openGates(_ specs: [(rule: String, spec: GateSpec)], autoDecide: String?, record: OpenedGates, now: Timestamp) -> EventConsequence {
        { event, tx in
            var events: [Event] = []
            for (rule, spec) in specs {
                let (gate, caused) = try GateService.open(
                    spec, requestedVia: "rule:\(rule)", token: nil, autoDecide: autoDecide, eventAttributes: event.attributes ?? JSONObject(),
                    now: now, tx: tx.gates)
                record.add(gate)
                events += caused
            }
            return events
        }
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
