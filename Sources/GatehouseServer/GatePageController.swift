import Foundation
import GatehouseCore
import GatehouseDelivery
import GatehouseServices
import GatehouseStore
import Hummingbird
import NIOCore

/// The web decision page `/gates/{id}`: server-rendered from `templates/pages/gate.mustache`,
/// plain HTML forms, no JavaScript needed. The signed link (`?t=`) is the credential: it names
/// the gate, maybe the person, and when it stops working. `GET` only shows; the decision is a
/// `POST` carrying the link token and a CSRF token bound to a same-site cookie.
struct GatePageController {
    let desk: GateDesk
    let templates: TemplateSet?
    let maxBodyBytes: Int
    static let cookieName = "gatehouse_csrf"

    func addRoutes(to router: Router<GatehouseContext>) {
        router.get("/gates/{id}", use: show)
        router.post("/gates/{id}", use: submit)
    }

    @Sendable func show(_ request: Request, context: GatehouseContext) async throws -> Response {
        let id = try context.parameters.require("id")
        guard let token = request.query("t"), let claims = desk.signer.verify(token), claims.gate == id else {
            return page(status: .unauthorized, message: "This decision link is invalid or has expired. Ask for a new one (gatehouse gate link).")
        }
        guard let gate = try await desk.gates.get(id) else { return page(status: .notFound, message: "No such gate.") }
        let (cookie, isNew) = csrfCookie(request)
        var values = render(gate, token: token, claims: claims, cookie: cookie)
        if let choice = request.query("choice"), gate.spec.choices.contains(choice) { values["selected_choice"] = choice }
        markSelected(&values)
        return try html(values, status: .ok, setCookie: isNew ? cookie : nil)
    }

    @Sendable func submit(_ request: Request, context: GatehouseContext) async throws -> Response {
        let id = try context.parameters.require("id")
        var request = request
        let form = parseForm(try await request.bodyBytes(limit: maxBodyBytes))
        guard let token = form["t"], let claims = desk.signer.verify(token), claims.gate == id else {
            return page(status: .unauthorized, message: "This decision link is invalid or has expired. Ask for a new one (gatehouse gate link).")
        }
        guard let gate = try await desk.gates.get(id) else { return page(status: .notFound, message: "No such gate.") }
        let (cookie, _) = csrfCookie(request)
        guard let csrf = form["csrf"], desk.signer.checkCSRF(csrf, cookie: cookie, gate: id) else {
            try await desk.gates.auditRefusal(gateID: id, action: "callback_refused", actor: claims.by, detail: JSONObject([
                ("platform", .string("web")), ("reason", .string("missing or bad CSRF token")),
            ]))
            return page(status: .forbidden, message: "This form has expired or did not come from this page. Reload the page and try again.")
        }
        var by = claims.by
        if by == nil {
            let name = (form["name"] ?? "").trimmingCharacters(in: .whitespaces)
            if let identity = Identity.web(name) { by = identity.description }
        }
        let decision = form["decision"] ?? ""
        var inputs = JSONObject()
        for input in gate.spec.inputs {
            if input.kind == .boolean {
                inputs[input.name] = .bool(form["input.\(input.name)"] != nil)
            } else if let text = form["input.\(input.name)"], !text.isEmpty {
                inputs[input.name] = input.parseForm(text)
            }
        }
        let comment = form["comment"].flatMap { $0.isEmpty ? nil : $0 }
        var values = render(gate, token: token, claims: claims, cookie: cookie)
        guard let by else {
            values["error"] = "Enter your name (letters, digits, no spaces)."
            markSelected(&values)
            return try html(values, status: .unprocessableContent)
        }
        do {
            let decided = try await desk.decide(id, GateDecision(by: by, decision: decision, comment: comment, inputs: inputs.isEmpty ? nil : inputs, via: "web", at: .now()))
            values = render(decided, token: token, claims: claims, cookie: cookie)
            values["notice"] = decided.state.isClosed ? "Thank you — the gate is \(decided.state.rawValue)." : "Thank you — your \(decision) is recorded."
            return try html(values, status: .ok)
        } catch let problem as Problem {
            values = render(try await desk.gates.get(id) ?? gate, token: token, claims: claims, cookie: cookie)
            values["error"] = problem.detail
            values["name"] = claims.by == nil ? String(by.dropFirst(4)) : nil
            values["selected_choice"] = decision
            markSelected(&values)
            return try html(values, status: HTTPResponse.Status(code: problem.status))
        }
    }

    /// The browser's CSRF cookie, or a fresh random one to set.
    func csrfCookie(_ request: Request) -> (String, Bool) {
        if let value = WebPage.cookie(Self.cookieName, in: request), value.count == 32 { return (value, false) }
        var generator = SystemRandomNumberGenerator()
        return ((0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined(), true)
    }

    func render(_ gate: Gate, token: String, claims: LinkSigner.Claims, cookie: String) -> [String: Any] {
        var v: [String: Any] = [
            "id": gate.id, "title": gate.spec.title, "state": gate.state.rawValue, "pipeline": gate.spec.pipeline,
            "created_at": gate.createdAt.rfc3339, "link_token": token, "csrf": desk.signer.csrf(cookie: cookie, gate: gate.id),
            "approvals": gate.approvals.count, "required": gate.spec.isBranching ? 1 : gate.spec.requiredApprovals,
            "approvers": gate.spec.approvers.contains("*") ? "anyone" : gate.spec.approvers.joined(separator: ", "),
            "pending": gate.state == .pending, "has_decisions": !gate.decisions.isEmpty,
        ]
        if let run = gate.spec.run { v["run"] = run }
        if let step = gate.spec.step { v["step"] = step }
        if let e = gate.expiresAt { v["expires_at"] = e.rfc3339 }
        if let by = claims.by { v["by"] = by }
        if let r = gate.spec.requestedBy { v["requested_by"] = r }
        if let d = gate.spec.details, !d.isEmpty { v["details_html"] = Markdown.html(d) }
        if let outcome = gate.outcome { v["outcome"] = GateDesk.outcomeLine(outcome) }
        let subject = (gate.spec.subject ?? JSONObject()).map { k, value -> [String: Any] in ["key": k, "value": value.stringValue ?? value.serialized()] }
        v["subject"] = subject
        v["has_subject"] = !subject.isEmpty
        v["is_branching"] = gate.spec.isBranching
        func shown(_ inputs: JSONObject) -> [[String: Any]] {
            inputs.map { name, value in ["name": name, "value": value.stringValue ?? value.serialized()] }
        }
        v["decisions"] = gate.decisions.map { d -> [String: Any] in
            var row: [String: Any] = ["at": d.at.rfc3339, "by": d.by, "decision": d.decision]
            if let c = d.comment { row["comment"] = c }
            if let inputs = d.inputs, !inputs.isEmpty { row["inputs"] = shown(inputs) }
            return row
        }
        // Once closed, what the pipeline received: the inputs as decided (defaults filled in).
        if gate.state.isClosed, !gate.spec.inputs.isEmpty {
            let decided = shown(gate.inputValues)
            v["decided_inputs"] = decided
            v["has_decided_inputs"] = !decided.isEmpty
        }
        v["inputs"] = gate.spec.inputs.map { input -> [String: Any] in
            var row: [String: Any] = ["name": input.name, "required": input.required]
            row["is_number"] = input.kind == .integer || input.kind == .number
            row["is_integer"] = input.kind == .integer
            row["is_boolean"] = input.kind == .boolean
            row["is_select"] = input.kind == .string && input.options != nil
            row["is_text"] = input.kind == .string && input.options == nil
            if let min = input.min { row["min"] = JSONValue.double(min).serialized() }
            if let max = input.max { row["max"] = JSONValue.double(max).serialized() }
            if let d = input.defaultValue { row["default"] = d.stringValue ?? d.serialized() }
            row["checked"] = input.defaultValue == .bool(true)
            if let options = input.options {
                row["options"] = options.map { ["value": $0, "selected": input.defaultValue?.stringValue == $0] as [String: Any] }
            }
            return row
        }
        v["choices"] = gate.spec.choices.map { ["name": $0, "label": $0.prefix(1).uppercased() + $0.dropFirst(), "selected": false] as [String: Any] }
        return v
    }

    func markSelected(_ values: inout [String: Any]) {
        guard let selected = values["selected_choice"] as? String, var choices = values["choices"] as? [[String: Any]] else { return }
        for i in choices.indices { choices[i]["selected"] = (choices[i]["name"] as? String) == selected }
        values["choices"] = choices
    }

    func html(_ values: [String: Any], status: HTTPResponse.Status, setCookie cookie: String? = nil) throws -> Response {
        guard let templates else { return page(status: .internalServerError, message: "The page templates were not found; set GATEHOUSE_TEMPLATES.") }
        let text = try templates.renderHTML("pages/gate", values)
        var headers = Self.securityHeaders
        if let cookie { headers[.setCookie] = "\(Self.cookieName)=\(cookie); Path=/gates; HttpOnly; SameSite=Strict" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    func page(status: HTTPResponse.Status, message: String) -> Response { WebPage.message(status, message) }

    static let securityHeaders = WebPage.headers()
}
