import GatehouseCore
import GatehousePostgres
import GatehouseStore
import ServiceLifecycle

/// Which store a location names: a `postgres://` (or `postgresql://`) URL is a PostgreSQL
/// server that several processes may share; anything else is a SQLite file.
public enum Storage {
    public static func isPostgres(_ location: String) -> Bool {
        let lower = location.prefix(14).lowercased()
        return lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://")
    }

    public static func open(_ location: String, durability: Durability = .full, migrate: Bool = true) throws -> any StoreDatabase {
        if isPostgres(location) { return try PostgresStore(url: location, durability: durability, migrate: migrate) }
        return try GatehouseDatabase(path: location, durability: durability)
    }

    /// The location without a password, for messages and logs.
    public static func redacted(_ location: String) -> String {
        guard isPostgres(location), let at = location.lastIndex(of: "@"), let scheme = location.range(of: "://") else { return location }
        let credentials = location[scheme.upperBound..<at]
        guard let colon = credentials.firstIndex(of: ":") else { return location }
        return String(location[..<colon]) + ":***" + String(location[at...])
    }
}

/// A loop that runs until the service group shuts down (the bus bridge, the ownership locks):
/// cancelled at shutdown, which its loop honours.
struct BackgroundLoop: Service {
    let body: @Sendable () async -> Void
    init(_ body: @escaping @Sendable () async -> Void) { self.body = body }

    func run() async throws {
        await cancelWhenGracefulShutdown { await body() }
    }
}
