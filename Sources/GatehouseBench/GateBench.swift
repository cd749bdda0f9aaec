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
        let server = try BenchServer(binary: binary, durability: "full")
        defer { server.stop() }
        let client = HTTPClient(timeout: 30)
        let base = "http://127.0.0.1:\(server.port)"
        let idle = server.rss()
        print("  idle RSS \(Bench.format(idle.current)) MB")
        try pendingGates(binary: binary, scale: scale)

        let waiters = option("--waiters", 1000)
        var wakeups: [Double] = []
        var decisions: [Double] = []
        // The decision's own answer leaves when its transaction has committed (fsync included):
        // waiters answered after it measure the wake-up itself.
        var afterCommit: [Double] = []
        let rounds = 5 * scale
        for round in 0..<rounds {
            let created = try client.send(method: "POST", url: base + "/v1/gates", headers: ["Content-Type": "application/json"], body: Array(#"{"title":"bench \#(round)","pipeline":"bench-wait"}"#.utf8))
            guard let id = (try? JSONValue.parse(bytes: created.body))?.objectValue?["id"]?.stringValue else { throw BenchFailure("could not open a gate: \(created.text)") }
            let arrivals = Arrivals()
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            var connected: [EventLoopFuture<Void>] = []
            let port = server.port
            for _ in 0..<waiters {
                connected.append(connectHTTP(group: group, port: port) { done in WaitHandler(port: port, gate: id, arrivals: arrivals, done: done) })
            }
            // Let every wait reach the server and subscribe.
            Thread.sleep(forTimeInterval: 2)
            if round == 0 { print("  RSS with \(waiters) waiters connected: \(Bench.format(server.rss().current)) MB") }
            let sent = DispatchTime.now().uptimeNanoseconds
            let decided = try client.send(method: "POST", url: base + "/v1/gates/\(id)/decisions", headers: ["Content-Type": "application/json"], body: Array(#"{"decision":"approve","by":"web:bench"}"#.utf8))
            let acknowledged = DispatchTime.now().uptimeNanoseconds
            decisions.append(Double(acknowledged - sent) / 1e6)
            guard decided.status == 200 else { throw BenchFailure("decision failed: \(decided.status) \(decided.text)") }
            for f in connected { try f.wait() }
            try group.syncShutdownGracefully()
            let times = arrivals.withLock { $0 }
            guard times.count == waiters else { throw BenchFailure("only \(times.count) of \(waiters) waiters answered") }
            wakeups += times.map { Double($0 &- sent) / 1e6 }
            afterCommit += times.map { $0 > acknowledged ? Double($0 - acknowledged) / 1e6 : 0 }
        }
        wakeups.sort()
        decisions.sort()
        afterCommit.sort()
        func p(_ list: [Double], _ q: Double) -> Double { list[min(list.count - 1, Int(Double(list.count) * q))] }
        print(String(format: "  decision → wake-up, %d waiters × %d rounds: p50 %.2f ms  p99 %.2f ms  max %.2f ms  (decision request itself p50 %.2f ms)",
                     waiters, rounds, p(wakeups, 0.5), p(wakeups, 0.99), wakeups.last ?? 0, p(decisions, 0.5)))
        print(String(format: "  after the decision was acknowledged (committed):   p50 %.2f ms  p99 %.2f ms", p(afterCommit, 0.5), p(afterCommit, 0.99)))

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

final class Arrivals: Sendable {
    private let times = Mutex<[UInt64]>([])
    func withLock<T>(_ body: (inout [UInt64]) -> T) -> T { times.withLock { body(&$0) } }
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One waiter: sends the wait, notes when the answer's end arrives.
final class WaitHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let port: Int
    let gate: String
    let arrivals: Arrivals
    let done: EventLoopPromise<Void>

    init(port: Int, gate: String, arrivals: Arrivals, done: EventLoopPromise<Void>) {
        self.port = port
        self.gate = gate
        self.arrivals = arrivals
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/gates/\(gate)/wait?timeout=60s")
        head.headers.add(name: "Host", value: "127.0.0.1:\(port)")
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) {
            let now = DispatchTime.now().uptimeNanoseconds
            arrivals.withLock { $0.append(now) }
            done.succeed(())
            // Connections close when the round is over (the event loop group shuts down), so
            // closing them does not compete with the answers still on their way.
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }
}
