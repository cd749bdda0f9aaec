import Crypto
import Foundation
import GRDB
import GatehouseCore

public struct AccessToken: Sendable, Equatable, Encodable {
    public var id: String
    public var name: String
    public var scopes: [Scope]
    public var createdAt: Timestamp
    public var revokedAt: Timestamp?

    enum CodingKeys: String, CodingKey {
        case id, name, scopes, createdAt = "created_at", revokedAt = "revoked_at"
    }

    public var json: JSONValue { JSONValueEncoder.value(self) }
}

struct TokenRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "tokens"
    var id: String
    var name: String
    var scopes: String
    var hash: String
    var created_at: Int64
    var revoked_at: Int64?

    var token: AccessToken {
        AccessToken(
            id: id, name: name,
            scopes: scopes.split(separator: ",").compactMap { Scope(rawValue: String($0)) },
            createdAt: Timestamp(milliseconds: created_at), revokedAt: revoked_at.map(Timestamp.init(milliseconds:)))
    }
}

extension AccessToken {
    public static let secretPrefix = "gth_"

    /// What a store keeps of a secret. Tokens are 190 random bits, so a fast hash is the right
    /// one: there is nothing to brute-force.
    public static func hash(_ secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}

/// API tokens. The secret is shown once at creation; only its hash is stored.
public protocol TokenStore: Sendable {
    /// Creates a token; returns it with its secret, which is never readable again.
    func create(name: String, scopes: [Scope], now: Timestamp) throws -> (AccessToken, secret: String)
    func list() throws -> [AccessToken]
    /// Revokes by id or by name; returns the tokens revoked.
    func revoke(_ idOrName: String, now: Timestamp) throws -> [AccessToken]
    /// The active token with this secret, if any.
    func verify(secret: String) async throws -> AccessToken?
    /// The token with this id while it is not revoked (a web session names its token).
    func active(id: String) async throws -> AccessToken?
    func activeCount() async throws -> Int
    /// The same, blocking: for startup checks that run before the event loops.
    func activeCountNow() throws -> Int
}

extension TokenStore {
    public func create(name: String, scopes: [Scope]) throws -> (AccessToken, secret: String) { try create(name: name, scopes: scopes, now: .now()) }
    public func revoke(_ idOrName: String) throws -> [AccessToken] { try revoke(idOrName, now: .now()) }
}

/// Tokens in the SQLite database.
public struct SQLiteTokenStore: TokenStore {
    public let database: GatehouseDatabase
    public init(database: GatehouseDatabase) { self.database = database }

    static let secretPrefix = AccessToken.secretPrefix
    static func hash(_ secret: String) -> String { AccessToken.hash(secret) }

    static func randomString(_ count: Int) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        var rng = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in alphabet[Int(rng.next(upperBound: UInt(alphabet.count)))] })
    }

    public func create(name: String, scopes: [Scope], now: Timestamp) throws -> (AccessToken, secret: String) {
        let secret = Self.secretPrefix + Self.randomString(32)
        let row = TokenRow(
            id: "tok_" + Self.randomString(10).lowercased(), name: name,
            scopes: scopes.map(\.rawValue).joined(separator: ","), hash: Self.hash(secret),
            created_at: now.milliseconds, revoked_at: nil)
        try database.pool.write { db in try row.insert(db) }
        return (row.token, secret)
    }

    public func list() throws -> [AccessToken] {
        try database.pool.read { db in try TokenRow.order(Column("created_at")).fetchAll(db).map(\.token) }
    }

    /// Revokes by id or by name; returns the tokens revoked.
    public func revoke(_ idOrName: String, now: Timestamp) throws -> [AccessToken] {
        try database.pool.write { db in
            let rows = try TokenRow.fetchAll(db, sql: "SELECT * FROM tokens WHERE (id = ? OR name = ?) AND revoked_at IS NULL", arguments: [idOrName, idOrName])
            for var row in rows {
                row.revoked_at = now.milliseconds
                try row.update(db)
            }
            return rows.map(\.token)
        }
    }

    /// The active token with this secret, if any.
    public func verify(secret: String) async throws -> AccessToken? {
        let hash = Self.hash(secret)
        return try await database.pool.read { db in
            try TokenRow.fetchOne(db, sql: "SELECT * FROM tokens WHERE hash = ? AND revoked_at IS NULL", arguments: [hash])?.token
        }
    }

    public func active(id: String) async throws -> AccessToken? {
        try await database.pool.read { db in
            try TokenRow.fetchOne(db, sql: "SELECT * FROM tokens WHERE id = ? AND revoked_at IS NULL", arguments: [id])?.token
        }
    }

    public func activeCount() async throws -> Int {
        try await database.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL") ?? 0 }
    }

    public func activeCountNow() throws -> Int {
        try database.pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL") ?? 0 }
    }
}
