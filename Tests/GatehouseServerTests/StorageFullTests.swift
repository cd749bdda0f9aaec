import Foundation
import GRDB
import GatehouseClient
import GatehouseCore
import GatehouseStore
import Testing

/// A full disk: writes are refused with a 503 that says so and asks for a later retry, change
/// nothing, and succeed again once there is room; reads go on meanwhile. SQLite's
/// `max_page_count` on the writer stands in for the disk (it fails writes with the very error a
/// full disk gives, SQLITE_FULL).
struct StorageFullTests {
    @Test(.disabled(if: testingPostgres, "SQLite's max_page_count; PostgreSQL's full disk is the test below"))
    func writesOnAFullDiskAre503sThatChangeNothing() async throws {
        try await InProcessServer.with { server in
            let database = try #require(server.database as? GatehouseDatabase)
            #expect(try await server.post("/v1/events", #"{"id":"before","type":"run.started","pipeline":"p","run":"r1"}"#).status == 202)
            #expect(try await server.post("/v1/datasets", #"{"name":"d","labels":["a","b"]}"#).status == 201)
            try await database.pool.writeWithoutTransaction { db in
                let pages = try Int.fetchOne(db, sql: "PRAGMA page_count")!
                _ = try Int.fetchOne(db, sql: "PRAGMA max_page_count = \(pages)")
            }
            let summary = String(repeating: "s", count: 900)
            let batch = "[" + (0..<300).map { #"{"id":"b\#($0)","type":"run.failed","pipeline":"p","run":"r\#($0)","summary":"\#(summary)"}"# }.joined(separator: ",") + "]"
            let single = #"{"id":"one","type":"run.failed","pipeline":"p","run":"big","details":"\#(String(repeating: "x", count: 20_000))"}"#
            for body in [batch, single] {
                let refused = try await server.post("/v1/events", body)
                #expect(refused.status == 503, "\(refused.text)")
                #expect(refused.header("Retry-After") == "30")
                #expect(refused.header("Content-Type") == "application/problem+json")
                #expect(refused.json["detail"]?.stringValue?.contains("disk is full; nothing was changed") == true, "\(refused.text)")
            }
            // Through the router too (the events above are answered on the event loop).
            let items = "[" + (0..<200).map { #"{"id":"i\#($0)","data":{"text":"\#(summary)"}}"# }.joined(separator: ",") + "]"
            let refusedItems = try await server.post("/v1/datasets/d/items", items)
            #expect(refusedItems.status == 503 && refusedItems.header("Retry-After") == "30", "\(refusedItems.text)")
            // Reads go on, and show nothing of what was refused.
            #expect(try await server.allEvents().compactMap { $0["id"]?.stringValue } == ["before"])
            #expect(try await server.get("/readyz").status == 200)
            let stats = try await server.json("/v1/datasets/d/stats")
            #expect(stats["labeled"] == .int(0) && stats["unlabeled"] == .int(0), "\(stats)")

            try await database.pool.writeWithoutTransaction { db in
                _ = try Int.fetchOne(db, sql: "PRAGMA max_page_count = 1073741823")
            }
            #expect(try await server.post("/v1/events", batch).status == 202)
            #expect(try await server.allEvents().count == 301)
            #expect(try await server.post("/v1/datasets/d/items", items).status == 200)
        }
    }

    /// The same on PostgreSQL, on a real full disk: the test database's tables live in a
    /// tablespace on a small tmpfs that a filler file nearly fills (SQLSTATE 53100, disk_full,
    /// when a table cannot grow). Root only (mount), in the PostgreSQL pass.
    @Test(.enabled(if: TmpfsTablespace.canMount, "needs the PostgreSQL pass on a local server, and root, for mount -t tmpfs"))
    func postgresFullDiskIsA503ThatChangesNothing() async throws {
        let admin = try #require(ProcessInfo.processInfo.environment["GATEHOUSE_TEST_POSTGRES"])
        let space = try TmpfsTablespace(admin: admin, megabytes: 8, fillerMegabytes: 5)
        defer { space.remove() }
        try await InProcessServer.with(configure: { $0.storage.sqlite = space.databaseURL }) { server in
            let summary = String(repeating: "s", count: 900)
            var accepted = 0
            var refused: (HTTPResult, String)?
            for round in 0..<200 where refused == nil {
                let batch = "[" + (0..<100).map { #"{"id":"e\#(round)-\#($0)","type":"run.failed","pipeline":"p","run":"r\#(round)-\#($0)","summary":"\#(summary)"}"# }
                    .joined(separator: ",") + "]"
                let answer = try await server.post("/v1/events", batch)
                if answer.status == 202 { accepted += 100 } else { refused = (answer, batch) }
            }
            let (full, refusedBody) = try #require(refused, "the disk never filled")
            #expect(full.status == 503, "\(full.text)")
            #expect(full.header("Retry-After") == "30")
            #expect(full.json["detail"]?.stringValue?.contains("disk is full; nothing was changed") == true, "\(full.text)")
            // Nothing of the refused batch is stored; reads go on.
            #expect(try await server.allEvents().count == accepted)
            #expect(try await server.get("/readyz").status == 200)
            // Room again: the refused batch, sent again, goes in whole.
            space.removeFiller()
            let again = try await server.post("/v1/events", refusedBody)
            #expect(again.status == 202, "\(again.text)")
            #expect(try await server.allEvents().count == accepted + 100)
        }
    }
}

/// A PostgreSQL tablespace on a tmpfs of its own, nearly filled by a filler file, and a fresh
/// database whose tables go there (its default tablespace). The database's WAL stays on the
/// cluster's disk: a full disk under the WAL stops PostgreSQL itself.
final class TmpfsTablespace: Sendable {
    let mountPoint: String
    let name: String
    let admin: String
    let databaseURL: String
    private var filler: String { mountPoint + "/filler" }

    /// Whether the test can run: the PostgreSQL pass, on a server of this machine (the
    /// tablespace's folder must be the server's), as root with the capability to mount.
    static let canMount: Bool = {
        guard let admin = ProcessInfo.processInfo.environment["GATEHOUSE_TEST_POSTGRES"], let host = URLComponents(string: admin)?.host,
              ["127.0.0.1", "localhost", "::1"].contains(host), getuid() == 0, psql != nil
        else { return false }
        let probe = NSTemporaryDirectory() + "gatehouse-mount-probe-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: probe, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: probe) }
        guard run("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", probe]) else { return false }
        _ = run("/bin/umount", [probe])
        return true
    }()

    static let psql: String? = {
        let roots = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        return roots.sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "/usr/lib/postgresql/\($0)/bin/psql" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    init(admin: String, megabytes: Int, fillerMegabytes: Int) throws {
        self.admin = admin
        let suffix = UUID().uuidString.prefix(8).lowercased()
        name = "gh_full_" + suffix
        mountPoint = NSTemporaryDirectory() + "gatehouse-full-" + suffix
        var parts = URLComponents(string: admin)
        parts?.path = "/" + name
        databaseURL = parts?.string ?? admin
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        do {
            guard Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", mountPoint]),
                  Self.run("/bin/chown", ["postgres", mountPoint])
            else { throw InProcessError("could not mount a tmpfs for PostgreSQL at \(mountPoint)") }
            FileManager.default.createFile(atPath: mountPoint + "/filler", contents: Data(count: fillerMegabytes << 20))
            try Self.sql(admin, "CREATE TABLESPACE \(name) LOCATION '\(mountPoint)'")
            try Self.sql(admin, "CREATE DATABASE \(name)")
            try Self.sql(admin, "ALTER DATABASE \(name) SET default_tablespace = \(name)")
        } catch {
            // Whatever was made so far goes, or a failed setup would leave a mount behind.
            remove()
            throw error
        }
    }

    func removeFiller() { try? FileManager.default.removeItem(atPath: filler) }

    func remove() {
        try? Self.sql(admin, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        try? Self.sql(admin, "DROP TABLESPACE IF EXISTS \(name)")
        if !Self.run("/bin/umount", [mountPoint]) { _ = Self.run("/bin/umount", ["-l", mountPoint]) }
        try? FileManager.default.removeItem(atPath: mountPoint)
    }

    private static func sql(_ url: String, _ statement: String) throws {
        guard let psql, run(psql, [url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", statement]) else {
            throw InProcessError("psql failed: \(statement)")
        }
    }

    @discardableResult
    private static func run(_ tool: String, _ arguments: [String]) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }
}
