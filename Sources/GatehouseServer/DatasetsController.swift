import Foundation
import GatehouseCore
import GatehouseServices
import GatehouseStore
import Hummingbird
import NIOCore
import ServiceLifecycle

/// `/v1/datasets`: create, list, delete, import items (JSON array or streamed NDJSON), next
/// item, labels, skips, undo, stats, wait, export (docs/datasets.md).
struct DatasetsController {
    let datasets: DatasetService
    let auth: Authenticator
    let waits: WaitRoom
    let baseURL: BaseURL
    let maxBodyBytes: Int
    let maxImportBytes: Int
    static let readScopes: [Scope] = [.datasetsWrite, .datasetsLabel, .eventsRead]

    func addRoutes(to router: Router<GatehouseContext>) {
        router.post("/v1/datasets", use: create)
        router.get("/v1/datasets", use: list)
        router.get("/v1/datasets/{name}", use: get)
        router.delete("/v1/datasets/{name}", use: delete)
        router.post("/v1/datasets/{name}/items", use: importItems)
        router.get("/v1/datasets/{name}/next", use: next)
        router.post("/v1/datasets/{name}/items/{id}/labels", use: label)
        router.post("/v1/datasets/{name}/items/{id}/skip", use: skip)
        router.post("/v1/datasets/{name}/undo", use: undo)
        router.get("/v1/datasets/{name}/stats", use: stats)
        router.get("/v1/datasets/{name}/wait", use: wait)
        router.get("/v1/datasets/{name}/export", use: export)
    }

    func annotateURL(_ name: String) -> String { "\(baseURL.value)/annotate/\(name)" }

    /// The dataset's definition (cached: it never changes), for the hot paths.
    func spec(_ context: GatehouseContext) async throws -> DatasetSpec {
        try await datasets.spec(try context.parameters.require("name"))
    }

    func dataset(_ context: GatehouseContext) async throws -> DatasetInfo {
        try await datasets.info(try context.parameters.require("name"))
    }

    func jsonBody(_ request: Request) async throws -> JSONObject {
        var request = request
        return try await request.jsonObject(limit: maxBodyBytes)
    }

    @Sendable func create(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .datasetsWrite)
        let spec = try DatasetSpec.parseNew(.object(try await jsonBody(request))).get()
        let (info, created) = try await datasets.create(spec)
        return .json(with(info), status: created ? .created : .ok)
    }

    func with(_ info: DatasetInfo) -> JSONValue { JSONValueEncoder.value(info.resource(url: annotateURL(info.spec.name))) }

    @Sendable func list(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        return .json(.object(JSONObject([("datasets", .array(try await datasets.list().map(with)))])))
    }

    @Sendable func get(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        return .json(with(try await dataset(context)))
    }

    @Sendable func delete(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .datasetsWrite)
        try await datasets.delete(try context.parameters.require("name"))
        return Response(status: .noContent)
    }

    /// Imports items: a JSON array, or NDJSON read as it streams in (100,000 items need not be
    /// in memory at once). Every item is validated; any bad one refuses the whole import,
    /// naming its index or line, and nothing is added. Staged in chunks, then moved into the
    /// dataset in one transaction.
    @Sendable func importItems(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .datasetsWrite)
        let info = try await dataset(context)
        let spec = info.spec
        let contentType = (request.headers[.contentType] ?? "application/json").lowercased()
        let ndjson = contentType.hasPrefix("application/x-ndjson") || contentType.hasPrefix("application/jsonl") || contentType.hasPrefix("application/ndjson")
        guard ndjson || contentType.hasPrefix("application/json") else {
            throw Problem.unsupportedMediaType("send items as application/json (an array) or application/x-ndjson (got \(contentType))")
        }
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > maxImportBytes {
            throw Problem.tooLarge("the import is \(declared) bytes; the limit is \(maxImportBytes) bytes (server.max_import)")
        }
        let importing = datasets.beginImport(into: spec)
        do {
            if ndjson {
                var lines = NDJSONLines()
                var total = 0
                func parseLine(_ bytes: [UInt8], line: Int) async throws {
                    do {
                        try await importing.add(try JSONValue.parse(bytes: bytes), line: line)
                    } catch let e as JSONParseError {
                        importing.addUnparsable(line: line, "\(e.message) at column \(e.column)")
                    }
                }
                var chunks = request.body.makeAsyncIterator()
                reading: while true {
                    let next: ByteBuffer?
                    do { next = try await chunks.next() } catch { throw Request.bodyReadFailure(error, limit: maxImportBytes, setting: "server.max_import") }
                    guard let buffer = next else { break }
                    total += buffer.readableBytes
                    if total > maxImportBytes { throw Problem.tooLarge("the import is larger than \(maxImportBytes) bytes (server.max_import)") }
                    for (line, bytes) in lines.feed(buffer.readableBytesView) {
                        try await parseLine(bytes, line: line)
                        if importing.isRefused { break reading }
                    }
                }
                if !importing.isRefused, let (line, bytes) = lines.finish() { try await parseLine(bytes, line: line) }
            } else {
                var request = request
                let bytes = try await request.bodyBytes(limit: min(maxImportBytes, 64 << 20))
                let value: JSONValue
                do { value = try JSONValue.parse(bytes: bytes) } catch {
                    throw Problem.badRequest("the body is not valid JSON: \(error.message) at line \(error.line), column \(error.column)")
                }
                let items = value.arrayValue ?? (value.objectValue.map { [JSONValue.object($0)] } ?? [])
                if value.arrayValue == nil && value.objectValue == nil { throw Problem.invalid([FieldError(field: "(body)", detail: "must be an item or an array of items")]) }
                for item in items {
                    try await importing.add(item)
                    if importing.isRefused { break }
                }
            }
        } catch {
            await importing.discard()
            throw error
        }
        let committed = try await importing.finish()
        return .json(encoding: ImportResponse(added: committed.added, duplicates: committed.duplicates, items: committed.total))
    }

    /// Who is labelling, as `web:<name>` (the one form of a person, as on the web pages and in
    /// gates: `alice` and `web:alice` are one annotator). A token labels as its name; an
    /// admin token, or a loopback caller of a server without tokens, may name someone
    /// (`annotator`).
    static func annotator(_ given: String?, principal: Principal) throws -> String {
        var identity: Identity?
        if let given {
            guard given.count <= 104, let named = Identity.web(given), !named.id.contains(where: { $0.isWhitespace }) else {
                throw Problem.invalid([FieldError(field: "annotator", detail: "must be a name without spaces (1–100 characters), or web:<name>")])
            }
            identity = named
        }
        switch principal {
        case .local:
            return (identity ?? Identity.web("local")!).description
        case .token(let token):
            guard let own = Identity.web(token.name) else { throw Problem.forbidden("the token \"\(token.name)\" has no name to label as") }
            if let identity, identity != own, !token.scopes.contains(.admin) {
                throw Problem.forbidden("the token \"\(token.name)\" labels as \(own); only an admin token may label as \(identity)")
            }
            return (identity ?? own).description
        }
    }

    @Sendable func next(_ request: Request, context: GatehouseContext) async throws -> Response {
        let principal = try await auth.authorize(request, context: context, scope: .datasetsLabel)
        let spec = try await spec(context)
        let who = try Self.annotator(request.query("annotator"), principal: principal)
        guard let served = try await datasets.next(spec.name, annotator: who) else { return Response(status: .noContent) }
        return .json(encoding: ServedItem(
            id: served.item.id, data: served.item.data, meta: served.item.meta, prediction: served.item.prediction,
            labels_needed: spec.annotatorsPerItem - served.labelCount, annotator: who))
    }

    /// `GET /v1/datasets/{name}/next`: the item leased to the annotator.
    struct ServedItem: Encodable, JSONOmitsAbsentFields {
        var id: String
        var data: JSONObject
        var meta: JSONObject?
        var prediction: JSONValue?
        /// Labels the item still needs, this one included.
        var labels_needed: Int
        var annotator: String
    }

    /// `POST /v1/datasets/{name}/undo`: whose label on which item was taken back.
    struct Undone: Encodable {
        var item: String
        var annotator: String
    }

    static func itemJSON(_ item: DatasetItem) -> JSONObject {
        var o = JSONObject()
        o.append("id", .string(item.id))
        o.append("data", .object(item.data))
        if let meta = item.meta { o.append("meta", .object(meta)) }
        if let p = item.prediction { o.append("prediction", p) }
        return o
    }

    @Sendable func label(_ request: Request, context: GatehouseContext) async throws -> Response {
        let principal = try await auth.authorize(request, context: context, scope: .datasetsLabel)
        let spec = try await spec(context)
        let id = try context.parameters.require("id")
        let asked = try JSONValueDecoder().decode(LabelRequest.self, from: .object(try await jsonBody(request)))
        let who = try Self.annotator(asked.annotator, principal: principal)
        let labelled = try await datasets.label(spec.name, item: id, annotator: who, raw: asked.value(for: spec.task))
        return .json(encoding: LabelResponse(
            item: id, annotator: who, value: labelled.value, item_complete: labelled.itemComplete, dataset_complete: labelled.datasetComplete),
            status: .created)
    }

    @Sendable func skip(_ request: Request, context: GatehouseContext) async throws -> Response {
        let principal = try await auth.authorize(request, context: context, scope: .datasetsLabel)
        let info = try await dataset(context)
        let id = try context.parameters.require("id")
        let who = try Self.annotator(request.query("annotator"), principal: principal)
        // No fields, but a body that is there must be JSON (`415` otherwise), as for every action.
        var request = request
        _ = try await request.jsonObject(limit: maxBodyBytes, allowEmpty: true)
        try await datasets.skip(info.spec.name, item: id, annotator: who)
        return Response(status: .noContent)
    }

    @Sendable func undo(_ request: Request, context: GatehouseContext) async throws -> Response {
        let principal = try await auth.authorize(request, context: context, scope: .datasetsLabel)
        let info = try await dataset(context)
        let who = try Self.annotator(request.query("annotator"), principal: principal)
        guard let item = try await datasets.undo(info.spec.name, annotator: who) else { throw Problem.notFound("\(who) has no label to undo in \(info.spec.name)") }
        return .json(encoding: Undone(item: item, annotator: who))
    }

    @Sendable func stats(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        return .json(try await datasets.stats(try context.parameters.require("name")).json)
    }

    /// Answers when at least `labeled` items have all their labels (and, with `agreement`,
    /// kappa reached it) — woken by the bus on each label — or at `timeout` with
    /// `"reached": false`.
    @Sendable func wait(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        let info = try await dataset(context)
        let name = info.spec.name
        var errors: [FieldError] = []
        // Read once: items added while waiting do not move the target.
        var target = info.itemCount
        if let text = request.query("labeled") {
            if let n = Int(text), n >= 0 { target = n } else { errors.append(FieldError(field: "labeled", detail: "must be a non-negative integer")) }
        }
        var agreement: Double?
        if let text = request.query("agreement") {
            if let k = Double(text), k >= -1, k <= 1 { agreement = k } else { errors.append(FieldError(field: "agreement", detail: "must be a number from -1 to 1")) }
            // Agreement is measured between annotators of an item: with one per item there is
            // none, and the wait could never end (`dataset wait --agreement` waits for ever).
            if info.spec.annotatorsPerItem < 2 {
                errors.append(FieldError(field: "agreement", detail: "needs annotators_per_item of 2 or more (\(name) has 1): agreement is measured between an item's annotators"))
            }
        }
        var timeout = GatehouseDuration.seconds(60)
        if let text = request.query("timeout") {
            if let d = GatehouseDuration(text), d.milliseconds <= 300_000 { timeout = d } else { errors.append(FieldError(field: "timeout", detail: "must be a duration from 0s to 300s")) }
        }
        if !errors.isEmpty { throw Problem.invalid(errors) }
        // Parked before the first read, so a label landing in between still wakes it.
        let parked = waits.park(.dataset(name), answerer: nil, requestID: context.id)
        defer { waits.unpark(parked) }
        let deadline = ContinuousClock.now + .milliseconds(timeout.milliseconds)
        // A graceful shutdown answers at once, as a timeout would: the client asks again.
        return try await withGracefulShutdownHandler {
            while true {
                let progress = try await datasets.progress(name, labeled: target, agreement: agreement)
                let remaining = deadline - ContinuousClock.now
                if progress.reached || remaining <= .zero || parked.isInterrupted || Task.isCancelled {
                    return .json(.object(JSONObject([
                        ("reached", .bool(progress.reached)), ("labeled", .int(progress.stats.labeled)), ("target", .int(progress.target)),
                        ("stats", progress.stats.json),
                    ])))
                }
                _ = await parked.next(timeout: remaining)
            }
        } onGracefulShutdown: {
            parked.interrupt()
        }
    }

    @Sendable func export(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        let info = try await dataset(context)
        let format = request.query("format") ?? "jsonl"
        let exporter: DatasetExporter
        switch format {
        case "jsonl": exporter = .jsonl
        case "csv": exporter = .csv
        case "label-studio": exporter = .labelStudio
        default: throw Problem.invalid([FieldError(field: "format", detail: "must be jsonl, csv or label-studio")])
        }
        let datasets = self.datasets
        let spec = info.spec
        let body = ResponseBody { writer in
            var first = true
            if let head = exporter.header(spec) { try await writer.write(ByteBuffer(string: head)) }
            try await datasets.export(spec.name) { page in
                var text = ""
                for item in page {
                    text += exporter.row(item, spec: spec, first: first)
                    first = false
                }
                try await writer.write(ByteBuffer(string: text))
            }
            if let tail = exporter.footer(spec) { try await writer.write(ByteBuffer(string: tail)) }
            try await writer.finish(nil)
        }
        var headers: HTTPFields = [.contentType: exporter.contentType]
        headers[.contentDisposition] = "attachment; filename=\"\(spec.name).\(exporter.fileExtension)\""
        return Response(status: .ok, headers: headers, body: body)
    }
}

/// The export formats: JSON lines, CSV, and Label Studio's JSON export.
enum DatasetExporter: Sendable {
    case jsonl, csv, labelStudio

    var contentType: String {
        switch self {
        case .jsonl: "application/x-ndjson"
        case .csv: "text/csv; charset=utf-8"
        case .labelStudio: "application/json"
        }
    }

    var fileExtension: String {
        switch self {
        case .jsonl: "jsonl"
        case .csv: "csv"
        case .labelStudio: "json"
        }
    }

    func header(_ spec: DatasetSpec) -> String? {
        switch self {
        case .jsonl: nil
        case .csv: "id,text,image_url,label,labels_count,annotators\r\n"
        case .labelStudio: "[\n"
        }
    }

    func footer(_ spec: DatasetSpec) -> String? { self == .labelStudio ? "\n]\n" : nil }

    func row(_ e: ExportedItem, spec: DatasetSpec, first: Bool) -> String {
        switch self {
        case .jsonl:
            var o = DatasetsController.itemJSON(e.item)
            o.append("label", e.consensus ?? .null)
            o.append("labels", .array(e.labels.map { l in
                .object(JSONObject([("annotator", .string(l.annotator)), ("value", l.value), ("at", .string(l.at.rfc3339))]))
            }))
            return JSONValue.object(o).serialized() + "\n"
        case .csv:
            let label: String = switch e.consensus {
            case .string(let s)?: s
            case .array(let list)? where spec.task == .multilabel: list.compactMap(\.stringValue).joined(separator: "|")
            case let value?: value.serialized()
            case nil: ""
            }
            let fields = [e.item.id, e.item.text ?? "", e.item.imageURL ?? "", e.labels.isEmpty ? "" : label, String(e.labels.count), e.labels.map(\.annotator).joined(separator: "|")]
            return fields.map(Self.csvField).joined(separator: ",") + "\r\n"
        case .labelStudio:
            // Label Studio's export: a task per item, one annotation per person, each with
            // `result[]` entries naming the control (`from_name`), the object (`to_name`), the
            // control type and its value.
            var data = e.item.data
            if let meta = e.item.meta { data["meta"] = .object(meta) }
            var task = JSONObject()
            task.append("id", .string(e.item.id))
            task.append("data", .object(data))
            task.append("annotations", .array(e.labels.enumerated().map { i, l in
                .object(JSONObject([
                    ("id", .int(i + 1)), ("completed_by", .string(l.annotator)), ("created_at", .string(l.at.rfc3339)),
                    ("result", .array(Self.labelStudioResults(l.value, spec: spec, item: e.item))),
                ]))
            }))
            if let p = e.item.prediction {
                task.append("predictions", .array([.object(JSONObject([("model_version", .string("imported")), ("result", .array(Self.labelStudioResults(p, spec: spec, item: e.item)))]))]))
            }
            if let consensus = e.consensus { task.append("majority", consensus) }
            return (first ? "" : ",\n") + JSONValue.object(task).serialized()
        }
    }

    static func labelStudioResults(_ value: JSONValue, spec: DatasetSpec, item: DatasetItem) -> [JSONValue] {
        let toName = item.text != nil ? "text" : "image"
        func result(_ type: String, _ value: JSONObject) -> JSONValue {
            .object(JSONObject([("from_name", .string("label")), ("to_name", .string(toName)), ("type", .string(type)), ("value", .object(value))]))
        }
        switch spec.task {
        case .classification:
            return value.stringValue.map { [result("choices", JSONObject([("choices", .array([.string($0)]))]))] } ?? []
        case .multilabel:
            return [result("choices", JSONObject([("choices", .array(value.arrayValue ?? []))]))]
        case .spans:
            return (value.arrayValue ?? []).compactMap(\.objectValue).map { span in
                result("labels", JSONObject([
                    ("start", span["start"] ?? .int(0)), ("end", span["end"] ?? .int(0)), ("text", span["text"] ?? .string("")),
                    ("labels", .array([span["label"] ?? .null])),
                ]))
            }
        }
    }

    static func csvField(_ s: String) -> String {
        guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
