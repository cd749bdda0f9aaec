import Foundation
import GatehouseCore
import GatehouseDelivery
import GatehouseServices
import GatehouseStore
import Hummingbird
import Logging

/// Clicks on chat buttons: `/v1/callbacks/slack`, `/v1/callbacks/discord`,
/// `/v1/callbacks/mattermost`. Each proves where it came from (signature or per-gate token),
/// is refused when forged, stale or replayed (401, audited, nothing changes), and then goes
/// through the same decision path as the API. A refused decision (not an approver, already
/// closed) is answered in the chat, to the clicker only.
public struct CallbacksController: Sendable {
    let desk: GateDesk
    let slack: [SlackSignature]
    let discord: [DiscordSignature]
    /// Sends Slack `response_url` updates; nil when no receiver is configured.
    let client: CurlMultiClient?
    let maxBodyBytes: Int
    let logger: Logger

    func addRoutes(to router: Router<GatehouseContext>) {
        router.post("/v1/callbacks/slack", use: slackClick)
        router.post("/v1/callbacks/discord", use: discordInteraction)
        router.post("/v1/callbacks/mattermost", use: mattermostAction)
    }

    /// Audits a refused callback and answers 401/404 with a problem.
    func refuse(_ platform: String, status: Int, _ reason: String, gate: String? = nil, actor: String? = nil) async throws -> Never {
        try await desk.gates.auditRefusal(gateID: gate, action: "callback_refused", actor: actor, detail: JSONObject([
            ("platform", .string(platform)), ("reason", .string(reason)),
        ]))
        logger.warning("callback refused", metadata: ["platform": .string(platform), "reason": .string(reason)])
        throw status == 404 ? Problem.notFound(reason) : Problem.unauthorized(reason)
    }

    /// The human line for a closed gate in chat.
    func closedLine(_ gate: Gate) -> String {
        "\(gate.spec.title): \(gate.outcome.map(GateDesk.outcomeLine) ?? gate.state.rawValue)"
    }

    func countedLine(_ gate: Gate, _ applied: Gate.Applied) -> String {
        let tally = "\(gate.approvals.count)/\(gate.spec.requiredApprovals) approvals"
        return applied == .duplicate ? "Your approval was already counted (\(tally))." : "Recorded your approval (\(tally))."
    }

    /// The platform's answer to a decision taken from its button.
    func reply<Platform: CallbackReplies>(_ change: GateService.Change, gateID: String, _ platform: Platform.Type) throws -> JSONValue {
        switch change {
        case .notFound: throw Problem.notFound("no gate \"\(gateID)\"")
        case .refused(let refusal, _): return Platform.privateNote(refusal.problem.detail)
        case .applied(let gate, let applied):
            return gate.state.isClosed
                ? Platform.closed(closedLine(gate), gateID: gate.id, state: gate.state.rawValue)
                : Platform.privateNote(countedLine(gate, applied))
        }
    }

    // MARK: Slack

    @Sendable func slackClick(_ request: Request, context: GatehouseContext) async throws -> Response {
        var request = request
        let body = try await request.bodyBytes(limit: maxBodyBytes)
        let now = Int64(Date().timeIntervalSince1970)
        guard !slack.isEmpty else { try await refuse("slack", status: 401, "no slack receiver has a signing_secret: Slack callbacks are off") }
        let timestamp = request.headers[HTTPFields.Element.Name("X-Slack-Request-Timestamp")!]
        let signature = request.headers[HTTPFields.Element.Name("X-Slack-Signature")!]
        let verdicts = slack.map { $0.verify(timestamp: timestamp, signature: signature, body: body, now: now) }
        guard verdicts.contains(.valid) else {
            let reason = verdicts.contains(.missing) ? "missing X-Slack-Signature or X-Slack-Request-Timestamp"
                : verdicts.contains(.stale) ? "stale request: the timestamp is more than 300 s from now" : "bad signature"
            try await refuse("slack", status: 401, reason, gate: Self.slackClaim(body).gate)
        }
        // Keyed on the MAC's bytes, not its spelling: hex in another case is the same
        // signature, and one captured request could otherwise be replayed once per spelling.
        guard try await desk.gates.claimNonce("slack:" + [UInt8](hexString: String((signature ?? "").dropFirst(3))).hexString) else {
            try await refuse("slack", status: 401, "replayed request (this signature was already used)", gate: Self.slackClaim(body).gate)
        }
        let claim = Self.slackClaim(body)
        guard let gateID = claim.gate, let choice = claim.action, let user = claim.user else {
            throw Problem.badRequest("not a block_actions payload with a gate button")
        }
        let identity = "slack:\(user)"
        guard try await desk.gates.get(gateID) != nil else { try await refuse("slack", status: 404, "no gate \"\(gateID)\"", gate: gateID, actor: identity) }
        let change = try await desk.gates.decide(gateID, GateDecision(by: identity, decision: choice, via: "slack", at: .now()))
        let reply = try reply(change, gateID: gateID, SlackReplies.self)
        if let responseURL = claim.responseURL, EventValidator.isHTTPURL(responseURL) {
            postLater(to: responseURL, reply, gate: gateID, platform: "slack")
        }
        // The acknowledgement Slack needs within 3 s; the update travels by response_url.
        return Response(status: .ok)
    }

    struct SlackClaim {
        var gate: String?
        var action: String?
        var user: String?
        var responseURL: String?
    }

    static func slackClaim(_ body: [UInt8]) -> SlackClaim {
        guard let payload = parseForm(body)["payload"], let o = (try? JSONValue.parse(payload))?.objectValue else { return SlackClaim() }
        let action = o["actions"]?.arrayValue?.first?.objectValue
        return SlackClaim(
            gate: action?["value"]?.stringValue, action: action?["action_id"]?.stringValue,
            user: o["user"]?.objectValue?["id"]?.stringValue, responseURL: o["response_url"]?.stringValue)
    }

    /// Posts a Slack `response_url` update after the acknowledgement, and audits it.
    func postLater(to url: String, _ body: JSONValue, gate: String, platform: String) {
        guard let client else { return }
        let request = OutboundRequest(url: url, headers: [("Content-Type", "application/json")], body: Array(body.serialized().utf8), timeout: 10)
        let gates = desk.gates
        Task {
            let response = await client.send(request)
            let outcome = response.transportError ?? "HTTP \(response.status)"
            try? await gates.auditNotification(gateID: gate, action: "message_updated", detail: JSONObject([
                ("platform", .string(platform)), ("via", .string("response_url")), ("outcome", .string(outcome)),
            ]))
        }
    }

    // MARK: Discord

    @Sendable func discordInteraction(_ request: Request, context: GatehouseContext) async throws -> Response {
        var request = request
        let body = try await request.bodyBytes(limit: maxBodyBytes)
        guard !discord.isEmpty else { try await refuse("discord", status: 401, "no discord receiver has a public_key: Discord interactions are off") }
        guard let timestamp = request.headers[HTTPFields.Element.Name("X-Signature-Timestamp")!],
              let signature = request.headers[HTTPFields.Element.Name("X-Signature-Ed25519")!] else {
            try await refuse("discord", status: 401, "missing X-Signature-Ed25519 or X-Signature-Timestamp")
        }
        guard discord.contains(where: { $0.isValid(timestamp: timestamp, signatureHex: signature, body: body) }) else {
            try await refuse("discord", status: 401, "bad signature")
        }
        guard let seconds = Int64(timestamp), CallbackClock.within(DiscordSignature.window, seconds: seconds, of: Int64(Date().timeIntervalSince1970)) else {
            try await refuse("discord", status: 401, "stale request: the timestamp is more than 300 s from now")
        }
        guard let o = (try? JSONValue.parse(bytes: body))?.objectValue, let type = o["type"]?.doubleValue else {
            throw Problem.badRequest("not a Discord interaction")
        }
        if type == 1 { return .json(DiscordReplies.pong) }
        guard type == 3, let customID = o["data"]?.objectValue?["custom_id"]?.stringValue, let colon = customID.firstIndex(of: ":") else {
            return .json(DiscordReplies.privateNote("Gatehouse only handles its own gate buttons."))
        }
        let choice = String(customID[..<colon]), gateID = String(customID[customID.index(after: colon)...])
        let user = o["member"]?.objectValue?["user"]?.objectValue ?? o["user"]?.objectValue
        guard let userID = user?["id"]?.stringValue else { throw Problem.badRequest("the interaction names no user") }
        let identity = "discord:\(userID)"
        if let id = o["id"]?.stringValue, !(try await desk.gates.claimNonce("discord:" + id)) {
            try await refuse("discord", status: 401, "replayed interaction \(id)", gate: gateID, actor: identity)
        }
        guard try await desk.gates.get(gateID) != nil else { try await refuse("discord", status: 404, "no gate \"\(gateID)\"", actor: identity) }
        let change = try await desk.gates.decide(gateID, GateDecision(by: identity, decision: choice, via: "discord", at: .now()))
        return .json(try reply(change, gateID: gateID, DiscordReplies.self))
    }

    // MARK: Mattermost

    @Sendable func mattermostAction(_ request: Request, context: GatehouseContext) async throws -> Response {
        var request = request
        let body = try await request.bodyBytes(limit: maxBodyBytes)
        guard let o = (try? JSONValue.parse(bytes: body))?.objectValue else { throw Problem.badRequest("not a Mattermost action request") }
        let ctx = o["context"]?.objectValue ?? JSONObject()
        guard let gateID = ctx["gate"]?.stringValue, let choice = ctx["action"]?.stringValue else {
            try await refuse("mattermost", status: 401, "the action context names no gate")
        }
        let userID = o["user_id"]?.stringValue
        let identity = userID.map { "mattermost:\($0)" }
        // Mattermost does not sign its requests: the context carries a per-gate, per-action
        // HMAC only we can make, checked in constant time.
        guard let token = ctx["token"]?.stringValue, desk.signer.checkContextToken(token, gate: gateID, action: choice) else {
            try await refuse("mattermost", status: 401, "bad context token", gate: gateID, actor: identity)
        }
        guard let identity else { throw Problem.badRequest("the action request names no user_id") }
        if let trigger = o["trigger_id"]?.stringValue, !trigger.isEmpty, !(try await desk.gates.claimNonce("mattermost:" + trigger)) {
            try await refuse("mattermost", status: 401, "replayed action (trigger_id already used)", gate: gateID, actor: identity)
        }
        guard try await desk.gates.get(gateID) != nil else { try await refuse("mattermost", status: 404, "no gate \"\(gateID)\"", actor: identity) }
        let aliases = o["user_name"]?.stringValue.map { ["mattermost:@\($0)"] } ?? []
        let change = try await desk.gates.decide(gateID, GateDecision(by: identity, decision: choice, via: "mattermost", at: .now()), aliases: aliases)
        return .json(try reply(change, gateID: gateID, MattermostReplies.self))
    }
}
