import Foundation
import GatehouseCore
import GatehouseDelivery
import GatehouseServices
import GatehouseStore
import Hummingbird
import Metrics
import NIOCore
import ServiceLifecycle
import Synchronization

/// What every way of deciding a gate shares: the gate service (where every decision — API,
/// CLI, web page, chat callbacks — is applied), link signing, the public URL and the waits.
public struct GateDesk: Sendable {
    public let gates: GateService
    public let signer: LinkSigner
    /// Where people reach this server (`server.public_url`, else the bound address).
    let base: BaseURL
    public var baseURL: String { base.value }
    public let receiverNames: Set<String>

    let closedBodies = BoundedCache<ByteBuffer>(limit: 10_000)
    /// Parked `/wait` requests, answered the moment their gate closes.
    let waits: WaitRoom

    public init(gates: GateService, signer: LinkSigner, baseURL: BaseURL, receiverNames: Set<String>, bus: Bus) {
        self.gates = gates
        self.signer = signer
        self.base = baseURL
        self.receiverNames = receiverNames
        waits = WaitRoom(bus: bus) { [gates, signer, baseURL, closedBodies] id in
            guard let gate = try? await gates.get(id), gate.state.isClosed else { return nil }
            return Self.answerBody(gate, signer: signer, base: baseURL, closedBodies: closedBodies)
        }
    }

    /// How long a link made for a gate keeps working: until the gate's deadline (plus a day to
    /// show the outcome), or a week for gates without one.
    func linkExpiry(_ gate: Gate) -> Timestamp { Self.linkExpiry(gate) }

    static func linkExpiry(_ gate: Gate) -> Timestamp {
        (gate.expiresAt ?? gate.createdAt.adding(milliseconds: 7 * 86_400_000)).adding(milliseconds: 86_400_000)
    }

    /// The web decision page, signed. `by` nil: the page asks who is deciding.
    public func pageURL(_ gate: Gate, by: String? = nil, choice: String? = nil, expires: Timestamp? = nil) -> String {
        Self.pageURL(gate, signer: signer, base: base, by: by, choice: choice, expires: expires)
    }

    static func pageURL(_ gate: Gate, signer: LinkSigner, base: BaseURL, by: String? = nil, choice: String? = nil, expires: Timestamp? = nil) -> String {
        let token = signer.token(gate: gate.id, by: by, expires: expires ?? linkExpiry(gate))
        return "\(base.value)/gates/\(gate.id)?t=\(token)" + (choice.map { "&choice=\($0)" } ?? "")
    }

    func json(_ gate: Gate) -> JSONValue { gate.json(url: pageURL(gate)) }

    /// The API answer for a gate.
    func response(_ gate: Gate) -> Response {
        let body = Self.answerBody(gate, signer: signer, base: base, closedBodies: closedBodies)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
    }

    /// A closed gate never changes, so its bytes are made once and shared by every waiter it
    /// wakes.
    static func answerBody(_ gate: Gate, signer: LinkSigner, base: BaseURL, closedBodies: BoundedCache<ByteBuffer>) -> ByteBuffer {
        if gate.state.isClosed, let cached = closedBodies.get(gate.id) { return cached }
        let body = ByteBuffer(string: gate.json(url: pageURL(gate, signer: signer, base: base)).serialized() + "\n")
        if gate.state.isClosed { closedBodies.put(gate.id, body) }
        return body
    }

    /// Applies a decision and maps the result to HTTP: 200 with the gate, 409 with the
    /// outcome when it was already closed, 403 for a forbidden decider, 422 for bad input.
    func decide(_ id: String, _ decision: GateDecision, aliases: [String] = []) async throws -> Gate {
        switch try await gates.decide(id, decision, aliases: aliases) {
        case .notFound: throw Problem.notFound("no gate \"\(id)\"")
        case .refused(let refusal, _): throw refusal.problem
        case .applied(let gate, _): return gate
        }
    }
}

/// A small string-keyed cache that forgets everything when full (entries are cheap to remake).
final class BoundedCache<Value: Sendable>: Sendable {
    private let entries = Mutex<[String: Value]>([:])
    let limit: Int
    init(limit: Int) { self.limit = limit }
    func get(_ key: String) -> Value? { entries.withLock { $0[key] } }
    func put(_ key: String, _ value: Value) {
        entries.withLock { e in
            if e.count >= limit { e.removeAll(keepingCapacity: true) }
            e[key] = value
        }
    }
}

/// The server's public base URL; known for sure only once the listener is bound.
public final class BaseURL: Sendable {
    private let current: Mutex<String>
    public init(_ value: String) { current = Mutex(value.hasSuffix("/") ? String(value.dropLast()) : value) }
    public var value: String { current.withLock { $0 } }
    func set(_ value: String) { current.withLock { $0 = value } }
}

/// `/v1/gates`: open, read, list, wait, decide, cancel, audit (docs/gates.md).
struct GatesController {
    let desk: GateDesk
    let auth: Authenticator
    let maxBodyBytes: Int
    static let readScopes: [Scope] = [.gatesWrite, .gatesDecide, .eventsRead]

    func addRoutes(to router: Router<GatehouseContext>) {
        router.post("/v1/gates", use: open)
        router.get("/v1/gates", use: list)
        router.get("/v1/gates/wait", use: waitForKey)
        router.get("/v1/gates/{id}", use: get)
        router.get("/v1/gates/{id}/wait", use: wait)
        router.get("/v1/gates/{id}/audit", use: audit)
        router.post("/v1/gates/{id}/decisions", use: decide)
        router.post("/v1/gates/{id}/cancel", use: cancel)
        router.post("/v1/gates/{id}/links", use: link)
        router.get("/v1/audit/verify", use: verify)
    }

    func body(_ request: Request) async throws -> JSONObject {
        var request = request
        return try await request.jsonObject(limit: maxBodyBytes, allowEmpty: true)
    }

    @Sendable func open(_ request: Request, context: GatehouseContext) async throws -> Response {
        let principal = try await auth.authorize(request, context: context, scope: .gatesWrite)
        let object = try await body(request)
        let spec = try GateSpec.parseNew(.object(object)).get()
        let unknown = spec.escalateTo.filter { !desk.receiverNames.contains($0) }
        if !unknown.isEmpty {
            throw Problem.invalid([FieldError(field: "escalate_to", detail: "names unknown receiver \(unknown.map { "\"\($0)\"" }.joined(separator: ", "))" + (desk.receiverNames.isEmpty ? " (no receivers are configured)" : " (configured: \(desk.receiverNames.sorted().joined(separator: ", ")))"))])
        }
        let opened = try await desk.gates.open(spec, requestedVia: "api", token: principal.tokenName)
        return .json(desk.json(opened.gate), status: opened.created ? .created : .ok)
    }

    @Sendable func list(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        var filter = GateFilter(pipeline: request.query("pipeline"), run: request.query("run"))
        if let s = request.query("state") {
            guard let state = GateState(rawValue: s) else {
                throw Problem.invalid([FieldError(field: "state", detail: "must be one of \(GateState.allCases.map(\.rawValue).joined(separator: ", "))")])
            }
            filter.state = state
        }
        filter.limit = try request.intQuery("limit", default: 100, range: 1...1000)
        let gates = try await desk.gates.list(filter)
        return .json(.object(JSONObject([("gates", .array(gates.map(desk.json)))])))
    }

    func gate(_ context: GatehouseContext) async throws -> Gate {
        let id = try context.parameters.require("id")
        guard let gate = try await desk.gates.get(id) else { throw Problem.notFound("no gate \"\(id)\"") }
        return gate
    }

    @Sendable func get(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        return .json(desk.json(try await gate(context)))
    }

    /// Answers the moment the gate closes (the `WaitRoom`, woken by the bus, writes the answer
    /// on the connection), or with the still-pending gate when `timeout` (default 60 s, at
    /// most 300 s) passes.
    @Sendable func wait(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        var timeout = GatehouseDuration.seconds(60)
        if let text = request.query("timeout") {
            guard let d = GatehouseDuration(text), d.milliseconds >= 0, d.milliseconds <= 300_000 else {
                throw Problem.invalid([FieldError(field: "timeout", detail: "must be a duration from 0s to 300s (got \"\(text)\")")])
            }
            timeout = d
        }
        let id = try context.parameters.require("id")
        let deadline = ContinuousClock.now + .milliseconds(timeout.milliseconds)
        // Parked before the gate is read, so a close landing in between still releases it.
        let parked = desk.waits.park(.gate(id), answerer: EarlyAnswerHandler.find(context.channel), requestID: context.id)
        defer { desk.waits.unpark(parked) }
        let outcome: Result<Gate?, any Error>
        do {
            outcome = .success(try await waitForClose(id, parked: parked, deadline: deadline))
        } catch {
            outcome = .failure(error)
        }
        // The room answered on the connection itself: this response is dropped there.
        if !parked.claimForHandler(), await parked.untilAnswered() { return Response(status: .ok) }
        guard let gate = try outcome.get() else { throw Problem.notFound("no gate \"\(id)\"") }
        return desk.response(gate)
    }

    /// `GET /v1/gates/wait?key=…`: waits for the newest gate of `key` to close — even before it
    /// exists (a gate rule opens it when its event arrives, or a pipeline later). Answers the
    /// gate once closed, or as it is at `timeout`; 404 when nothing opened that key by then.
    /// A superseded gate hands the wait on to the gate that replaced it.
    @Sendable func waitForKey(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        var errors: [FieldError] = []
        let key = request.query("key") ?? ""
        if key.isEmpty { errors.append(FieldError(field: "key", detail: "is required: the key the gate is (or will be) opened with")) }
        var timeout = GatehouseDuration.seconds(60)
        if let text = request.query("timeout") {
            if let d = GatehouseDuration(text), d.milliseconds >= 0, d.milliseconds <= 300_000 { timeout = d } else {
                errors.append(FieldError(field: "timeout", detail: "must be a duration from 0s to 300s (got \"\(text)\")"))
            }
        }
        if !errors.isEmpty { throw Problem.invalid(errors) }
        let deadline = ContinuousClock.now + .milliseconds(timeout.milliseconds)
        // Parked before the key is read, so a gate opened in between still wakes it.
        let parked = desk.waits.park(.gateKey(key), answerer: nil, requestID: context.id)
        defer { desk.waits.unpark(parked) }
        let gate: Gate? = try await withGracefulShutdownHandler {
            while true {
                let gate = try await desk.gates.latest(key: key)
                let remaining = deadline - ContinuousClock.now
                if gate?.state.isClosed == true && gate?.state != .superseded || remaining <= .zero || parked.isInterrupted || Task.isCancelled {
                    return gate
                }
                _ = await parked.next(timeout: remaining)
            }
        } onGracefulShutdown: {
            parked.interrupt()
        }
        guard let gate else { throw Problem.notFound("no gate with key \"\(key)\" has been opened (waited \(timeout))") }
        return desk.response(gate)
    }

    /// The gate once it has closed or `deadline` has passed; nil if there is no such gate, or
    /// if the room has answered already (and so `claimForHandler` will fail).
    /// A graceful shutdown ends the wait at once with the gate as it is (like a timeout): the
    /// client asks again, and reaches the restarted server.
    private func waitForClose(_ id: String, parked: ParkedWait, deadline: ContinuousClock.Instant) async throws -> Gate? {
        try await withGracefulShutdownHandler {
            guard var gate = try await desk.gates.get(id) else { return nil }
            while gate.state == .pending, !Task.isCancelled, !parked.isInterrupted {
                let remaining = deadline - ContinuousClock.now
                guard remaining > .zero else { break }
                switch await parked.next(timeout: remaining) {
                case .answered: return nil
                case .changed: if let fresh = try await desk.gates.get(id) { gate = fresh }
                case .timedOut: continue  // the loop re-checks the deadline, cancellation, shutdown
                }
            }
            return gate
        } onGracefulShutdown: {
            parked.interrupt()
        }
    }

    @Sendable func decide(_ request: Request, context: GatehouseContext) async throws -> Response {
        let principal = try await auth.authorize(request, context: context, scope: .gatesDecide)
        let id = try context.parameters.require("id")
        let o = try await body(request)
        // Said in full when it is missing: what a decision is is not obvious from the field.
        if o["decision"] == nil || o["decision"] == .null {
            throw Problem.invalid(o.keys.filter { !DecisionRequest.knownKeys.contains($0) }.map { FieldError(field: $0, detail: "is not a known field") }
                + [FieldError(field: "decision", detail: "is required (for example \"approve\" or \"reject\")")])
        }
        let asked = try JSONValueDecoder().decode(DecisionRequest.self, from: .object(o))
        let by = try Self.decider(asked.by, principal: principal)
        let gate = try await desk.decide(id, GateDecision(
            by: by, decision: asked.decision, comment: asked.comment, inputs: asked.inputs,
            via: request.headers[.userAgent]?.hasPrefix("gatehouse-cli") == true ? "cli" : "api", at: .now()))
        return .json(desk.json(gate))
    }

    /// Who an API decision is from: a token decides as `web:<token name>`; only an admin token
    /// (a bot relaying decisions) may name someone else. Without tokens (loopback) `by` is
    /// taken as given. Nobody outside the server may speak as `policy:`.
    static func decider(_ given: String?, principal: Principal) throws -> String {
        // A bare name is web:<name>, so "bob" and "web:bob" are one person.
        let given = given.map { Identity.person($0)?.description ?? $0 }
        if let given, given.hasPrefix("policy:") {
            throw Problem.forbidden("\(given): policy identities are reserved for the server's own decisions")
        }
        switch principal {
        case .local:
            return given ?? "web:local"
        case .token(let token):
            let own = "web:\(token.name)"
            guard let given, given != own else { return own }
            guard token.scopes.contains(.admin) else {
                throw Problem.forbidden("the token \"\(token.name)\" decides as \(own); only an admin token may decide for \(given)")
            }
            return given
        }
    }

    @Sendable func cancel(_ request: Request, context: GatehouseContext) async throws -> Response {
        let principal = try await auth.authorize(request, context: context, scope: .gatesWrite)
        let id = try context.parameters.require("id")
        let asked = try JSONValueDecoder().decode(CancelRequest.self, from: .object(try await body(request)))
        let by = asked.by.map { Identity.person($0)?.description ?? $0 } ?? (principal == .local ? "web:local" : "web:\(principal.name)")
        switch try await desk.gates.cancel(id, by: by, comment: asked.comment) {
        case .notFound: throw Problem.notFound("no gate \"\(id)\"")
        case .refused(let refusal, _): throw refusal.problem
        case .applied(let gate, _): return .json(desk.json(gate))
        }
    }

    /// A personal decision link: the page decides as `by` without asking.
    @Sendable func link(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .gatesWrite)
        let gate = try await gate(context)
        let o = try await body(request)
        // Said in full when it is missing: the field's meaning is not obvious from its name.
        guard o["by"] != nil, o["by"] != .null else { throw Problem.invalid([FieldError(field: "by", detail: "is required: the web:<name> the link decides as")]) }
        let asked = try JSONValueDecoder().decode(LinkRequest.self, from: .object(o))
        guard let identity = Identity.web(asked.by) else {
            throw Problem.invalid([FieldError(field: "by", detail: "must be web:<name>, the person the link decides as")])
        }
        // A link is a decision waiting to be clicked: one for somebody who may not decide would
        // only lead them to a refusal.
        if let refusal = gate.refusal(of: identity.description) {
            throw Problem.invalid([FieldError(field: "by", detail: refusal)])
        }
        var expires = desk.linkExpiry(gate)
        if let ttl = asked.ttl {
            // Bounded like a gate's own timeout: a link outliving year 9999 would not even have an
            // RFC 3339 expiry (schemathesis found one at year 94928).
            guard let d = GatehouseDuration(ttl), d.milliseconds > 0, d.milliseconds <= GateSpec.maxTimeout.milliseconds else {
                throw Problem.invalid([FieldError(field: "ttl", detail: "must be a duration such as 24h, at most 90d")])
            }
            expires = Timestamp.now().adding(milliseconds: d.milliseconds)
        }
        let by = identity.description
        let url = desk.pageURL(gate, by: by, expires: expires)
        return .json(encoding: LinkResponse(url: url, by: by, expires_at: expires), status: .created)
    }

    @Sendable func audit(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, anyOf: Self.readScopes)
        let id = try context.parameters.require("id")
        let entries = try await desk.gates.audit(id)
        if entries.isEmpty, try await desk.gates.get(id) == nil { throw Problem.notFound("no gate \"\(id)\"") }
        return .json(.object(JSONObject([("gate_id", .string(id)), ("entries", .array(entries.map(\.json)))])))
    }

    @Sendable func verify(_ request: Request, context: GatehouseContext) async throws -> Response {
        _ = try await auth.authorize(request, context: context, scope: .admin)
        let verified = try await desk.gates.verifyAudit()
        return .json(encoding: AuditVerification(
            entries: verified.entries, ok: verified.firstBroken == nil,
            first_broken: verified.firstBroken.map { AuditVerification.Break(seq: $0.seq, reason: $0.reason) }))
    }

    /// `GET /v1/audit/verify`: whether the hash chain holds, and where it first breaks.
    struct AuditVerification: Encodable, JSONOmitsAbsentFields {
        struct Break: Encodable {
            var seq: Int64
            var reason: String
        }
        var entries: Int
        var ok: Bool
        var first_broken: Break?
    }
}

extension GateDesk {
    /// What a gate message shows on `receiver` for a `gate.*` event, as the gate stands now.
    func notice(gateID: String, receiver: String, eventType: String, outbox: any Outbox) async -> GateNotice? {
        guard let gate = try? await gates.get(gateID) else { return nil }
        let headline: String
        if gate.state.isClosed {
            headline = gate.state.rawValue.prefix(1).uppercased() + gate.state.rawValue.dropFirst()
        } else {
            headline = switch eventType {
            case "gate.reminder": "Reminder: approval needed"
            case "gate.escalated": "Escalated: approval needed"
            default: "Approval needed"
            }
        }
        let choices = gate.spec.choices.map { name in
            GateNotice.Choice(
                name: name, label: name.prefix(1).uppercased() + name.dropFirst(), url: pageURL(gate, choice: name),
                contextToken: signer.contextToken(gate: gate.id, action: name),
                style: name == "approve" ? "primary" : name == "reject" ? "danger" : "default")
        }
        var discordMessageID: String?
        if gate.state.isClosed {
            discordMessageID = try? await outbox.messageID(eventID: "\(gate.id).opened", receiver: receiver)
        }
        return GateNotice(
            id: gate.id, title: gate.spec.title, details: gate.spec.details, state: gate.state.rawValue, isOpen: !gate.state.isClosed,
            headline: headline, approvers: gate.spec.approvers.contains("*") ? "anyone" : gate.spec.approvers.joined(separator: ", "),
            approvals: "\(gate.approvals.count)/\(gate.spec.isBranching ? 1 : gate.spec.requiredApprovals)",
            deadline: gate.expiresAt?.rfc3339, outcome: gate.outcome.map { Self.outcomeLine($0) },
            pageURL: pageURL(gate), choices: choices, mattermostCallbackURL: "\(baseURL)/v1/callbacks/mattermost",
            discordMessageID: discordMessageID)
    }

    /// "Approved by slack:U1 at 2026-…" for people.
    static func outcomeLine(_ outcome: GateOutcome) -> String {
        let sentence = outcome.sentence
        return sentence.prefix(1).uppercased() + sentence.dropFirst() + " at " + outcome.at.rfc3339
    }
}
