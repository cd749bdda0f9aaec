import Foundation
import GRDB
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

/// Datasets, items, labels and skips in SQLite; "next item" leases in memory (they last
/// minutes, and losing them on a restart only means an item may be shown twice — one process
/// serves a SQLite file, so memory is where every "next" sees them).
public final class SQLiteDatasetRepository: DatasetRepository {
    public let log: EventLog
    var database: GatehouseDatabase { log.database }
    /// dataset → item → [(annotator, until)]
    private let leases = Mutex<[String: [String: [(String, Int64)]]]>([:])
    /// dataset → item → (label count, when): counts committed in the last minute. A page of
    /// candidates read just before a label committed is corrected with these, so "next item"
    /// needs one read and never serves an item that just got its labels.
    private let recentCounts = Mutex<[String: [String: (Int, Int64)]]>([:])

    public init(log: EventLog) { self.log = log }

    /// A labelling rule's writes, on the commit's own connection.
    struct Transaction: DatasetTransaction {
        let db: Database

        func create(_ spec: DatasetSpec, now: Timestamp) throws -> DatasetCreation {
            try SQLiteDatasetRepository.create(spec, now: now, db: db)
        }

        func addItems(_ items: [DatasetItem], to dataset: String) throws -> ImportCommitted {
            let base = try Int64.fetchOne(db.cachedStatement(sql: "SELECT COALESCE(MAX(seq), 0) FROM items WHERE dataset = ?"), arguments: [dataset]) ?? 0
            let insert = try db.cachedStatement(sql: """
                INSERT INTO items (dataset, id, seq, data, meta, prediction) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dataset, id) DO NOTHING
                """)
            var added = 0
            for (n, item) in items.enumerated() {
                try insert.execute(arguments: [
                    dataset, item.id, base + 1 + Int64(n), JSONValue.object(item.data).serialized(), item.meta.map { JSONValue.object($0).serialized() },
                    item.prediction?.serialized(),
                ])
                added += db.changesCount
            }
            if added > 0 {
                try db.cachedStatement(sql: "UPDATE datasets SET item_count = item_count + ?, completed_at = NULL WHERE name = ?").execute(arguments: [added, dataset])
            }
            let total = try Int.fetchOne(db.cachedStatement(sql: "SELECT item_count FROM datasets WHERE name = ?"), arguments: [dataset]) ?? added
            return ImportCommitted(added: added, duplicates: items.count - added, total: total, firstSeq: base + 1)
        }
    }

    // MARK: Datasets

    public func create(_ spec: DatasetSpec, now: Timestamp) async throws -> DatasetCreation {
        try await database.pool.write { db in try Self.create(spec, now: now, db: db) }
    }

    static func create(_ spec: DatasetSpec, now: Timestamp, db: Database) throws -> DatasetCreation {
        if let text = try String.fetchOne(db.cachedStatement(sql: "SELECT spec FROM datasets WHERE name = ?"), arguments: [spec.name]),
           let existing = (try? JSONValue.parse(text)).flatMap({ try? DatasetSpec.parse($0).get() }) {
            return existing == spec ? .exists : .conflict(existing)
        }
        try db.cachedStatement(sql: "INSERT INTO datasets (name, spec, created_at) VALUES (?, ?, ?)").execute(arguments: [spec.name, spec.json.serialized(), now.milliseconds])
        return .created
    }

    static func info(_ row: Row) -> DatasetInfo? {
        guard let spec = (try? JSONValue.parse(row["spec"] as String)).flatMap({ try? DatasetSpec.parse($0).get() }) else { return nil }
        return DatasetInfo(
            spec: spec, createdAt: Timestamp(milliseconds: row["created_at"]), itemCount: row["item_count"], completeCount: row["complete_count"],
            completedAt: (row["completed_at"] as Int64?).map(Timestamp.init(milliseconds:)))
    }

    public func get(_ name: String) async throws -> DatasetInfo? {
        try await database.pool.read { db in try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM datasets WHERE name = ?"), arguments: [name]).flatMap(Self.info) }
    }

    public func list() async throws -> [DatasetInfo] {
        try await database.pool.read { db in try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM datasets ORDER BY created_at DESC, name")).compactMap(Self.info) }
    }

    public func delete(_ name: String) async throws -> Bool {
        let deleted = try await database.pool.write { db -> Bool in
            try db.cachedStatement(sql: "DELETE FROM datasets WHERE name = ?").execute(arguments: [name])
            guard db.changesCount > 0 else { return false }
            for table in ["items", "labels", "skips"] { try db.execute(sql: "DELETE FROM \(table) WHERE dataset = ?", arguments: [name]) }
            return true
        }
        leases.withLock { _ = $0.removeValue(forKey: name) }
        return deleted
    }

    // MARK: Import

    /// Writes a chunk of a streamed import to the staging table (not visible yet).
    public func stage(importID: String, _ items: [(Int, DatasetItem)]) async throws {
        guard !items.isEmpty else { return }
        try await database.pool.write { db in
            let insert = try db.cachedStatement(sql: "INSERT INTO import_staging (import_id, n, id, data, meta, prediction) VALUES (?, ?, ?, ?, ?, ?)")
            for (n, item) in items {
                try insert.execute(arguments: [
                    importID, n, item.id, JSONValue.object(item.data).serialized(), item.meta.map { JSONValue.object($0).serialized() },
                    item.prediction?.serialized(),
                ])
            }
        }
    }

    public func discardImport(_ importID: String) async throws {
        try await database.pool.write { db in try db.cachedStatement(sql: "DELETE FROM import_staging WHERE import_id = ?").execute(arguments: [importID]) }
    }

    /// All of it or nothing. Ids repeated in the import are duplicates too.
    public func commitImport(
        _ importID: String, dataset: String, received: Int, announce: @escaping @Sendable (ImportCommitted) -> Event
    ) async throws -> ImportCommitted {
        try await log.transact { db in
            let base = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) FROM items WHERE dataset = ?", arguments: [dataset]) ?? 0
            try db.execute(sql: """
                INSERT INTO items (dataset, id, seq, data, meta, prediction)
                SELECT ?, id, ? + n, data, meta, prediction FROM import_staging WHERE import_id = ? ORDER BY n
                ON CONFLICT (dataset, id) DO NOTHING
                """, arguments: [dataset, base, importID])
            let added = db.changesCount
            try db.cachedStatement(sql: "DELETE FROM import_staging WHERE import_id = ?").execute(arguments: [importID])
            guard added > 0 else {
                let total = try Int.fetchOne(db.cachedStatement(sql: "SELECT item_count FROM datasets WHERE name = ?"), arguments: [dataset]) ?? 0
                return (ImportCommitted(added: 0, duplicates: received, total: total, firstSeq: base + 1), [])
            }
            try db.cachedStatement(sql: "UPDATE datasets SET item_count = item_count + ?, completed_at = NULL WHERE name = ?").execute(arguments: [added, dataset])
            let total = try Int.fetchOne(db.cachedStatement(sql: "SELECT item_count FROM datasets WHERE name = ?"), arguments: [dataset]) ?? added
            let committed = ImportCommitted(added: added, duplicates: received - added, total: total, firstSeq: base + 1)
            return (committed, [announce(committed)])
        }
    }

    // MARK: Next item, labels, skips

    public func next(_ dataset: String, annotator: String, needed: Int, now: Timestamp, leaseUntil: Timestamp) async throws -> ServedItem? {
        var offset = 0
        while true {
            let skip = offset
            let page: [PageRow] = try await database.pool.read { db in
                try Row.fetchAll(db.cachedStatement(sql: """
                    SELECT i.id, i.label_count, i.data, i.meta, i.prediction FROM items i
                    WHERE i.dataset = ? AND i.complete = 0
                      AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.dataset = i.dataset AND l.item_id = i.id AND l.annotator = ?)
                      AND NOT EXISTS (SELECT 1 FROM skips s WHERE s.dataset = i.dataset AND s.item_id = i.id AND s.annotator = ?)
                    ORDER BY i.seq LIMIT 32 OFFSET ?
                    """), arguments: [dataset, annotator, annotator, skip]).map {
                    PageRow(id: $0["id"], labelCount: $0["label_count"], data: $0["data"], meta: $0["meta"], prediction: $0["prediction"])
                }
            }
            if page.isEmpty { return nil }
            let recent = recentCounts.withLock { all -> [String: (Int, Int64)] in
                // Forget counts older than a minute: every page read since has seen them.
                if var counts = all[dataset], counts.count > 1000 {
                    counts = counts.filter { $0.value.1 > now.milliseconds - 60_000 }
                    all[dataset] = counts
                }
                return all[dataset] ?? [:]
            }
            let chosen: PageRow? = leases.withLock { all in
                var book = all[dataset] ?? [:]
                // Drop expired leases and this person's previous one: one item at a time.
                for (id, holders) in book {
                    let kept = holders.filter { $0.1 > now.milliseconds && $0.0 != annotator }
                    book[id] = kept.isEmpty ? nil : kept
                }
                defer { all[dataset] = book }
                for row in page {
                    let labels = max(row.labelCount, recent[row.id]?.0 ?? 0)
                    guard labels + (book[row.id]?.count ?? 0) < needed else { continue }
                    book[row.id, default: []].append((annotator, leaseUntil.milliseconds))
                    return row
                }
                return nil
            }
            if let chosen {
                let item = DatasetItem(
                    id: chosen.id, data: (try? JSONValue.parse(chosen.data))?.objectValue ?? JSONObject(),
                    meta: chosen.meta.flatMap { (try? JSONValue.parse($0))?.objectValue }, prediction: chosen.prediction.flatMap { try? JSONValue.parse($0) })
                return ServedItem(item: item, labelCount: max(chosen.labelCount, recent[chosen.id]?.0 ?? 0), mine: nil)
            }
            offset += page.count
        }
    }

    struct PageRow: Sendable {
        var id: String
        var labelCount: Int
        var data: String
        var meta: String?
        var prediction: String?
    }

    static func item(_ row: Row) -> DatasetItem {
        DatasetItem(
            id: row["id"], data: (try? JSONValue.parse(row["data"] as String))?.objectValue ?? JSONObject(),
            meta: (row["meta"] as String?).flatMap { (try? JSONValue.parse($0))?.objectValue },
            prediction: (row["prediction"] as String?).flatMap { try? JSONValue.parse($0) })
    }

    public func item(_ dataset: String, id: String) async throws -> DatasetItem? {
        try await database.pool.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT id, data, meta, prediction FROM items WHERE dataset = ? AND id = ?"), arguments: [dataset, id]).map(Self.item)
        }
    }

    private func release(_ dataset: String, item: String, annotator: String) {
        leases.withLock { all in
            guard var holders = all[dataset]?[item] else { return }
            holders.removeAll { $0.0 == annotator }
            all[dataset]?[item] = holders.isEmpty ? nil : holders
        }
    }

    public func label(
        _ dataset: String, item itemID: String, annotator: String, value: JSONValue, needed: Int, now: Timestamp,
        announce: @escaping @Sendable (_ total: Int) -> Event
    ) async throws -> LabelOutcome {
        let (outcome, newCount): (LabelOutcome, Int) = try await log.transact { db in
            // Cached statements: this runs for every label, inside the group commit.
            guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT label_count, complete FROM items WHERE dataset = ? AND id = ?"), arguments: [dataset, itemID]) else {
                return ((.noItem, 0), [])
            }
            let text = value.serialized()
            try db.cachedStatement(sql: "UPDATE labels SET value = ?, at = ? WHERE dataset = ? AND item_id = ? AND annotator = ?").execute(arguments: [text, now.milliseconds, dataset, itemID, annotator])
            if db.changesCount > 0 { return ((.recorded(itemComplete: (row["complete"] as Int) == 1, datasetComplete: false), row["label_count"]), []) }
            let count: Int = row["label_count"]
            guard count < needed else { return ((.full(needed), count), []) }
            try db.cachedStatement(sql: "INSERT INTO labels (dataset, item_id, annotator, value, at) VALUES (?, ?, ?, ?, ?)").execute(arguments: [dataset, itemID, annotator, text, now.milliseconds])
            let complete = count + 1 >= needed
            try db.cachedStatement(sql: "UPDATE items SET label_count = label_count + 1, complete = ? WHERE dataset = ? AND id = ?").execute(arguments: [complete ? 1 : 0, dataset, itemID])
            guard complete else { return ((.recorded(itemComplete: false, datasetComplete: false), count + 1), []) }
            try db.cachedStatement(sql: "UPDATE datasets SET complete_count = complete_count + 1 WHERE name = ?").execute(arguments: [dataset])
            let counts = try Row.fetchOne(db.cachedStatement(sql: "SELECT item_count, complete_count FROM datasets WHERE name = ?"), arguments: [dataset])!
            let (total, done): (Int, Int) = (counts["item_count"], counts["complete_count"])
            guard done >= total else { return ((.recorded(itemComplete: true, datasetComplete: false), count + 1), []) }
            try db.cachedStatement(sql: "UPDATE datasets SET completed_at = ? WHERE name = ?").execute(arguments: [now.milliseconds, dataset])
            return ((.recorded(itemComplete: true, datasetComplete: true), count + 1), [announce(total)])
        }
        if case .recorded = outcome {
            // Note the new count before the lease goes: a "next" that finds the item free of
            // leases also finds this count.
            recentCounts.withLock { all in
                let previous = all[dataset]?[itemID]?.0 ?? 0
                all[dataset, default: [:]][itemID] = (max(previous, newCount), now.milliseconds)
            }
            release(dataset, item: itemID, annotator: annotator)
        }
        return outcome
    }

    public func skip(_ dataset: String, item itemID: String, annotator: String, now: Timestamp) async throws -> Bool {
        let ok = try await database.pool.write { db -> Bool in
            guard try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM items WHERE dataset = ? AND id = ?"), arguments: [dataset, itemID]) ?? false else { return false }
            try db.cachedStatement(sql: "INSERT INTO skips (dataset, item_id, annotator, at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING").execute(arguments: [dataset, itemID, annotator, now.milliseconds])
            if db.changesCount > 0 { try db.cachedStatement(sql: "UPDATE items SET skip_count = skip_count + 1 WHERE dataset = ? AND id = ?").execute(arguments: [dataset, itemID]) }
            return true
        }
        if ok { release(dataset, item: itemID, annotator: annotator) }
        return ok
    }

    public func undo(_ dataset: String, annotator: String, now: Timestamp) async throws -> String? {
        let undone: (String, Int)? = try await log.transact { db in
            guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT id, item_id FROM labels WHERE dataset = ? AND annotator = ? ORDER BY id DESC LIMIT 1"), arguments: [dataset, annotator]) else {
                return (nil, [])
            }
            let itemID: String = row["item_id"]
            try db.cachedStatement(sql: "DELETE FROM labels WHERE id = ?").execute(arguments: [row["id"] as Int64])
            let wasComplete = try Int.fetchOne(db.cachedStatement(sql: "SELECT complete FROM items WHERE dataset = ? AND id = ?"), arguments: [dataset, itemID]) == 1
            try db.cachedStatement(sql: "UPDATE items SET label_count = label_count - 1, complete = 0 WHERE dataset = ? AND id = ?").execute(arguments: [dataset, itemID])
            if wasComplete { try db.cachedStatement(sql: "UPDATE datasets SET complete_count = complete_count - 1, completed_at = NULL WHERE name = ?").execute(arguments: [dataset]) }
            let count = try Int.fetchOne(db.cachedStatement(sql: "SELECT label_count FROM items WHERE dataset = ? AND id = ?"), arguments: [dataset, itemID]) ?? 0
            return ((itemID, count), [])
        }
        guard let (itemID, count) = undone else { return nil }
        recentCounts.withLock { $0[dataset, default: [:]][itemID] = (count, now.milliseconds) }
        return itemID
    }

    public func label(of annotator: String, dataset: String, item: String) async throws -> JSONValue? {
        try await database.pool.read { db in
            try String.fetchOne(db.cachedStatement(sql: "SELECT value FROM labels WHERE dataset = ? AND item_id = ? AND annotator = ?"), arguments: [dataset, item, annotator])
                .flatMap { try? JSONValue.parse($0) }
        }
    }

    public func remaining(_ dataset: String, annotator: String, needed: Int, now: Timestamp) async throws -> Int {
        // Other people's live leases, by item: few (one per person labelling), so the items
        // they fill up are looked at one by one, not the whole dataset.
        let leased: [String: Int] = leases.withLock { all in
            var counts: [String: Int] = [:]
            for (id, holders) in all[dataset] ?? [:] {
                let others = holders.filter { $0.1 > now.milliseconds && $0.0 != annotator }.count
                if others > 0 { counts[id] = others }
            }
            return counts
        }
        return try await database.pool.read { db in
            let open = """
                FROM items i WHERE i.dataset = ? AND i.complete = 0
                  AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.dataset = i.dataset AND l.item_id = i.id AND l.annotator = ?)
                  AND NOT EXISTS (SELECT 1 FROM skips s WHERE s.dataset = i.dataset AND s.item_id = i.id AND s.annotator = ?)
                """
            let count = try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) \(open)"), arguments: [dataset, annotator, annotator]) ?? 0
            guard !leased.isEmpty else { return count }
            var full = 0
            let check = try db.cachedStatement(sql: "SELECT i.label_count \(open) AND i.id = ?")
            for (id, others) in leased {
                if let labels = try Int.fetchOne(check, arguments: [dataset, annotator, annotator, id]), labels + others >= needed { full += 1 }
            }
            return max(count - full, 0)
        }
    }

    public func labelCount(_ dataset: String, annotator: String) async throws -> Int {
        try await database.pool.read { db in
            try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM labels WHERE dataset = ? AND annotator = ?"), arguments: [dataset, annotator]) ?? 0
        }
    }

    // MARK: Stats, export

    public func stats(_ spec: DatasetSpec, withAgreement: Bool) async throws -> DatasetStats? {
        let dataset = spec.name
        return try await database.pool.read { db in
            guard try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM datasets WHERE name = ?"), arguments: [dataset]) ?? false else { return nil }
            var s = DatasetStats()
            let counts = try Row.fetchOne(db, sql: """
                SELECT COUNT(*) AS total,
                       COALESCE(SUM(complete), 0) AS labeled,
                       COALESCE(SUM(CASE WHEN complete = 0 AND label_count > 0 THEN 1 ELSE 0 END), 0) AS in_progress,
                       COALESCE(SUM(CASE WHEN label_count = 0 AND skip_count > 0 THEN 1 ELSE 0 END), 0) AS skipped
                FROM items WHERE dataset = ?
                """, arguments: [dataset])!
            s.total = counts["total"]
            s.labeled = counts["labeled"]
            s.inProgress = counts["in_progress"]
            s.skipped = counts["skipped"]
            s.unlabeled = s.total - s.labeled - s.inProgress - s.skipped
            s.annotators = try Row.fetchAll(db.cachedStatement(sql: "SELECT annotator, COUNT(*) AS n FROM labels WHERE dataset = ? GROUP BY annotator ORDER BY annotator"), arguments: [dataset])
                .map { ($0["annotator"], $0["n"]) }
            s.skipsByAnnotator = try Row.fetchAll(db.cachedStatement(sql: "SELECT annotator, COUNT(*) AS n FROM skips WHERE dataset = ? GROUP BY annotator ORDER BY annotator"), arguments: [dataset])
                .map { ($0["annotator"], $0["n"]) }
            if withAgreement, spec.annotatorsPerItem > 1 {
                var items: [[String]] = []
                var current: String?
                let cursor = try Row.fetchCursor(db, sql: """
                    SELECT l.item_id, l.value FROM labels l JOIN items i ON i.dataset = l.dataset AND i.id = l.item_id
                    WHERE l.dataset = ? AND i.complete = 1 ORDER BY l.item_id, l.id
                    """, arguments: [dataset])
                while let row = try cursor.next() {
                    let id: String = row["item_id"]
                    if id != current { items.append([]); current = id }
                    items[items.count - 1].append(row["value"])
                }
                s.agreement = Agreement.kappa(items: items, raters: spec.annotatorsPerItem)
            }
            return s
        }
    }

    public func export(_ spec: DatasetSpec, batch: Int, _ body: ([ExportedItem]) async throws -> Void) async throws {
        let dataset = spec.name
        var after: Int64 = -1
        while true {
            let from = after
            let (page, last): ([ExportedItem], Int64) = try await database.pool.read { db in
                let rows = try Row.fetchAll(db.cachedStatement(sql: "SELECT seq, id, data, meta, prediction FROM items WHERE dataset = ? AND seq > ? ORDER BY seq LIMIT ?"), arguments: [dataset, from, batch])
                guard let lastSeq = rows.last?["seq"] as Int64? else { return ([], from) }
                let ids = rows.map { $0["id"] as String }
                var labels: [String: [(String, JSONValue, Timestamp)]] = [:]
                let placeholders = ids.map { _ in "?" }.joined(separator: ",")
                for row in try Row.fetchAll(db, sql: "SELECT item_id, annotator, value, at FROM labels WHERE dataset = ? AND item_id IN (\(placeholders)) ORDER BY id",
                                            arguments: StatementArguments([dataset] + ids)) {
                    labels[row["item_id"], default: []].append((row["annotator"], (try? JSONValue.parse(row["value"] as String)) ?? .null, Timestamp(milliseconds: row["at"])))
                }
                let page = rows.map { row -> ExportedItem in
                    let item = Self.item(row)
                    let mine = labels[item.id] ?? []
                    return ExportedItem(item: item, labels: mine.map { ($0.0, $0.1, $0.2) }, consensus: Agreement.majority(mine.map(\.1), spec: spec))
                }
                return (page, lastSeq)
            }
            if page.isEmpty { return }
            try await body(page)
            after = last
        }
    }
}
