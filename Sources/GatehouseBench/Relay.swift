import CurlShim
import Foundation
import GatehouseDelivery
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// `gatehouse-bench --relay <sink port>`: the least any server on this stack can do for an
/// alert, run as its own process so its CPU is measured like the server's. NIO's HTTP/1 server
/// (no router, no middleware) answers each `POST` with a `202` on the event loop and hands the
/// body to the same libcurl multi client the dispatcher uses, which posts it to the sink. No
/// storage, no durability, no dispatcher, no grouping, no signature: what is left is the
/// request in, the answer out, the webhook out and its answer, over the same loopback TCP.
/// Like the dispatcher it keeps at most 32 webhooks in flight (a receiver's default
/// concurrency) and queues the rest in order: handed all at once, libcurl's multi handle slows
/// down with its queue until transfers time out. Its CPU per event is the floor under
/// `--alerts`' figure for the server.
///
/// With `log` it answers as a durable server must: each request's body goes to a writer
/// thread that takes everything waiting, appends it to the log file in one write and
/// `fdatasync`s it, then has each answer written on its event loop and its webhook sent. That
/// adds a group commit's hand-overs, its rhythm and the disk's own time, and nothing else: no
/// index, no page, no second write for the outcome.
enum Relay {
    static func serve(sinkPort: Int, log: String?) throws -> Never {
        let forwarder = Forwarder(url: "http://127.0.0.1:\(sinkPort)/hook", concurrency: 32)
        let committer = try log.map { try GroupLog(path: $0) }
        let channel = try bindHTTPServer(group: MultiThreadedEventLoopGroup.singleton) {
            RelayHandler(forwarder: forwarder, committer: committer)
        }
        // The line `BenchServer` reads, as `gatehouse serve` prints it.
        print("relay listening on 127.0.0.1:\(channel.localAddress!.port!)")
        fflush(nil)  // every stream: `stdout` itself is out of Swift 6's reach
        try channel.closeFuture.wait()
        exit(0)
    }
}

/// Posts bodies to one URL, at most `concurrency` at a time, the rest queued oldest first.
final class Forwarder: Sendable {
    let curl = CurlMultiClient()
    let url: String
    let concurrency: Int
    private let state = Mutex<(queue: [[UInt8]], head: Int, inFlight: Int)>(([], 0, 0))

    init(url: String, concurrency: Int) {
        self.url = url
        self.concurrency = concurrency
    }

    func forward(_ body: [UInt8]) {
        let start = state.withLock { s -> Bool in
            if s.inFlight < concurrency { s.inFlight += 1; return true }
            s.queue.append(body)
            return false
        }
        if start { send(body) }
    }

    private func send(_ body: [UInt8]) {
        curl.submit(OutboundRequest(url: url, headers: [("Content-Type", "application/json")], body: body)) { [self] _ in
            // On the curl thread: the next queued body takes this one's place.
            let next = state.withLock { s -> [UInt8]? in
                guard s.head < s.queue.count else { s.inFlight -= 1; return nil }
                defer {
                    s.head += 1
                    if s.head == s.queue.count { s.queue.removeAll(keepingCapacity: true); s.head = 0 }
                }
                return s.queue[s.head]
            }
            if let next { send(next) }
        }
    }
}

/// The least a group commit can be: one thread takes all that waits, appends it to a file in
/// one `write`, `fdatasync`s it and runs the completions.
final class GroupLog: @unchecked Sendable {
    private let condition = NSCondition()
    private var waiting: [(record: [UInt8], completion: @Sendable () -> Void)] = []  // guarded by `condition`
    private let fd: Int32

    init(path: String) throws {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        guard fd >= 0 else { throw BenchError("cannot open \(path): errno \(errno)") }
        Thread { [self] in
            // Counted with the server's writer in the benchmark's by-thread figures.
            _ = gh_name_this_thread(ThreadPart.relayWriterName)
            loop()
        }.start()
    }

    func submit(_ record: [UInt8], completion: @escaping @Sendable () -> Void) {
        condition.lock()
        waiting.append((record, completion))
        if waiting.count == 1 { condition.signal() }
        condition.unlock()
    }

    private func loop() {
        var buffer: [UInt8] = []
        while true {
            condition.lock()
            while waiting.isEmpty { condition.wait() }
            let group = waiting
            waiting.removeAll(keepingCapacity: true)
            condition.unlock()
            buffer.removeAll(keepingCapacity: true)
            for entry in group { buffer.append(contentsOf: entry.record); buffer.append(0x0A) }
            let written = buffer.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written == buffer.count, fdatasync(fd) == 0 else { fatalError("the relay's log could not be written: errno \(errno)") }
            for entry in group { entry.completion() }
        }
    }
}

final class RelayHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let forwarder: Forwarder
    let committer: GroupLog?
    var body: [UInt8] = []
    static let answer = ByteBuffer(string: #"{"accepted":1}"#)

    init(forwarder: Forwarder, committer: GroupLog?) {
        self.forwarder = forwarder
        self.committer = committer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            // The sink finds the event by the first "id" after "events", as in a webhook's body.
            body = Array(#"{"events":["#.utf8)
        case .body(let part):
            body.append(contentsOf: part.readableBytesView)
        case .end:
            body.append(contentsOf: "]}".utf8)
            if let committer {
                let (body, forwarder) = (body, forwarder)
                let loop = context.eventLoop
                let handler = NIOLoopBound(self, eventLoop: loop)
                let bound = NIOLoopBound(context, eventLoop: loop)
                committer.submit(body) {
                    loop.execute { handler.value.answer(context: bound.value) }
                    forwarder.forward(body)
                }
            } else {
                forwarder.forward(body)
                answer(context: context)
            }
        }
    }

    func answer(context: ChannelHandlerContext) {
            var headers = HTTPHeaders()
            headers.add(name: "Content-Length", value: String(Self.answer.readableBytes))
            headers.add(name: "Content-Type", value: "application/json")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .accepted, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(Self.answer))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
