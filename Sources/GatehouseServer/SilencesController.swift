import Foundation
import GatehouseCore
import GatehouseServices
import GatehouseStore
import Hummingbird

/// `POST /v1/silences`, `GET /v1/silences`, `DELETE /v1/silences/{id}` (Alertmanager's
/// silences: matchers and a time window; expiring one ends it now).
struct SilencesController {
    let store: any SilenceStore
    let auth: Authenticator
    let bus: Bus
    let maxBodyBytes: Int

    func addRoutes(to router: Router<GatehouseContext>) {
        router.post("/v1/silences", use: create)
        router.get("/v1/silences", use: list)
        router.delete("/v1/silences/{id}", use: expire)
    }

    @Sendable func create(_ request: Request, context: GatehouseContext) async throws -> Response {
        let principal = try await auth.authorize(request, context: context, scope: .admin)
        var request = request
        let body = try await request.bodyBytes(limit: maxBodyBytes)
        let value: JSONValue
        do { value = try JSONValue.parse(bytes: body) } catch { throw Problem.badRequest("the body is not valid JSON: \(error.message) at line \(error.line), column \(error.column)") }
        let silence = try Self.silence(from: value, now: .now(), defaultCreator: principal.name).get()
        try await store.create(silence)
        bus.publish(.silencesChanged)
        return .json(Self.json(silence, now: .now()), status: .created)
    }

    static func silence(from value: JSONValue, now: Timestamp, defaultCreator: String) -> Result<Silence, Problem> {
        guard let o = value.objectValue else { return .failure(.invalid([FieldError(field: "(body)", detail: "must be a JSON object")])) }
        var errors: [FieldError] = []
        var matchers: [Matcher] = []
        if let list = o["matchers"]?.arrayValue, !list.isEmpty {
            for (i, item) in list.enumerated() {
                guard let text = item.stringValue else { errors.append(FieldError(field: "matchers[\(i)]", detail: "must be a string such as pipeline=\"train\"")); continue }
                do { matchers += try Matcher.parseList(text) } catch { errors.append(FieldError(field: "matchers[\(i)]", detail: error.message)) }
            }
        } else {
            errors.append(FieldError(field: "matchers", detail: "is required: a non-empty list of matchers"))
        }
        func time(_ field: String) -> Timestamp? {
            guard let v = o[field] else { return nil }
            guard let text = v.stringValue, let t = Timestamp(rfc3339: text) else {
                errors.append(FieldError(field: field, detail: "must be an RFC 3339 time"))
                return nil
            }
            return t
        }
        let startsAt = time("starts_at") ?? now
        var endsAt = time("ends_at")
        if endsAt == nil, let d = o["duration"]?.stringValue {
            if let duration = GatehouseDuration(d) { endsAt = startsAt.adding(milliseconds: duration.milliseconds) } else { errors.append(FieldError(field: "duration", detail: "is not a duration such as 2h")) }
        }
        if endsAt == nil && o["ends_at"] == nil && o["duration"] == nil { errors.append(FieldError(field: "ends_at", detail: "is required (or give duration)")) }
        if let endsAt, endsAt <= startsAt { errors.append(FieldError(field: "ends_at", detail: "must be after starts_at")) }
        for field in ["created_by", "comment"] where o[field] != nil && o[field]?.stringValue == nil {
            errors.append(FieldError(field: field, detail: "must be a string"))
        }
        // created_by names a person; the comment is free text, kept as sent.
        if let by = o["created_by"]?.stringValue, let error = ControlCharacters.fieldError("created_by", by) { errors.append(error) }
        guard errors.isEmpty, let endsAt else { return .failure(.invalid(errors)) }
        return .success(Silence(
            id: "sil_" + EventValidator.generateID().dropFirst(4), matchers: matchers, startsAt: startsAt, endsAt: endsAt,
            createdBy: o["created_by"]?.stringValue ?? defaultCreator, comment: o["comment"]?.stringValue ?? ""))
    }

    /// A silence as the API shows it.
    struct Resource: Encodable {
        var id: String
        var matchers: [String]
        var starts_at: Timestamp
        var ends_at: Timestamp
        var created_by: String
        var comment: String
        var state: String

        init(_ s: Silence, now: Timestamp) {
            id = s.id
            matchers = s.matchers.map(\.description)
            starts_at = s.startsAt
            ends_at = s.endsAt
            created_by = s.createdBy
            comment = s.comment
            state = s.isActive(at: now) ? "active" : (s.endsAt <= now ? "expired" : "pending")
        }
    }

    static func json(_ s: Silence, now: Timestamp) -> JSONValue { JSONValueEncoder.value(Resource(s, now: now)) }

    @Sendable func list(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .eventsRead)
        let now = Timestamp.now()
        return .json(.object(JSONObject([("silences", .array(try await store.list().map { Self.json($0, now: now) }))])))
    }

    @Sendable func expire(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .admin)
        let id = try context.parameters.require("id")
        guard try await store.expire(id) else { throw Problem.notFound("no silence \"\(id)\"") }
        bus.publish(.silencesChanged)
        return Response(status: .noContent)
    }
}
