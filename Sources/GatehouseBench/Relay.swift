import CurlShim
import Foundation
import GatehouseDelivery
import GatehouseStore
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
///
/// With `rows` (`--sqlite`) the group commit writes, instead of a log line, the rows Gatehouse
/// writes for an alert — the event, its run, its pending delivery, the pipeline's failing state,
/// then the delivery's outcome in a later commit — through the store's own connection
/// (`GatehouseDatabase`: its schema and indexes, pragmas, WAL-write coalescing, cached
/// statements), with nothing around them: no JSON parsing (the four fields it stores are found
/// by a byte scan), no validation, routing, grouping, rendering, signing or dispatcher, and a
/// webhook's slot is freed on its answer, not once its outcome is committed. What it
/// costs over the durable floor is what storing an alert as the issue's design asks costs on
/// this machine, before any of Gatehouse's own work. Two lighter shapes (`AlertRows.Shape`)
/// tell the rows' cost apart from their indexes'.
enum Relay {
    static func serve(sinkPort: Int, log: String?, rows: (path: String, shape: AlertRows.Shape)? = nil) throws -> Never {
        let forwarder = Forwarder(url: "http://127.0.0.1:\(sinkPort)/hook", concurrency: 32)
        let committer: (any GroupCommitter)? = try rows.map { try AlertRows(path: $0.path, shape: $0.shape) } ?? log.map { try GroupLog(path: $0) }
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
    typealias Sent = @Sendable () -> Void
    private let state = Mutex<(queue: [([UInt8], Sent?)], head: Int, inFlight: Int)>(([], 0, 0))

    init(url: String, concurrency: Int) {
        self.url = url
        self.concurrency = concurrency
    }

    /// `sent` runs on the curl thread once the sink has answered.
    func forward(_ body: [UInt8], sent: Sent? = nil) {
        let start = state.withLock { s -> Bool in
            if s.inFlight < concurrency { s.inFlight += 1; return true }
            s.queue.append((body, sent))
            return false
        }
        if start { send(body, sent) }
    }

    private func send(_ body: [UInt8], _ sent: Sent?) {
        curl.submit(OutboundRequest(url: url, headers: [("Content-Type", "application/json")], body: body)) { [self] _ in
            sent?()
            // On the curl thread: the next queued body takes this one's place.
            let next = state.withLock { s -> ([UInt8], Sent?)? in
                guard s.head < s.queue.count else { s.inFlight -= 1; return nil }
                defer {
                    s.head += 1
                    if s.head == s.queue.count { s.queue.removeAll(keepingCapacity: true); s.head = 0 }
                }
                return s.queue[s.head]
            }
            if let next { send(next.0, next.1) }
        }
    }
}

/// Runs a relay's commit loop on a thread of its own, named so that the benchmark's by-thread
/// figures count it with the server's writer.
private func startWriterThread(_ loop: @escaping @Sendable () -> Void) {
    Thread {
        _ = gh_name_this_thread(ThreadPart.relayWriterName)
        loop()
    }.start()
}

/// A group commit for the relay: `completion` runs once `record` is durable, with what the
/// webhook's answer must report back through `sent` (nil when nothing is).
protocol GroupCommitter: Sendable {
    func submit(_ record: [UInt8], completion: @escaping @Sendable (_ sent: Forwarder.Sent?) -> Void)
}

/// The least a group commit can be: one thread takes all that waits, appends it to a file in
/// one `write`, `fdatasync`s it and runs the completions.
final class GroupLog: GroupCommitter, @unchecked Sendable {
    private let condition = NSCondition()
    private var waiting: [(record: [UInt8], completion: @Sendable () -> Void)] = []  // guarded by `condition`
    private let fd: Int32

    init(path: String) throws {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        guard fd >= 0 else { throw BenchError("cannot open \(path): errno \(errno)") }
        startWriterThread { [self] in loop() }
    }

    func submit(_ record: [UInt8], completion: @escaping @Sendable (Forwarder.Sent?) -> Void) {
        condition.lock()
        waiting.append((record, { completion(nil) }))
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

/// The group commit of `--sqlite`: the rows of an alert, as Gatehouse writes them, in the
/// store's schema through its connection (see `Relay`). One thread takes all that waits; a
/// commit with events is fsynced (`durability: full`), one with only outcomes is relaxed and
/// becomes durable with the next, as in Gatehouse's event log.
final class AlertRows: GroupCommitter, @unchecked Sendable {
    enum Shape: String, CaseIterable {
        /// What Gatehouse writes, in its schema.
        case gatehouse
        /// The same rows without the secondary indexes the API and the dispatcher read
        /// (`apiIndexes`): what those indexes cost, and what a store without them could reach.
        case withoutIndexes = "without-indexes"
        /// Only what a durable outbox cannot do without — the event, its pending delivery and
        /// the outcome —, with their indexes: no run summary, no failing state.
        case minimal
    }

    /// The indexes `withoutIndexes` drops: all but the keys the statements need (an event's
    /// id and a run's key for their `ON CONFLICT`, a delivery's id for its outcome) and the
    /// partial indexes no alert enters. Dropping one that is gone fails the relay, so the
    /// list cannot silently fall behind the schema.
    static let apiIndexes = [
        "events_by_pipeline", "events_by_run", "runs_by_pipeline", "runs_by_recency", "runs_by_status", "deliveries_by_receiver",
        "deliveries_by_state", "deliveries_by_event", "deliveries_due", "failing_by_next_repeat",
    ]

    private let condition = NSCondition()
    // Guarded by `condition`.
    private var waiting: [(record: [UInt8], completion: @Sendable (Forwarder.Sent?) -> Void)] = []
    private var outcomes: [(id: String, at: Int64)] = []
    private let database: GatehouseDatabase
    private let minimal: Bool

    init(path: String, shape: Shape) throws {
        database = try GatehouseDatabase(path: path, durability: .full)
        minimal = shape == .minimal
        if shape == .withoutIndexes {
            try database.writeNow { db in for name in Self.apiIndexes { try db.execute("DROP INDEX \(name)", []) } }
        }
        startWriterThread { [self] in loop() }
    }

    func submit(_ record: [UInt8], completion: @escaping @Sendable (Forwarder.Sent?) -> Void) {
        condition.lock()
        waiting.append((record, completion))
        if waiting.count + outcomes.count == 1 { condition.signal() }
        condition.unlock()
    }

    private func delivered(_ id: String) {
        let at = Int64(Date().timeIntervalSince1970 * 1000)
        condition.lock()
        outcomes.append((id, at))
        if waiting.count + outcomes.count == 1 { condition.signal() }
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while waiting.isEmpty && outcomes.isEmpty { condition.wait() }
            let (group, done) = (waiting, outcomes)
            waiting.removeAll(keepingCapacity: true)
            outcomes.removeAll(keepingCapacity: true)
            condition.unlock()
            var ids: [String] = []
            ids.reserveCapacity(group.count)
            do {
                try database.commit(relaxed: group.isEmpty) { db in
                    for outcome in done { try Self.markDelivered(outcome.id, at: outcome.at, db: db) }
                    for entry in group { ids.append(try Self.insert(entry.record, minimal: minimal, db: db)) }
                }
            } catch {
                fatalError("the relay's rows could not be committed: \(error)")
            }
            for (entry, id) in zip(group, ids) { entry.completion { [self] in delivered(id) } }
        }
    }

    /// The event, its run, its pending delivery and the pipeline's failing state, with the
    /// statements (and so the indexes) of `EventLog` and `SQLOutbox`; returns the delivery's id.
    private static func insert(_ body: [UInt8], minimal: Bool, db: any SQLSession) throws -> String {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let (id, pipeline, run, summary) = (field("id", body), field("pipeline", body), field("run", body), field("summary", body))
        guard let seq = try db.insertedKey("""
            INSERT INTO events (id, type, pipeline, run, step, severity, summary, details, labels, attributes, url, time, time_given, received_at)
            VALUES (?, 'run.failed', ?, ?, NULL, 'error', ?, NULL, NULL, NULL, NULL, ?, 0, ?) ON CONFLICT (id) DO NOTHING
            """, SQLArguments(values: [.text(id), .text(pipeline), .text(run), .text(summary), .int(now), .int(now)]), column: "seq")
        else { throw BenchError("event \(id) was sent twice") }
        if !minimal {
            try db.execute("""
            INSERT INTO runs (pipeline, run, status, failed_step, started_at, ended_at, last_event_at, lifecycle_at, event_count, counts)
            VALUES (?, ?, 'failed', NULL, ?, ?, ?, ?, 1, '{"run.failed":1}') ON CONFLICT (pipeline, run) DO NOTHING
            """, SQLArguments(values: [.text(pipeline), .text(run), .int(now), .int(now), .int(now), .int(now)]))
        }
        let delivery = Delivery.newID()
        try db.execute("""
            INSERT INTO deliveries (id, event_seq, receiver, route, group_key, kind, state, attempts, next_attempt_at, created_at, updated_at, fallback)
            VALUES (?, ?, 'hooks', 'root', ?, 'event', 'pending', 0, ?, ?, ?, NULL)
            """, SQLArguments(values: [.text(delivery), .int(seq), .text("{pipeline=\"\(pipeline)\",run=\"\(run)\"}"), .int(now), .int(now), .int(now)]))
        guard !minimal else { return delivery }
        try db.execute("""
            INSERT INTO failing_pipelines (receiver, pipeline, route, since, last_event_seq, repeat_ms, next_repeat_at, send_resolved)
            VALUES ('hooks', ?, 'root', ?, ?, 14400000, ?, 1)
            ON CONFLICT (receiver, pipeline) DO UPDATE SET route = excluded.route, last_event_seq = excluded.last_event_seq,
                repeat_ms = excluded.repeat_ms, next_repeat_at = excluded.next_repeat_at, send_resolved = excluded.send_resolved
            """, SQLArguments(values: [.text(pipeline), .int(now), .int(seq), .int(now + 14_400_000)]))
        return delivery
    }

    /// The outcome's update, as `SQLOutbox.write` binds it.
    private static func markDelivered(_ id: String, at: Int64, db: any SQLSession) throws {
        try db.execute("""
            UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at = ?, updated_at = ?, delivered_at = ?, last_status = ?,
                last_error = ?, response_body = ?, message_id = ?, batch_id = ? WHERE id = ?
            """, SQLArguments(values: [.text("delivered"), .int(1), .int(at), .int(at), .int(at), .int(200), .null, .null, .null, .null, .text(id)]))
    }

    /// The string value of the first `"name":"…"` in `body` (the benchmark's events have no
    /// escapes in their values).
    private static func field(_ name: String, _ body: [UInt8]) -> String {
        let key = Array("\"\(name)\":\"".utf8)
        guard body.count > key.count else { return "" }
        var i = 0
        while i + key.count <= body.count {
            if body[i] == key[0], body[i..<(i + key.count)].elementsEqual(key) {
                let start = i + key.count
                let end = body[start...].firstIndex(of: UInt8(ascii: "\"")) ?? body.count
                return String(decoding: body[start..<end], as: UTF8.self)
            }
            i += 1
        }
        return ""
    }
}

final class RelayHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let forwarder: Forwarder
    let committer: (any GroupCommitter)?
    var body: [UInt8] = []
    static let answer = ByteBuffer(string: #"{"accepted":1}"#)

    init(forwarder: Forwarder, committer: (any GroupCommitter)?) {
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
                committer.submit(body) { sent in
                    loop.execute { handler.value.answer(context: bound.value) }
                    forwarder.forward(body, sent: sent)
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
