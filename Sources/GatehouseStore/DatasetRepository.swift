import GatehouseCore

/// What `create` found under the dataset's name.
public enum DatasetCreation: Sendable, Equatable { case created, exists, conflict(DatasetSpec) }

/// What moving a staged import into its dataset did.
public struct ImportCommitted: Sendable, Equatable {
    public var added: Int
    public var duplicates: Int
    /// Items in the dataset afterwards.
    public var total: Int
    /// One past the dataset's highest item position before the import: grows with every
    /// import that adds items, so it names the import's event.
    public var firstSeq: Int64
    public init(added: Int, duplicates: Int, total: Int, firstSeq: Int64) {
        self.added = added
        self.duplicates = duplicates
        self.total = total
        self.firstSeq = firstSeq
    }
}

/// What recording a label did.
public enum LabelOutcome: Sendable, Equatable {
    case recorded(itemComplete: Bool, datasetComplete: Bool)
    case noItem
    /// The item already has all its labels from other people.
    case full(Int)
}

/// What a labelling rule writes inside the commit of the event that triggers it.
public protocol DatasetTransaction {
    /// Creates the dataset unless it exists (then `.exists`, or `.conflict` with its spec).
    func create(_ spec: DatasetSpec, now: Timestamp) throws -> DatasetCreation
    /// Adds items at the end of the dataset; ids already present are duplicates.
    func addItems(_ items: [DatasetItem], to dataset: String) throws -> ImportCommitted
}

/// Datasets, their items, labels, skips and the "next item" leases, persisted. The service
/// decides (which value is valid, what the events say, when to wake waiters); this only
/// stores and reads. Writes that announce something commit with the event the service
/// makes (`announce`), and with the deliveries that event causes, or not at all.
public protocol DatasetRepository: Sendable {
    func create(_ spec: DatasetSpec, now: Timestamp) async throws -> DatasetCreation
    func get(_ name: String) async throws -> DatasetInfo?
    func list() async throws -> [DatasetInfo]
    /// Deletes the dataset with its items, labels, skips and leases; false if there was none.
    func delete(_ name: String) async throws -> Bool

    /// Writes a chunk of a streamed import where nobody sees it yet.
    func stage(importID: String, _ items: [(Int, DatasetItem)]) async throws
    func discardImport(_ importID: String) async throws
    /// Moves a staged import into the dataset in one transaction, with the event `announce`
    /// makes of it when items were added. Ids already present are duplicates.
    func commitImport(
        _ importID: String, dataset: String, received: Int, announce: @escaping @Sendable (ImportCommitted) -> Event
    ) async throws -> ImportCommitted

    /// The next item for `annotator`: not labelled or skipped by them, still short of `needed`
    /// labels counting the people holding it, oldest first; leased to them until `leaseUntil`
    /// so that two people are not served the one item that needs one more label.
    func next(_ dataset: String, annotator: String, needed: Int, now: Timestamp, leaseUntil: Timestamp) async throws -> ServedItem?
    func item(_ dataset: String, id: String) async throws -> DatasetItem?
    /// Records or replaces `annotator`'s label (already valid for the task) unless the item has
    /// its `needed` labels from others; the label completing the dataset commits with the
    /// event `announce` makes (given the dataset's item count).
    func label(
        _ dataset: String, item: String, annotator: String, value: JSONValue, needed: Int, now: Timestamp,
        announce: @escaping @Sendable (_ total: Int) -> Event
    ) async throws -> LabelOutcome
    /// False when there is no such item.
    func skip(_ dataset: String, item: String, annotator: String, now: Timestamp) async throws -> Bool
    /// Takes back `annotator`'s latest label; the item it was on.
    func undo(_ dataset: String, annotator: String, now: Timestamp) async throws -> String?
    /// The person's own label on an item.
    func label(of annotator: String, dataset: String, item: String) async throws -> JSONValue?
    /// Items `annotator` could be served now: not labelled or skipped by them, and not taken up
    /// by other people's labels and live leases (an item needing `needed` labels).
    func remaining(_ dataset: String, annotator: String, needed: Int, now: Timestamp) async throws -> Int
    /// Labels `annotator` gave in the dataset.
    func labelCount(_ dataset: String, annotator: String) async throws -> Int

    func stats(_ spec: DatasetSpec, withAgreement: Bool) async throws -> DatasetStats?
    /// The items in import order with their labels and consensus, `batch` at a time.
    func export(_ spec: DatasetSpec, batch: Int, _ body: ([ExportedItem]) async throws -> Void) async throws
}

/// One exported item: its data, every label, and the consensus.
public struct ExportedItem: Sendable {
    public var item: DatasetItem
    public var labels: [(annotator: String, value: JSONValue, at: Timestamp)]
    public var consensus: JSONValue?
}
