import Foundation
import GatehouseClient
import GatehouseCore
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// `gatehouse-bench --gates`: how fast a decision wakes its waiters (1,000 concurrent
/// `GET /v1/gates/{id}/wait` over HTTP, time from sending the decision to each waiter's
/// answer), and the server's memory with 10,000 pending gates.
enum GateBench {
    static func run(binary: String, scale: Int) throws {
        let args = CommandLine.arguments
        func option(_ name: String, _ fallback: Int) -> Int {
            if let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) { return v }
            return fallback
        }
        raiseFileLimit()
        print("gatehouse gate benchmark — \(ProcessInfo.processInfo.activeProcessorCount) cores, waiters on the same machine")
        print("")
        if !args.contains("--wake-only") { try pendingGates(binary: binary, scale: scale) }
        let waiters = option("--waiters", 1000)
        let rounds = option("--rounds", 5 * scale)
        var answerSize = 0
        for durability in ["full", "normal"] {
            answerSize = try wakeUps(binary: binary, durability: durability, waiters: waiters, rounds: rounds)
        }
        // The same answers written by a bare loop of write calls: what this machine's loopback
        // TCP costs with no server at all.
        var floor: [Double] = []
        let answer = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(answerSize)\r\n\r\n".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: answerSize)
        for _ in 0..<rounds { floor += try LoopbackFloor.measure(count: waiters, answer: answer) }
        floor.sort()
        print(String(format: "  floor: the same %d answers written by a bare loop of write(2), no server: p50 %.2f ms  p99 %.2f ms", waiters, percentile(floor, 0.5), percentile(floor, 0.99)))
    }

    static func percentile(_ sorted: [Double], _ q: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] }

    /// `waiters` HTTP waits on one gate, then a decision: the time from sending the decision
    /// to each waiter's whole answer. Returns the answer's body size.
    static func wakeUps(binary: String, durability: String, waiters: Int, rounds: Int) throws -> Int {
        let server = try BenchServer(binary: binary, durability: durability)
        defer { server.stop() }
        let client = HTTPClient(timeout: 30)
        let base = "http://127.0.0.1:\(server.port)"
        var wakeups: [Double] = []
        var decisions: [Double] = []
        // From the first answer to each: the fan-out alone, without the decision's commit.
        var spread: [Double] = []
        var answerSize = 0
        for round in 0..<rounds {
            let created = try client.send(method: "POST", url: base + "/v1/gates", headers: ["Content-Type": "application/json"], body: Array(#"{"title":"bench \#(round)","pipeline":"bench-wait"}"#.utf8))
            guard let id = (try? JSONValue.parse(bytes: created.body))?.objectValue?["id"]?.stringValue else { throw BenchFailure("could not open a gate: \(created.text)") }
            let request = Array("GET /v1/gates/\(id)/wait?timeout=60s HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\n\r\n".utf8)
            let waiting = try RawWaiters(port: server.port, count: waiters, request: request)
            defer { waiting.closeAll() }
            // Let every wait reach the server and park.
            Thread.sleep(forTimeInterval: 2)
            if round == 0, durability == "full" { print("  RSS with \(waiters) waiters connected: \(Bench.format(server.rss().current)) MB") }
            let collecting = Collecting(waiting)
            Thread.sleep(forTimeInterval: 0.1)
            perfControl("enable")
            let sent = DispatchTime.now().uptimeNanoseconds
            let decided = try client.send(method: "POST", url: base + "/v1/gates/\(id)/decisions", headers: ["Content-Type": "application/json"], body: Array(#"{"decision":"approve","by":"web:bench"}"#.utf8))
            decisions.append(Double(DispatchTime.now().uptimeNanoseconds - sent) / 1e6)
            guard decided.status == 200 else { throw BenchFailure("decision failed: \(decided.status) \(decided.text)") }
            let answers = collecting.wait()
            perfControl("disable")
            guard answers.count == waiters else { throw BenchFailure("only \(answers.count) of \(waiters) waiters answered") }
            guard answers.allSatisfy({ $0.status == 200 && $0.body.contains(#""state":"approved""#) }) else {
                throw BenchFailure("a waiter got another answer: \(answers.first { $0.status != 200 || !$0.body.contains(#""state":"approved""#) }.map { "\($0.status) \($0.body)" } ?? "")")
            }
            answerSize = answers[0].body.utf8.count
            wakeups += answers.map { Double($0.arrived &- sent) / 1e6 }
            let first = answers.map(\.arrived).min()!
            spread += answers.map { Double($0.arrived - first) / 1e6 }
        }
        wakeups.sort()
        decisions.sort()
        spread.sort()
        let p = percentile
        print(String(format: "  durability=%@  decision → wake-up, %d waiters × %d rounds: p50 %.2f ms  p99 %.2f ms  max %.2f ms", durability, waiters, rounds, p(wakeups, 0.5), p(wakeups, 0.99), wakeups.last ?? 0))
        print(String(format: "      the decision's own request p50 %.2f ms (its commit); first answer to each: p50 %.2f ms  p99 %.2f ms", p(decisions, 0.5), p(spread, 0.5), p(spread, 0.99)))
        return answerSize
    }

    static func pendingGates(binary: String, scale: Int) throws {
        // Memory with many pending gates, on a fresh server (the waiters above leave the
        // allocator holding their connections' memory).
        let pending = try BenchServer(binary: binary, durability: "full")
        defer { pending.stop() }
        let gates = 10_000 * scale
        let start = DispatchTime.now().uptimeNanoseconds
        let load = try runLoad(port: pending.port, connections: 8, total: gates, path: "/v1/gates") { n in
            ByteBuffer(string: #"{"title":"Deploy model \#(n)?","pipeline":"bench-pending","run":"r\#(n)","key":"r\#(n)/deploy","timeout":"24h","remind_every":"1h","approvers":["slack:U024BE7LH","web:bob"],"details":"AUC 0.91 (+0.02)"}"#)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        print(String(format: "  opened %d gates in %.2f s (%.0f gates/s, p99 %.2f ms, %d failed)", load.requests, seconds, Double(load.requests) / seconds, load.p99, load.failed))
        Thread.sleep(forTimeInterval: 1)
        let after = pending.rss()
        print("  RSS with \(gates) pending gates: \(Bench.format(after.current)) MB (peak \(Bench.format(after.peak)) MB, anonymous \(Bench.format(after.anonymous)) MB)")
    }

    /// A thousand sockets per side is more than the default soft limit of 1,024 descriptors;
    /// the server child inherits the raised limit.
    static func raiseFileLimit() {
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    }
}

/// Profiling hook: with `PERF_CTL=<fifo>` (perf record --control=fifo:<fifo> -D -1) only the
/// wake-up phase is sampled.
func perfControl(_ command: String) {
    guard let path = ProcessInfo.processInfo.environment["PERF_CTL"], let fifo = FileHandle(forWritingAtPath: path) else { return }
    fifo.write(Data((command + "\n").utf8))
    try? fifo.close()
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
