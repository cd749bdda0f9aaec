import Foundation
import GatehouseCore
import GatehouseDelivery
import GatehouseServices
import GatehouseStore
import Hummingbird
import NIOCore

/// The console: server-rendered pages for people who want to look rather than read JSON —
/// `/` (runs), `/runs/{run}` (a run's timeline and gates), `/events` (the log, filtered) and
/// `/gates` (pending and recent) — plus `GET /login` and `POST /logout`. Each page needs a
/// signed-in person and shows what their token's scopes let them read. It works without
/// JavaScript; `console.js` keeps a page live (it reloads the `#live` region when events are
/// committed, over the same SSE stream the API offers, and every few seconds on a page marked
/// `data-poll` whose region changes without an event) and shows times as "3 min ago" with the
/// exact local time on hover.
struct ConsoleController {
    let events: EventService
    let desk: GateDesk
    let outbox: any Outbox
    let auth: Authenticator
    let templates: TemplateSet?
    let script: String?

    func addRoutes(to router: Router<GatehouseContext>) {
        router.get("/", use: runs)
        router.get("/runs/{run}", use: run)
        router.get("/events", use: eventLog)
        router.get("/gates", use: gates)
        router.post("/gates/{id}/decide", use: decide)
        router.get("/login", use: login)
        router.post("/logout", use: logout)
        router.get("/assets/console.js", use: asset)
    }

    static let headers = WebPage.headers(scripts: true, connect: true)

    // MARK: Pages

    @Sendable func runs(_ request: Request, context: GatehouseContext) async throws -> Response {
        try await page(request, context, "runs", needs: [.eventsRead]) { _, _ in
            let status = request.query("status").flatMap(RunSummary.Status.init(rawValue:))
            let pipeline = request.query("pipeline").flatMap { $0.isEmpty ? nil : $0 }
            let runs = try await events.runs(pipeline: pipeline, status: status, limit: 100)
            return [
                "runs": runs.map { r -> [String: Any] in
                    var row: [String: Any] = [
                        "pipeline": r.pipeline, "pipeline_query": Self.escapePath(r.pipeline), "run": r.run, "run_path": Self.escapePath(r.run),
                        "status": r.status.rawValue,
                        "started_at": r.startedAt.rfc3339, "events": r.eventCount,
                    ]
                    if let step = r.failedStep { row["failed_step"] = step }
                    if let end = r.endedAt { row["duration"] = Self.duration(milliseconds: end.milliseconds - r.startedAt.milliseconds) }
                    return row
                },
                "has_runs": !runs.isEmpty, "pipeline": pipeline ?? "",
                "status_options": ["", "running", "failed", "succeeded"].map { ["value": $0, "label": $0.isEmpty ? "any" : $0, "selected": $0 == (status?.rawValue ?? "")] as [String: Any] },
            ]
        }
    }

    @Sendable func run(_ request: Request, context: GatehouseContext) async throws -> Response {
        let name = try context.parameters.require("run")
        return try await page(request, context, "run", needs: [.eventsRead]) { who, principal in
            guard let (summary, timeline) = try await events.run(name, pipeline: request.query("pipeline"), timelineLimit: 500) else {
                throw Problem.notFound("no run \"\(name)\"")
            }
            let gates = try await desk.gates.list(GateFilter(pipeline: summary.pipeline, run: summary.run, limit: 50))
            let deliveries = try await outbox.list(pipeline: summary.pipeline, run: summary.run, limit: 100)
            var values: [String: Any] = [
                "deliveries": deliveries.map { d -> [String: Any] in
                    var row: [String: Any] = [
                        "receiver": d.receiver, "state": d.state.rawValue, "attempts": d.attempts, "created_at": Timestamp(milliseconds: d.created_at).rfc3339,
                    ]
                    if let status = d.last_status { row["last_status"] = status }
                    if let error = d.last_error { row["last_error"] = error }
                    return row
                },
                "has_deliveries": !deliveries.isEmpty,
                "pipeline": summary.pipeline, "run": summary.run, "status": summary.status.rawValue,
                "started_at": summary.startedAt.rfc3339,
                "events": timeline.map(Self.eventRow), "gates": gates.map { gateRow($0, who: who, principal: principal) }, "has_gates": !gates.isEmpty,
            ]
            if let step = summary.failedStep { values["failed_step"] = step }
            return values
        }
    }

    @Sendable func eventLog(_ request: Request, context: GatehouseContext) async throws -> Response {
        try await page(request, context, "events", needs: [.eventsRead]) { _, _ in
            func given(_ name: String) -> String? { request.query(name).flatMap { $0.isEmpty ? nil : $0 } }
            var filter = EventFilter(pipeline: given("pipeline"), run: given("run"), limit: 200)
            filter.types = given("type")?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } ?? []
            filter.newestFirst = true
            let found = try await events.events(filter)
            return [
                "events": found.map(Self.eventRow), "has_events": !found.isEmpty,
                "pipeline": given("pipeline") ?? "", "run": given("run") ?? "", "type": given("type") ?? "",
            ]
        }
    }

    @Sendable func gates(_ request: Request, context: GatehouseContext) async throws -> Response {
        try await page(request, context, "gates", needs: [.gatesWrite, .gatesDecide, .eventsRead]) { who, principal in
            let pending = try await desk.gates.list(GateFilter(state: .pending, limit: 200))
            // Closed gates by their states (a page of pending ones must not hide them).
            var recent: [Gate] = []
            for state in [GateState.approved, .rejected, .expired, .canceled, .superseded] {
                recent += try await desk.gates.list(GateFilter(state: state, limit: 50))
            }
            recent = Array(recent.sorted { $0.createdAt > $1.createdAt }.prefix(50))
            let csrf = try csrf(request)
            return [
                "pending": pending.map { gate -> [String: Any] in
                    var row = gateRow(gate, who: who, principal: principal)
                    // Decided right here when nothing needs typing in; else on its page.
                    if row["may_decide"] as? Bool == true, !gate.spec.inputs.contains(where: { $0.required && $0.defaultValue == nil }) {
                        row["quick"] = gate.spec.choices.map { ["id": gate.id, "choice": $0, "label": $0.prefix(1).uppercased() + $0.dropFirst(), "csrf": csrf] }
                        row["has_quick"] = true
                    }
                    return row
                },
                "has_pending": !pending.isEmpty,
                "recent": recent.map { gateRow($0, who: who, principal: principal) }, "has_recent": !recent.isEmpty,
            ]
        }
    }

    /// A decision from `/gates`: the one decision path (`GateDesk.decide`), as `web:<name>`.
    @Sendable func decide(_ request: Request, context: GatehouseContext) async throws -> Response {
        let id = try context.parameters.require("id")
        return try await change(request, context, needs: .gatesDecide, back: "/gates") { form, who in
            let decision = GateDecision(by: who, decision: form["decision"] ?? "", comment: nil, inputs: nil, via: "web", at: .now())
            _ = try await desk.decide(id, decision)
        }
    }

    // MARK: Signing in and out

    @Sendable func login(_ request: Request, context: GatehouseContext) async throws -> Response {
        let next = WebPage.sameOriginPath(request.query("next")) ?? "/"
        if try await auth.person(request, context: context) != nil { return WebPage.redirect(next) }
        guard let templates else { return WebPage.message(.internalServerError, "The page templates were not found.") }
        let html = try templates.renderHTML("pages/login", ["next": next, "with_token": try await auth.hasTokens()])
        return Response(status: .ok, headers: WebPage.headers(), body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    @Sendable func logout(_ request: Request, context: GatehouseContext) async throws -> Response {
        if let site = request.headers[.init("Sec-Fetch-Site")!], site.lowercased() != "same-origin" {
            return WebPage.message(.forbidden, "Sign out from this server's own page.")
        }
        return WebPage.redirect("/login", setCookie: Authenticator.signOut)
    }

    @Sendable func asset(_ request: Request, context: GatehouseContext) async throws -> Response {
        guard let script else { return Response(status: .notFound) }
        return Response(status: .ok, headers: [.contentType: "text/javascript; charset=utf-8", .cacheControl: "max-age=300"], body: .init(byteBuffer: ByteBuffer(string: script)))
    }

    // MARK: Rendering

    /// A console page: the signed-in person (else the sign-in page, coming back here), their
    /// scopes checked, then `values` rendered into `pages/<name>` with the navigation.
    func page(
        _ request: Request, _ context: GatehouseContext, _ name: String, needs scopes: [Scope],
        values: (String, Principal) async throws -> [String: Any]
    ) async throws -> Response {
        guard let (who, principal) = try await auth.person(request, context: context) else {
            // (Percent-encoding a String cannot fail; "/" would do if it did.)
            let back = (request.uri.path + (request.uri.query.map { "?" + $0 } ?? ""))
                .addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "/-_.~"))) ?? "/"
            return WebPage.redirect("/login?next=" + back)
        }
        if case .token(let token) = principal, !scopes.contains(where: token.scopes.grants) {
            // Home for a labeller, whose token reads no runs, is what waits for them.
            if name == "runs" { return WebPage.redirect("/inbox") }
            return WebPage.message(.forbidden, "\(token.name) may not see this page: it needs the scope \(scopes.map(\.rawValue).joined(separator: " or ")).")
        }
        guard let templates else { return WebPage.message(.internalServerError, "The page templates were not found.") }
        // Where console.js starts following the stream, read *before* what the page shows: an
        // event committed in between is then both on the page and after this cursor (one
        // needless reload), never on neither (read after, it sat at or before the cursor, so
        // the stream never told the page, and /, /events and /gates stayed without it).
        let after = try await events.lastCursor()
        var v: [String: Any]
        do {
            v = try await values(who, principal)
        } catch let problem as Problem where problem.status == 404 {
            return WebPage.message(.notFound, problem.detail)
        }
        // A refused change comes back here with its reason (`change`), signed for this session:
        // a link from elsewhere cannot put words in the page's alert.
        if let error = request.query("error"), let signature = request.query("sig"),
           desk.signer.checkCSRF(signature, cookie: WebPage.cookie(Authenticator.sessionCookie, in: request) ?? "", gate: "flash:" + error) {
            v["error"] = error
        }
        v["who"] = who.hasPrefix("web:") ? String(who.dropFirst(4)) : who
        v["after"] = after
        v["nav_\(name)"] = true
        let html = try templates.renderHTML("pages/\(name)", v)
        return Response(status: .ok, headers: Self.headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// The CSRF token of the console's forms: bound to this browser's session cookie, so
    /// another site can neither read nor forge it.
    func csrf(_ request: Request) throws -> String {
        desk.signer.csrf(cookie: WebPage.cookie(Authenticator.sessionCookie, in: request) ?? "", gate: "console")
    }

    /// A console form post: the signed-in person with `scope`, the form's CSRF token, then
    /// `body`; back to `back` afterwards, with the refusal's words when it refused (the rules
    /// and scopes are the API's).
    func change(
        _ request: Request, _ context: GatehouseContext, needs scope: Scope, back: String,
        body: ([String: String], String) async throws -> Void
    ) async throws -> Response {
        guard let (who, principal) = try await auth.person(request, context: context) else { return WebPage.redirect("/login?next=" + back) }
        if case .token(let token) = principal, !token.scopes.grants(scope) {
            return WebPage.message(.forbidden, "\(token.name) may not do this: it needs the scope \(scope.rawValue).")
        }
        var request = request
        let form = parseForm(try await request.bodyBytes(limit: 64 * 1024))
        guard let token = form["csrf"], desk.signer.checkCSRF(token, cookie: WebPage.cookie(Authenticator.sessionCookie, in: request) ?? "", gate: "console") else {
            return WebPage.message(.forbidden, "This form has expired or did not come from this console. Reload the page and try again.")
        }
        do {
            try await body(form, who)
            return WebPage.redirect(back)
        } catch let problem as Problem {
            let detail = String(problem.detail.prefix(500))
            let signature = desk.signer.csrf(cookie: WebPage.cookie(Authenticator.sessionCookie, in: request) ?? "", gate: "flash:" + detail)
            func encoded(_ text: String) -> String { text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "" }
            return WebPage.redirect(back + "?error=" + encoded(detail) + "&sig=" + encoded(signature))
        }
    }

    static func eventRow(_ stored: StoredEvent) -> [String: Any] {
        let e = stored.event
        var row: [String: Any] = [
            "cursor": stored.cursor, "type": e.type, "type_query": escapePath(e.type), "pipeline": e.pipeline, "pipeline_query": escapePath(e.pipeline),
            "time": e.time.rfc3339, "severity": e.severity.rawValue,
            "failed": e.type.hasSuffix(".failed"),
        ]
        if let run = e.run { row["run"] = run; row["run_path"] = escapePath(run) }
        if let step = e.step { row["step"] = step }
        if let summary = e.summary { row["summary"] = summary }
        return row
    }

    /// Whether this person may decide gates at all: their token has `gates:decide` (or they
    /// are the local user of a server without tokens). A personal decision link is a decision
    /// waiting to be clicked, so nobody else gets one.
    static func mayDecide(_ principal: Principal) -> Bool {
        if case .token(let token) = principal { return token.scopes.grants(.gatesDecide) }
        return true
    }

    func gateRow(_ gate: Gate, who: String, principal: Principal) -> [String: Any] {
        var row: [String: Any] = [
            "title": gate.spec.title, "state": gate.state.rawValue, "pipeline": gate.spec.pipeline, "created_at": gate.createdAt.rfc3339,
            "approvals": gate.approvals.count, "required": gate.spec.isBranching ? 1 : gate.spec.requiredApprovals, "is_branching": gate.spec.isBranching,
        ]
        if let run = gate.spec.run { row["run"] = run; row["run_path"] = Self.escapePath(run) }
        if let e = gate.expiresAt { row["expires_at"] = e.rfc3339 }
        if let outcome = gate.outcome { row["outcome"] = GateDesk.outcomeLine(outcome) }
        // The decision page, personal when this person may decide (same rules as the API);
        // otherwise a page that shows the gate and asks who decides.
        let mayDecide = gate.state == .pending && Self.mayDecide(principal) && gate.refusal(of: who) == nil
        row["url"] = desk.pageURL(gate, by: mayDecide ? who : nil)
        row["may_decide"] = mayDecide
        return row
    }

    static func escapePath(_ segment: String) -> String {
        segment.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-_.~"))) ?? segment
    }

    static func duration(milliseconds: Int64) -> String {
        let seconds = max(0, milliseconds / 1000)
        if seconds < 60 { return "\(seconds)s" }
        if seconds < 3600 { return "\(seconds / 60)m \(seconds % 60)s" }
        return "\(seconds / 3600)h \(seconds % 3600 / 60)m"
    }
}
