import Foundation
import NIOCore
import Synchronization

/// `gatehouse-bench`: starts a release `gatehouse serve` on a fresh database and prints
/// ingest figures. Run: swift build -c release && .build/release/gatehouse-bench
@main
struct Bench {
    static func main() throws {
        let args = CommandLine.arguments
        func option(_ name: String, _ fallback: Int) -> Int {
            if let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) { return v }
            return fallback
        }
        let scale = option("--scale", 1)
        if let i = args.firstIndex(of: "--relay"), i + 1 < args.count, let sinkPort = Int(args[i + 1]) {
            func path(_ name: String) -> String? { args.firstIndex(of: name).flatMap { $0 + 1 < args.count ? args[$0 + 1] : nil } }
            let shape = path("--rows").map { AlertRows.Shape(rawValue: $0) ?? { fatalError("--rows: one of " + AlertRows.Shape.allCases.map(\.rawValue).joined(separator: ", ")) }() } ?? .gatehouse
            try Relay.serve(sinkPort: sinkPort, log: path("--log"), rows: path("--sqlite").map { ($0, shape) })
        }
        BenchServer.stopAllOnSignals()
        let durabilities = args.contains("--normal-only") ? ["normal"] : args.contains("--full-only") ? ["full"] : ["full", "normal"]
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gatehouse").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            print("no gatehouse binary next to the benchmark (\(binary)); run: swift build -c release")
            exit(1)
        }
        if args.contains("--datasets") {
            try DatasetBench.run(binary: binary, scale: scale)
            return
        }
        if args.contains("--gates") {
            try GateBench.run(binary: binary, scale: scale)
            return
        }
        if let i = args.firstIndex(of: "--replicas"), i + 1 < args.count {
            guard let j = args.firstIndex(of: "--db"), j + 1 < args.count, args[j + 1].hasPrefix("postgres") else {
                print("--replicas needs --db postgres://user@host:port/database (a server the benchmark may create databases on)")
                exit(2)
            }
            let counts = args[i + 1].split(separator: ",").compactMap { Int($0) }
            try ReplicaBench.run(binary: binary, scale: scale, replicas: counts, server: args[j + 1], durability: args.contains("--normal-only") ? "normal" : "full")
            return
        }
        if args.contains("--alerts") {
            try AlertsBench.run(binary: binary, scale: scale, durability: args.contains("--normal-only") ? "normal" : "full", ingestOnly: args.contains("--ingest-only"), receiverOnly: args.contains("--receiver-only"), floorOnly: args.contains("--floor-only"))
            return
        }
        if args.contains("--deliveries") {
            try DeliveryBench.run(binary: binary, scale: scale)
            return
        }
        print("gatehouse ingest benchmark — \(ProcessInfo.processInfo.activeProcessorCount) cores, load generator on the same machine")
        print("")
        for durability in durabilities {
            let server = try BenchServer(binary: binary, durability: durability)
            defer { server.stop() }
            let idle = server.rss()
            print("durability=\(durability)  idle RSS \(format(idle.current)) MB (anonymous, i.e. heap and stacks: \(format(idle.anonymous)) MB)")

            // Warm-up: first connections, statement caches, page cache.
            _ = try runLoad(port: server.port, connections: 8, total: 2000, makeBody: singleBody)

            let batchRequests = 1000 * scale
            let batch = try runLoad(port: server.port, connections: 8, total: batchRequests, makeBody: batchBody)
            report("batches of 100, 8 connections", batch, eventsPerRequest: 100)

            let singles = try runLoad(port: server.port, connections: 32, total: 60_000 * scale, makeBody: singleBody)
            report("single events, 32 connections", singles, eventsPerRequest: 1)

            let after = server.rss()
            print("  peak RSS \(format(after.peak)) MB (now \(format(after.current)) MB, anonymous \(format(after.anonymous)) MB)")
            print("")
        }
    }

    static func format(_ kb: Int) -> String { String(format: "%.1f", Double(kb) / 1024) }

    static func report(_ label: String, _ r: LoadResult, eventsPerRequest: Int) {
        let events = Double(r.requests - r.failed) * Double(eventsPerRequest)
        print(String(
            format: "  %-32@ %8.0f events/s  %7.0f req/s  p50 %6.2f ms  p99 %6.2f ms  (%d requests, %d failed)",
            label as NSString, events / r.seconds, Double(r.requests) / r.seconds, r.p50, r.p99, r.requests, r.failed))
        if r.failed > 0 { print("    statuses: \(r.statuses)") }
    }

    static let singleBody: @Sendable (Int) -> ByteBuffer = { n in
        ByteBuffer(string: #"{"type":"step.succeeded","pipeline":"bench","run":"r\#(n / 1000)","step":"s\#(n % 17)","summary":"step finished in 12.3s","labels":{"team":"ml","env":"bench"}}"#)
    }

    static let batchBody: @Sendable (Int) -> ByteBuffer = { n in
        var text = "["
        for i in 0..<100 {
            if i > 0 { text += "," }
            text += #"{"type":"step.succeeded","pipeline":"bench","run":"b\#(n)","step":"s\#(i)","summary":"step finished in 12.3s","labels":{"team":"ml","env":"bench"}}"#
        }
        return ByteBuffer(string: text + "]")
    }
}

/// A `gatehouse serve` child on a fresh database in a temp folder.
final class BenchServer {
    let process = Process()
    let dir: String
    private var stopped = false
    var port = 0

    /// `db`: a database several servers share (a `postgres://` URL); else a fresh SQLite file.
    convenience init(binary: String, durability: String, config: String? = nil, environment: [String: String] = [:], db: String? = nil) throws {
        let dir = NSTemporaryDirectory() + "gatehouse-bench-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try self.init(
            executable: binary, dir: dir, environment: environment,
            arguments: ["serve", "--address", "127.0.0.1:0", "--db", db ?? dir + "/bench.db", "--durability", durability, "--log-level", "warning"]
                + (config.map { ["--config", $0] } ?? []))
    }

    /// How `Relay` commits before it answers.
    enum RelayCommit { case none, log, rows(AlertRows.Shape) }

    /// `Relay`: this benchmark's own binary as the least a server can do, posting to the sink.
    /// `.log`: it appends each group of events to a log in `dir` and `fdatasync`s it first;
    /// `.rows`: it writes each group's alert rows, of a shape, to a Gatehouse database in `dir`.
    convenience init(relayingTo sinkPort: Int, commit: RelayCommit) throws {
        let dir = NSTemporaryDirectory() + "gatehouse-bench-relay-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let storage = switch commit {
        case .none: [String]()
        case .log: ["--log", dir + "/relay.log"]
        case .rows(let shape): ["--sqlite", dir + "/relay.db", "--rows", shape.rawValue]
        }
        try self.init(executable: "/proc/self/exe", dir: dir, environment: [:], arguments: ["--relay", String(sinkPort)] + storage)
    }

    /// Starts `executable` and reads the port from the first line it prints ("…:<port>").
    init(executable: String, dir: String, environment: [String: String], arguments: [String]) throws {
        self.dir = dir
        process.executableURL = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: executable)) ?? executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        Self.running.withLock { $0.insert(process.processIdentifier) }
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let colon = text.lastIndex(of: ":"), let p = Int(text[text.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw NSError(domain: "bench", code: 1, userInfo: [NSLocalizedDescriptionKey: "server did not start: \(text)"])
        }
        port = p
        Thread.sleep(forTimeInterval: 1)
    }

    /// (VmRSS, VmHWM, RssAnon) in KiB.
    func rss() -> (current: Int, peak: Int, anonymous: Int) {
        guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8) else { return (0, 0, 0) }
        func field(_ name: String) -> Int {
            status.split(separator: "\n").first { $0.hasPrefix(name) }.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") } ?? 0
        }
        return (field("VmRSS:"), field("VmHWM:"), field("RssAnon:"))
    }

    /// CPU time the server has used so far (user + system), in clock ticks.
    func cpuTicks() -> Int { Self.cpuTicks(stat: "/proc/\(process.processIdentifier)/stat") }

    /// The same per thread: ticks by thread id, with the thread's part of the server.
    func threadTicks() -> [Int: (part: ThreadPart, ticks: Int)] {
        let tasks = "/proc/\(process.processIdentifier)/task"
        var out: [Int: (part: ThreadPart, ticks: Int)] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? [] {
            guard let tid = Int(entry), let comm = try? String(contentsOfFile: "\(tasks)/\(entry)/comm", encoding: .utf8) else { continue }
            out[tid] = (ThreadPart(comm: comm.trimmingCharacters(in: .whitespacesAndNewlines)), Self.cpuTicks(stat: "\(tasks)/\(entry)/stat"))
        }
        return out
    }

    /// User and system CPU in clock ticks, from a `/proc/<pid>/stat` (`/proc/self/stat`: this
    /// process, the load generator and sink).
    static func cpuTicks(stat path: String) -> Int {
        guard let stat = try? String(contentsOfFile: path, encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
        // Fields after the command name: state is field 3, utime 14 and stime 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }

    /// Idempotent: a second call must not signal a pid the system may have handed on.
    func stop() {
        guard !stopped else { return }
        stopped = true
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        Self.running.withLock { _ = $0.remove(process.processIdentifier) }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Servers started and not yet stopped: a benchmark interrupted (Ctrl-C, `timeout`) takes
    /// them down with it instead of leaving them running.
    static let running = Mutex<Set<Int32>>([])
    // Written once, from the main thread, before any server starts.
    nonisolated(unsafe) private static var signalSources: [any DispatchSourceSignal] = []

    static func stopAllOnSignals() {
        for number in [SIGINT, SIGTERM, SIGHUP] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                for pid in running.withLock({ $0 }) { kill(pid, SIGKILL) }
                exit(128 + number)
            }
            source.resume()
            signalSources.append(source)
        }
    }
}

/// Which part of the server a thread is, told by its name. libdispatch names its worker
/// threads after the root queue they serve, cut to the last 15 characters: serial queues (the
/// writer's group commits, GRDB's, the bus's timers) run on `…-qos.overcommit` threads, Swift's
/// tasks (the dispatcher, the router's handlers) on `…default-qos` ones.
enum ThreadPart: String, CaseIterable {
    case eventLoops = "HTTP event loops"
    case writer = "writer and serial queues"
    case curl = "libcurl"
    case tasks = "Swift tasks"
    case other = "other"

    /// `Relay`'s log writer.
    static let relayWriterName = "relay-writer"

    init(comm: String) {
        if comm.hasPrefix("NIO-") { self = .eventLoops }
        else if comm.hasSuffix("overcommit") || comm == Self.relayWriterName { self = .writer }
        else if comm == "gatehouse-curl" { self = .curl }
        else if comm.hasSuffix("-qos") { self = .tasks }
        else { self = .other }
    }

    /// CPU per event by part between two `threadTicks` snapshots (a thread that started in
    /// between counts from zero; one that ended in between is lost, rare under load).
    static func perEvent(before: [Int: (part: ThreadPart, ticks: Int)], after: [Int: (part: ThreadPart, ticks: Int)], events: Int) -> [(ThreadPart, Double)] {
        var ticks: [ThreadPart: Int] = [:]
        for (tid, now) in after { ticks[now.part, default: 0] += now.ticks - (before[tid]?.ticks ?? 0) }
        let perTick = 1e6 / Double(sysconf(Int32(_SC_CLK_TCK))) / Double(max(events, 1))
        return allCases.map { ($0, Double(ticks[$0] ?? 0) * perTick) }
    }
}
