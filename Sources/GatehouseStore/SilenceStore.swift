import Foundation
import GRDB
import GatehouseCore

struct SilenceRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "silences"
    var id: String
    var matchers: String
    var starts_at: Int64
    var ends_at: Int64
    var created_by: String
    var comment: StoredText
    var created_at: Int64

    var silence: Silence? {
        guard let list = try? JSONValue.parse(matchers).arrayValue else { return nil }
        let parsed = list.compactMap { $0.stringValue.flatMap { try? Matcher.parse($0) } }
        return Silence(id: id, matchers: parsed, startsAt: Timestamp(milliseconds: starts_at), endsAt: Timestamp(milliseconds: ends_at), createdBy: created_by, comment: comment.string)
    }
}

/// Silences, stored so they survive restarts.
public protocol SilenceStore: Sendable {
    func create(_ silence: Silence, now: Timestamp) async throws
    /// Every silence, newest start first.
    func list() async throws -> [Silence]
    /// Silences not yet over at `now`.
    func current(at now: Timestamp) async throws -> [Silence]
    /// Ends a silence now; false when there is none with this id.
    func expire(_ id: String, now: Timestamp) async throws -> Bool
}

extension SilenceStore {
    public func create(_ silence: Silence) async throws { try await create(silence, now: .now()) }
    public func expire(_ id: String) async throws -> Bool { try await expire(id, now: .now()) }
}

/// Silences in the SQLite database.
public struct SQLiteSilenceStore: SilenceStore {
    public let database: GatehouseDatabase
    public init(database: GatehouseDatabase) { self.database = database }

    public func create(_ silence: Silence, now: Timestamp) async throws {
        let row = SilenceRow(
            id: silence.id, matchers: JSONValue.array(silence.matchers.map { .string($0.description) }).serialized(),
            starts_at: silence.startsAt.milliseconds, ends_at: silence.endsAt.milliseconds,
            created_by: silence.createdBy, comment: StoredText(silence.comment), created_at: now.milliseconds)
        try await database.pool.write { db in try row.insert(db) }
    }

    public func list() async throws -> [Silence] {
        try await database.pool.read { db in try SilenceRow.order(Column("starts_at").desc).fetchAll(db).compactMap(\.silence) }
    }

    /// Silences not yet over at `now`.
    public func current(at now: Timestamp) async throws -> [Silence] {
        try await database.pool.read { db in
            try SilenceRow.fetchAll(db, sql: "SELECT * FROM silences WHERE ends_at > ?", arguments: [now.milliseconds]).compactMap(\.silence)
        }
    }

    /// Ends a silence now; false when there is none with this id.
    public func expire(_ id: String, now: Timestamp) async throws -> Bool {
        try await database.pool.write { db in
            guard var row = try SilenceRow.fetchOne(db, key: id) else { return false }
            row.ends_at = min(row.ends_at, now.milliseconds)
            row.starts_at = min(row.starts_at, row.ends_at)
            try row.update(db)
            return true
        }
    }
}
