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
    let store: DatasetStore
    let auth: Authenticator
    let bus: Bus
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
        let name = try context.parameters.require("name")
        guard let spec = try await store.spec(name) else { throw Problem.notFound("no dataset \"\(name)\"") }
        return spec
    }

    func dataset(_ context: GatehouseContext) async throws -> DatasetInfo {
        let name = try context.parameters.require("name")
        guard let info = try await store.get(name) else { throw Problem.notFound("no dataset \"\(name)\"") }
        return info
    }

    func jsonBody(_ request: Request) async throws -> JSONObject {
        var request = request
        return try await request.jsonObject(limit: maxBodyBytes)
    }

    @Sendable func create(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .datasetsWrite)
        let spec = try DatasetSpec.parse(.object(try await jsonBody(request))).get()
        switch try await store.create(spec) {
        case .conflict(let existing):
            throw Problem(status: 409, title: "Conflict", detail: "dataset \"\(spec.name)\" exists with another definition", extensions: JSONObject([("existing", existing.json)]))
        case let outcome:
            // Deleted by someone else in between: say so rather than crash.
            guard let info = try await store.get(spec.name) else { throw Problem.notFound("dataset \"\(spec.name)\" was deleted meanwhile") }
            return .json(with(info), status: outcome == .created ? .created : .ok)
        }
    }

    func with(_ info: DatasetInfo) -> JSONValue {
        var o = info.json.objectValue ?? JSONObject()
        o.append("url", .string(annotateURL(info.spec.name)))
        return .object(o)
    }

    @Sendable func list(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        return .json(.object(JSONObject([("datasets", .array(try await store.list().map(with)))])))
    }

    @Sendable func get(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        return .json(with(try await dataset(context)))
    }

    @Sendable func delete(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .datasetsWrite)
        let name = try context.parameters.require("name")
        guard try await store.delete(name) else { throw Problem.notFound("no dataset \"\(name)\"") }
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
        let importID = "imp_" + EventValidator.generateID().dropFirst(4)
        var staged: [(Int, DatasetItem)] = []
        var errors: [FieldError] = []
        var count = 0
        func accept(_ value: JSONValue, index: Int, line: Int?) async throws {
            count += 1
            switch DatasetItem.parse(value, for: spec) {
            case .success(let item):
                guard errors.isEmpty else { return }
                staged.append((index, item))
                if staged.count >= 5000 {
                    try await store.stage(importID: importID, staged)
                    staged.removeAll(keepingCapacity: true)
                }
            case .failure(let invalid):
                for e in invalid.errors where errors.count < 20 { errors.append(FieldError(index: line == nil ? index : nil, line: line, field: e.field, detail: e.detail)) }
            }
        }
        do {
            if ndjson {
                var lines = NDJSONLines()
                var total = 0
                func parseLine(_ bytes: [UInt8], line: Int) async throws {
                    do {
                        try await accept(try JSONValue.parse(bytes: bytes), index: count, line: line)
                    } catch let e as JSONParseError {
                        errors.append(FieldError(line: line, field: "(line)", detail: "is not valid JSON: \(e.message) at column \(e.column)"))
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
                        if errors.count >= 20 { break reading }
                    }
                }
                if errors.count < 20, let (line, bytes) = lines.finish() { try await parseLine(bytes, line: line) }
            } else {
                var request = request
                let bytes = try await request.bodyBytes(limit: min(maxImportBytes, 64 << 20))
                let value: JSONValue
                do { value = try JSONValue.parse(bytes: bytes) } catch {
                    throw Problem.badRequest("the body is not valid JSON: \(error.message) at line \(error.line), column \(error.column)")
                }
                let items = value.arrayValue ?? (value.objectValue.map { [JSONValue.object($0)] } ?? [])
                if value.arrayValue == nil && value.objectValue == nil { throw Problem.invalid([FieldError(field: "(body)", detail: "must be an item or an array of items")]) }
                for (i, item) in items.enumerated() {
                    try await accept(item, index: i, line: nil)
                    if errors.count >= 20 { break }
                }
            }
            if !errors.isEmpty {
                try await store.discardImport(importID)
                var problem = Problem.invalid(errors)
                problem.detail = "nothing was imported: " + problem.detail
                throw problem
            }
            if count == 0 { throw Problem.invalid([FieldError(field: "(body)", detail: "holds no items")]) }
            try await store.stage(importID: importID, staged)
            let (added, duplicates) = try await store.commitImport(importID, dataset: spec.name, received: count, url: annotateURL(spec.name))
            let total = try await store.get(spec.name)?.itemCount ?? 0
            return .json(.object(JSONObject([("added", .int(added)), ("duplicates", .int(duplicates)), ("items", .int(total))])))
        } catch {
            try? await store.discardImport(importID)
            throw error
        }
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
        guard let served = try await store.next(spec.name, annotator: who) else { return Response(status: .noContent) }
        var o = Self.itemJSON(served.item)
        o.append("labels_needed", .int(spec.annotatorsPerItem - served.labelCount))
        o.append("annotator", .string(who))
        return .json(.object(o))
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
        let o = try await jsonBody(request)
        for (k, _) in o where !["label", "labels", "spans", "annotator"].contains(k) { throw Problem.invalid([FieldError(field: k, detail: "is not a known field")]) }
        let who = try Self.annotator(o["annotator"]?.stringValue, principal: principal)
        // Spans are checked against the item's text; other tasks need no read before the write.
        var text: String?
        if spec.task == .spans {
            guard let item = try await store.item(spec.name, id: id) else { throw Problem.notFound("no item \"\(id)\" in \(spec.name)") }
            text = item.text
        }
        let raw: JSONValue = switch spec.task {
        case .classification: o["label"] ?? .null
        case .multilabel: o["labels"] ?? o["label"] ?? .null
        case .spans: o["spans"] ?? .null
        }
        let value = try spec.normalize(raw, text: text).mapError { Problem.invalid([$0]) }.get()
        switch try await store.label(spec.name, item: id, annotator: who, value: value, url: annotateURL(spec.name)) {
        case .noItem: throw Problem.notFound("no item \"\(id)\" in \(spec.name)")
        case .full(let n): throw Problem(status: 409, title: "Conflict", detail: "item \(id) already has its \(n) label\(n == 1 ? "" : "s") from other people")
        case .recorded(let itemComplete, let datasetComplete):
            return .json(.object(JSONObject([
                ("item", .string(id)), ("annotator", .string(who)), ("value", value),
                ("item_complete", .bool(itemComplete)), ("dataset_complete", .bool(datasetComplete)),
            ])), status: .created)
        }
    }

    @Sendable func skip(_ request: Request, context: GatehouseContext) async throws -> Response {
        let principal = try await auth.authorize(request, context: context, scope: .datasetsLabel)
        let info = try await dataset(context)
        let id = try context.parameters.require("id")
        let who = try Self.annotator(request.query("annotator"), principal: principal)
        guard try await store.skip(info.spec.name, item: id, annotator: who) else { throw Problem.notFound("no item \"\(id)\" in \(info.spec.name)") }
        return Response(status: .noContent)
    }

    @Sendable func undo(_ request: Request, context: GatehouseContext) async throws -> Response {
        let principal = try await auth.authorize(request, context: context, scope: .datasetsLabel)
        let info = try await dataset(context)
        let who = try Self.annotator(request.query("annotator"), principal: principal)
        guard let item = try await store.undo(info.spec.name, annotator: who) else { throw Problem.notFound("\(who) has no label to undo in \(info.spec.name)") }
        return .json(.object(JSONObject([("item", .string(item)), ("annotator", .string(who))])))
    }

    @Sendable func stats(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        let info = try await dataset(context)
        guard let stats = try await store.stats(info.spec.name) else { throw Problem.notFound("dataset \"\(info.spec.name)\" was deleted meanwhile") }
        return .json(stats.json)
    }

    /// Answers when at least `labeled` items have all their labels (and, with `agreement`,
    /// kappa reached it) — woken by the bus on each label — or at `timeout` with
    /// `"reached": false`.
    @Sendable func wait(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        let info = try await dataset(context)
        let name = info.spec.name
        var errors: [FieldError] = []
        var target = info.itemCount
        if let text = request.query("labeled") {
            if let n = Int(text), n >= 0 { target = n } else { errors.append(FieldError(field: "labeled", detail: "must be a non-negative integer")) }
        }
        var agreement: Double?
        if let text = request.query("agreement") {
            if let k = Double(text), k >= -1, k <= 1 { agreement = k } else { errors.append(FieldError(field: "agreement", detail: "must be a number from -1 to 1")) }
        }
        var timeout = GatehouseDuration.seconds(60)
        if let text = request.query("timeout") {
            if let d = GatehouseDuration(text), d.milliseconds <= 300_000 { timeout = d } else { errors.append(FieldError(field: "timeout", detail: "must be a duration from 0s to 300s")) }
        }
        if !errors.isEmpty { throw Problem.invalid(errors) }
        let subscriber = bus.subscribe { message in
            if case .datasetChanged(let changed) = message { return changed == name }
            return false
        }
        defer { subscriber.close() }
        let deadline = ContinuousClock.now + .milliseconds(timeout.milliseconds)
        // A graceful shutdown answers at once, as a timeout would: the client asks again.
        return try await withGracefulShutdownHandler {
            while true {
                let s = try await store.stats(name, withAgreement: agreement != nil)
                guard let s else { throw Problem.notFound("no dataset \"\(name)\"") }
                let reached = s.labeled >= target && (agreement.map { k in s.agreement.map { $0 >= k } ?? false } ?? true)
                let remaining = deadline - ContinuousClock.now
                if reached || remaining <= .zero || Task.isShuttingDownGracefully || Task.isCancelled {
                    return .json(.object(JSONObject([("reached", .bool(reached)), ("labeled", .int(s.labeled)), ("target", .int(target)), ("stats", s.json)])))
                }
                _ = await subscriber.next(timeout: remaining)
            }
        } onGracefulShutdown: {
            subscriber.wake()
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
        let store = self.store
        let spec = info.spec
        let body = ResponseBody { writer in
            var first = true
            if let head = exporter.header(spec) { try await writer.write(ByteBuffer(string: head)) }
            try await store.export(spec.name) { page in
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

    func row(_ e: DatasetStore.ExportedItem, spec: DatasetSpec, first: Bool) -> String {
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
