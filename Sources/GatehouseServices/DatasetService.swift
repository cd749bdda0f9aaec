import GatehouseCore
import GatehouseStore
import Synchronization

/// The labelling use cases — create, import, next item, label, skip, undo, stats, export —
/// with their rules: a spec never changes once created, a label must fit the task (and, for
/// spans, the item's text), an item takes only as many labels as the spec asks, what the
/// `dataset.*` events say, and who is woken (`datasetChanged` on the bus). The API, the
/// labelling page and the inbox come here; the repository only persists.
public final class DatasetService: Sendable {
    public let repository: any DatasetRepository
    let bus: Bus
    /// The labelling page of a dataset (events link to it).
    let pageURL: @Sendable (String) -> String
    /// Specs never change after creation: cached for the hot paths (next, label).
    private let specs = Mutex<[String: DatasetSpec]>([:])
    /// How long a served item is kept for its person.
    public static let leaseMilliseconds: Int64 = 5 * 60_000

    public init(repository: any DatasetRepository, bus: Bus, pageURL: @escaping @Sendable (String) -> String) {
        self.repository = repository
        self.bus = bus
        self.pageURL = pageURL
    }

    // MARK: Datasets

    /// Creates a dataset; the same spec again returns it (a retried pipeline step: `created`
    /// false); another spec under the name is a 409 carrying the existing one.
    public func create(_ spec: DatasetSpec, now: Timestamp = .now()) async throws -> (info: DatasetInfo, created: Bool) {
        let outcome = try await repository.create(spec, now: now)
        if case .conflict(let existing) = outcome {
            throw Problem(
                status: 409, title: "Conflict", detail: "dataset \"\(spec.name)\" exists with another definition",
                extensions: JSONObject([("existing", existing.json)]))
        }
        // Deleted by someone else in between: say so rather than crash.
        guard let info = try await repository.get(spec.name) else { throw Problem.notFound("dataset \"\(spec.name)\" was deleted meanwhile") }
        return (info, outcome == .created)
    }

    /// The dataset with its progress, or a 404.
    public func info(_ name: String) async throws -> DatasetInfo {
        guard let info = try await repository.get(name) else { throw Self.noDataset(name) }
        return info
    }

    /// Nil when there is no such dataset (the pages answer that themselves).
    public func find(_ name: String) async throws -> DatasetInfo? { try await repository.get(name) }

    /// The dataset's definition, or a 404.
    public func spec(_ name: String) async throws -> DatasetSpec {
        if let cached = specs.withLock({ $0[name] }) { return cached }
        let spec = try await info(name).spec
        specs.withLock { $0[name] = spec }
        return spec
    }

    public func list() async throws -> [DatasetInfo] { try await repository.list() }

    public func delete(_ name: String) async throws {
        guard try await repository.delete(name) else { throw Self.noDataset(name) }
        specs.withLock { _ = $0.removeValue(forKey: name) }
        bus.publish(.datasetChanged(name: name))
    }

    static func noDataset(_ name: String) -> Problem { Problem.notFound("no dataset \"\(name)\"") }

    // MARK: Import

    /// Starts an import into `spec`'s dataset: items are validated and staged as they come,
    /// and become visible together at `finish`, or not at all.
    public func beginImport(into spec: DatasetSpec) -> DatasetImport {
        DatasetImport(service: self, spec: spec, importID: "imp_" + EventValidator.generateID().dropFirst(4))
    }

    func commit(_ importing: DatasetImport, now: Timestamp) async throws -> ImportCommitted {
        let dataset = importing.spec.name
        let url = pageURL(dataset)
        let committed = try await repository.commitImport(importing.importID, dataset: dataset, received: importing.received) { c in
            Self.itemsAdded(c, to: dataset, url: url, now: now)
        }
        if committed.added > 0 { bus.publish(.datasetChanged(name: dataset)) }
        return committed
    }

    /// The `dataset.items_added` event of an import or of a labelling rule.
    public static func itemsAdded(_ c: ImportCommitted, to dataset: String, url: String, now: Timestamp) -> Event {
        Event(
            // A fresh suffix: positions restart when a dataset is deleted and made again.
            id: "dataset.\(dataset).items_added.\(c.firstSeq).\(EventValidator.generateID().dropFirst(4))", type: "dataset.items_added", pipeline: "datasets", severity: .info,
            summary: "\(c.added) item\(c.added == 1 ? "" : "s") to label in \(dataset)", labels: [("dataset", dataset)],
            attributes: JSONObject([("dataset", .string(dataset)), ("added", .int(c.added)), ("total", .int(c.total))]), url: url, time: now)
    }

    /// A labelling rule's work inside the commit of its event: the dataset on first use, then
    /// the event's items. A dataset of that name with another definition refuses the event.
    public func addFromRule(_ rule: String, spec: DatasetSpec, items: [DatasetItem], now: Timestamp, tx: any StoreTransaction) throws -> [Event] {
        if case .conflict = try tx.datasets.create(spec, now: now) {
            throw Problem(
                status: 409, title: "Conflict",
                detail: "labelling rule \(rule): dataset \"\(spec.name)\" exists with another definition; delete it or give the rule another dataset name")
        }
        let committed = try tx.datasets.addItems(items, to: spec.name)
        return committed.added > 0 ? [Self.itemsAdded(committed, to: spec.name, url: pageURL(spec.name), now: now)] : []
    }

    // MARK: Next item, labels, skips

    /// The next item for `annotator` (leased to them for five minutes), nil when nothing is
    /// left for them; a 404 without the dataset.
    public func next(_ name: String, annotator: String, now: Timestamp = .now()) async throws -> ServedItem? {
        let spec = try await spec(name)
        return try await repository.next(
            name, annotator: annotator, needed: spec.annotatorsPerItem, now: now, leaseUntil: now.adding(milliseconds: Self.leaseMilliseconds))
    }

    public func item(_ name: String, id: String) async throws -> DatasetItem? {
        Self.namesNoItem(id) ? nil : try await repository.item(name, id: id)
    }

    /// Item ids are checked on import (no control characters): one holding a control character
    /// names no item and is not looked up — it comes from a form or a URL, and PostgreSQL's
    /// text cannot even hold the NUL it may carry.
    static func namesNoItem(_ id: String) -> Bool { ControlCharacters.containsC0(id) }

    public struct Labelled: Sendable, Equatable {
        /// The label as stored (normalised for the task).
        public var value: JSONValue
        public var itemComplete: Bool
        public var datasetComplete: Bool
    }

    /// Records (or replaces) `annotator`'s label on an item. `raw` is checked against the task
    /// (and a span against the item's text): 422 naming the field; 404 without the item; 409
    /// when the item already has its labels from others. The label that completes the
    /// dataset commits `dataset.completed` with it.
    public func label(_ name: String, item itemID: String, annotator: String, raw: JSONValue, now: Timestamp = .now()) async throws -> Labelled {
        let spec = try await spec(name)
        if Self.namesNoItem(itemID) { throw Self.noItem(itemID, in: name) }
        // Spans are checked against the item's text; other tasks need no read before the write.
        var text: String?
        if spec.task == .spans {
            guard let item = try await repository.item(name, id: itemID) else { throw Self.noItem(itemID, in: name) }
            text = item.text
        }
        let value = try spec.normalize(raw, text: text).mapError { Problem.invalid([$0]) }.get()
        let url = pageURL(name)
        let outcome = try await repository.label(name, item: itemID, annotator: annotator, value: value, needed: spec.annotatorsPerItem, now: now) { total in
            Event(
                id: "dataset.\(name).completed.\(total).\(now.milliseconds)", type: "dataset.completed", pipeline: "datasets", severity: .info,
                summary: "\(name): all \(total) items are labeled", labels: [("dataset", name)],
                attributes: JSONObject([("dataset", .string(name)), ("total", .int(total))]), url: url, time: now)
        }
        switch outcome {
        case .noItem: throw Self.noItem(itemID, in: name)
        case .full(let n): throw Problem(status: 409, title: "Conflict", detail: "item \(itemID) already has its \(n) label\(n == 1 ? "" : "s") from other people")
        case .recorded(let itemComplete, let datasetComplete):
            bus.publish(.datasetChanged(name: name))
            return Labelled(value: value, itemComplete: itemComplete, datasetComplete: datasetComplete)
        }
    }

    static func noItem(_ id: String, in dataset: String) -> Problem { Problem.notFound("no item \"\(id)\" in \(dataset)") }

    /// `annotator` skipped an item: they are not served it again. 404 without the item.
    public func skip(_ name: String, item itemID: String, annotator: String, now: Timestamp = .now()) async throws {
        _ = try await spec(name)
        guard !Self.namesNoItem(itemID), try await repository.skip(name, item: itemID, annotator: annotator, now: now) else { throw Self.noItem(itemID, in: name) }
    }

    /// Takes back `annotator`'s latest label; the item it was on, nil when they have none.
    public func undo(_ name: String, annotator: String, now: Timestamp = .now()) async throws -> String? {
        _ = try await spec(name)
        guard let item = try await repository.undo(name, annotator: annotator, now: now) else { return nil }
        bus.publish(.datasetChanged(name: name))
        return item
    }

    public func label(of annotator: String, dataset: String, item: String) async throws -> JSONValue? {
        Self.namesNoItem(item) ? nil : try await repository.label(of: annotator, dataset: dataset, item: item)
    }

    /// What `next` could still serve `annotator` now (the inbox's count agrees with the page).
    public func remaining(_ name: String, annotator: String, now: Timestamp = .now()) async throws -> Int {
        let spec = try await spec(name)
        return try await repository.remaining(name, annotator: annotator, needed: spec.annotatorsPerItem, now: now)
    }
    public func labelCount(_ name: String, annotator: String) async throws -> Int { try await repository.labelCount(name, annotator: annotator) }

    // MARK: Stats, waits, export

    public func stats(_ name: String, withAgreement: Bool = true) async throws -> DatasetStats {
        guard let stats = try await repository.stats(try await spec(name), withAgreement: withAgreement) else { throw Self.noDataset(name) }
        return stats
    }

    /// What a pipeline waits for: at least `labeled` items with all their labels, and (when
    /// given) agreement at least `agreement`.
    public struct Progress: Sendable {
        public var reached: Bool
        public var target: Int
        public var stats: DatasetStats
    }

    /// Where the dataset stands against a wait's target (nil `labeled`: every item).
    public func progress(_ name: String, labeled: Int?, agreement: Double?) async throws -> Progress {
        var target = labeled ?? 0
        if labeled == nil { target = try await info(name).itemCount }
        let s = try await stats(name, withAgreement: agreement != nil)
        let reached = s.labeled >= target && (agreement.map { k in s.agreement.map { $0 >= k } ?? false } ?? true)
        return Progress(reached: reached, target: target, stats: s)
    }

    public func export(_ name: String, batch: Int = 1000, _ body: ([ExportedItem]) async throws -> Void) async throws {
        try await repository.export(try await spec(name), batch: batch, body)
    }
}

/// One import on its way in: each item is validated as it arrives and staged in chunks; a bad
/// item refuses the whole import, naming its index or line (up to 20 of them), and nothing
/// is added. Used by one request at a time.
public final class DatasetImport {
    let service: DatasetService
    public let spec: DatasetSpec
    let importID: String
    /// Items received so far, good or bad.
    public private(set) var received = 0
    public private(set) var errors: [FieldError] = []
    private var staged: [(Int, DatasetItem)] = []
    static let chunk = 5000
    static let maxErrors = 20

    init(service: DatasetService, spec: DatasetSpec, importID: String) {
        self.service = service
        self.spec = spec
        self.importID = importID
    }

    /// Enough errors to refuse the import: stop reading.
    public var isRefused: Bool { errors.count >= Self.maxErrors }

    /// Adds the next item; `line` for NDJSON (the error names the line, not the index).
    public func add(_ value: JSONValue, line: Int? = nil) async throws {
        let index = received
        received += 1
        switch DatasetItem.parse(value, for: spec) {
        case .success(let item):
            guard errors.isEmpty else { return }
            staged.append((index, item))
            if staged.count >= Self.chunk {
                try await service.repository.stage(importID: importID, staged)
                staged.removeAll(keepingCapacity: true)
            }
        case .failure(let invalid):
            for e in invalid.errors where errors.count < Self.maxErrors {
                errors.append(FieldError(index: line == nil ? index : nil, line: line, field: e.field, detail: e.detail))
            }
        }
    }

    /// An NDJSON line that is not JSON.
    public func addUnparsable(line: Int, _ message: String) {
        errors.append(FieldError(line: line, field: "(line)", detail: "is not valid JSON: \(message)"))
    }

    /// Makes the import visible in one transaction (with its `dataset.items_added` event), or
    /// refuses it: 422 with the errors, or when it held no items.
    public func finish(now: Timestamp = .now()) async throws -> ImportCommitted {
        do {
            if !errors.isEmpty {
                var problem = Problem.invalid(errors)
                problem.detail = "nothing was imported: " + problem.detail
                throw problem
            }
            if received == 0 { throw Problem.invalid([FieldError(field: "(body)", detail: "holds no items")]) }
            try await service.repository.stage(importID: importID, staged)
            staged = []
            return try await service.commit(self, now: now)
        } catch {
            await discard()
            throw error
        }
    }

    /// Forgets what was staged (the request failed or was refused).
    public func discard() async {
        staged = []
        try? await service.repository.discardImport(importID)
    }
}
