import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Latencies and outcomes of a closed-loop load run.
final class LoadStats: Sendable {
    private struct State {
        var latencies: [UInt64] = []
        var ok = 0
        var failed = 0
        var statuses: [UInt: Int] = [:]
    }
    private let state = Mutex(State())

    func record(latency: UInt64, status: UInt) {
        state.withLock { s in
            s.latencies.append(latency)
            s.statuses[status, default: 0] += 1
            if (200..<300).contains(status) { s.ok += 1 } else { s.failed += 1 }
        }
    }

    var snapshot: (latencies: [UInt64], ok: Int, failed: Int, statuses: [UInt: Int]) {
        state.withLock { ($0.latencies, $0.ok, $0.failed, $0.statuses) }
    }
}

/// Hands out request numbers until the budget is spent.
final class Budget: Sendable {
    private let next = Atomic<Int>(0)
    let total: Int
    init(total: Int) { self.total = total }
    func take() -> Int? {
        let n = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return n < total ? n : nil
    }
}

/// One keep-alive connection sending requests back to back: each response triggers the next.
final class LoadHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let host: String
    let method: HTTPMethod
    let path: String
    let contentType: String
    let makeBody: @Sendable (Int) -> ByteBuffer
    let budget: Budget
    let stats: LoadStats
    let done: EventLoopPromise<Void>
    var sentAt: UInt64 = 0
    var status: UInt = 0

    init(host: String, method: HTTPMethod = .POST, path: String, contentType: String, makeBody: @escaping @Sendable (Int) -> ByteBuffer, budget: Budget, stats: LoadStats, done: EventLoopPromise<Void>) {
        self.host = host
        self.method = method
        self.path = path
        self.contentType = contentType
        self.makeBody = makeBody
        self.budget = budget
        self.stats = stats
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        sendNext(context: context)
    }

    func sendNext(context: ChannelHandlerContext) {
        guard let n = budget.take() else {
            done.succeed(())
            context.close(promise: nil)
            return
        }
        let body = makeBody(n)
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: host)
        if method == .POST {
            head.headers.add(name: "Content-Type", value: contentType)
            head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        }
        sentAt = DispatchTime.now().uptimeNanoseconds
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if method == .POST { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = head.status.code
        case .body: break
        case .end:
            stats.record(latency: DispatchTime.now().uptimeNanoseconds - sentAt, status: status)
            sendNext(context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.succeed(())
    }
}

struct LoadResult {
    var requests: Int
    var failed: Int
    var seconds: Double
    var p50: Double
    var p99: Double
    var statuses: [UInt: Int]
}

/// Drives `total` requests over `connections` keep-alive connections from one event-loop
/// thread, so the load generator takes as little of the machine as it can.
func runLoad(port: Int, connections: Int, total: Int, method: HTTPMethod = .POST, path: String = "/v1/events", contentType: String = "application/json", makeBody: @escaping @Sendable (Int) -> ByteBuffer) throws -> LoadResult {
    try runLoad(ports: [port], connections: connections, total: total, method: method, path: path, contentType: contentType, makeBody: makeBody)
}

/// The same over several servers: connection i goes to `ports[i % ports.count]` (replicas
/// behind a round-robin balancer).
func runLoad(ports: [Int], connections: Int, total: Int, method: HTTPMethod = .POST, path: String = "/v1/events", contentType: String = "application/json", makeBody: @escaping @Sendable (Int) -> ByteBuffer) throws -> LoadResult {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    defer { try? group.syncShutdownGracefully() }
    let budget = Budget(total: total)
    let stats = LoadStats()
    let start = DispatchTime.now().uptimeNanoseconds
    var futures: [EventLoopFuture<Void>] = []
    for i in 0..<connections {
        let port = ports[i % ports.count]
        futures.append(connectHTTP(group: group, port: port) { done in
            LoadHandler(host: "127.0.0.1:\(port)", method: method, path: path, contentType: contentType, makeBody: makeBody, budget: budget, stats: stats, done: done)
        })
    }
    for f in futures { try f.wait() }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    let snap = stats.snapshot
    let sorted = snap.latencies.sorted()
    func percentile(_ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e6
    }
    return LoadResult(requests: sorted.count, failed: snap.failed, seconds: seconds, p50: percentile(0.50), p99: percentile(0.99), statuses: snap.statuses)
}

/// Opens one keep-alive HTTP/1.1 connection to 127.0.0.1:`port` ending in the handler
/// `makeHandler` builds; the future completes when the handler fulfils its promise (or the
/// connection fails).
func connectHTTP(group: EventLoopGroup, port: Int, _ makeHandler: @escaping @Sendable (EventLoopPromise<Void>) -> any ChannelHandler) -> EventLoopFuture<Void> {
    let done = group.next().makePromise(of: Void.self)
    ClientBootstrap(group: group)
        .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                try channel.pipeline.syncOperations.addHandler(makeHandler(done))
            }
        }
        .connect(host: "127.0.0.1", port: port)
        .whenFailure { done.fail($0) }
    return done.futureResult
}
