import BenchNet
import Foundation
import NIOCore

/// `gatehouse-bench --alerts`: the users' load for the core job, failure alerts into chat.
/// Every event is a new run (as every CI job and pipeline run is), one event per request over
/// 16 keep-alive connections, one live `webhook` receiver on loopback with `group_by: ['...']`
/// and `group_wait: 0s`, so each event is one signed webhook. Prints ingest events/s, first
/// send → last delivery, ingest → delivery p50/p99, the server's CPU per event (from
/// `/proc/<pid>/stat`) and its RSS after 10k, 100k and a further 100k events. Then batches of
/// 100 with a new run per event and no receiver.
enum AlertsBench {
    static let connections = 16

    /// `ingestOnly` skips the receiver's phases, `receiverOnly` the phases without one (for
    /// A/B runs of the delivery path).
    static func run(binary: String, scale: Int, durability: String, ingestOnly: Bool = false, receiverOnly: Bool = false, floorOnly: Bool = false) throws {
        if floorOnly {
            let sink = try CSink()
            defer { sink.stop() }
            return try runFloor(sink: sink, scale: scale)
        }
        if !ingestOnly { try runWithReceiver(binary: binary, scale: scale, durability: durability) }
        if !receiverOnly { try runWithoutReceiver(binary: binary, scale: scale, durability: durability) }
    }

    static func runWithReceiver(binary: String, scale: Int, durability: String) throws {
        let sink = try CSink()
        defer { sink.stop() }
        let config = try writeConfig(sinkPort: sink.port)
        print("gatehouse alerts benchmark — \(ProcessInfo.processInfo.activeProcessorCount) cores shared by server, load generator and sink (both in C, on epoll); durability=\(durability)")
        print("load: a new run per event, one event per request, \(connections) keep-alive connections, one webhook receiver answering 200 at once, group_by ['...']")
        print("")
        let server = try BenchServer(binary: binary, durability: durability, config: config)
        defer { server.stop() }
        let idle = server.rss()
        print("  idle RSS \(Bench.format(idle.current)) MB")
        // Phases run back to back on one server: the later ones show whether memory stays flat.
        let phases = [10_000 * scale, 90_000 * scale, 100_000 * scale]
        var sent = 0
        for (index, count) in phases.enumerated() {
            let label = ["first \(count)", "next \(count) (to \(sent + count))", "a further \(count) (to \(sent + count))"][index]
            let result = try phase(server: server, sink: sink, first: sent, count: count)
            sent += count
            result.print(label: label)
            let rss = server.rss()
            print("    RSS after \(sent) events: \(Bench.format(rss.current)) MB (anonymous \(Bench.format(rss.anonymous)) MB)")
        }
        server.stop()
        try runFloor(sink: sink, scale: scale)
        print("")
    }

    /// The same load through `Relay`, which only answers and forwards on the same stack (NIO in,
    /// libcurl out): what the machine allows any server here, before storing or dispatching;
    /// then durable (a fsynced log); then writing an alert's rows to a Gatehouse database, in
    /// three shapes — what the store alone costs, before parsing, routing, rendering, signing
    /// or dispatching.
    static func runFloor(sink: CSink, scale: Int) throws {
        for commit in [BenchServer.RelayCommit.none, .log] + AlertRows.Shape.allCases.map(BenchServer.RelayCommit.rows) {
            let relay = try BenchServer(relayingTo: sink.port, commit: commit)
            defer { relay.stop() }
            let title = switch commit {
            case .none: "the floor: a relay on the same stack (NIO answers 202, libcurl posts to the sink, nothing stored)"
            case .log: "the durable floor: the same relay, answering once its group of events is appended to a file and fdatasynced"
            case .rows(.gatehouse):
                "the SQLite floor: the same relay, answering once its group's alert rows (event, run, pending delivery, failing state; the outcome later) are committed to a Gatehouse database — no parsing, routing, rendering, signing or dispatcher"
            case .rows(.withoutIndexes): "  the same rows without the \(AlertRows.apiIndexes.count) secondary indexes the API and the dispatcher read"
            case .rows(.minimal): "  only the event and its delivery (and the outcome), with their indexes: no run summary, no failing state"
            }
            print("  " + title)
            try phase(server: relay, sink: sink, first: 900_000_000, count: 10_000 * scale).print(label: "  first \(10_000 * scale)")
            try phase(server: relay, sink: sink, first: 1_000_000_000, count: 100_000 * scale).print(label: "  next \(100_000 * scale)")
        }
    }


    /// Batches of 100 events, a new run per event, no receiver; then single events likewise.
    static func runWithoutReceiver(binary: String, scale: Int, durability: String) throws {
        let plain = try BenchServer(binary: binary, durability: durability)
        defer { plain.stop() }
        let requests = 1000 * scale
        let port = plain.port
        func posts(_ count: Int, _ body: (Int) -> String) -> CRequests { CRequests((0..<count).map { httpRequest(port: port, body: body($0)) }) }
        _ = try runCLoad(ports: [port], connections: 8, requests: posts(100) { batchText(1_000_000_000 + $0) })
        let (batches, _) = try runCLoad(ports: [port], connections: 8, requests: posts(requests, batchText))
        Bench.report("batches of 100, new run per event, no receiver, 8 connections", batches, eventsPerRequest: 100)
        // The same single events with no receiver: what ingest alone costs, so the figures
        // above split into ingest and delivery.
        let singleRequests = posts(20_000 * scale) { alertText(5_000_000_000 + $0) }
        let cpuBefore = plain.cpuTicks()
        let (singles, _) = try runCLoad(ports: [port], connections: connections, requests: singleRequests)
        let seconds = Double(plain.cpuTicks() - cpuBefore) / Double(sysconf(Int32(_SC_CLK_TCK)))
        Bench.report("single events, new run per event, no receiver, \(connections) connections", singles, eventsPerRequest: 1)
        print(String(format: "    server CPU %.0f µs/event for ingest alone", seconds * 1e6 / Double(singles.requests)))
        // The floor under every figure above: the same connections asking `GET /healthz`,
        // which touches neither JSON nor the database — what the HTTP stack itself costs.
        let probes = CRequests([[UInt8]](repeating: httpRequest(method: "GET", path: "/healthz", port: port), count: 20_000 * scale))
        let floorBefore = plain.cpuTicks()
        let (floor, _) = try runCLoad(ports: [port], connections: connections, requests: probes)
        let floorSeconds = Double(plain.cpuTicks() - floorBefore) / Double(sysconf(Int32(_SC_CLK_TCK)))
        Bench.report("GET /healthz, \(connections) connections (the HTTP stack's floor)", floor, eventsPerRequest: 1)
        print(String(format: "    server CPU %.0f µs/request", floorSeconds * 1e6 / Double(floor.requests)))
    }

    struct PhaseResult {
        var events: Int
        var delivered: Int
        var ingestSeconds: Double
        var firstToLast: Double
        var p50: Double
        var p99: Double
        var requestP99: Double
        var failed: Int
        var cpuMicrosPerEvent: Double
        /// This process's CPU per event: the load generator and the sink, which share the
        /// machine with the server (what is left of it bounds the server's throughput).
        var benchMicrosPerEvent: Double
        /// The server's CPU per event by part (threads), summed over the servers.
        var byThread: [(ThreadPart, Double)] = []

        func print(label: String) {
            Swift.print(String(
                format: "  %@: ingest %.0f events/s (request p99 %.2f ms, %d failed); first send → last delivery %.2f s; ingest → delivery p50 %.1f ms, p99 %.1f ms; server CPU %.0f µs/event (load generator and sink %.0f)%@",
                label as NSString, Double(events) / ingestSeconds, requestP99, failed, firstToLast, p50, p99, cpuMicrosPerEvent, benchMicrosPerEvent,
                delivered < events ? " — INCOMPLETE: \(delivered) of \(events) delivered" as NSString : "" as NSString))
            if !byThread.isEmpty {
                Swift.print("    server CPU by thread, µs/event: " + byThread.filter { $0.0 != .other || $0.1 >= 0.5 }
                    .map { String(format: "%@ %.0f", $0.0.rawValue as NSString, $0.1) }.joined(separator: ", "))
            }
        }
    }

    /// Sends events `first ..< first + count` and waits until the sink has every one of them.
    static func phase(server: BenchServer, sink: CSink, first: Int, count: Int) throws -> PhaseResult {
        try phase(servers: [server], sink: sink, first: first, count: count)
    }

    /// The same over replicas: the connections spread over them, CPU summed over them (and
    /// over `alsoCounted`, the database server's processes, when given).
    static func phase(
        servers: [BenchServer], sink: CSink, first: Int, count: Int, alsoCounted: @escaping () -> Int = { 0 }
    ) throws -> PhaseResult {
        sink.reset()
        // Built before the clock starts: the load generator only sends.
        let requests = CRequests((0..<count).map { httpRequest(port: servers[0].port, body: alertText(first + $0)) })
        let cpu = { servers.reduce(0) { $0 + $1.cpuTicks() } + alsoCounted() }
        let cpuBefore = cpu()
        let threadsBefore = servers.map { $0.threadTicks() }
        let benchBefore = BenchServer.cpuTicks(stat: "/proc/self/stat")
        let start = bench_now_ns()
        let (load, sentAt) = try runCLoad(ports: servers.map(\.port), connections: connections, requests: requests)
        let ingested = bench_now_ns()
        let deadline = Date().addingTimeInterval(120)
        while sink.count < count && Date() < deadline { Thread.sleep(forTimeInterval: 0.002) }
        let cpuAfter = cpu()
        let threadsAfter = servers.map { $0.threadTicks() }
        let benchAfter = BenchServer.cpuTicks(stat: "/proc/self/stat")
        let arrivals = sink.arrivals()
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        var last: UInt64 = 0
        for n in 0..<count {
            guard let arrived = arrivals[first + n] else { continue }
            last = max(last, arrived)
            latencies.append(Double(arrived &- sentAt[n]) / 1e6)
        }
        latencies.sort()
        func p(_ q: Double) -> Double { latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * q))] }
        let ticks = Double(cpuAfter - cpuBefore) / Double(sysconf(Int32(_SC_CLK_TCK)))
        return PhaseResult(
            events: count, delivered: latencies.count, ingestSeconds: Double(ingested - start) / 1e9,
            firstToLast: Double(max(last, ingested) - start) / 1e9, p50: p(0.5), p99: p(0.99), requestP99: load.p99, failed: load.failed,
            cpuMicrosPerEvent: ticks * 1e6 / Double(count),
            benchMicrosPerEvent: Double(benchAfter - benchBefore) / Double(sysconf(Int32(_SC_CLK_TCK))) * 1e6 / Double(count),
            byThread: zip(threadsBefore, threadsAfter).map { ThreadPart.perEvent(before: $0, after: $1, events: count) }
                .reduce(into: ThreadPart.allCases.map { ($0, 0.0) }) { sum, server in
                    for i in sum.indices { sum[i].1 += server[i].1 }
                })
    }


    static func alertText(_ n: Int) -> String {
        #"{"id":"a\#(n)","type":"run.failed","pipeline":"build-\#(n % 50)","run":"run-\#(n)","summary":"job failed: exit code 1 in step test"}"#
    }

    static func batchText(_ n: Int) -> String {
        var text = "["
        for i in 0..<100 {
            if i > 0 { text += "," }
            text += #"{"type":"run.failed","pipeline":"build-\#(i % 50)","run":"b\#(n)-\#(i)","summary":"job failed: exit code 1 in step test"}"#
        }
        return text + "]"
    }

    static func writeConfig(sinkPort: Int) throws -> String {
        let yaml = """
            receivers:
              - name: hooks
                webhook: { url: http://127.0.0.1:\(sinkPort)/hook, secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw }
            route:
              receiver: hooks
              group_by: ['...']
              group_wait: 0s

            """
        let path = NSTemporaryDirectory() + "gatehouse-bench-alerts.yml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
