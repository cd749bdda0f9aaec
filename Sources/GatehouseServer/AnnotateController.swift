import Foundation
import GatehouseCore
import GatehouseDelivery
import GatehouseServices
import GatehouseStore
import Hummingbird
import NIOCore

/// The labelling UI `/annotate/{name}` and the `/inbox`, server-rendered from
/// `templates/pages/`. Every answer is a plain form post followed by a redirect to the next
/// item, so it works without JavaScript; `annotate.js` adds the keyboard (1–9, s, u, Enter)
/// and span selection. People sign in once: with an API token when the server has tokens,
/// otherwise (loopback only) with their name; a signed cookie remembers them.
struct AnnotateController {
    let datasets: DatasetService
    let desk: GateDesk
    let auth: Authenticator
    let templates: TemplateSet?
    let script: String?
    let maxBodyBytes: Int
    static let cookie = Authenticator.sessionCookie

    func addRoutes(to router: Router<GatehouseContext>) {
        router.get("/annotate/{name}", use: show)
        router.post("/annotate/{name}", use: submit)
        router.post("/login", use: login)
        router.get("/inbox", use: inbox)
        router.get("/assets/annotate.js", use: asset)
    }

    /// Scripts only from this server (and their posts, which swap in the next item); images from
    /// anywhere on the web (items may be images).
    static let headers = WebPage.headers(scripts: true, images: true, connect: true)

    func html(_ page: String, _ values: [String: Any], status: HTTPResponse.Status = .ok, setCookie: String? = nil) throws -> Response {
        guard let templates else { return plain(.internalServerError, "The page templates were not found; set GATEHOUSE_TEMPLATES.") }
        var headers = Self.headers
        if let setCookie { headers[.setCookie] = setCookie }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: try templates.renderHTML("pages/\(page)", values))))
    }

    func plain(_ status: HTTPResponse.Status, _ message: String) -> Response { WebPage.message(status, message) }

    func redirect(_ location: String, setCookie: String? = nil) -> Response { WebPage.redirect(location, setCookie: setCookie) }

    /// The signed-in person, from the cookie, as `web:<name>`: the identity their labels,
    /// skips and decisions are recorded under, the same as through the API.
    func person(_ request: Request, _ context: GatehouseContext) async throws -> String? {
        try await auth.person(request, context: context)?.identity
    }

    /// What a signed-in token lacks for `scope` (a page saying so, rather than the sign-in form
    /// again — which would loop); nil when they have it or are the local user.
    func lacking(_ scope: Scope, _ request: Request, _ context: GatehouseContext) async throws -> Response? {
        guard case .token(let token)? = try await auth.person(request, context: context)?.principal, !token.scopes.grants(scope) else { return nil }
        return plain(.forbidden, "You are signed in as \(token.name), whose token lacks the scope \(scope.rawValue). Sign out and sign in with another token.")
    }

    static func grants(_ principal: Principal?, _ scope: Scope) -> Bool {
        if case .token(let token)? = principal { return token.scopes.grants(scope) }
        return true
    }

    func sessionValue(_ request: Request) -> String { WebPage.cookie(Self.cookie, in: request) ?? "" }

    /// The page greets `web:alice` as alice.
    static func displayName(_ identity: String) -> String { identity.hasPrefix("web:") ? String(identity.dropFirst(4)) : identity }

    /// Without tokens the server is loopback-only, per request too (docs/api.md, Access).
    func refuseOutsiders(_ request: Request, _ context: GatehouseContext) async throws -> Response? {
        guard try await !auth.hasTokens() else { return nil }
        if !context.isLoopbackPeer { return plain(.unauthorized, "This server has no tokens yet and answers only on loopback.") }
        if let refusal = LocalTrust.refusal(request.head) { return plain(.forbidden, refusal.prefix(1).uppercased() + refusal.dropFirst() + ".") }
        return nil
    }

    func loginPage(next: String, error: String? = nil, status: HTTPResponse.Status = .ok) async throws -> Response {
        var values: [String: Any] = ["next": next, "with_token": try await auth.hasTokens()]
        if let error { values["error"] = error }
        return try html("login", values, status: status)
    }

    @Sendable func login(_ request: Request, context: GatehouseContext) async throws -> Response {
        if let refused = try await refuseOutsiders(request, context) { return refused }
        // Another site must not sign a visitor in as someone else (login CSRF).
        if let site = request.headers[.init("Sec-Fetch-Site")!], site.lowercased() != "same-origin", site.lowercased() != "none" {
            return plain(.forbidden, "Sign in from this server's own page.")
        }
        var request = request
        let form = parseForm(try await request.bodyBytes(limit: maxBodyBytes))
        let next = WebPage.sameOriginPath(form["next"]) ?? "/"
        let name: String
        var signedWith: AccessToken?
        if try await auth.hasTokens() {
            guard let secret = form["token"]?.trimmingCharacters(in: .whitespaces), !secret.isEmpty,
                  let token = try await auth.verify(secret: secret) else {
                // Any live token signs in; each page then asks for the scope it needs.
                return try await loginPage(next: next, error: "That token is unknown or revoked.", status: .unauthorized)
            }
            guard Identity.web(token.name) != nil else {
                return try await loginPage(
                    next: next, error: "The token \"\(token.name)\" cannot sign in: its name is not a person's name (letters, digits, - _ . without spaces or colons).",
                    status: .unprocessableContent)
            }
            name = token.name
            signedWith = token
        } else {
            let given = (form["name"] ?? "").trimmingCharacters(in: .whitespaces)
            guard let identity = Identity.web(given), identity.id.count <= 100 else {
                return try await loginPage(next: next, error: "Enter a name: letters and digits, no spaces.", status: .unprocessableContent)
            }
            name = identity.id
        }
        return redirect(next, setCookie: auth.signIn(name: name, token: signedWith))
    }

    @Sendable func show(_ request: Request, context: GatehouseContext) async throws -> Response {
        if let refused = try await refuseOutsiders(request, context) { return refused }
        let name = try context.parameters.require("name")
        guard let who = try await person(request, context) else { return try await loginPage(next: "/annotate/\(name)") }
        if let refused = try await lacking(.datasetsLabel, request, context) { return refused }
        guard let info = try await datasets.find(name) else { return plain(.notFound, "No dataset \(name).") }
        var served: DatasetItem?
        if let id = request.query("item") { served = try await datasets.item(name, id: id) }
        if served == nil { served = try await datasets.next(name, annotator: who)?.item }
        return try html("annotate", try await values(info, who: who, item: served, session: sessionValue(request)))
    }

    func values(_ info: DatasetInfo, who: String, item: DatasetItem?, session: String, error: String? = nil) async throws -> [String: Any] {
        let spec = info.spec
        let mine = try await datasets.labelCount(spec.name, annotator: who)
        var v: [String: Any] = [
            "dataset": spec.name, "who": Self.displayName(who), "task": spec.task.rawValue, "total": info.itemCount, "labeled": info.completeCount,
            "mine": mine, "percent": info.itemCount == 0 ? 0 : info.completeCount * 100 / info.itemCount,
            "csrf": desk.signer.csrf(cookie: session, gate: "annotate:\(spec.name)"),
            "is_classification": spec.task == .classification, "is_multilabel": spec.task == .multilabel, "is_spans": spec.task == .spans,
        ]
        if let error { v["error"] = error }
        if let instructions = spec.instructions, !instructions.isEmpty { v["instructions_html"] = Markdown.html(instructions) }
        guard let item else { v["done"] = true; return v }
        let own = try await datasets.label(of: who, dataset: spec.name, item: item.id)
        let suggestion = own ?? item.prediction
        v["item_id"] = item.id
        if let text = item.text {
            v["text"] = text
            // The text exactly as stored, for annotate.js: the HTML parser turns CRLF into LF in
            // the page, which would shift every span offset after a line break. JSON keeps `\r`
            // as an escape, which no parser rewrites.
            v["text_json"] = JSONValue.string(text).serialized()
        }
        if let image = item.imageURL { v["image_url"] = image }
        if let meta = item.meta, !meta.isEmpty { v["meta"] = meta.map { ["key": $0.key, "value": $0.value.stringValue ?? $0.value.serialized()] } }
        let chosen = Set(suggestion?.stringValue.map { [$0] } ?? suggestion?.arrayValue?.compactMap(\.stringValue) ?? [])
        v["labels"] = spec.labels.enumerated().map { i, label -> [String: Any] in
            ["label": label, "key": i < 9 ? String(i + 1) : "", "suggested": chosen.contains(label)]
        }
        if spec.task == .spans, let spans = suggestion?.arrayValue {
            v["spans_text"] = spans.compactMap(\.objectValue).map { s in
                "\(Int(s["start"]?.doubleValue ?? 0))-\(Int(s["end"]?.doubleValue ?? 0)):\(s["label"]?.stringValue ?? "")"
            }.joined(separator: ", ")
        }
        return v
    }

    @Sendable func submit(_ request: Request, context: GatehouseContext) async throws -> Response {
        if let refused = try await refuseOutsiders(request, context) { return refused }
        let name = try context.parameters.require("name")
        guard let who = try await person(request, context) else { return try await loginPage(next: "/annotate/\(name)", status: .unauthorized) }
        if let refused = try await lacking(.datasetsLabel, request, context) { return refused }
        guard let info = try await datasets.find(name) else { return plain(.notFound, "No dataset \(name).") }
        var request = request
        let pairs = parseFormPairs(try await request.bodyBytes(limit: maxBodyBytes))
        let form = Dictionary(pairs, uniquingKeysWith: { first, _ in first })
        let session = sessionValue(request)
        guard let csrf = form["csrf"], desk.signer.checkCSRF(csrf, cookie: session, gate: "annotate:\(name)") else {
            return plain(.forbidden, "This form has expired or did not come from this page. Reload the page and try again.")
        }
        let itemID = form["item"] ?? ""
        switch form["action"] ?? "label" {
        case "skip":
            // An item gone meanwhile (the dataset was changed) is simply not shown again.
            do { try await datasets.skip(name, item: itemID, annotator: who) } catch let problem as Problem where problem.status == 404 {}
            return redirect("/annotate/\(name)")
        case "undo":
            guard let undone = try await datasets.undo(name, annotator: who) else { return redirect("/annotate/\(name)") }
            return redirect("/annotate/\(name)?item=\(percentEncodeQuery(undone))")
        default:
            guard let item = try await datasets.item(name, id: itemID) else { return plain(.notFound, "No item \(itemID) in \(name).") }
            let raw: JSONValue
            switch info.spec.task {
            case .classification: raw = .string(form["label"] ?? "")
            case .multilabel: raw = .array(pairs.filter { $0.0 == "labels" }.map { .string($0.1) })
            case .spans: raw = Self.parseSpans(form["spans"] ?? "")
            }
            do {
                _ = try await datasets.label(name, item: itemID, annotator: who, raw: raw)
                return redirect("/annotate/\(name)")
            } catch let problem as Problem where problem.status == 422 {
                let error = problem.errors.first.map { "\($0.field) \($0.detail)" } ?? problem.detail
                var v = try await values(info, who: who, item: item, session: session, error: error)
                v["spans_text"] = form["spans"]
                return try html("annotate", v, status: .unprocessableContent)
            } catch let problem as Problem where problem.status == 409 {
                let v = try await values(info, who: who, item: nil, session: session, error: "That item got all its labels from others meanwhile; here is the next one.")
                return try html("annotate", v, status: .conflict)
            }
        }
    }

    /// Spans typed as `0-5:PER, 6-12:ORG` (the no-JavaScript form), or the JSON the script sends.
    static func parseSpans(_ text: String) -> JSONValue {
        if let json = try? JSONValue.parse(text), json.arrayValue != nil { return json }
        var spans: [JSONValue] = []
        for part in text.split(separator: ",") {
            let piece = part.trimmingCharacters(in: .whitespaces)
            guard let colon = piece.firstIndex(of: ":") else { if !piece.isEmpty { return .string(piece) }; continue }
            let range = piece[..<colon].split(separator: "-")
            guard range.count == 2, let start = Int(range[0]), let end = Int(range[1]) else { return .string(piece) }
            spans.append(.object(JSONObject([("start", .int(start)), ("end", .int(end)), ("label", .string(String(piece[piece.index(after: colon)...])))])))
        }
        return .array(spans)
    }

    /// What waits for the signed-in person: datasets with items they have not labelled, and
    /// pending gates they may decide (with personal links).
    @Sendable func inbox(_ request: Request, context: GatehouseContext) async throws -> Response {
        if let refused = try await refuseOutsiders(request, context) { return refused }
        guard let (who, principal) = try await auth.person(request, context: context) else { return try await loginPage(next: "/inbox") }
        // Each list only for a person whose token may act on it: labelling needs
        // datasets:label, a personal decision link gates:decide.
        let labels = Self.grants(principal, .datasetsLabel), decides = Self.grants(principal, .gatesDecide)
        var waiting: [[String: Any]] = []
        for info in try await (labels ? datasets.list() : []) where info.completeCount < info.itemCount {
            let remaining = try await datasets.remaining(info.spec.name, annotator: who)
            if remaining > 0 {
                waiting.append(["name": info.spec.name, "remaining": remaining, "total": info.itemCount, "labeled": info.completeCount])
            }
        }
        let me = who
        let gates = try await (decides ? desk.gates.list(GateFilter(state: .pending, limit: 200)) : []).filter { gate in
            gate.refusal(of: me) == nil && !gate.decisions.contains { $0.by == me }
        }.map { gate -> [String: Any] in
            var g: [String: Any] = ["title": gate.spec.title, "pipeline": gate.spec.pipeline, "url": desk.pageURL(gate, by: me)]
            if let e = gate.expiresAt { g["deadline"] = e.rfc3339 }
            if let run = gate.spec.run { g["run"] = run }
            return g
        }
        return try html("inbox", [
            "who": Self.displayName(who), "datasets": waiting, "gates": gates, "has_datasets": !waiting.isEmpty, "has_gates": !gates.isEmpty,
            "nav_inbox": true,
        ])
    }

    @Sendable func asset(_ request: Request, context: GatehouseContext) async throws -> Response {
        guard let script else { return Response(status: .notFound) }
        return Response(status: .ok, headers: [.contentType: "text/javascript; charset=utf-8", .cacheControl: "max-age=300"], body: .init(byteBuffer: ByteBuffer(string: script)))
    }
}

func percentEncodeQuery(_ s: String) -> String {
    s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s
}
