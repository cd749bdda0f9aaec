import Foundation
import GatehouseCore
import GatehouseServices
import GatehouseStore
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import Synchronization

/// `POST /v1/events` answered on the connection's event loop, without a task.
///
/// Through the router, every request is handed from the event loop to a task on Swift's
/// cooperative pool and its answer handed back: on the alerts load those hand-overs, the task
/// and the generic router and middleware around it cost more than parsing and validating the
/// event. Here the event loop parses and validates the body, gives the events to the store's
/// writer, and writes the `202` when the writer says they are committed (and fsynced) — the
/// same answer, headers and metrics as the router's.
///
/// Only a request that will be accepted takes this path, and only when that can be told
/// without waiting: a plain `POST /v1/events` (no query, no `Expect`, no `Connection: close`)
/// with a body of an accepted media type within 64 KiB, a caller the authenticator's
/// cache already allows, events that parse and validate, none reserved and none matched by a
/// gate or labelling rule. Anything else — and a commit that fails — is handed to the router
/// as it came, so what is refused, and how it is worded, is decided in one place.
///
/// Answers keep their order on a connection: while a request is committing here, what comes
/// after it (a pipelining client's requests, the end of its input, a decoding error) waits in
/// order and is replayed once it is answered, and no request is taken here while the router
/// still owes an answer.
final class EventsFastPath: ChannelDuplexHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// What the path shares with the router: the same services, so one cache of tokens and
    /// one writer serve both.
    struct Settings: Sendable {
        let events: EventService
        let auth: Authenticator
        let maxBodyBytes: Int
        let logger: Logger
    }

    private enum Mode {
        /// Between requests.
        case idle
        /// The current request goes to the router.
        case passing
        /// The current request's body is being read here.
        case reading(HTTPRequest, EventIntake.MediaType, started: ContinuousClock.Instant)
        /// The current request's events are with the writer.
        case committing(started: ContinuousClock.Instant)
    }

    /// Bodies up to this size are parsed here, on the event loop, where a long parse would
    /// hold up every other connection of the loop; larger ones (big batches) go to the router,
    /// which parses on the cooperative pool and applies `max_body_bytes`.
    static let bodyLimit = 64 * 1024

    private let settings: Settings
    private let bodyLimit: Int
    private var mode = Mode.idle
    private var context: ChannelHandlerContext?
    /// The body of the request being read or committed here (kept to hand it over whole).
    private var body: ByteBuffer?
    /// Requests handed to the router whose answer it has not finished writing.
    private var routerAnswersOwed = 0
    /// What came while a request was committing here waits, in order: later requests, and
    /// the end of the client's input or a decoding error, which would otherwise end the
    /// router's stream — and close the connection — before this answer is written.
    private enum Held {
        case part(HTTPRequestPart)
        case event(Any)
        case error(any Error)
    }
    private var waiting: [Held] = []
    /// What `waiting` holds, in bytes (a body's size, a head or end counted as 512). Reading
    /// goes on while a request commits: the connection-state handler counts what is read as
    /// activity, and would take a commit longer than `idle_timeout` for an idle client. Past
    /// `waitingLimit` reading stops, but only between requests — stopped inside one, the
    /// state handler would see a request being read and close the connection as idle.
    private var waitingBytes = 0
    static let waitingLimit = 256 * 1024
    /// A read held back while too much waited: done once the queue is back under the limit.
    private var readDeferred = false

    private static func weight(_ part: HTTPRequestPart) -> Int {
        if case .body(let chunk) = part { return chunk.readableBytes }
        return 512
    }

    /// Whether reading may stop now: too much waits, and what waits ends with a whole request.
    private var holdsReading: Bool {
        guard case .committing = mode, waitingBytes > Self.waitingLimit else { return false }
        if case .part(.head) = waiting.last { return false }
        if case .part(.body) = waiting.last { return false }
        return true
    }
    /// Parts given to the router since the last read-complete: the router's inbound stream
    /// takes what was read only at a read-complete, so one given outside a read needs its own.
    private var routerUnflushed = false

    init(settings: Settings) {
        self.settings = settings
        bodyLimit = min(settings.maxBodyBytes, Self.bodyLimit)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelReadComplete(context: ChannelHandlerContext) {
        routerUnflushed = false
        context.fireChannelReadComplete()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .committing = mode {
            waitingBytes += Self.weight(part)
            waiting.append(.part(part))
            return
        }
        handle(part, context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch mode {
        case .committing:
            waiting.append(.event(event))
        case .reading(let head, _, _) where event as? ChannelEvent == .inputClosed:
            // The body ends unfinished: the router words that, for the request it now gets.
            mode = .passing
            handOver(head, context: context)
            context.fireUserInboundEventTriggered(event)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch mode {
        case .committing:
            waiting.append(.error(error))
        case .reading(let head, _, _):
            // A body that cannot be decoded (a bad chunk size): the router answers it as the
            // failure of the request it now gets, not as garbage between requests.
            mode = .passing
            handOver(head, context: context)
            context.fireErrorCaught(error)
        default:
            context.fireErrorCaught(error)
        }
    }

    private func handle(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch (mode, part) {
        case (.idle, .head(let head)):
            if routerAnswersOwed == 0, let mediaType = takesHere(head, channel: context.channel) {
                body = nil
                mode = .reading(head, mediaType, started: .now)
            } else {
                mode = .passing
                toRouter(part, context: context)
            }
        case (.reading(let head, _, _), .body(let chunk)):
            guard (body?.readableBytes ?? 0) + chunk.readableBytes <= bodyLimit else {
                // The router reads the rest (or answers 413) as if it had read it all.
                mode = .passing
                handOver(head, context: context)
                toRouter(part, context: context)
                return
            }
            if body == nil { body = chunk } else { body!.writeImmutableBuffer(chunk) }
        case (.reading(let head, let mediaType, let started), .end(let trailers)):
            guard trailers == nil else {
                mode = .idle
                handOver(head, context: context)
                toRouter(part, context: context)
                return
            }
            commit(head, mediaType: mediaType, started: started, context: context)
        case (.passing, .end):
            mode = .idle
            toRouter(part, context: context)
        default:
            // The router's own request, or parts out of order: the router deals with them.
            toRouter(part, context: context)
        }
    }

    /// The media type of a request this path can take, judged from its head; nil: the router's.
    private func takesHere(_ head: HTTPRequest, channel: any Channel) -> EventIntake.MediaType? {
        guard head.method == .post, head.path == "/v1/events" else { return nil }
        // One pass over the fields: each `fields[name]` walks them all, and this is asked of
        // every request. A field that comes twice is the router's (its values would combine).
        var seen = HeadFields()
        for field in head.headerFields {
            guard seen.take(field) else { return nil }
        }
        if seen.expect { return nil }
        if let connection = seen.connection, connection.lowercased().contains("close") { return nil }
        if let length = seen.contentLength {
            guard let bytes = Int(length), bytes <= bodyLimit else { return nil }
        }
        guard let mediaType = acceptedMediaType(seen.contentType, hasCESpecVersion: seen.ceSpecVersion) else { return nil }
        // Protected mode judges the `Host` and a few other fields (LocalTrust.refusal); without
        // those others its verdict is the `Host`'s, which a connection nearly always repeats.
        let trustedAsLocal = seen.authorization == nil
            && (seen.beyondHost ? LocalTrust.refusal(head) == nil : head.authority.map(isLoopbackName) ?? true)
        guard settings.auth.allowsFromCache(
            authorization: seen.authorization, hasCookie: seen.cookie,
            isLoopbackPeer: peerIsLoopback(channel), trustedAsLocal: trustedAsLocal, scope: .eventsWrite)
        else { return nil }
        return mediaType
    }

    /// The fields `takesHere` reads, gathered in one pass.
    private struct HeadFields {
        var expect = false
        var connection: String?
        var contentLength: String?
        var contentType: String?
        var ceSpecVersion = false
        var authorization: String?
        var cookie = false
        /// A field besides `Host` that protected mode's verdict depends on.
        var beyondHost = false
        /// The fields read so far, one bit each.
        private var seen: UInt8 = 0

        /// False when a field this path reads comes twice.
        mutating func take(_ field: HTTPField) -> Bool {
            let bit: UInt8
            switch field.name {
            case .expect: (bit, expect) = (1, true)
            case .connection: (bit, connection) = (2, field.value)
            case .contentLength: (bit, contentLength) = (4, field.value)
            case .contentType: (bit, contentType) = (8, field.value)
            case EventsFastPath.ceSpecVersion: (bit, ceSpecVersion) = (16, true)
            case .authorization: (bit, authorization) = (32, field.value)
            case .cookie: (bit, cookie) = (64, true)
            default:
                if LocalTrust.fieldsBeyondHost.contains(field.name) { beyondHost = true }
                return true
            }
            if seen & bit != 0 { return false }
            seen |= bit
            return true
        }
    }

    /// The connection's peer, judged once: it does not change.
    private var peerLoopback: Bool?
    private func peerIsLoopback(_ channel: any Channel) -> Bool {
        if let known = peerLoopback { return known }
        let judged = GatehouseContext.isLoopback(channel.remoteAddress)
        peerLoopback = judged
        return judged
    }

    /// The last `Host` judged on this connection, and the verdict.
    private var lastAuthority: (value: String, loopback: Bool)?
    private func isLoopbackName(_ authority: String) -> Bool {
        if let last = lastAuthority, last.value == authority { return last.loopback }
        let judged = LocalTrust.isLoopbackName(authority)
        lastAuthority = (authority, judged)
        return judged
    }

    /// The last `Content-Type` judged on this connection (with whether `ce-specversion` came),
    /// and its media type: nil when the router must answer it (not an event type, or a charset
    /// other than UTF-8).
    private var lastContentType: (value: String?, ce: Bool, type: EventIntake.MediaType?)?
    private func acceptedMediaType(_ contentType: String?, hasCESpecVersion: Bool) -> EventIntake.MediaType? {
        if let last = lastContentType, last.value == contentType, last.ce == hasCESpecVersion { return last.type }
        var type = EventIntake.mediaType(contentType: contentType, hasCESpecVersion: hasCESpecVersion)
        if let contentType, let charset = RequestHygieneMiddleware.charset(of: contentType), !RequestHygieneMiddleware.isUTF8(charset) {
            type = nil
        }
        lastContentType = (contentType, hasCESpecVersion, type)
        return type
    }

    static let ceSpecVersion = HTTPField.Name("ce-specversion")!
    static let requestID = HTTPField.Name("X-Request-Id")!

    /// A request id as Hummingbird's `RequestID` spells one — its random prefix for the process
    /// (so the router's answers and these share it), then a counter in 16 hex digits — made
    /// without its `String(radix:)` and padding. The counter starts at random, as Hummingbird's
    /// does, and wraps.
    static func newRequestID() -> String {
        let n = requestCounter.wrappingAdd(1, ordering: .relaxed).oldValue
        let prefix = requestIDPrefix.utf8
        return String(unsafeUninitializedCapacity: prefix.count + 16) { out in
            var i = 0
            for c in prefix { out[i] = c; i += 1 }
            let digits: StaticString = "0123456789abcdef"
            for k in 0..<16 { out[i + k] = digits.utf8Start[Int((n >> UInt64(60 - 4 * k)) & 0xf)] }
            return i + 16
        }
    }
    private static let requestIDPrefix = String(RequestID().description.dropLast(16))
    private static let requestCounter = Atomic<UInt64>(UInt64.random(in: .min ... .max))

    private func commit(_ head: HTTPRequest, mediaType: EventIntake.MediaType, started: ContinuousClock.Instant, context: ChannelHandlerContext) {
        let bytes = body.map { Array($0.readableBytesView) } ?? []
        let fields = head.headerFields
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        // The writer calls back on its own thread; the answer is written on the event loop.
        let taken = settings.events.ingestWithoutTask(bytes, mediaType: mediaType, header: { name in HTTPField.Name(name).flatMap { fields[$0] } }) { result in
            loop.execute { handler.value.committed(result) }
        }
        if taken {
            mode = .committing(started: started)
        } else {
            mode = .idle
            handOver(head, context: context)
            toRouter(.end(nil), context: context)
        }
    }

    private func committed(_ result: Result<AppendOutcome, any Error>) {
        guard case .committing(let started) = mode else { return }
        mode = .idle
        body = nil
        guard let context, context.channel.isActive else {
            waiting.removeAll()
            waitingBytes = 0
            return
        }
        switch result {
        case .success(let outcome):
            var text = IngestResponse(accepted: outcome.accepted, duplicates: outcome.duplicates, ids: outcome.ids).json.serialized()
            text += "\n"
            answer(.accepted, fields: [.contentType: "application/json"], body: text, started: started, context: context)
        case .failure(is CancellationError):
            // The server is stopping: nothing is answered, as the router answers nothing.
            waiting.removeAll()
            waitingBytes = 0
            context.close(promise: nil)
            return
        case .failure(let error):
            // Answered here as the router would answer the same error (running the request
            // again there would double the wait of every request in a failed commit).
            let id = Self.newRequestID()
            let problem = ObservabilityMiddleware.problem(for: error, requestID: id, logger: settings.logger)
            let (fields, text) = Response.problemParts(problem)
            answer(HTTPResponse.Status(code: problem.status), fields: fields, body: text, requestID: id, started: started, context: context)
        }
        while !waiting.isEmpty {
            if case .committing = mode { break }
            // Replayed through this handler's own entry points, as if they came now: an input
            // end or error met while reading a request hands that request to the router first.
            switch waiting.removeFirst() {
            case .part(let part):
                waitingBytes -= Self.weight(part)
                handle(part, context: context)
            case .event(let event): userInboundEventTriggered(context: context, event: event)
            case .error(let error): errorCaught(context: context, error: error)
            }
        }
        if routerUnflushed { channelReadComplete(context: context) }
        if readDeferred && !holdsReading {
            readDeferred = false
            context.read()
        }
    }

    /// The router's answer to the same request: the same status, body, headers and metrics.
    private func answer(
        _ status: HTTPResponse.Status, fields given: HTTPFields, body text: String, requestID: String = EventsFastPath.newRequestID(),
        started: ContinuousClock.Instant, context: ChannelHandlerContext
    ) {
        var fields = given
        fields[.contentLength] = String(text.utf8.count)
        fields[Self.requestID] = requestID
        fields[.date] = HTTPDate.now()
        // Recorded before the answer leaves, as the router's middleware does: a client that has
        // its answer finds the request in /metrics.
        ObservabilityMiddleware.record(
            method: "POST", path: "/v1/events", route: "/v1/events", status: Int(status.code), elapsed: ContinuousClock.now - started,
            logger: settings.logger, extra: ["hb.request.id": .string(requestID), "answered_on": "event loop"])
        context.write(wrapOutboundOut(.head(HTTPResponse(status: status, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(context.channel.allocator.buffer(string: text))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// Gives the router the request read here so far, as it came.
    private func handOver(_ head: HTTPRequest, context: ChannelHandlerContext) {
        toRouter(.head(head), context: context)
        if let body { toRouter(.body(body), context: context) }
        body = nil
    }

    private func toRouter(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        if case .head = part { routerAnswersOwed += 1 }
        routerUnflushed = true
        context.fireChannelRead(wrapInboundOut(part))
    }

    func read(context: ChannelHandlerContext) {
        if holdsReading {
            readDeferred = true
            return
        }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { routerAnswersOwed = max(0, routerAnswersOwed - 1) }
        context.write(data, promise: promise)
    }
}

/// Hummingbird's HTTP/1 child channel with `EventsFastPath` placed after its connection-state
/// handler, so idle timeouts and graceful shutdown see the requests answered there too.
struct GatehouseHTTP1Channel: ServerChildChannel {
    let inner: HTTP1Channel
    let fastPath: EventsFastPath.Settings?

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP1Channel.Value> {
        inner.setup(channel: channel, logger: logger).flatMapThrowing { [fastPath] value in
            guard let fastPath else { return value }
            let pipeline = channel.pipeline.syncOperations
            let state = try pipeline.handler(type: HTTPConnectionStateHandler.self)
            try pipeline.addHandler(EventsFastPath(settings: fastPath), position: .after(state))
            return value
        }
    }

    func handle(value: HTTP1Channel.Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1 as `.http1(configuration:)`, with `POST /v1/events` on the fast path.
    static func gatehouse(configuration: HTTP1Channel.Configuration, fastPath: EventsFastPath.Settings?) -> HTTPServerBuilder {
        .init { responder in
            GatehouseHTTP1Channel(inner: HTTP1Channel(responder: responder, configuration: configuration), fastPath: fastPath)
        }
    }
}
