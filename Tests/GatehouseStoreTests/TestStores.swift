import Foundation
import GatehousePostgres
import GatehouseStore

/// Where a test's store lives: a fresh SQLite file, or — when GATEHOUSE_TEST_POSTGRES names a
/// PostgreSQL server (`make test` starts one) — a fresh database there. Open it (again, to
/// test what survives) with `openTestStore`.
func freshStoreLocation(_ prefix: String) -> String {
    if let server = ProcessInfo.processInfo.environment["GATEHOUSE_TEST_POSTGRES"], !server.isEmpty {
        do { return try PostgresStore.freshDatabase(on: server) } catch { fatalError("cannot create a test database on \(server): \(error)") }
    }
    return NSTemporaryDirectory() + "gatehouse-\(prefix)-\(UUID().uuidString).db"
}

func openTestStore(_ location: String) throws -> any StoreDatabase {
    location.hasPrefix("postgres") ? try PostgresStore(url: location) : try GatehouseDatabase(path: location)
}
