import Crypto
import Foundation
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

/// How a token is stored in `tokens`.
enum TokenRow {
    static let selectColumns = "id, name, scopes, created_at, revoked_at"

    static func token(_ row: any SQLRow) -> AccessToken {
        AccessToken(
            id: row[0], name: row[1],
            scopes: (row[2] as String).split(separator: ",").compactMap { Scope(rawValue: String($0)) },
            createdAt: Timestamp(milliseconds: row[3]), revokedAt: (row[4] as Int64?).map(Timestamp.init(milliseconds:)))
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

/// A live token already has the name asked for: two would act as one person, and
/// `token revoke <name>` would revoke both.
public struct TokenNameTaken: Error, Equatable {
    public var existing: AccessToken
}

/// API tokens. The secret is shown once at creation; only its hash is stored.
public protocol TokenStore: Sendable {
    /// Creates a token; returns it with its secret, which is never readable again. Throws
    /// `TokenNameTaken` when a live token has the name — checked in the insert's transaction,
    /// so two creations at once cannot both take it.
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

/// Tokens in the store's database.
public struct SQLTokenStore: TokenStore {
    public let database: any StoreDatabase
    public init(database: any StoreDatabase) { self.database = database }

    static let secretPrefix = AccessToken.secretPrefix
    static func hash(_ secret: String) -> String { AccessToken.hash(secret) }

    static func randomString(_ count: Int) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        var rng = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in alphabet[Int(rng.next(upperBound: UInt(alphabet.count)))] })
    }

    public func create(name: String, scopes: [Scope], now: Timestamp) throws -> (AccessToken, secret: String) {
        let secret = Self.secretPrefix + Self.randomString(32)
        let token = AccessToken(id: "tok_" + Self.randomString(10).lowercased(), name: name, scopes: scopes, createdAt: now, revokedAt: nil)
        try database.writeNow { db in
            // SQLite: the write transaction holds the one writer lock from its start, so the
            // check and the insert are one step. PostgreSQL: the statement's own check, and two
            // transactions inserting the name at once serialise on the advisory lock.
            if db.dialect == .postgres { try db.execute("SELECT pg_advisory_xact_lock(hashtext('gatehouse.tokens.' || ?))", [name]) }
            if let taken = try db.first(
                "SELECT \(TokenRow.selectColumns) FROM tokens WHERE name = ? AND revoked_at IS NULL ORDER BY created_at LIMIT 1", [name], TokenRow.token) {
                throw TokenNameTaken(existing: taken)
            }
            try db.execute(
                "INSERT INTO tokens (id, name, scopes, hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, NULL)",
                [token.id, name, scopes.map(\.rawValue).joined(separator: ","), Self.hash(secret), now.milliseconds])
        }
        return (token, secret)
    }

    public func list() throws -> [AccessToken] {
        try database.readNow { db in try db.all("SELECT \(TokenRow.selectColumns) FROM tokens ORDER BY created_at, id", [], TokenRow.token) }
    }

    /// Revokes by id or by name; returns the tokens revoked.
    public func revoke(_ idOrName: String, now: Timestamp) throws -> [AccessToken] {
        try database.writeNow { db in
            let tokens = try db.all(
                "SELECT \(TokenRow.selectColumns) FROM tokens WHERE (id = ? OR name = ?) AND revoked_at IS NULL", [idOrName, idOrName], TokenRow.token)
            for token in tokens {
                try db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", [now.milliseconds, token.id])
            }
            return tokens.map { var t = $0; t.revokedAt = now; return t }
        }
    }

    /// The active token with this secret, if any.
    public func verify(secret: String) async throws -> AccessToken? {
        let hash = Self.hash(secret)
        return try await database.read { db in
            try db.first("SELECT \(TokenRow.selectColumns) FROM tokens WHERE hash = ? AND revoked_at IS NULL", [hash], TokenRow.token)
        }
    }

    public func active(id: String) async throws -> AccessToken? {
        try await database.read { db in
            try db.first("SELECT \(TokenRow.selectColumns) FROM tokens WHERE id = ? AND revoked_at IS NULL", [id], TokenRow.token)
        }
    }

    public func activeCount() async throws -> Int {
        try await database.read { db in try db.value(Int.self, "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL") ?? 0 }
    }

    public func activeCountNow() throws -> Int {
        try database.readNow { db in try db.value(Int.self, "SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL") ?? 0 }
    }
}
