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
    /// `labelling:` rules, and the dataset service that adds what they take.
    let labellingRules: [LabellingRule]
    let datasets: DatasetService?

    public init(
        store: any EventStore, intake: EventIntake, gateRules: [GateRule] = [], gates: GateService? = nil,
        labellingRules: [LabellingRule] = [], datasets: DatasetService? = nil
    ) {
        self.store = store
        self.intake = intake
        self.gateRules = gates == nil ? [] : gateRules
        self.gates = gates
        self.labellingRules = datasets == nil ? [] : labellingRules
        self.datasets = datasets
    }

    /// Parses `body` as `mediaType` (JSON, NDJSON, CloudEvents structured, batch or binary —
    /// `header` answers lower-case header names for binary mode), validates every event and
    /// appends them in one commit. Throws the `Problem` that says what is wrong.
    public func ingest(_ body: [UInt8], mediaType: EventIntake.MediaType, header: (String) -> String? = { _ in nil }) async throws -> AppendOutcome {
        let events = try intake.events(from: body, mediaType: mediaType, headers: header).get()
        // gate.* and dataset.* events are the server's word: a pipeline that could send
        // `gate.approved` could resume another pipeline (CloudEvents, rules) with nobody deciding.
        let reserved = events.enumerated().filter { Self.isReserved($0.element.type) }
        if !reserved.isEmpty {
            throw Problem.invalid(reserved.map { index, event in
                FieldError(index: events.count > 1 ? index : nil, field: "type", detail: "\"\(event.type)\" is reserved: gate.* and dataset.* events come from Gatehouse itself")
            })
        }
        return try await append(events)
    }

    /// `ingest` for a caller that is not a task (the HTTP front end's fast path), when nothing
    /// but the store is involved: the body parses and validates, no event is reserved, and no
    /// gate or labelling rule matches any event. Then the events are appended and `completion`
    /// is called on the writer's thread once committed, and it returns true. Otherwise it does
    /// nothing and returns false: the caller takes `ingest`, which answers the error or runs
    /// the rules (so what is refused, and how, is decided in one place).
    public func ingestWithoutTask(
        _ body: [UInt8], mediaType: EventIntake.MediaType, header: (String) -> String? = { _ in nil },
        completion: @escaping @Sendable (Result<AppendOutcome, any Error>) -> Void
    ) -> Bool {
        guard case .success(let events) = intake.events(from: body, mediaType: mediaType, headers: header) else { return false }
        for event in events {
            if Self.isReserved(event.type) { return false }
            if gateRules.contains(where: { $0.matches(event) }) || labellingRules.contains(where: { $0.matches(event) }) { return false }
        }
        store.append(events, consequences: [], completion: completion)
        return true
    }

    /// Event types only the server emits.
    public static func isReserved(_ type: String) -> Bool { type.hasPrefix("gate.") || type.hasPrefix("dataset.") }

    /// Appends validated events. Those a gate rule matches open its gate, and those a
    /// labelling rule matches add their items, in the same commit. Rules are applied before
    /// anything is written: one that fails for an event refuses the whole request (422 naming
    /// the rule and field, and the event's index).
    public func append(_ events: [Event], now: Timestamp = .now()) async throws -> AppendOutcome {
        guard !gateRules.isEmpty || !labellingRules.isEmpty else { return try await store.append(events) }
        var consequences: [EventConsequence?] = []
        var errors: [FieldError] = []
        var any = false
        let opened = OpenedGates()
        for (index, event) in events.enumerated() {
            func refuse(_ invalid: InvalidEvent) {
                for e in invalid.errors { errors.append(FieldError(index: events.count > 1 ? index : nil, field: e.field, detail: e.detail)) }
            }
            var work = RuleWork()
            for rule in gateRules where rule.matches(event) {
                switch rule.gate(for: event) {
                case .success(let spec): work.gates.append((rule.name, spec))
                case .failure(let invalid): refuse(invalid)
                }
            }
            for rule in labellingRules where rule.matches(event) {
                switch rule.work(for: event) {
                case .success(let (spec, items)): work.labelling.append((rule.name, spec, items))
                case .failure(let invalid): refuse(invalid)
                }
            }
            consequences.append(work.isEmpty ? nil : consequence(work, record: opened, now: now))
            any = any || !work.isEmpty
        }
        if !errors.isEmpty {
            var problem = Problem.invalid(errors)
            problem.detail = "a gate or labelling rule cannot be applied, so nothing was accepted: " + problem.detail
            throw problem
        }
        guard any else { return try await store.append(events) }
        let outcome = try await store.append(events, consequences: consequences)
        for gate in opened.all() { gates?.announce(gate) }
        for name in opened.datasets() { store.bus.publish(.datasetChanged(name: name)) }
        return outcome
    }

    /// What the rules ask of one event.
    struct RuleWork {
        var gates: [(rule: String, spec: GateSpec)] = []
        var labelling: [(rule: String, spec: DatasetSpec, items: [DatasetItem])] = []
        var isEmpty: Bool { gates.isEmpty && labelling.isEmpty }
    }

    /// The gates a commit opened and the datasets it added to, told to waiters once it is
    /// durable. Kept per event and replaced when the event's consequence runs again (a group
    /// commit retried request by request), so a rolled-back attempt's gates are not announced.
    final class OpenedGates: Sendable {
        private let byEvent = Mutex<[String: (gates: [GateService.Opened], datasets: [String])]>([:])
        func set(_ eventID: String, gates: [GateService.Opened], datasets: [String]) {
            byEvent.withLock { $0[eventID] = (gates, datasets) }
        }
        func all() -> [GateService.Opened] { byEvent.withLock { $0.values.flatMap(\.gates) } }
        func datasets() -> [String] { byEvent.withLock { Array(Set($0.values.flatMap(\.datasets))) } }
    }

    /// Inside the event's commit: opens (or resumes by key) each matched gate rule's gate, and
    /// adds each labelling rule's items.
    func consequence(_ work: RuleWork, record: OpenedGates, now: Timestamp) -> EventConsequence {
        let autoDecide = gates?.autoDecide
        let datasets = datasets
        return { event, tx in
            // Nothing to announce unless this run gets to the end (an earlier run's entry goes).
            record.set(event.id, gates: [], datasets: [])
            var events: [Event] = []
            var opened: [GateService.Opened] = []
            var touched: [String] = []
            for (rule, spec) in work.gates {
                let (gate, caused) = try GateService.open(
                    spec, requestedVia: "rule:\(rule)", token: nil, autoDecide: autoDecide, eventAttributes: event.attributes ?? JSONObject(),
                    now: now, tx: tx.gates)
                opened.append(gate)
                events += caused
            }
            if let datasets {
                for (rule, spec, items) in work.labelling {
                    let added = try datasets.addFromRule(rule, spec: spec, items: items, now: now, tx: tx)
                    if !added.isEmpty { touched.append(spec.name) }
                    events += added
                }
            }
            record.set(event.id, gates: opened, datasets: touched)
            return events
        }
    }

    public func events(_ filter: EventFilter) async throws -> [StoredEvent] { try await store.events(filter) }
    public func lastCursor() async throws -> Int64 { try await store.lastCursor() }

    public func runs(pipeline: String?, status: RunSummary.Status?, limit: Int) async throws -> [RunSummary] {
        try await store.runs(pipeline: pipeline, status: status, limit: limit)
    }

    public func run(_ run: String, pipeline: String?, timelineLimit: Int = 1000) async throws -> (RunSummary, [StoredEvent])? {
        try await store.run(run, pipeline: pipeline, timelineLimit: timelineLimit)
    }

    /// Wakes on every commit (for streams).
    public func subscribe() -> BusSubscriber { store.bus.subscribe() }
}
