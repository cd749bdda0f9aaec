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
        // `415` for anything but JSON, as every other body of the API.
        let value = JSONValue.object(try await request.jsonObject(limit: maxBodyBytes))
        let silence = try Self.silence(from: value, now: .now(), defaultCreator: principal.name).get()
        try await store.create(silence)
        bus.publish(.silencesChanged)
        return .json(Self.json(silence, now: .now()), status: .created)
    }

    static func silence(from value: JSONValue, now: Timestamp, defaultCreator: String) -> Result<Silence, Problem> {
        Result { () throws(Problem) in try JSONValueDecoder().decode(SilenceRequest.self, from: value) }
            .flatMap { $0.silence(id: "sil_" + EventValidator.generateID().dropFirst(4), now: now, defaultCreator: defaultCreator) }
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
