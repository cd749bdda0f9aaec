import Foundation
import GatehouseCore
import GatehouseServices
import GatehouseStore
import Hummingbird
import NIOCore
import ServiceLifecycle
import Synchronization

/// Event streams open now, at most `limit`. Each holds a connection for as long as its reader
/// wants, and `max_connections` counts them with everything else: without a cap, enough
/// streams (a hostile tester opened 1,100) left no connection for an event or `/healthz`.
final class StreamGauge: Sendable {
    let limit: Int
    private let open = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    var count: Int { open.load(ordering: .relaxed) }

    /// A slot, or nil when `limit` streams are open. The slot is given back when it is released
    /// — after its stream ends, or with a response that was never written.
    func take() -> Slot? {
        guard open.wrappingAdd(1, ordering: .relaxed).newValue <= limit else {
            open.wrappingSubtract(1, ordering: .relaxed)
            return nil
        }
        return Slot(gauge: self)
    }

    final class Slot: Sendable {
        let gauge: StreamGauge
        private let held = Atomic<Bool>(true)
        init(gauge: StreamGauge) { self.gauge = gauge }
        /// Once: when the stream ends, or else when the slot goes.
        func release() {
            if held.exchange(false, ordering: .relaxed) { gauge.open.wrappingSubtract(1, ordering: .relaxed) }
        }
        deinit { release() }
    }
}

/// docs/api.md (Events): ingest, list, stream, runs.
struct EventsController {
    let events: EventService
    let auth: Authenticator
    let maxBodyBytes: Int
    let heartbeat: Duration
    let streams: StreamGauge

    func addRoutes(to router: Router<GatehouseContext>) {
        router.post("/v1/events", use: ingest)
        router.get("/v1/events", use: list)
        router.get("/v1/events/stream", use: stream)
        router.get("/v1/runs", use: runs)
        router.get("/v1/runs/{run}", use: run)
    }

    @Sendable func ingest(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .eventsWrite)
        var request = request
        guard let mediaType = EventIntake.mediaType(
            contentType: request.headers[.contentType], hasCESpecVersion: request.headers[.init("ce-specversion")!] != nil)
        else {
            throw Problem.unsupportedMediaType(
                "Content-Type \(request.headers[.contentType] ?? "") is not accepted; use application/json, application/x-ndjson, application/cloudevents+json or application/cloudevents-batch+json")
        }
        let body = try await request.bodyBytes(limit: maxBodyBytes)
        let headers = request.headers
        let outcome = try await events.ingest(body, mediaType: mediaType) { name in headers[.init(name)!] }
        return .json(IngestResponse(accepted: outcome.accepted, duplicates: outcome.duplicates, ids: outcome.ids).json, status: .accepted)
    }

    func filter(from request: Request) throws -> EventFilter {
        var filter = EventFilter()
        filter.pipeline = request.query("pipeline")
        filter.run = request.query("run")
        filter.types = request.queryAll("type")
        for type in filter.types where !EventValidator.isDottedName(type) {
            throw Problem.invalid([FieldError(field: "type", detail: "\"\(type)\" is not an event type")])
        }
        return filter
    }

    @Sendable func list(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .eventsRead)
        var filter = try filter(from: request)
        filter.after = try request.cursorQuery("after") ?? 0
        filter.limit = try request.intQuery("limit", default: 100, range: 1...1000)
        let found = try await events.events(filter)
        var o = JSONObject()
        o.append("events", .array(found.map(\.json)))
        // `next` is there while more may follow; a client that keeps polling passes the last
        // event's cursor instead.
        o.append("next", found.count == filter.limit ? .string(String(found.last!.cursor)) : .null)
        return .json(.object(o))
    }

    /// Server-Sent Events: the backlog after `Last-Event-ID` (or `after=`), then live events as
    /// the bus announces commits; a comment line every heartbeat keeps proxies from timing out.
    /// Without a starting cursor the stream starts at the live end.
    @Sendable func stream(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .eventsRead)
        var filter = try filter(from: request)
        let lastEventID = request.headers[.init("Last-Event-ID")!].flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) }
        let start: Int64
        if let resume = try lastEventID ?? request.cursorQuery("after") {
            start = resume
        } else {
            start = try await events.store.lastCursor()
        }
        filter.after = start
        filter.limit = 500
        guard let slot = streams.take() else {
            var problem = Problem.unavailable(
                "\(streams.limit) event streams are open, the most this server keeps (half of server.max_connections, so that events and health checks always get a connection): retry later")
            problem.retryAfterSeconds = 5
            throw problem
        }
        let initialFilter = filter
        let subscriber = events.subscribe()
        let service = events
        let heartbeat = self.heartbeat
        let auth = self.auth
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache", .init("X-Accel-Buffering")!: "no"]
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            defer {
                subscriber.close()
                slot.release()
            }
            try await withGracefulShutdownHandler {
                try await writer.write(ByteBuffer(string: "retry: 2000\n: connected at cursor \(start)\n\n"))
                var cursor = start
                var filter = initialFilter
                var lastWrite = ContinuousClock.now
                streaming: while !Task.isCancelled {
                    // Drain everything committed after our cursor, then sleep until the bus says more.
                    while true {
                        filter.after = cursor
                        let batch = try await service.events(filter)
                        if !batch.isEmpty {
                            // Asked again before anything is sent: a token revoked (or a session
                            // ended, or a first token created in protected mode) while the
                            // stream is open ends it, within the time a check is cached (2 s).
                            guard (try? await auth.authorize(request, context: context, scope: .eventsRead)) != nil else { break streaming }
                            var chunk = ""
                            for stored in batch {
                                chunk += "id: \(stored.cursor)\nevent: \(stored.event.type)\ndata: "
                                stored.json.write(to: &chunk)
                                chunk += "\n\n"
                            }
                            try await writer.write(ByteBuffer(string: chunk))
                            lastWrite = ContinuousClock.now
                            cursor = batch.last!.cursor
                        }
                        if batch.count < filter.limit { break }
                    }
                    let wait = max(heartbeat - (ContinuousClock.now - lastWrite), .milliseconds(1))
                    _ = await subscriber.next(timeout: wait)
                    if Task.isCancelled || Task.isShuttingDownGracefully { break }
                    // Commits the filter hides still leave the line silent: heartbeat on time
                    // whatever woke us.
                    if ContinuousClock.now - lastWrite >= heartbeat {
                        // A quiet stream (a filter nothing matches) is asked too, so a revoked
                        // token cannot keep a stream's place for good.
                        guard (try? await auth.authorize(request, context: context, scope: .eventsRead)) != nil else { break streaming }
                        try await writer.write(ByteBuffer(string: ": heartbeat\n\n"))
                        lastWrite = ContinuousClock.now
                    }
                }
            } onGracefulShutdown: {
                subscriber.close()
            }
            try await writer.finish(nil)
        })
    }

    @Sendable func runs(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .eventsRead)
        var status: RunSummary.Status?
        if let text = request.query("status") {
            guard let s = RunSummary.Status(rawValue: text) else {
                throw Problem.invalid([FieldError(field: "status", detail: "must be running, succeeded or failed")])
            }
            status = s
        }
        let limit = try request.intQuery("limit", default: 100, range: 1...1000)
        let runs = try await events.runs(pipeline: request.query("pipeline"), status: status, limit: limit)
        return .json(.object(JSONObject([("runs", .array(runs.map(\.json)))])))
    }

    @Sendable func run(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .eventsRead)
        let id = try context.parameters.require("run")
        guard let (summary, timeline) = try await events.run(id, pipeline: request.query("pipeline")) else {
            throw Problem.notFound("no run \"\(id)\"" + (request.query("pipeline").map { " in pipeline \"\($0)\"" } ?? ""))
        }
        guard case .object(var o) = summary.json else { throw Problem.internalError("run summary") }
        o.append("timeline", .array(timeline.map(\.json)))
        return .json(.object(o))
    }
}
