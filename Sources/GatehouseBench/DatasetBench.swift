import Foundation
import GatehouseClient
import GatehouseCore
import NIOCore
import NIOHTTP1
import NIOPosix

/// `gatehouse-bench --datasets`: importing 100,000 items in one streamed NDJSON request, and
/// "next item" latency with 100,000 items and 20 people labelling at once (each: next item,
/// then its label, in a loop).
enum DatasetBench {
    /// Unbuffered, so each figure shows as soon as it is measured, also when piped.
    static func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

    static func run(binary: String, scale: Int) throws {
        say("gatehouse dataset benchmark — \(ProcessInfo.processInfo.activeProcessorCount) cores, client on the same machine")
        say("")
        let durability = CommandLine.arguments.contains("--normal-only") ? "normal" : "full"
        say("durability=\(durability)")
        let server = try BenchServer(binary: binary, durability: durability)
        defer { server.stop() }
        let base = "http://127.0.0.1:\(server.port)"
        let client = HTTPClient(timeout: 600)
        _ = try client.send(method: "POST", url: base + "/v1/datasets", headers: ["Content-Type": "application/json"],
                            body: Array(#"{"name":"bench","task":"classification","labels":["pos","neg","neutral"]}"#.utf8))
        let items = 100_000 * scale
        var body = [UInt8]()
        body.reserveCapacity(items * 96)
        for i in 0..<items {
            body += Array(#"{"id":"item-\#(i)","data":{"text":"review number \#(i): the product was fine"},"meta":{"source":"bench"}}"#.utf8)
            body.append(0x0A)
        }
        let start = DispatchTime.now().uptimeNanoseconds
        let imported = try client.send(method: "POST", url: base + "/v1/datasets/bench/items", headers: ["Content-Type": "application/x-ndjson"], body: body)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        guard imported.status == 200 else { throw BenchFailure("import failed: \(imported.status) \(imported.text)") }
        say(String(format: "  import of %d items (%.1f MB NDJSON, one request): %.2f s = %.0f items/s   %@", items, Double(body.count) / 1e6, seconds, Double(items) / seconds, imported.text.trimmingCharacters(in: .whitespacesAndNewlines)))
        say("  RSS after the import: \(Bench.format(server.rss().current)) MB (peak \(Bench.format(server.rss().peak)) MB)")

        // Saturated (no pause between items: the closed loop measures throughput as much as
        // latency), then paced like people, faster than any person (a label every 100 ms each).
        try labelling(port: server.port, labellers: 20, rounds: 250 * scale, thinkMilliseconds: 0)
        try labelling(port: server.port, labellers: 20, rounds: 100 * scale, thinkMilliseconds: 100)
        if CommandLine.arguments.contains("--one") { try labelling(port: server.port, labellers: 1, rounds: 200, thinkMilliseconds: 10) }
    }

    static func labelling(port: Int, labellers: Int, rounds: Int, thinkMilliseconds: Int64) throws {
        let stats = LoadStats()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        var done: [EventLoopFuture<Void>] = []
        let began = DispatchTime.now().uptimeNanoseconds
        for n in 0..<labellers {
            done.append(connectHTTP(group: group, port: port) { promise in
                LabellerHandler(port: port, who: "labeller\(n)", rounds: rounds, think: thinkMilliseconds, stats: stats, done: promise)
            })
        }
        for f in done { try f.wait() }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9
        let snap = stats.snapshot
        let sorted = snap.latencies.sorted()
        func p(_ q: Double) -> Double { sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]) / 1e6 }
        say(String(format: "  next item, %d labellers × %d, %@: p50 %.2f ms  p99 %.2f ms  max %.2f ms  (%d served, %d failed, %.0f labels/s)",
                     labellers, rounds, (thinkMilliseconds == 0 ? "back to back" : "a label every \(thinkMilliseconds) ms each") as NSString,
                     p(0.5), p(0.99), p(1), sorted.count, snap.failed, Double(sorted.count) / elapsed))
    }
}

/// One person labelling: GET next, then POST its label, and again.
final class LabellerHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let port: Int, who: String
    var remaining: Int
    let stats: LoadStats
    let done: EventLoopPromise<Void>
    var sentAt: UInt64 = 0
    var status: UInt = 0
    var body = ByteBuffer()
    var awaitingNext = true
    let think: Int64

    init(port: Int, who: String, rounds: Int, think: Int64, stats: LoadStats, done: EventLoopPromise<Void>) {
        self.port = port
        self.think = think
        self.who = who
        self.remaining = rounds
        self.stats = stats
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        askNext(context: context)
    }

    func send(context: ChannelHandlerContext, method: HTTPMethod, uri: String, body: String?) {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
        head.headers.add(name: "Host", value: "127.0.0.1:\(port)")
        if let body {
            head.headers.add(name: "Content-Type", value: "application/json")
            head.headers.add(name: "Content-Length", value: String(body.utf8.count))
        }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func askNext(context: ChannelHandlerContext) {
        guard remaining > 0 else {
            done.succeed(())
            context.close(promise: nil)
            return
        }
        remaining -= 1
        awaitingNext = true
        sentAt = DispatchTime.now().uptimeNanoseconds
        send(context: context, method: .GET, uri: "/v1/datasets/bench/next?annotator=\(who)", body: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status.code
            body.clear()
        case .body(var chunk): body.writeBuffer(&chunk)
        case .end:
            guard awaitingNext else {
                if think > 0 {
                    let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
                    let me = NIOLoopBound(self, eventLoop: context.eventLoop)
                    context.eventLoop.scheduleTask(in: .milliseconds(think)) { me.value.askNext(context: ctx.value) }
                } else {
                    askNext(context: context)
                }
                return
            }
            stats.record(latency: DispatchTime.now().uptimeNanoseconds - sentAt, status: status)
            let id = (try? JSONValue.parse(bytes: body.readableBytesView))?.objectValue?["id"]?.stringValue
            guard let id else { askNext(context: context); return }
            awaitingNext = false
            send(context: context, method: .POST, uri: "/v1/datasets/bench/items/\(id)/labels", body: #"{"label":"pos","annotator":"\#(who)"}"#)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }
}
