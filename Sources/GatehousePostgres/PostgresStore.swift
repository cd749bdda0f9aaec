import Dispatch
import Foundation
import GatehouseCore
import GatehouseStore
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization

/// The store on a PostgreSQL server that any number of Gatehouse processes share.
///
/// Every group commit takes one transaction-scoped advisory lock first, so commits that
/// write events are serialised across processes and event cursors grow in commit order: a
/// reader that has seen cursor N never later finds an event below N appear (a sequence alone
/// hands out numbers at insert, not at commit). The lock is held for one group commit — a few
/// milliseconds — and each commit carries every request its process gathered meanwhile.
public final class PostgresStore: StoreDatabase {
    public let durability: Durability
    public let location: String
    public var dialect: SQLDialect { .postgres }
    let pool: BlockingConnectionPool
    /// The ownership leases' own connection: renewals never queue behind commits and reads.
    let leasePool: BlockingConnectionPool
    private let logger: Logger
    /// Where blocking reads and writes run, off Swift's cooperative pool.
    private let blocking = DispatchQueue(label: "gatehouse.postgres", qos: .userInitiated, attributes: .concurrent)

    /// The advisory locks the store takes (two 32-bit keys: "gh" and what for).
    static let lockSpace: Int32 = 0x6768
    enum Lock: Int32 { case commit = 1, migrate = 2, scheduler = 3 }

    /// Connects (and applies pending migrations unless `migrate` is false).
    public init(url: String, durability: Durability = .full, migrate: Bool = true, connections: Int = 8) throws {
        let target = try PostgresTarget(url: url)
        self.durability = durability
        location = target.redacted
        var logger = Logger(label: "gatehouse.postgres")
        logger.logLevel = .error
        self.logger = logger
        var configuration = target.configuration
        // A process paused or cut off while it holds the commit lock must not hold every
        // replica's writes for as long as its TCP session lives: the server ends a session
        // idle inside a transaction after 15 s (a commit holds it for milliseconds).
        configuration.options.additionalStartupParameters.append(("idle_in_transaction_session_timeout", "15000"))
        pool = BlockingConnectionPool(configuration: configuration, size: connections, logger: logger)
        leasePool = BlockingConnectionPool(configuration: configuration, size: 1, logger: logger)
        // Fail at start-up, with the reason, when the server cannot be reached.
        try pool.with { _ in }
        if migrate { try self.migrate() }
    }

    public func close() {
        pool.closeAll()
        leasePool.closeAll()
    }

    /// Creates an empty database on the server `url` points at and returns its URL: the tests
    /// and the benchmark give each server they start a database of its own.
    public static func freshDatabase(on url: String, prefix: String = "gh") throws -> String {
        var target = try PostgresTarget(url: url)
        let name = prefix + "_" + UUID().uuidString.prefix(13).lowercased().replacingOccurrences(of: "-", with: "")
        target.configuration.database = target.configuration.database ?? "postgres"
        let pool = BlockingConnectionPool(configuration: target.configuration, size: 1, logger: Logger(label: "gatehouse.postgres"))
        defer { pool.closeAll() }
        try pool.with { pooled in try PostgresSession(pooled, logger: Logger(label: "gatehouse.postgres")).run("CREATE DATABASE \(name)") }
        guard var parts = URLComponents(string: url) else { throw StoreFailure("not a URL: \(url)") }
        parts.path = "/" + name
        return parts.string ?? url
    }

    // MARK: StoreDatabase

    /// PostgreSQL's waits end with the statement's own timeouts; nothing to switch off.
    public func stopWaitingForLocks() {}

    public func read<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T {
        try await offloaded { try self.readNow(body) }
    }

    public func write<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T {
        try await offloaded { try self.writeNow(body) }
    }

    public func readNow<T>(_ body: (any SQLSession) throws -> T) throws -> T {
        try pool.with { pooled in try body(PostgresSession(pooled, logger: logger)) }
    }

    /// Takes the commit lock too: a write outside the group commit (a reminder fired, a
    /// dataset created, a nonce claimed) often reads before it writes, and replicas doing the
    /// same at once must see each other's result. Such writes are rare and short.
    public func writeNow<T>(_ body: (any SQLSession) throws -> T) throws -> T {
        try transaction(lock: true, relaxed: false, body)
    }

    public func commit(relaxed: Bool, _ body: (any SQLSession) throws -> Void) throws {
        try transaction(lock: true, relaxed: relaxed, body)
    }

    /// Runs `body` in a transaction on a pooled connection: committed when it returns, rolled
    /// back when it throws (PostgreSQL refuses every later statement of a failed transaction,
    /// so a connection goes back to the pool only clean).
    func transaction<T>(lock: Bool, relaxed: Bool, _ body: (any SQLSession) throws -> T) throws -> T {
        try pool.with { pooled in
            let session = PostgresSession(pooled, logger: logger)
            var begin = "BEGIN;"
            if lock { begin += " SELECT pg_advisory_xact_lock(\(Self.lockSpace), \(Lock.commit.rawValue));" }
            // `durability: normal` is PostgreSQL's asynchronous commit: a crash of the server
            // (not of Gatehouse) may lose the last moments, never corrupt.
            if relaxed || durability == .normal { begin += " SET LOCAL synchronous_commit = off;" }
            do {
                try session.run(begin)
                let value = try body(session)
                try session.commit()
                return value
            } catch {
                // A connection that cannot be brought back out of the transaction is closed,
                // never handed to the next caller mid-transaction.
                do { try session.run("ROLLBACK") } catch { pooled.broken = true }
                throw error
            }
        }
    }

    /// Statements in autocommit on the leases' own connection, off the caller's thread.
    func leases<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T {
        try await offloaded { try self.leasePool.with { pooled in try body(PostgresSession(pooled, logger: self.logger)) } }
    }

    private func offloaded<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            blocking.async { continuation.resume(with: Result { try work() }) }
        }
    }

    // MARK: Migrations

    public func appliedMigrations() throws -> [String] {
        try readNow { db in try db.values(String.self, "SELECT name FROM gatehouse_migrations ORDER BY n") }
    }

    /// Applies the migrations this build knows and the database lacks, each in its own
    /// transaction, under a session advisory lock: replicas starting together migrate once.
    public func migrate() throws {
        try pool.with { pooled in
            let session = PostgresSession(pooled, logger: logger)
            try session.run("SELECT pg_advisory_lock(\(Self.lockSpace), \(Lock.migrate.rawValue))")
            defer { try? session.run("SELECT pg_advisory_unlock(\(Self.lockSpace), \(Lock.migrate.rawValue))") }
            try session.run("""
                CREATE TABLE IF NOT EXISTS gatehouse_migrations (
                    n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    applied_at BIGINT NOT NULL
                )
                """)
            let applied = Set(try session.values(String.self, "SELECT name FROM gatehouse_migrations"))
            for migration in PostgresSchema.migrations where !applied.contains(migration.name) {
                try session.run("BEGIN")
                do {
                    try session.run(migration.sql)
                    try session.execute("INSERT INTO gatehouse_migrations (name, applied_at) VALUES (?, ?)", [migration.name, Timestamp.now().milliseconds])
                    try session.run("COMMIT")
                } catch {
                    try? session.run("ROLLBACK")
                    throw StoreFailure("migration \(migration.name) failed: \(String(reflecting: error))")
                }
            }
        }
    }
}

/// A database failure told in words (PostgresNIO's errors hide the server's message from
/// `description` on purpose; this is for the operator's log).
public struct StoreFailure: Error, CustomStringConvertible, StorageFullTelling {
    public var description: String
    /// The server's SQLSTATE, when the failure is PostgreSQL's answer.
    public var sqlState: String?
    public init(_ description: String, sqlState: String? = nil) {
        self.description = description
        self.sqlState = sqlState
    }

    /// 53100, disk_full: a table or index could not grow. (A full disk under the WAL stops
    /// PostgreSQL itself; the connections then fail, a 500.)
    public var meansStorageFull: Bool { sqlState == "53100" }
}

/// `postgres://user:password@host:port/database?sslmode=…` as a connection configuration.
struct PostgresTarget {
    var configuration: PostgresConnection.Configuration
    var redacted: String

    init(url: String) throws {
        guard let parts = URLComponents(string: url), let scheme = parts.scheme?.lowercased(), ["postgres", "postgresql"].contains(scheme) else {
            throw StoreFailure("not a PostgreSQL URL: expected postgres://user:password@host:port/database")
        }
        let host = parts.host.flatMap { $0.isEmpty ? nil : $0 } ?? "localhost"
        let port = parts.port ?? 5432
        let user = parts.user ?? "postgres"
        let database = parts.path.hasPrefix("/") ? String(parts.path.dropFirst()) : parts.path
        let mode = parts.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "prefer"
        var relaxedTLS = TLSConfiguration.makeClientConfiguration()
        relaxedTLS.certificateVerification = .none
        let tls: PostgresConnection.Configuration.TLS
        // libpq's meanings: require encrypts without checking the certificate; verify-* check it.
        switch mode {
        case "disable": tls = .disable
        case "allow", "prefer": tls = .prefer(try NIOSSLContext(configuration: relaxedTLS))
        case "require": tls = .require(try NIOSSLContext(configuration: relaxedTLS))
        case "verify-ca", "verify-full": tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        default: throw StoreFailure("sslmode \(mode) is not one of disable, allow, prefer, require, verify-ca, verify-full")
        }
        configuration = PostgresConnection.Configuration(
            host: host, port: port, username: user, password: parts.password, database: database.isEmpty ? nil : database, tls: tls)
        configuration.options.connectTimeout = .seconds(10)
        redacted = "\(scheme)://\(user)@\(host):\(port)/\(database)"
    }
}

/// A few connections shared by blocking callers: each takes one for the length of its work.
final class BlockingConnectionPool: Sendable {
    let configuration: PostgresConnection.Configuration
    private let idle = Mutex<[PooledConnection]>([])
    private let slots: DispatchSemaphore
    private let logger: Logger
    private let nextID = Atomic<Int>(0)

    init(configuration: PostgresConnection.Configuration, size: Int, logger: Logger) {
        self.configuration = configuration
        slots = DispatchSemaphore(value: size)
        self.logger = logger
    }

    func with<T>(_ body: (PooledConnection) throws -> T) throws -> T {
        slots.wait()
        defer { slots.signal() }
        let connection = try checkout()
        do {
            let value = try body(connection)
            release(connection)
            return value
        } catch {
            release(connection)
            throw error
        }
    }

    /// An idle connection still open (one the server closed — a restart, a terminated backend
    /// — is dropped: a query on it would never be answered), else a new one.
    private func checkout() throws -> PooledConnection {
        while let pooled = idle.withLock({ $0.popLast() }) {
            if !pooled.connection.isClosed && !pooled.broken { return pooled }
            let _: EventLoopFuture<Void> = pooled.connection.close()
        }
        return PooledConnection(try connect())
    }

    private func release(_ pooled: PooledConnection) {
        if pooled.connection.isClosed { return }
        if pooled.broken {
            let _: EventLoopFuture<Void> = pooled.connection.close()
            return
        }
        idle.withLock { $0.append(pooled) }
    }

    private func connect() throws -> PostgresConnection {
        do {
            return try PostgresConnection.connect(
                on: MultiThreadedEventLoopGroup.singleton.any(), configuration: configuration,
                id: nextID.add(1, ordering: .relaxed).newValue, logger: logger
            ).wait()
        } catch {
            throw StoreFailure("cannot connect to PostgreSQL: \(String(reflecting: error))")
        }
    }

    // PostgresNIO asserts that a connection is closed before it goes.
    deinit { closeAll() }

    func closeAll() {
        let all = idle.withLock { all in defer { all = [] }; return all }
        for pooled in all { try? pooled.connection.close().wait() }
    }
}

/// A pooled connection with the statements prepared on it (by SQL text). Used by one thread
/// at a time: the pool hands it out whole.
final class PooledConnection: @unchecked Sendable {
    let connection: PostgresConnection
    var prepared: [String: String] = [:]
    /// Left mid-transaction or unanswered: closed instead of going back to the pool.
    var broken = false
    init(_ connection: PostgresConnection) { self.connection = connection }
}
