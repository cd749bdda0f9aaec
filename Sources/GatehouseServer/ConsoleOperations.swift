import Foundation
import GatehouseCore
import GatehouseDelivery
import GatehouseServices
import GatehouseStore
import Hummingbird
import NIOCore

/// The console's operations pages: `/deliveries` (by state and receiver, retry, the receivers'
/// health), `/silences` (list, create — also "silence like this" from an event —, expire) and
/// `/datasets` (progress, agreement, who labelled how much, exports). Changes are plain form
/// posts carrying a CSRF token bound to the session, with the same rules and scopes as the API.
struct ConsoleOperations {
    let console: ConsoleController
    let outbox: any Outbox
    let silences: any SilenceStore
    let datasets: DatasetService
    let bus: Bus
    var health: @Sendable () -> [(name: String, health: ReceiverHealth)] = { [] }

    func addRoutes(to router: Router<GatehouseContext>) {
        router.get("/deliveries", use: deliveries)
        router.post("/deliveries/{id}/retry", use: retry)
        router.get("/silences", use: silenceList)
        router.post("/silences", use: createSilence)
        router.post("/silences/{id}/expire", use: expireSilence)
        router.get("/datasets", use: datasetList)
    }

    // MARK: Deliveries

    @Sendable func deliveries(_ request: Request, context: GatehouseContext) async throws -> Response {
        try await console.page(request, context, "deliveries", needs: [.eventsRead]) { _, _ in
            let state = request.query("state").flatMap(Delivery.State.init(rawValue:))
            let receiver = request.query("receiver").flatMap { $0.isEmpty ? nil : $0 }
            let rows = try await outbox.list(state: state, receiver: receiver, limit: 200)
            let now = Timestamp.now()
            var values: [String: Any] = [
                "deliveries": rows.map { d -> [String: Any] in
                    var row: [String: Any] = [
                        "id": d.id, "receiver": d.receiver, "state": d.state.rawValue, "attempts": d.attempts, "kind": d.kind,
                        "created_at": Timestamp(milliseconds: d.created_at).rfc3339,
                        "retryable": [.failed, .dead, .muted].contains(d.state),
                    ]
                    if let status = d.last_status { row["last_status"] = status }
                    if let error = d.last_error { row["last_error"] = error }
                    if d.state == .pending || d.state == .failed, d.next_attempt_at > now.milliseconds {
                        row["next_attempt_at"] = Timestamp(milliseconds: d.next_attempt_at).rfc3339
                    }
                    return row
                },
                "has_deliveries": !rows.isEmpty,
                "receivers": health().map { name, h -> [String: Any] in
                    var row: [String: Any] = ["name": name, "state": h.state.rawValue, "ok": h.state == .ok]
                    if let until = h.until { row["until"] = until.rfc3339 }
                    return row
                },
                "receiver_filter": receiver ?? "",
                "has_receivers": !health().isEmpty,
                "state_options": ([""] + Delivery.State.allCases.map(\.rawValue)).map {
                    ["value": $0, "label": $0.isEmpty ? "any" : $0, "selected": $0 == (state?.rawValue ?? "")] as [String: Any]
                },
                "csrf": try console.csrf(request),
            ]
            if let receiver { values["receiver"] = receiver }
            return values
        }
    }

    @Sendable func retry(_ request: Request, context: GatehouseContext) async throws -> Response {
        try await console.change(request, context, needs: .admin, back: "/deliveries") { _, _ in
            let id = try context.parameters.require("id")
            guard let row = try await outbox.retry(id, now: .now()) else { throw Problem.notFound("no delivery \"\(id)\"") }
            guard row.state == .pending else {
                throw Problem(status: 409, title: "Conflict", detail: "delivery \(id) is \(row.state.rawValue); only failed, dead or muted deliveries can be retried")
            }
            bus.publish(.wake)
        }
    }

    // MARK: Silences

    @Sendable func silenceList(_ request: Request, context: GatehouseContext) async throws -> Response {
        try await console.page(request, context, "silences", needs: [.eventsRead]) { _, _ in
            let now = Timestamp.now()
            // "Silence like this": an event's pipeline and type, ready to submit.
            let like = ["pipeline", "type", "run", "step"].compactMap { key in
                request.query(key).flatMap { try? Matcher(name: key, op: .equal, value: $0).description }
            }
            return [
                "silences": try await silences.list().map { s -> [String: Any] in
                    let state = s.isActive(at: now) ? "active" : (s.endsAt <= now ? "expired" : "pending")
                    return [
                        "id": s.id, "matchers": s.matchers.map(\.description).joined(separator: ", "), "starts_at": s.startsAt.rfc3339,
                        "ends_at": s.endsAt.rfc3339, "created_by": s.createdBy, "comment": s.comment, "state": state, "expirable": state != "expired",
                    ]
                },
                "matchers": like.joined(separator: ", "), "csrf": try console.csrf(request),
            ]
        }
    }

    @Sendable func createSilence(_ request: Request, context: GatehouseContext) async throws -> Response {
        try await console.change(request, context, needs: .admin, back: "/silences") { form, who in
            let matchers = (form["matchers"] ?? "").split(whereSeparator: { $0 == "\n" }).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            var asked = SilenceRequest(matchers: matchers, duration: form["duration"].flatMap { $0.isEmpty ? nil : $0 } ?? "2h", created_by: who)
            if let comment = form["comment"], !comment.isEmpty { asked.comment = comment }
            // The API's checks, field by field, on what the form sent.
            let checked = try JSONValueDecoder().decode(SilenceRequest.self, from: JSONValueEncoder.value(asked))
            let silence = try checked.silence(id: "sil_" + EventValidator.generateID().dropFirst(4), now: .now(), defaultCreator: who).get()
            try await silences.create(silence)
            bus.publish(.silencesChanged)
        }
    }

    @Sendable func expireSilence(_ request: Request, context: GatehouseContext) async throws -> Response {
        try await console.change(request, context, needs: .admin, back: "/silences") { _, _ in
            let id = try context.parameters.require("id")
            guard try await silences.expire(id) else { throw Problem.notFound("no silence \"\(id)\"") }
            bus.publish(.silencesChanged)
        }
    }

    // MARK: Datasets

    @Sendable func datasetList(_ request: Request, context: GatehouseContext) async throws -> Response {
        try await console.page(request, context, "datasets", needs: [.datasetsWrite, .datasetsLabel, .eventsRead]) { _, _ in
            var rows: [[String: Any]] = []
            for info in try await datasets.list() {
                let stats = try await datasets.stats(info.spec.name)
                var row: [String: Any] = [
                    "name": info.spec.name, "task": info.spec.task.rawValue, "total": stats.total, "labeled": stats.labeled,
                    "in_progress": stats.inProgress, "skipped": stats.skipped,
                    "percent": stats.total == 0 ? 0 : stats.labeled * 100 / stats.total,
                    "people": stats.annotators.map { ["name": $0.0.hasPrefix("web:") ? String($0.0.dropFirst(4)) : $0.0, "count": $0.1] as [String: Any] },
                    "has_people": !stats.annotators.isEmpty,
                    "name_path": ConsoleController.escapePath(info.spec.name),
                ]
                if let kappa = stats.agreement { row["agreement"] = String(format: "%.2f", kappa) }
                rows.append(row)
            }
            return ["datasets": rows, "has_datasets": !rows.isEmpty]
        }
    }
}
