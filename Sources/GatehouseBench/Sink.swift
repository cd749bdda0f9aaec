import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A minimal HTTP receiver for the delivery benchmark: answers every POST `200 ok` at once and
/// notes when each event id arrived.
final class BenchSink: Sendable {
    private let arrivals = Mutex<[String: UInt64]>([:])
    private let total = Atomic<Int>(0)
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let channel: Mutex<Channel?> = Mutex(nil)

    var count: Int { total.load(ordering: .relaxed) }
    func arrival(of id: String) -> UInt64? { arrivals.withLock { $0[id] } }
    func reset() {
        arrivals.withLock { $0.removeAll() }
        total.store(0, ordering: .relaxed)
    }

    func start() throws -> Int {
        let ch = try bindHTTPServer(group: group) { SinkHandler(sink: self) }
        channel.withLock { $0 = ch }
        return ch.localAddress!.port!
    }

    func stop() {
        _ = try? channel.withLock { $0 }?.close().wait()
        try? group.syncShutdownGracefully()
    }

    func record(body: ByteBuffer) {
        let now = DispatchTime.now().uptimeNanoseconds
        total.wrappingAdd(1, ordering: .relaxed)
        // The webhook body holds the event as {"cursor":…,"id":"…"; the first "id" after
        // "events" is the event's.
        let text = String(buffer: body)
        guard let events = text.range(of: "\"events\":"), let idKey = text.range(of: "\"id\":\"", range: events.upperBound..<text.endIndex),
              let end = text[idKey.upperBound...].firstIndex(of: "\"") else { return }
        let id = String(text[idKey.upperBound..<end])
        arrivals.withLock { if $0[id] == nil { $0[id] = now } }
    }
}

final class SinkHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let sink: BenchSink
    var body = ByteBuffer()
    init(sink: BenchSink) { self.sink = sink }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: body.clear()
        case .body(var part): body.writeBuffer(&part)
        case .end:
            sink.record(body: body)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Length", value: "2")
            headers.add(name: "Content-Type", value: "text/plain")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

/// An HTTP/1 server on 127.0.0.1 at a free port, each connection answered by a fresh
/// `handler()`: the benchmark's sink and relay.
func bindHTTPServer<Handler: ChannelInboundHandler>(
    group: any EventLoopGroup, handler: @escaping @Sendable () -> Handler
) throws -> any Channel {
    try ServerBootstrap(group: group)
        .serverChannelOption(ChannelOptions.backlog, value: 256)
        .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                try channel.pipeline.syncOperations.addHandler(handler())
            }
        }
        .bind(host: "127.0.0.1", port: 0).wait()
}
