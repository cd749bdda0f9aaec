import Foundation
import GatehouseCore

/// How a silence is stored in `silences`.
enum SilenceRow {
    static let selectColumns = "id, matchers, starts_at, ends_at, created_by, comment"

    static func silence(_ row: any SQLRow) -> Silence? {
        guard let list = try? JSONValue.parse(row[1] as String).arrayValue else { return nil }
        let parsed = list.compactMap { $0.stringValue.flatMap { try? Matcher.parse($0) } }
        return Silence(
            id: row[0], matchers: parsed, startsAt: Timestamp(milliseconds: row[2]), endsAt: Timestamp(milliseconds: row[3]),
            createdBy: row[4], comment: row[5])
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

/// Silences in the store's database.
public struct SQLSilenceStore: SilenceStore {
    public let database: any StoreDatabase
    public init(database: any StoreDatabase) { self.database = database }

    public func create(_ silence: Silence, now: Timestamp) async throws {
        let matchers = JSONValue.array(silence.matchers.map { .string($0.description) }).serialized()
        try await database.write { db in
            try db.execute(
                "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [silence.id, matchers, silence.startsAt.milliseconds, silence.endsAt.milliseconds, silence.createdBy,
                 StoredText(silence.comment), now.milliseconds])
        }
    }

    public func list() async throws -> [Silence] {
        try await database.read { db in
            try db.all("SELECT \(SilenceRow.selectColumns) FROM silences ORDER BY starts_at DESC, id", [], SilenceRow.silence).compactMap { $0 }
        }
    }

    /// Silences not yet over at `now`.
    public func current(at now: Timestamp) async throws -> [Silence] {
        try await database.read { db in
            try db.all("SELECT \(SilenceRow.selectColumns) FROM silences WHERE ends_at > ?", [now.milliseconds], SilenceRow.silence).compactMap { $0 }
        }
    }

    /// Ends a silence now; false when there is none with this id.
    public func expire(_ id: String, now: Timestamp) async throws -> Bool {
        try await database.write { db in
            guard let (startsAt, endsAt) = try db.first("SELECT starts_at, ends_at FROM silences WHERE id = ?", [id], { ($0[0] as Int64, $0[1] as Int64) })
            else { return false }
            // Ends no later than now, and starts no later than it ends.
            let ends = min(endsAt, now.milliseconds)
            try db.execute("UPDATE silences SET starts_at = ?, ends_at = ? WHERE id = ?", [min(startsAt, ends), ends, id])
            return true
        }
    }
}
