import Foundation

import GatehouseCore
import Synchronization

/// A dataset with its progress counters.
public struct DatasetInfo: Sendable, Equatable {
    public var spec: DatasetSpec
    public var createdAt: Timestamp
    public var itemCount: Int
    public var completeCount: Int
    public var completedAt: Timestamp?

    /// A dataset as the API shows it: its definition, then its progress; `url` is the
    /// labelling page, which only the server knows.
    public struct Resource: Encodable, JSONOmitsAbsentFields {
        var spec: DatasetSpec.Document
        var created_at: Timestamp
        var items: Int
        var labeled: Int
        var complete: Bool
        var completed_at: Timestamp?
        var url: String?

        enum CodingKeys: String, CodingKey { case created_at, items, labeled, complete, completed_at, url }

        public func encode(to encoder: any Encoder) throws {
            try spec.encode(to: encoder)
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(created_at, forKey: .created_at)
            try c.encode(items, forKey: .items)
            try c.encode(labeled, forKey: .labeled)
            try c.encode(complete, forKey: .complete)
            try c.encodeIfPresent(completed_at, forKey: .completed_at)
            try c.encodeIfPresent(url, forKey: .url)
        }
    }

    public func resource(url: String? = nil) -> Resource {
        Resource(
            spec: spec.document, created_at: createdAt, items: itemCount, labeled: completeCount,
            complete: itemCount > 0 && completeCount >= itemCount, completed_at: completedAt, url: url)
    }

    public var json: JSONValue { JSONValueEncoder.value(resource()) }
}

/// `GET /v1/datasets/{name}/stats`.
public struct DatasetStats: Sendable, Equatable {
    public var total = 0
    /// Items with all their labels.
    public var labeled = 0
    /// Items with some labels, not all.
    public var inProgress = 0
    /// Items nobody labelled that someone skipped.
    public var skipped = 0
    public var unlabeled = 0
    /// Labels per person.
    public var annotators: [(String, Int)] = []
    public var skipsByAnnotator: [(String, Int)] = []
    /// Cohen's (2 per item) or Fleiss' (more) kappa over the labeled items; nil for one
    /// annotator per item or no complete item yet.
    public var agreement: Double?

    public static func == (a: DatasetStats, b: DatasetStats) -> Bool {
        a.json == b.json
    }

    struct Resource: Encodable {
        var total: Int
        var labeled: Int
        var in_progress: Int
        var skipped: Int
        var unlabeled: Int
        /// Labels per person, and skips per person, in the order the store counted them.
        var annotators: JSONObject
        var skips: JSONObject
        /// To four decimals: more is noise at these sample sizes.
        var agreement: Double?
    }

    public var json: JSONValue {
        JSONValueEncoder.value(Resource(
            total: total, labeled: labeled, in_progress: inProgress, skipped: skipped, unlabeled: unlabeled,
            annotators: JSONObject(annotators.map { ($0.0, .int($0.1)) }),
            skips: JSONObject(skipsByAnnotator.map { ($0.0, .int($0.1)) }),
            agreement: agreement.map { ($0 * 10_000).rounded() / 10_000 }))
    }
}

/// An item served to a person, with the labels already on it.
public struct ServedItem: Sendable, Equatable {
    public var item: DatasetItem
    public var labelCount: Int
    public var mine: JSONValue?
}

/// Datasets, items, labels, skips and "next item" leases in the store's database. Leases are
/// rows, not memory, so two people on two replicas are not served the one item that needs one
/// more label; serving one is a write that rides the event log's group commit.
public final class SQLDatasetRepository: DatasetRepository {
    public let log: EventLog
    var database: any StoreDatabase { log.database }

    public init(log: EventLog) { self.log = log }

    /// A labelling rule's writes, on the commit's own session.
    struct Transaction: DatasetTransaction {
        let db: any SQLSession

        func create(_ spec: DatasetSpec, now: Timestamp) throws -> DatasetCreation {
            try SQLDatasetRepository.create(spec, now: now, db: db)
        }

        func addItems(_ items: [DatasetItem], to dataset: String) throws -> ImportCommitted {
            let base = try db.value(Int64.self, "SELECT COALESCE(MAX(seq), 0) FROM items WHERE dataset = ?", [dataset]) ?? 0
            var added = 0
            for (n, item) in items.enumerated() {
                added += try db.execute("""
                    INSERT INTO items (dataset, id, seq, data, meta, prediction) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dataset, id) DO NOTHING
                    """, [
                        dataset, item.id, base + 1 + Int64(n), JSONValue.object(item.data).serialized(), item.meta.map { JSONValue.object($0).serialized() },
                        item.prediction?.serialized(),
                    ])
            }
            if added > 0 {
                try db.execute("UPDATE datasets SET item_count = item_count + ?, completed_at = NULL WHERE name = ?", [added, dataset])
            }
            let total = try db.value(Int.self, "SELECT item_count FROM datasets WHERE name = ?", [dataset]) ?? added
            return ImportCommitted(added: added, duplicates: items.count - added, total: total, firstSeq: base + 1)
        }
    }

    // MARK: Datasets

    public func create(_ spec: DatasetSpec, now: Timestamp) async throws -> DatasetCreation {
        try await database.write { db in try Self.create(spec, now: now, db: db) }
    }

    static func create(_ spec: DatasetSpec, now: Timestamp, db: any SQLSession) throws -> DatasetCreation {
        if let text = try db.value(String.self, "SELECT spec FROM datasets WHERE name = ?", [spec.name]),
           let existing = (try? JSONValue.parse(text)).flatMap({ try? DatasetSpec.parse($0).get() }) {
            return existing == spec ? .exists : .conflict(existing)
        }
        try db.execute("INSERT INTO datasets (name, spec, created_at) VALUES (?, ?, ?)", [spec.name, spec.json.serialized(), now.milliseconds])
        return .created
    }

    static let infoColumns = "spec, created_at, item_count, complete_count, completed_at"

    static func info(_ row: any SQLRow) -> DatasetInfo? {
        guard let spec = (try? JSONValue.parse(row[0] as String)).flatMap({ try? DatasetSpec.parse($0).get() }) else { return nil }
        return DatasetInfo(
            spec: spec, createdAt: Timestamp(milliseconds: row[1]), itemCount: row[2], completeCount: row[3],
            completedAt: (row[4] as Int64?).map(Timestamp.init(milliseconds:)))
    }

    public func get(_ name: String) async throws -> DatasetInfo? {
        try await database.read { db in try db.first("SELECT \(Self.infoColumns) FROM datasets WHERE name = ?", [name], Self.info) ?? nil }
    }

    public func list() async throws -> [DatasetInfo] {
        try await database.read { db in
            try db.all("SELECT \(Self.infoColumns) FROM datasets ORDER BY created_at DESC, name", [], Self.info).compactMap { $0 }
        }
    }

    public func delete(_ name: String) async throws -> Bool {
        let deleted = try await database.write { db -> Bool in
            guard try db.execute("DELETE FROM datasets WHERE name = ?", [name]) > 0 else { return false }
            for table in ["items", "labels", "skips", "leases"] { try db.execute("DELETE FROM \(table) WHERE dataset = ?", [name]) }
            return true
        }
        return deleted
    }

    // MARK: Import

    /// Writes a chunk of a streamed import to the staging table (not visible yet).
    public func stage(importID: String, _ items: [(Int, DatasetItem)]) async throws {
        guard !items.isEmpty else { return }
        try await database.write { db in
            for (n, item) in items {
                try db.execute("INSERT INTO import_staging (import_id, n, id, data, meta, prediction) VALUES (?, ?, ?, ?, ?, ?)", [
                    importID, n, item.id, JSONValue.object(item.data).serialized(), item.meta.map { JSONValue.object($0).serialized() },
                    item.prediction?.serialized(),
                ])
            }
        }
    }

    public func discardImport(_ importID: String) async throws {
        try await database.write { db in try db.execute("DELETE FROM import_staging WHERE import_id = ?", [importID]) }
    }

    /// All of it or nothing. Ids repeated in the import are duplicates too.
    public func commitImport(
        _ importID: String, dataset: String, received: Int, announce: @escaping @Sendable (ImportCommitted) -> Event
    ) async throws -> ImportCommitted {
        try await log.transact { db in
            let base = try db.value(Int64.self, "SELECT COALESCE(MAX(seq), 0) FROM items WHERE dataset = ?", [dataset]) ?? 0
            let added = try db.execute("""
                INSERT INTO items (dataset, id, seq, data, meta, prediction)
                SELECT ?, id, ? + 1 + n, data, meta, prediction FROM import_staging WHERE import_id = ? ORDER BY n
                ON CONFLICT (dataset, id) DO NOTHING
                """, [dataset, base, importID])
            try db.execute("DELETE FROM import_staging WHERE import_id = ?", [importID])
            guard added > 0 else {
                let total = try db.value(Int.self, "SELECT item_count FROM datasets WHERE name = ?", [dataset]) ?? 0
                return (ImportCommitted(added: 0, duplicates: received, total: total, firstSeq: base + 1), [])
            }
            try db.execute("UPDATE datasets SET item_count = item_count + ?, completed_at = NULL WHERE name = ?", [added, dataset])
            let total = try db.value(Int.self, "SELECT item_count FROM datasets WHERE name = ?", [dataset]) ?? added
            let committed = ImportCommitted(added: added, duplicates: received - added, total: total, firstSeq: base + 1)
            return (committed, [announce(committed)])
        }
    }

    // MARK: Next item, labels, skips

    /// Items `annotator` could label: not complete, not labelled or skipped by them (`i` is
    /// the item; the arguments are dataset, annotator, annotator).
    static let openFor = """
        FROM items i WHERE i.dataset = ? AND i.complete = 0
          AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.dataset = i.dataset AND l.item_id = i.id AND l.annotator = ?)
          AND NOT EXISTS (SELECT 1 FROM skips s WHERE s.dataset = i.dataset AND s.item_id = i.id AND s.annotator = ?)
        """
    /// Other people's live leases on item `i` (arguments: annotator, now).
    static let othersLeasing = "(SELECT COUNT(*) FROM leases le WHERE le.dataset = i.dataset AND le.item_id = i.id AND le.annotator <> ? AND le.until > ?)"

    public func next(_ dataset: String, annotator: String, needed: Int, now: Timestamp, leaseUntil: Timestamp) async throws -> ServedItem? {
        try await log.transact { db in
            // Expired leases go, and this person's previous one: one item at a time.
            try db.execute("DELETE FROM leases WHERE dataset = ? AND (until <= ? OR annotator = ?)", [dataset, now.milliseconds, annotator])
            guard let (item, labelCount) = try db.first("""
                SELECT i.id, i.data, i.meta, i.prediction, i.label_count \(Self.openFor)
                  AND i.label_count + \(Self.othersLeasing) < ?
                ORDER BY i.seq LIMIT 1
                """, [dataset, annotator, annotator, annotator, now.milliseconds, needed], { (Self.item($0), $0[4] as Int) })
            else { return (nil, []) }
            try db.execute("INSERT INTO leases (dataset, item_id, annotator, until) VALUES (?, ?, ?, ?)", [dataset, item.id, annotator, leaseUntil.milliseconds])
            return (ServedItem(item: item, labelCount: labelCount, mine: nil), [])
        }
    }

    /// An item from the columns `id, data, meta, prediction` at `offset`.
    static func item(_ row: any SQLRow, at o: Int = 0) -> DatasetItem {
        DatasetItem(
            id: row[o], data: (try? JSONValue.parse(row[o + 1] as String))?.objectValue ?? JSONObject(),
            meta: (row[o + 2] as String?).flatMap { (try? JSONValue.parse($0))?.objectValue },
            prediction: (row[o + 3] as String?).flatMap { try? JSONValue.parse($0) })
    }

    public func item(_ dataset: String, id: String) async throws -> DatasetItem? {
        try await database.read { db in
            try db.first("SELECT id, data, meta, prediction FROM items WHERE dataset = ? AND id = ?", [dataset, id]) { Self.item($0) }
        }
    }

    /// The person is done with the item (labelled or skipped it): their lease goes.
    static func release(_ dataset: String, item: String, annotator: String, db: any SQLSession) throws {
        try db.execute("DELETE FROM leases WHERE dataset = ? AND item_id = ? AND annotator = ?", [dataset, item, annotator])
    }

    public func label(
        _ dataset: String, item itemID: String, annotator: String, value: JSONValue, needed: Int, now: Timestamp,
        announce: @escaping @Sendable (_ total: Int) -> Event
    ) async throws -> LabelOutcome {
        try await log.transact { db in
            // This runs for every label, inside the group commit.
            guard let (labelCount, complete) = try db.first(
                "SELECT label_count, complete FROM items WHERE dataset = ? AND id = ?", [dataset, itemID], { ($0[0] as Int, $0[1] as Bool) })
            else {
                return (.noItem, [])
            }
            let text = value.serialized()
            let replaced = try db.execute(
                "UPDATE labels SET value = ?, at = ? WHERE dataset = ? AND item_id = ? AND annotator = ?", [text, now.milliseconds, dataset, itemID, annotator])
            if replaced > 0 {
                try Self.release(dataset, item: itemID, annotator: annotator, db: db)
                return (.recorded(itemComplete: complete, datasetComplete: false), [])
            }
            let count = labelCount
            guard count < needed else { return (.full(needed), []) }
            try Self.release(dataset, item: itemID, annotator: annotator, db: db)
            try db.execute("INSERT INTO labels (dataset, item_id, annotator, value, at) VALUES (?, ?, ?, ?, ?)", [dataset, itemID, annotator, text, now.milliseconds])
            let nowComplete = count + 1 >= needed
            try db.execute("UPDATE items SET label_count = label_count + 1, complete = ? WHERE dataset = ? AND id = ?", [nowComplete, dataset, itemID])
            guard nowComplete else { return (.recorded(itemComplete: false, datasetComplete: false), []) }
            try db.execute("UPDATE datasets SET complete_count = complete_count + 1 WHERE name = ?", [dataset])
            let (total, done) = try db.first("SELECT item_count, complete_count FROM datasets WHERE name = ?", [dataset]) { ($0[0] as Int, $0[1] as Int) } ?? (0, 0)
            guard done >= total else { return (.recorded(itemComplete: true, datasetComplete: false), []) }
            try db.execute("UPDATE datasets SET completed_at = ? WHERE name = ?", [now.milliseconds, dataset])
            return (.recorded(itemComplete: true, datasetComplete: true), [announce(total)])
        }
    }

    public func skip(_ dataset: String, item itemID: String, annotator: String, now: Timestamp) async throws -> Bool {
        try await database.write { db -> Bool in
            guard try db.exists("SELECT 1 FROM items WHERE dataset = ? AND id = ?", [dataset, itemID]) else { return false }
            try Self.release(dataset, item: itemID, annotator: annotator, db: db)
            let added = try db.execute(
                "INSERT INTO skips (dataset, item_id, annotator, at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", [dataset, itemID, annotator, now.milliseconds])
            if added > 0 { try db.execute("UPDATE items SET skip_count = skip_count + 1 WHERE dataset = ? AND id = ?", [dataset, itemID]) }
            return true
        }
    }

    public func undo(_ dataset: String, annotator: String, now: Timestamp) async throws -> String? {
        try await log.transact { db in
            guard let (labelID, itemID) = try db.first(
                // The label given last, a changed one included (its time moves, its id does not).
                "SELECT id, item_id FROM labels WHERE dataset = ? AND annotator = ? ORDER BY at DESC, id DESC LIMIT 1", [dataset, annotator], { ($0[0] as Int64, $0[1] as String) })
            else {
                return (nil, [])
            }
            try db.execute("DELETE FROM labels WHERE id = ?", [labelID])
            let wasComplete = try db.value(Int.self, "SELECT complete FROM items WHERE dataset = ? AND id = ?", [dataset, itemID]) == 1
            try db.execute("UPDATE items SET label_count = label_count - 1, complete = 0 WHERE dataset = ? AND id = ?", [dataset, itemID])
            if wasComplete { try db.execute("UPDATE datasets SET complete_count = complete_count - 1, completed_at = NULL WHERE name = ?", [dataset]) }
            return (itemID, [])
        }
    }

    public func label(of annotator: String, dataset: String, item: String) async throws -> JSONValue? {
        try await database.read { db in
            try db.value(String.self, "SELECT value FROM labels WHERE dataset = ? AND item_id = ? AND annotator = ?", [dataset, item, annotator])
                .flatMap { try? JSONValue.parse($0) }
        }
    }

    public func remaining(_ dataset: String, annotator: String, needed: Int, now: Timestamp) async throws -> Int {
        try await database.read { db in
            try db.value(Int.self, "SELECT COUNT(*) \(Self.openFor) AND i.label_count + \(Self.othersLeasing) < ?", [
                dataset, annotator, annotator, annotator, now.milliseconds, needed,
            ]) ?? 0
        }
    }

    public func labelCount(_ dataset: String, annotator: String) async throws -> Int {
        try await database.read { db in
            try db.value(Int.self, "SELECT COUNT(*) FROM labels WHERE dataset = ? AND annotator = ?", [dataset, annotator]) ?? 0
        }
    }

    // MARK: Stats, export

    public func stats(_ spec: DatasetSpec, withAgreement: Bool) async throws -> DatasetStats? {
        let dataset = spec.name
        return try await database.read { db in
            guard try db.exists("SELECT 1 FROM datasets WHERE name = ?", [dataset]) else { return nil }
            var s = DatasetStats()
            // Sums cast back to integers: PostgreSQL sums BIGINTs as NUMERIC.
            let counts = try db.first("""
                SELECT COUNT(*),
                       CAST(COALESCE(SUM(complete), 0) AS BIGINT),
                       CAST(COALESCE(SUM(CASE WHEN complete = 0 AND label_count > 0 THEN 1 ELSE 0 END), 0) AS BIGINT),
                       CAST(COALESCE(SUM(CASE WHEN label_count = 0 AND skip_count > 0 THEN 1 ELSE 0 END), 0) AS BIGINT)
                FROM items WHERE dataset = ?
                """, [dataset]) { ($0[0] as Int, $0[1] as Int, $0[2] as Int, $0[3] as Int) } ?? (0, 0, 0, 0)
            (s.total, s.labeled, s.inProgress, s.skipped) = counts
            s.unlabeled = s.total - s.labeled - s.inProgress - s.skipped
            s.annotators = try db.all("SELECT annotator, COUNT(*) FROM labels WHERE dataset = ? GROUP BY annotator ORDER BY annotator", [dataset]) {
                ($0[0] as String, $0[1] as Int)
            }
            s.skipsByAnnotator = try db.all("SELECT annotator, COUNT(*) FROM skips WHERE dataset = ? GROUP BY annotator ORDER BY annotator", [dataset]) {
                ($0[0] as String, $0[1] as Int)
            }
            if withAgreement, spec.annotatorsPerItem > 1 {
                var items: [[String]] = []
                var current: String?
                try db.query("""
                    SELECT l.item_id, l.value FROM labels l JOIN items i ON i.dataset = l.dataset AND i.id = l.item_id
                    WHERE l.dataset = ? AND i.complete = 1 ORDER BY l.item_id, l.id
                    """, [dataset]) { row in
                    let id: String = row[0]
                    if id != current { items.append([]); current = id }
                    items[items.count - 1].append(row[1])
                }
                s.agreement = Agreement.kappa(items: items, raters: spec.annotatorsPerItem)
            }
            return s
        }
    }

    public func export(_ spec: DatasetSpec, batch: Int, _ body: ([ExportedItem]) async throws -> Void) async throws {
        let dataset = spec.name
        // Pages follow (seq, id), not seq alone: imports before the fix gave an import's first
        // item the seq of the previous one's last (and every one-item import seq 0), and a
        // page boundary between two rows of one seq lost the second from the export.
        var after: (seq: Int64, id: String) = (-1, "")
        while true {
            let from = after
            let (page, last): ([ExportedItem], (seq: Int64, id: String)) = try await database.read { db in
                let rows = try db.all(
                    // `seq >= ?` alone gives the index a range to seek to: the OR hid it, and
                    // every page read the dataset from its first item (17 s for 300,000).
                    "SELECT seq, id, data, meta, prediction FROM items WHERE dataset = ? AND seq >= ? AND (seq > ? OR id > ?) ORDER BY seq, id LIMIT ?",
                    [dataset, from.seq, from.seq, from.id, batch]
                ) {
                    ($0[0] as Int64, Self.item($0, at: 1))
                }
                guard let lastRow = rows.last else { return ([], from) }
                let ids = rows.map(\.1.id)
                var labels: [String: [(String, JSONValue, Timestamp)]] = [:]
                let placeholders = ids.map { _ in "?" }.joined(separator: ",")
                try db.query(
                    "SELECT item_id, annotator, value, at FROM labels WHERE dataset = ? AND item_id IN (\(placeholders)) ORDER BY id",
                    SQLArguments([dataset] + ids)
                ) { row in
                    labels[row[0], default: []].append((row[1], (try? JSONValue.parse(row[2] as String)) ?? .null, Timestamp(milliseconds: row[3])))
                }
                let page = rows.map { _, item -> ExportedItem in
                    let mine = labels[item.id] ?? []
                    return ExportedItem(item: item, labels: mine.map { ($0.0, $0.1, $0.2) }, consensus: Agreement.majority(mine.map(\.1), spec: spec))
                }
                return (page, (lastRow.0, lastRow.1.id))
            }
            if page.isEmpty { return }
            try await body(page)
            after = last
        }
    }
}
