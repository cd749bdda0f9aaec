import Foundation
import GatehouseCore
import GatehouseDelivery
import GatehouseServices
import GatehouseStore
import Hummingbird

/// `GET /v1/deliveries`, `POST /v1/deliveries/{id}/retry`.
struct DeliveriesController {
    let outbox: any Outbox
    let auth: Authenticator
    let bus: Bus
    /// Each receiver's health (ok, backing off, paused by a rate limit); empty without a dispatcher.
    var health: @Sendable () -> [(name: String, health: ReceiverHealth)] = { [] }

    func addRoutes(to router: Router<GatehouseContext>) {
        router.get("/v1/deliveries", use: list)
        router.post("/v1/deliveries/{id}/retry", use: retry)
    }

    @Sendable func list(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .eventsRead)
        var state: Delivery.State?
        if let text = request.query("state") {
            guard let s = Delivery.State(rawValue: text) else {
                throw Problem.invalid([FieldError(field: "state", detail: "must be one of \(Delivery.State.allCases.map(\.rawValue).joined(separator: ", "))")])
            }
            state = s
        }
        let limit = try request.intQuery("limit", default: 100, range: 1...1000)
        let rows = try await outbox.list(state: state, receiver: request.query("receiver"), limit: limit)
        var receivers = JSONObject()
        for (name, health) in health() { receivers.append(name, health.json) }
        return .json(.object(JSONObject([("deliveries", .array(rows.map(\.json))), ("receivers", .object(receivers))])))
    }

    @Sendable func retry(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .admin)
        let id = try context.parameters.require("id")
        guard let row = try await outbox.retry(id, now: .now()) else { throw Problem.notFound("no delivery \"\(id)\"") }
        guard row.state == .pending else {
            throw Problem(status: 409, title: "Conflict", detail: "delivery \(id) is \(row.state.rawValue); only failed, dead or muted deliveries can be retried")
        }
        bus.publish(.wake)
        return .json(row.json, status: .accepted)
    }
}
