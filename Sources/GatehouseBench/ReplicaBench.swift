import Foundation
import GatehousePostgres

/// `gatehouse-bench --replicas 1,2,3 --db postgres://…`: the `--alerts` load (a new run per
/// event, one per request, 16 connections, one live webhook receiver) against 1, 2, 3…
/// `gatehouse serve` processes sharing one fresh PostgreSQL database, the connections spread
/// over them; and, beside it, one process on SQLite. Prints ingest events/s, first send →
/// last delivery, ingest → delivery p50/p99, and CPU per event: Gatehouse's (summed over the
/// replicas) and PostgreSQL's own (its processes on this machine).
enum ReplicaBench {
    static func run(binary: String, scale: Int, replicas: [Int], server: String, durability: String) throws {
        let count = 10_000 * scale
        print("gatehouse replicas benchmark — \(ProcessInfo.processInfo.activeProcessorCount) cores shared by PostgreSQL, the replicas, the load generator and the sink; durability=\(durability)")
        print("load: \(count) events, a new run per event, one per request, \(AlertsBench.connections) keep-alive connections spread over the replicas, one webhook receiver")
        print("")
        let sink = try CSink()
        defer { sink.stop() }
        let config = try AlertsBench.writeConfig(sinkPort: sink.port)

        let sqlite = try BenchServer(binary: binary, durability: durability, config: config)
        _ = try AlertsBench.phase(server: sqlite, sink: sink, first: 900_000_000, count: 1000)
        try AlertsBench.phase(server: sqlite, sink: sink, first: 0, count: count).print(label: "SQLite, 1 process")
        sqlite.stop()

        for n in replicas where n > 0 {
            let database = try PostgresStore.freshDatabase(on: server, prefix: "ghbench")
            let servers = try (0..<n).map { _ in try BenchServer(binary: binary, durability: durability, config: config, db: database) }
            defer { for s in servers { s.stop() } }
            // Warm-up: connections, statement plans, ownership settled.
            _ = try AlertsBench.phase(servers: servers, sink: sink, first: 800_000_000 + n * 10_000, count: 1000)
            let result = try AlertsBench.phase(servers: servers, sink: sink, first: n * 1_000_000, count: count, alsoCounted: postgresTicks)
            result.print(label: "PostgreSQL, \(n) replica\(n == 1 ? "" : "s") (CPU includes PostgreSQL's)")
        }
    }

    /// CPU ticks used so far by every `postgres` process on this machine (the server the
    /// replicas share, when it runs here).
    static func postgresTicks() -> Int {
        guard let pids = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return 0 }
        var total = 0
        for pid in pids where pid.allSatisfy(\.isNumber) {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")"),
                  stat[stat.index(after: open)..<close] == "postgres" else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            total += (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
        }
        return total
    }
}
