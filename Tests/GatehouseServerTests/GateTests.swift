import Crypto
import Foundation
import GatehouseClient
import GatehouseCore
import GatehouseStore
import Synchronization
@testable import GatehouseServer
import Testing

/// A `gatehouse` command left running (a pipeline step blocked in `gate open --wait`).
final class RunningCLI {
    let process = Process()
    private let out = Pipe(), err = Pipe()

    init(_ arguments: [String], server: String, environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: gatehouseBinary())
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["GATEHOUSE_URL"] = server
        env["GATEHOUSE_TOKEN"] = nil
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardOutput = out
        process.standardError = err
        try process.run()
    }

    /// Waits for the exit (killing it after `timeout`) and returns what it printed.
    func finish(timeout: TimeInterval = 20) -> CommandResult {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { process.terminate() }
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return CommandResult(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    deinit { if process.isRunning { process.terminate() } }
}

/// Slack and Discord as they sign; the keys are the test keys of docs/platforms/slack.md and discord.md.
enum Chat {
    static let slackSecret = "8f742231b10e8888abcd99yyyzzz85a5"
    static let discordSeed = [UInt8](hexString: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    static let discordPublicKey = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"

    static func config(_ sink: Sink, extra: String = "") -> String {
        """
        receivers:
          - name: slack
            slack: { webhook_url: \(sink.url("/ok/slack")), signing_secret: "\(slackSecret)" }
          - name: discord
            discord: { webhook_url: \(sink.url("/json/discord")), public_key: "\(discordPublicKey)" }
          - name: mm
            mattermost: { webhook_url: \(sink.url("/ok/mm")) }
          - name: ops
            webhook: { url: \(sink.url("/ok/ops")) }
        route:
          receiver: slack
          group_by: ['...']
          routes:
            - receiver: slack
              continue: true
            - receiver: discord
              continue: true
            - receiver: mm
        \(extra)
        """
    }

    /// A Slack `block_actions` click, form-encoded and signed as Slack does.
    static func slackClick(gate: String, action: String, user: String, responseURL: String, timestamp: Int64 = Int64(Date().timeIntervalSince1970), secret: String = slackSecret) -> (body: String, headers: [String: String]) {
        let payload = """
            {"type":"block_actions","user":{"id":"\(user)","username":"\(user.lowercased())","team_id":"T1"},"api_app_id":"A1","trigger_id":"1.2.3",
             "container":{"type":"message","message_ts":"111.222","channel_id":"C1"},"channel":{"id":"C1","name":"deploys"},
             "response_url":"\(responseURL)","actions":[{"action_id":"\(action)","block_id":"gate:\(gate)","type":"button","value":"\(gate)","action_ts":"1.2"}]}
            """
        let body = "payload=" + payload.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        let signature = SlackSignature(secret: secret).signature(timestamp: String(timestamp), body: Array(body.utf8))
        return (body, ["X-Slack-Request-Timestamp": String(timestamp), "X-Slack-Signature": signature])
    }

    /// A Discord interaction, signed with the application's private key.
    static func discord(_ body: String, timestamp: Int64 = Int64(Date().timeIntervalSince1970)) throws -> [String: String] {
        let key = try Curve25519.Signing.PrivateKey(rawRepresentation: discordSeed)
        let signature = try key.signature(for: Array(String(timestamp).utf8) + Array(body.utf8))
        return ["X-Signature-Ed25519": signature.map { String(format: "%02x", $0) }.joined(), "X-Signature-Timestamp": String(timestamp)]
    }

    static func discordClick(gate: String, action: String, user: String, id: String) -> String {
        """
        {"type":3,"id":"\(id)","application_id":"2","token":"tok","version":1,"guild_id":"g1","channel_id":"c1",
         "member":{"user":{"id":"\(user)","username":"u\(user)"},"permissions":"0"},
         "message":{"id":"1","content":"Approval needed"},"data":{"component_type":2,"id":2,"custom_id":"\(action):\(gate)"}}
        """
    }
}

extension ServerProcess {
    /// The newest gate (tests open them from a child CLI and then look them up).
    func waitForGate(pipeline: String, timeout: TimeInterval = 10) throws -> JSONObject {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let gate = try json("/v1/gates?pipeline=\(pipeline)")["gates"]?.arrayValue?.first?.objectValue { return gate }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw ServerStartFailure(output: "no gate for pipeline \(pipeline)")
    }

    /// A gauge from /metrics.
    func gauge(_ name: String) throws -> Int? {
        let line = try get("/metrics").text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return line.flatMap { Double($0.split(separator: " ").last ?? "") }.map { Int($0) }
    }

    func gateWaiters() throws -> Int? { try gauge("gatehouse_gate_waiters") }

    /// Polls until `count` requests are parked on gate waits (a deadline, not a fixed sleep):
    /// what a test must know before it decides, so the decision wakes them rather than races them.
    @discardableResult
    func waitForWaiters(_ count: Int, timeout: TimeInterval = 15) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while try gateWaiters() != count {
            if Date() > deadline { return false }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return true
    }

    func audit(_ gate: String) throws -> [JSONObject] {
        try json("/v1/gates/\(gate)/audit")["entries"]?.arrayValue?.compactMap(\.objectValue) ?? []
    }
}

@Suite
struct GateTests {
    /// A pipeline step blocks in `gate open --wait`; a Slack click, signed exactly as Slack
    /// signs, releases it with exit 0. The button message is replaced through response_url,
    /// the Discord message is edited, and forged, stale and replayed clicks change nothing.
    @Test func aSlackClickReleasesTheWaitingStep() async throws {
        try await offThePool {
            let (sink, server) = try deliveringServer { Chat.config($0) }
            let step = try RunningCLI(["gate", "open", "--title", "Deploy fraud-model v7?", "--pipeline", "slack-flow", "--run", "r42",
                                       "--approver", "slack:U1", "--timeout", "1h", "--wait"], server: server.url)
            let gate = try server.waitForGate(pipeline: "slack-flow")
            let id = try #require(gate["id"]?.stringValue)

            // The question reached every routed receiver, with buttons where clicks come back.
            let slackMessage = try #require(sink.wait(for: 1, at: "/ok/slack").first)
            #expect(slackMessage.body.contains(#""type":"actions""#) && slackMessage.body.contains(#""value":"\#(id)""#))
            #expect(slackMessage.body.contains("/gates/\(id)?t=v1."))
            let discordMessage = try #require(sink.wait(for: 1, at: "/json/discord").first)
            #expect(discordMessage.body.contains(#""custom_id":"approve:\#(id)""#) && discordMessage.path.hasSuffix("?wait=true"))
            #expect(try sink.wait(for: 1, at: "/ok/mm").first?.body.contains(#""integration""#) == true)

            // Forged, stale and replayed clicks: 401, audited, nothing changes.
            let forged = Chat.slackClick(gate: id, action: "approve", user: "U1", responseURL: sink.url("/ok/slack-response"), secret: "not-the-secret")
            #expect(try server.post("/v1/callbacks/slack", forged.body, contentType: "application/x-www-form-urlencoded", headers: forged.headers).status == 401)
            let stale = Chat.slackClick(gate: id, action: "approve", user: "U1", responseURL: sink.url("/ok/slack-response"), timestamp: Int64(Date().timeIntervalSince1970) - 400)
            #expect(try server.post("/v1/callbacks/slack", stale.body, contentType: "application/x-www-form-urlencoded", headers: stale.headers).status == 401)
            // A timestamp at Int64's ends, unsigned: stale, and the server lives on (the
            // staleness check overflowed — a crash from anyone who could reach the URL).
            for extreme in [Int64.min, Int64.max] {
                let far = Chat.slackClick(gate: id, action: "approve", user: "U1", responseURL: sink.url("/ok/slack-response"), timestamp: extreme)
                #expect(try server.post("/v1/callbacks/slack", far.body, contentType: "application/x-www-form-urlencoded", headers: far.headers).status == 401)
            }
            #expect(try server.get("/healthz").status == 200)
            #expect(try server.json("/v1/gates/\(id)")["state"] == .string("pending"))

            let click = Chat.slackClick(gate: id, action: "approve", user: "U1", responseURL: sink.url("/ok/slack-response"))
            let answer = try server.post("/v1/callbacks/slack", click.body, contentType: "application/x-www-form-urlencoded", headers: click.headers)
            #expect(answer.status == 200)
            let replay = try server.post("/v1/callbacks/slack", click.body, contentType: "application/x-www-form-urlencoded", headers: click.headers)
            #expect(replay.status == 401)
            // The same signature spelt in capitals is the same signature: replayed too (a
            // hostile tester replayed one capture once per spelling).
            var shouted = click.headers
            shouted["X-Slack-Signature"] = "v0=" + (click.headers["X-Slack-Signature"] ?? "").dropFirst(3).uppercased()
            let respelt = try server.post("/v1/callbacks/slack", click.body, contentType: "application/x-www-form-urlencoded", headers: shouted)
            #expect(respelt.status == 401 && respelt.text.contains("replayed"), "\(respelt.status) \(respelt.text)")

            let result = step.finish()
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stderr.contains("approved by slack:U1"))

            // The clicked message is replaced (no buttons); Discord's is edited in place.
            let replaced = try #require(sink.wait(for: 1, at: "/ok/slack-response").first?.json)
            #expect(replaced["replace_original"] == .bool(true) && replaced["text"]?.stringValue?.contains("Approved by slack:U1") == true)
            let edit = try #require(try sink.waitFor(at: "/json/discord") { $0.method == "PATCH" })
            #expect(edit.path.hasPrefix("/json/discord/messages/1") && edit.json["components"] == .array([]))
            #expect(edit.body.contains("Approved by slack:U1"))

            let actions = try server.audit(id).map { $0["action"]?.stringValue ?? "" }
            // Forged, stale, the two at Int64's ends, and the replay in both spellings.
            #expect(actions.filter { $0 == "callback_refused" }.count == 6, "\(actions)")
            #expect(actions.contains("decided") && actions.contains("closed") && actions.contains("notified"))
            let types = try server.allEvents().map { $0["type"]?.stringValue ?? "" }
            #expect(types.contains("gate.opened") && types.contains("gate.approved"))
            // A chat decision goes through the same path as the API's, and is measured with them.
            #expect(try server.get("/metrics").text.contains("gatehouse_gate_decision_latency_seconds_count 1"))
        }
    }

    /// Discord: PING is answered, a reject click edits the message (type 7) and the waiting
    /// step exits 1; a replayed interaction is refused.
    @Test func aDiscordRejectionExitsOne() async throws {
        try await offThePool {
            let (_, server) = try deliveringServer { Chat.config($0) }
            let ping = #"{"type":1}"#
            let pong = try server.post("/v1/callbacks/discord", ping, headers: try Chat.discord(ping))
            #expect(pong.status == 200 && pong.text.contains(#"{"type":1}"#))
            #expect(try server.post("/v1/callbacks/discord", ping, headers: ["X-Signature-Ed25519": String(repeating: "0", count: 128), "X-Signature-Timestamp": "1700000000"]).status == 401)

            let step = try RunningCLI(["gate", "open", "--title", "Retrain?", "--pipeline", "discord-flow", "--approver", "discord:80351110224678912", "--wait"], server: server.url)
            let id = try #require(server.waitForGate(pipeline: "discord-flow")["id"]?.stringValue)
            let stranger = Chat.discordClick(gate: id, action: "approve", user: "999", id: "i-0")
            let refused = try server.post("/v1/callbacks/discord", stranger, headers: try Chat.discord(stranger))
            #expect(refused.status == 200 && refused.text.contains(#""flags":64"#) && refused.text.contains("not an approver"))

            let click = Chat.discordClick(gate: id, action: "reject", user: "80351110224678912", id: "i-1")
            let headers = try Chat.discord(click)
            let answer = try JSONValue.parse(try server.post("/v1/callbacks/discord", click, headers: headers).text).objectValue
            #expect(answer?["type"] == .int(7))
            #expect(answer?["data"]?.objectValue?["components"] == .array([]))
            #expect(try server.post("/v1/callbacks/discord", click, headers: headers).status == 401)
            let result = step.finish()
            #expect(result.status == 1, "\(result.stderr)")
            #expect(try server.audit(id).contains { $0["action"] == .string("refused") && $0["actor"] == .string("discord:999") })
        }
    }

    /// Mattermost: a quorum of two where the same person clicking twice counts once; the
    /// closing click's answer updates the post and drops its buttons; a bad token is refused.
    @Test func mattermostQuorumAndUpdate() async throws {
        try await offThePool {
            let (sink, server) = try deliveringServer { Chat.config($0) }
            let opened = try server.post("/v1/gates", #"{"title":"Promote?","pipeline":"mm-flow","required_approvals":2,"approvers":["mattermost:@alice","mattermost:@bob"]}"#)
            #expect(opened.status == 201)
            let id = try #require(try JSONValue.parse(opened.text).objectValue?["id"]?.stringValue)
            let message = try #require(sink.wait(for: 1, at: "/ok/mm").first?.json)
            let actions = message["attachments"]?.arrayValue?.first?.objectValue?["actions"]?.arrayValue?.compactMap(\.objectValue) ?? []
            let approve = try #require(actions.first { $0["integration"]?.objectValue?["context"]?.objectValue?["action"] == .string("approve") })
            let integration = try #require(approve["integration"]?.objectValue)
            let callbackPath = try #require(integration["url"]?.stringValue.map { String($0.dropFirst(server.url.count)) })
            #expect(callbackPath == "/v1/callbacks/mattermost")
            let context = try #require(integration["context"]?.objectValue)

            func click(_ user: String, trigger: String, context: JSONObject = context) throws -> (Int, JSONObject) {
                let body = JSONValue.object(JSONObject([
                    ("user_id", .string("id-\(user)")), ("user_name", .string(user)), ("channel_id", .string("c1")), ("post_id", .string("p1")),
                    ("trigger_id", .string(trigger)), ("type", .string("button")), ("context", .object(context)),
                ])).serialized()
                let r = try server.post(callbackPath, body)
                return (r.status, (try? JSONValue.parse(r.text))?.objectValue ?? JSONObject())
            }
            var forged = context
            forged["token"] = .string(String(repeating: "0", count: 64))
            #expect(try click("alice", trigger: "t0", context: forged).0 == 401)
            // A forged context naming a gate with a NUL (found by schemathesis on PostgreSQL,
            // whose text cannot hold one: it was a 500) is refused like any other forgery,
            // and recorded with the gate it claimed.
            var nul = forged
            nul["gate"] = .string("\u{0}m`\t")
            #expect(try click("alice", trigger: "t0", context: nul).0 == 401)
            #expect(try click("alice", trigger: "t\u{0}", context: context).0 == 400)
            #expect(try click("alice", trigger: "t1").1["ephemeral_text"]?.stringValue?.contains("1/2") == true)
            #expect(try click("alice", trigger: "t2").1["ephemeral_text"]?.stringValue?.contains("already counted") == true)
            #expect(try click("alice", trigger: "t2").0 == 401)
            // A trigger id of any length is remembered (by its hash past 256 bytes: PostgreSQL's
            // index refused the key, a 500) and its replay refused.
            let long = incompressibleText(3000)
            #expect(try click("alice", trigger: long).0 == 200)
            #expect(try click("alice", trigger: long).0 == 401)
            #expect(try click("mallory", trigger: "t3").1["ephemeral_text"]?.stringValue?.contains("not an approver") == true)
            #expect(try server.json("/v1/gates/\(id)")["state"] == .string("pending"))
            let (status, closing) = try click("bob", trigger: "t4")
            #expect(status == 200)
            let update = try #require(closing["update"]?.objectValue)
            #expect(update["props"] == .object(JSONObject()) && update["message"]?.stringValue?.contains("Approved by mattermost:id-bob") == true)
            let gate = try server.json("/v1/gates/\(id)")
            #expect(gate["state"] == .string("approved") && gate["approvals"] == .int(2))
        }
    }

    /// Expiry applies `on_timeout`, also when the server was down at the deadline: the step
    /// waiting in `gate open --wait` reconnects after the restart and exits 2. (With its
    /// `--key` the step survives the kill wherever it lands — even between the gate's commit
    /// and the answer to the open, where it sends the open again and gets the same gate.)
    @Test func expiryAcrossARestartExitsTwo() async throws {
        try await offThePool {
            let dir = TempDir()
            let port = try freePort()
            var server = try ServerProcess(dir: dir, arguments: ["--address", "127.0.0.1:\(port)"])
            let step = try RunningCLI(["gate", "open", "--title", "Ship?", "--pipeline", "expiry", "--key", "r1/ship", "--timeout", "2s", "--on-timeout", "reject", "--wait"], server: server.url)
            let id = try #require(server.waitForGate(pipeline: "expiry")["id"]?.stringValue)
            server.kill()
            Thread.sleep(forTimeInterval: 2.5)
            server = try ServerProcess(dir: dir, db: server.db, arguments: ["--address", "127.0.0.1:\(port)"])
            let result = step.finish()
            #expect(result.status == 2, "\(result.stderr)")
            #expect(result.stderr.contains("reconnect"))
            let gate = try server.json("/v1/gates/\(id)")
            #expect(gate["state"] == .string("rejected") && gate["outcome"]?.objectValue?["reason"] == .string("timeout"))
            #expect(gate["outcome"]?.objectValue?["by"] == nil)
            #expect(try server.json("/v1/gates?pipeline=expiry")["gates"]?.arrayValue?.count == 1)
        }
    }

    /// `gate open` with a key sends again while the server is away (the same key gives the
    /// same gate); without one it reports the failure rather than risk a second gate.
    @Test func aKeyedOpenWaitsForTheServer() async throws {
        try await offThePool {
            let dir = TempDir()
            let port = try freePort()
            let url = "http://127.0.0.1:\(port)"
            let keyless = try RunningCLI(["gate", "open", "--title", "Ship?", "--pipeline", "early"], server: url).finish()
            #expect(keyless.status != 0)
            let keyed = try RunningCLI(["gate", "open", "--title", "Ship?", "--pipeline", "early", "--key", "r1/ship"], server: url)
            Thread.sleep(forTimeInterval: 1)
            let server = try ServerProcess(dir: dir, arguments: ["--address", "127.0.0.1:\(port)"])
            let result = keyed.finish()
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stderr.contains("reconnect"))
            let gates = try server.json("/v1/gates?pipeline=early")["gates"]?.arrayValue ?? []
            #expect(gates.count == 1)
            #expect(gates.first?.objectValue?["id"]?.stringValue == result.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    /// Cancel exits 3; so does a gate superseded by a new subject digest; the same key and
    /// digest resume the same gate.
    @Test func cancelAndSupersedeExitThree() async throws {
        try await offThePool {
            let server = try ServerProcess()
            let open = ["gate", "open", "--title", "Deploy?", "--pipeline", "sup", "--key", "r1/deploy"]
            let first = try RunningCLI(open + ["--subject-digest", "sha256:a", "--wait"], server: server.url)
            let firstID = try #require(server.waitForGate(pipeline: "sup")["id"]?.stringValue)
            let same = try runCLI(open + ["--subject-digest", "sha256:a"], environment: ["GATEHOUSE_URL": server.url])
            #expect(same.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == firstID)
            let newer = try server.post("/v1/gates", #"{"title":"Deploy?","pipeline":"sup","key":"r1/deploy","subject":{"digest":"sha256:b"}}"#)
            #expect(newer.status == 201)
            let newID = try #require(try JSONValue.parse(newer.text).objectValue?["id"]?.stringValue)
            #expect(try server.post("/v1/gates", #"{"title":"Deploy?","pipeline":"sup","key":"r1/deploy","subject":{"digest":"sha256:b"}}"#).status == 200)
            #expect(first.finish().status == 3)
            #expect(try server.json("/v1/gates/\(firstID)")["superseded_by"] == .string(newID))

            let waiter = try RunningCLI(["gate", "wait", newID, "--json"], server: server.url)
            #expect(try server.waitForWaiters(1))
            #expect(try runCLI(["gate", "cancel", newID, "--comment", "wrong model"], environment: ["GATEHOUSE_URL": server.url]).status == 0)
            let waited = waiter.finish()
            #expect(waited.status == 3)
            #expect(try JSONValue.parse(waited.stdout).objectValue?["state"] == .string("canceled"))
            // A decision after the close learns the outcome: 409.
            let late = try server.post("/v1/gates/\(newID)/decisions", #"{"decision":"approve","by":"web:bob"}"#)
            #expect(late.status == 409 && late.text.contains(#""outcome""#))
        }
    }

    /// The API's rules: allow-list and self-approval (403, audited), typed inputs (422),
    /// tokens deciding as themselves, a branching gate printing its choice.
    @Test func apiDecisionRules() async throws {
        try await offThePool {
            let server = try ServerProcess()
            let created = try server.post("/v1/gates", """
                {"title":"Canary?","pipeline":"rules","approvers":["web:bob","web:carol"],"requested_by":"web:carol",
                 "choices":["canary","full","reject"],"inputs":[{"name":"traffic_percent","type":"integer","min":1,"max":100,"default":10}]}
                """)
            #expect(created.status == 201)
            let id = try #require(try JSONValue.parse(created.text).objectValue?["id"]?.stringValue)
            #expect(try server.post("/v1/gates/\(id)/decisions", #"{"decision":"canary","by":"web:eve"}"#).status == 403)
            let own = try server.post("/v1/gates/\(id)/decisions", #"{"decision":"canary","by":"web:carol"}"#)
            #expect(own.status == 403 && own.text.contains("may not decide"))
            let bad = try server.post("/v1/gates/\(id)/decisions", #"{"decision":"canary","by":"web:bob","inputs":{"traffic_percent":400}}"#)
            #expect(bad.status == 422 && bad.text.contains("inputs.traffic_percent"))
            #expect(try server.post("/v1/gates/\(id)/decisions", #"{"decision":"canary","by":"policy:auto"}"#).status == 403)
            #expect(try server.post("/v1/gates/nope/decisions", #"{"decision":"canary","by":"web:bob"}"#).status == 404)
            #expect(try server.post("/v1/gates", #"{"title":"x","timeout":"soon","approvers":"bob"}"#).status == 422)
            // Bounds no value meets: a gate nobody could approve is not opened.
            let impossible = try server.post("/v1/gates", #"{"title":"x","inputs":[{"name":"a","type":"integer","min":10,"max":1,"required":true}]}"#)
            #expect(impossible.status == 422 && impossible.text.contains(#""field":"inputs[0].min""#), "\(impossible.text)")
            // A quorum on a gate with choices, which closes on its first decision, is refused.
            let branchQuorum = try server.post("/v1/gates", #"{"title":"x","choices":["canary","full"],"required_approvals":2}"#)
            #expect(branchQuorum.status == 422 && branchQuorum.text.contains(#""field":"required_approvals""#), "\(branchQuorum.text)")
            // Typed bodies: a misspelt or mistyped field is a 422 naming it, and changes nothing.
            let typo = try server.post("/v1/gates/\(id)/decisions", #"{"decison":"canary","by":"web:bob"}"#)
            #expect(typo.status == 422 && typo.text.contains(#""field":"decison""#) && typo.text.contains(#""field":"decision""#), "\(typo.text)")
            let mistyped = try server.post("/v1/gates/\(id)/decisions", #"{"decision":"canary","by":"web:bob","comment":7}"#)
            #expect(mistyped.status == 422 && mistyped.text.contains(#""field":"comment""#), "\(mistyped.text)")
            let cancel = try server.post("/v1/gates/\(id)/cancel", #"{"coment":"wrong key"}"#)
            #expect(cancel.status == 422 && cancel.text.contains(#""field":"coment""#), "\(cancel.text)")
            #expect(try server.post("/v1/gates/\(id)/links", #"{"by":["web:carol"]}"#).status == 422)
            #expect(try server.json("/v1/gates/\(id)")["state"] == .string("pending"))

            let waiter = try RunningCLI(["gate", "wait", id], server: server.url)
            #expect(try server.waitForWaiters(1))
            let decided = try runCLI(["gate", "approve", id, "--choice", "canary", "--by", "web:bob", "--input", "traffic_percent=25"], environment: ["GATEHOUSE_URL": server.url])
            #expect(decided.status == 0, "\(decided.stderr)")
            let waited = waiter.finish()
            #expect(waited.status == 0 && waited.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "canary")
            let gate = try server.json("/v1/gates/\(id)")
            #expect(gate["inputs"]?.objectValue?["traffic_percent"] == .int(25))
            let refusals = try server.audit(id).filter { $0["action"] == .string("refused") }.compactMap { $0["actor"]?.stringValue }
            #expect(refusals == ["web:eve", "web:carol", "web:bob"])
            #expect(try server.json("/v1/gates?state=approved&pipeline=rules")["gates"]?.arrayValue?.count == 1)
            // A usage error in a waiting command is exit 4, never a verdict.
            #expect(try runCLI(["gate", "wait"], environment: ["GATEHOUSE_URL": server.url]).status == 4)
            #expect(try runCLI(["gate", "wait", "gate_missing"], environment: ["GATEHOUSE_URL": server.url]).status == 4)
        }
    }

    /// The web page: `GET` shows and never decides; the form needs the CSRF token bound to
    /// the page's cookie; a bad link is refused; details are rendered safely.
    @Test func theWebPageDecidesOnlyThroughItsForm() async throws {
        try await offThePool {
            let server = try ServerProcess(environment: ["GATEHOUSE_TEMPLATES": templatesFolder])
            let created = try server.post("/v1/gates", #"{"title":"Label batch 7 done?","pipeline":"web","details":"**AUC** 0.91 <script>alert(1)</script>","approvers":["web:bob"]}"#)
            let gate = try #require(try JSONValue.parse(created.text).objectValue)
            let id = try #require(gate["id"]?.stringValue)
            let url = try #require(gate["url"]?.stringValue)
            let path = String(url.dropFirst(server.url.count))
            let token = try #require(path.components(separatedBy: "t=").last)

            let page = try server.get(path + "&choice=approve")
            #expect(page.status == 200 && page.header("Content-Type")?.hasPrefix("text/html") == true)
            #expect(page.text.contains("<strong>AUC</strong>") && page.text.contains("&lt;script&gt;") && !page.text.contains("<script>"))
            #expect(page.header("Content-Security-Policy")?.contains("default-src 'none'") == true)
            let cookie = try #require(page.header("Set-Cookie")?.split(separator: ";").first.map(String.init))
            let csrf = try #require(page.text.components(separatedBy: #"name="csrf" value=""#).dropFirst().first?.prefix { $0 != "\"" })
            #expect(try server.json("/v1/gates/\(id)")["state"] == .string("pending"))
            #expect(try server.get("/gates/\(id)?t=v1.forged.sig").status == 401)

            let form = "t=\(token)&csrf=\(csrf)&name=bob&decision=approve&comment=looks+good"
            // Without the cookie (another site posting the form): refused.
            #expect(try server.post("/gates/\(id)", form, contentType: "application/x-www-form-urlencoded").status == 403)
            let wrongName = try server.post("/gates/\(id)", form.replacingOccurrences(of: "name=bob", with: "name=eve"), contentType: "application/x-www-form-urlencoded", headers: ["Cookie": cookie])
            #expect(wrongName.status == 403 && wrongName.text.contains("not an approver"))
            let done = try server.post("/gates/\(id)", form, contentType: "application/x-www-form-urlencoded", headers: ["Cookie": cookie])
            #expect(done.status == 200 && done.text.contains("Thank you"))
            let closed = try server.json("/v1/gates/\(id)")
            #expect(closed["state"] == .string("approved") && closed["outcome"]?.objectValue?["by"] == .string("web:bob"))
            #expect(closed["decisions"]?.arrayValue?.first?.objectValue?["via"] == .string("web"))

            // A personal link names the decider: the page does not ask.
            let other = try #require(try JSONValue.parse(try server.post("/v1/gates", #"{"title":"Again?","pipeline":"web2"}"#).text).objectValue?["id"]?.stringValue)
            let link = try runCLI(["gate", "link", other, "--as", "web:carol"], environment: ["GATEHOUSE_URL": server.url])
            let personal = try server.get(String(link.stdout.trimmingCharacters(in: .whitespacesAndNewlines).dropFirst(server.url.count)))
            #expect(personal.text.contains("Deciding as <strong>web:carol</strong>") && !personal.text.contains(#"name="name""#))
            // A link's lifetime is bounded like a gate's timeout.
            #expect(try server.post("/v1/gates/\(other)/links", #"{"by":"web:carol","ttl":"90d"}"#).status == 201)
            let endless = try server.post("/v1/gates/\(other)/links", #"{"by":"web:carol","ttl":"92963y"}"#)
            #expect(endless.status == 422 && endless.text.contains("ttl"))
        }
    }

    /// What the hostile review of the gate page found: a branching gate counted "0 of 1
    /// approvals", `## headings` showed literally, the decided inputs vanished after the
    /// decision, and a personal link could be made for somebody who may not decide.
    @Test func theGatePageShowsABranchAndWhatWasDecided() async throws {
        try await offThePool {
            let server = try ServerProcess(environment: ["GATEHOUSE_TEMPLATES": templatesFolder])
            let created = try server.post("/v1/gates", """
                {"title":"Roll out?","pipeline":"page","approvers":["web:bob"],"choices":["canary","full"],
                 "details":"## Results\\nAUC 0.91","subject":{"digest":"sha256:\(String(repeating: "ab", count: 32))"},
                 "inputs":[{"name":"traffic_percent","type":"integer","min":1,"max":100,"default":10}]}
                """)
            let gate = try #require(try JSONValue.parse(created.text).objectValue)
            let id = try #require(gate["id"]?.stringValue)
            let path = try #require(gate["url"]?.stringValue.map { String($0.dropFirst(server.url.count)) })
            let open = try server.get(path).text
            #expect(open.contains("<h2>Decision</h2>") && !open.contains("approvals)"))
            #expect(open.contains("<h4>Results</h4>") && !open.contains("## Results"))

            // A link only for someone who may decide.
            let stranger = try server.post("/v1/gates/\(id)/links", #"{"by":"web:eve"}"#)
            #expect(stranger.status == 422 && stranger.text.contains("not an approver"), "\(stranger.text)")
            #expect(try server.post("/v1/gates/\(id)/links", #"{"by":"web:bob"}"#).status == 201)

            #expect(try server.post("/v1/gates/\(id)/decisions", #"{"decision":"canary","by":"web:bob","inputs":{"traffic_percent":25}}"#).status == 200)
            let closed = try server.get(path).text
            #expect(closed.contains("<h2>Decided inputs</h2>") && closed.contains("<tr><th>traffic_percent</th><td>25</td></tr>"), "\(closed)")
            #expect(closed.contains("traffic_percent = 25"))
        }
    }

    /// GATEHOUSE_AUTO_DECIDE closes every new gate at once, as `policy:auto-decide`.
    @Test func autoDecideForPipelinesUnderTest() async throws {
        try await offThePool {
            let server = try ServerProcess(environment: ["GATEHOUSE_AUTO_DECIDE": "approve"])
            let result = try runCLI(["gate", "open", "--title", "t", "--pipeline", "ci", "--wait", "--json"], environment: ["GATEHOUSE_URL": server.url])
            #expect(result.status == 0)
            #expect(try JSONValue.parse(result.stdout).objectValue?["outcome"]?.objectValue?["by"] == .string("policy:auto-decide"))
        }
    }

    /// Many waiters on one gate all wake on the decision.
    @Test func manyConcurrentWaitersAllWake() async throws {
        try await offThePool {
            let server = try ServerProcess()
            let id = try #require(try JSONValue.parse(try server.post("/v1/gates", #"{"title":"t","pipeline":"many"}"#).text).objectValue?["id"]?.stringValue)
            let states = Mutex<[String]>([])
            let group = DispatchGroup()
            let waitURL = server.url + "/v1/gates/\(id)/wait?timeout=30s"
            for _ in 0..<50 {
                group.enter()
                Thread.detachNewThread {
                    let r = try? HTTPClient(timeout: 30).send(method: "GET", url: waitURL)
                    let state = r.flatMap { try? JSONValue.parse(bytes: $0.body) }?.objectValue?["state"]?.stringValue ?? "error"
                    states.withLock { $0.append(state) }
                    group.leave()
                }
            }
            #expect(try server.waitForWaiters(50))
            #expect(try server.post("/v1/gates/\(id)/decisions", #"{"decision":"approve","by":"web:bob"}"#).status == 200)
            #expect(group.wait(timeout: .now() + 20) == .success)
            #expect(states.withLock { $0 } == Array(repeating: "approved", count: 50))
            // A wait with a short timeout answers with the pending gate.
            let pending = try #require(try JSONValue.parse(try server.post("/v1/gates", #"{"title":"t2","pipeline":"many"}"#).text).objectValue?["id"]?.stringValue)
            #expect(try server.json("/v1/gates/\(pending)/wait?timeout=100ms")["state"] == .string("pending"))
            #expect(try server.get("/v1/gates/\(pending)/wait?timeout=10m").status == 422)
            // The scheduler's gauge settles on the one gate still pending (it counts at most once
            // a second, and again a second after a burst of changes).
            let settle = Date().addingTimeInterval(10)
            while try server.gauge("gatehouse_gates_pending") != 1, Date() < settle { Thread.sleep(forTimeInterval: 0.1) }
            #expect(try server.gauge("gatehouse_gates_pending") == 1)
        }
    }

    /// A closing gate answers its waits straight from the connection's event loop; the
    /// connection must then carry on as HTTP/1.1 says: one answer per request, in order,
    /// keep-alive or close as asked, and nothing stray.
    @Test func waitsAreAnsweredOnTheirOwnConnections() async throws {
        try await offThePool {
            let server = try ServerProcess()
            func open(_ body: String) throws -> String {
                try #require(try JSONValue.parse(try server.post("/v1/gates", body).text).objectValue?["id"]?.stringValue)
            }
            let id = try open(#"{"title":"t","pipeline":"conn","required_approvals":2}"#)
            let keepAlive = try RawHTTPConnection(port: server.port)
            let pipelined = try RawHTTPConnection(port: server.port)
            let closing = try RawHTTPConnection(port: server.port)
            var hungUp: RawHTTPConnection? = try RawHTTPConnection(port: server.port)
            keepAlive.get("/v1/gates/\(id)/wait?timeout=30s")
            pipelined.send("GET /v1/gates/\(id)/wait?timeout=30s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            closing.get("/v1/gates/\(id)/wait?timeout=30s", headers: "Connection: close\r\n")
            hungUp?.get("/v1/gates/\(id)/wait?timeout=30s")
            #expect(try server.waitForWaiters(4))
            hungUp = nil  // closes its socket while it waits

            // One approval of two: the gate stays pending and nobody is answered.
            #expect(try server.post("/v1/gates/\(id)/decisions", #"{"decision":"approve","by":"web:ann"}"#).status == 200)
            #expect(keepAlive.read(timeout: 0.5) == nil)
            #expect(try server.post("/v1/gates/\(id)/decisions", #"{"decision":"approve","by":"web:bob"}"#).status == 200)

            let answer = try #require(keepAlive.read(timeout: 10))
            #expect(answer.status == 200)
            #expect((try? JSONValue.parse(answer.body))?.objectValue?["state"] == .string("approved"))
            #expect(answer.headers["content-type"] == "application/json")
            // Hummingbird's request id: two 64-bit hex numbers, the first not zero-padded.
            let requestID = answer.headers["x-request-id"] ?? ""
            #expect((17...32).contains(requestID.count) && requestID.allSatisfy(\.isHexDigit), "\(requestID)")
            #expect(answer.headers["date"]?.hasSuffix(" GMT") == true)
            #expect(answer.body.hasSuffix("\n"))
            // The same connection goes on; the response the route handler returned was dropped.
            keepAlive.get("/v1/gates/\(id)")
            let next = try #require(keepAlive.read(timeout: 10))
            #expect((try? JSONValue.parse(next.body))?.objectValue?["id"] == .string(id))
            // …with every later answer framed for its own request: a HEAD's carries no body.
            keepAlive.send("HEAD /v1/gates/\(id) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            #expect(keepAlive.read(timeout: 10, bodyless: true) != nil)
            #expect((try? JSONValue.parse(try #require(keepAlive.read(timeout: 10)).body))?.objectValue?["status"] == .string("ok"))
            #expect(keepAlive.read(timeout: 0.5) == nil)

            // Pipelined: the wait's answer, then the request queued behind it.
            let first = try #require(pipelined.read(timeout: 10))
            #expect((try? JSONValue.parse(first.body))?.objectValue?["state"] == .string("approved"))
            let second = try #require(pipelined.read(timeout: 10))
            #expect((try? JSONValue.parse(second.body))?.objectValue?["status"] == .string("ok"))
            #expect(pipelined.read(timeout: 0.5) == nil)

            // `Connection: close`: answered, then closed.
            let closed = try #require(closing.read(timeout: 10))
            #expect((try? JSONValue.parse(closed.body))?.objectValue?["state"] == .string("approved"))
            #expect(closing.closedByServer(timeout: 5))

            // A wait on a closed gate answers at once, the ordinary way; an unknown gate is a 404.
            let again = try RawHTTPConnection(port: server.port)
            again.get("/v1/gates/\(id)/wait?timeout=30s")
            #expect(try #require(again.read(timeout: 10)).body.contains(#""state":"approved""#))
            again.get("/v1/gates/gate_nope/wait?timeout=1s")
            #expect(try #require(again.read(timeout: 10)).status == 404)
            // Expiry releases waits too (the scheduler closes the gate).
            let expiring = try open(#"{"title":"t","pipeline":"conn","timeout":"1s","on_timeout":"approve"}"#)
            again.get("/v1/gates/\(expiring)/wait?timeout=30s")
            let expired = try #require(again.read(timeout: 15))
            #expect((try? JSONValue.parse(expired.body))?.objectValue?["state"] == .string("approved"))
            #expect((try? JSONValue.parse(expired.body))?.objectValue?["outcome"]?.objectValue?["reason"] == .string("timeout"))
            #expect(try server.get("/healthz").status == 200)
            // Every wait is unparked once its request is done.
            #expect(try server.waitForWaiters(0))
        }
    }

    /// A graceful shutdown (SIGTERM) answers waits at once with the gate (or dataset) as it
    /// is — the CLI then waits on the restarted server — instead of holding them to
    /// `shutdown_timeout`.
    @Test func aShutdownEndsWaitsAtOnce() async throws {
        try await offThePool {
            let dir = TempDir()
            let cfg = dir.file("gatehouse.yml")
            try "server:\n  shutdown_timeout: 60s\n".write(toFile: cfg, atomically: true, encoding: .utf8)
            let server = try ServerProcess(dir: dir, arguments: ["--config", cfg])
            let id = try #require(try JSONValue.parse(try server.post("/v1/gates", #"{"title":"t","pipeline":"bye"}"#).text).objectValue?["id"]?.stringValue)
            #expect(try server.post("/v1/datasets", #"{"name":"bye","task":"classification","labels":["a","b"]}"#).status == 201)
            #expect(try server.post("/v1/datasets/bye/items", #"[{"id":"i1","data":{"text":"x"}}]"#).status == 200)
            let labelling = try RawHTTPConnection(port: server.port)
            labelling.get("/v1/datasets/bye/wait?timeout=120s")
            let waiting = try RawHTTPConnection(port: server.port)
            waiting.get("/v1/gates/\(id)/wait?timeout=120s")
            // Both waits in progress (the dataset's was sent first, and gets a second more).
            try server.waitForWaiters(1)
            Thread.sleep(forTimeInterval: 1)
            server.signal(SIGTERM)
            // Far sooner than the 60 s the shutdown would otherwise wait for it.
            let answer = try #require(waiting.read(timeout: 30))
            #expect(answer.status == 200)
            #expect((try? JSONValue.parse(answer.body))?.objectValue?["state"] == .string("pending"))
            let progress = try #require(labelling.read(timeout: 30))
            #expect(progress.status == 200)
            #expect((try? JSONValue.parse(progress.body))?.objectValue?["reached"] == .bool(false))
            #expect(server.waitForExit(timeout: 30) == 0)
        }
    }

    /// Reminders and escalation run on the live scheduler.
    @Test func remindersAndEscalationAreSent() async throws {
        try await offThePool {
            let (sink, server) = try deliveringServer { Chat.config($0) }
            let created = try server.post("/v1/gates", #"{"title":"Still there?","pipeline":"remind","remind_every":"1s","escalate_after":"1s","escalate_to":["ops"]}"#)
            #expect(created.status == 201)
            let escalation = try #require(sink.wait(for: 1, at: "/ok/ops").first?.json)
            #expect(escalation["kind"] == .string("gate") && escalation["events"]?.arrayValue?.first?.objectValue?["type"] == .string("gate.escalated"))
            let reminders = try sink.wait(for: 3, at: "/ok/slack").filter { $0.body.contains("Reminder") }
            #expect(!reminders.isEmpty)
            #expect(try server.post("/v1/gates", #"{"title":"x","escalate_after":"1s","escalate_to":["nobody"]}"#).status == 422)
        }
    }

    /// The payloads in webhooks/callbacks/, signed and posted as each platform sends them; the
    /// answers have the shape of the answer fixtures.
    @Test func theCallbackFixturesAreUnderstood() async throws {
        try await offThePool {
            let (sink, server) = try deliveringServer { Chat.config($0) }
            let folder = URL(fileURLWithPath: templatesFolder).deletingLastPathComponent().appendingPathComponent("webhooks/callbacks")
            func fixture(_ name: String) throws -> String { try String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8) }
            func keys(_ text: String) -> Set<String> { Set(((try? JSONValue.parse(text))?.objectValue ?? JSONObject()).map(\.key)) }
            func open(_ approver: String) throws -> String {
                let r = try server.post("/v1/gates", #"{"title":"Deploy fraud-model v7 to production?","pipeline":"fixtures","approvers":["\#(approver)"]}"#)
                return try #require(try JSONValue.parse(r.text).objectValue?["id"]?.stringValue)
            }
            let sample = "gate_0123456789abcdef0123456789abcdef"

            let slackGate = try open("slack:U024BE7LH")
            let payload = try fixture("slack-block-actions.json").replacingOccurrences(of: sample, with: slackGate)
                .replacingOccurrences(of: "https://hooks.slack.com/actions/T111/111/random-value", with: sink.url("/ok/response-url"))
            let body = "payload=" + payload.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            let timestamp = String(Int64(Date().timeIntervalSince1970))
            let headers = ["X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": SlackSignature(secret: Chat.slackSecret).signature(timestamp: timestamp, body: Array(body.utf8))]
            #expect(try server.post("/v1/callbacks/slack", body, contentType: "application/x-www-form-urlencoded", headers: headers).status == 200)
            let replaced = try #require(sink.wait(for: 1, at: "/ok/response-url").first)
            #expect(keys(replaced.body) == keys(try fixture("slack-response-url.json")))

            let ping = try fixture("discord-ping.json")
            #expect(try server.post("/v1/callbacks/discord", ping, headers: try Chat.discord(ping)).text.contains(#"{"type":1}"#))
            let discordGate = try open("discord:80351110224678912")
            let click = try fixture("discord-component.json").replacingOccurrences(of: sample, with: discordGate)
            let answer = try server.post("/v1/callbacks/discord", click, headers: try Chat.discord(click))
            #expect(keys(answer.text) == keys(try fixture("discord-update.json")) && answer.text.contains(#""type":7"#))

            let mmGate = try open("mattermost:@alice")
            let posted = try #require(try sink.waitFor(at: "/ok/mm") { $0.body.contains(mmGate) })
            let token = try #require(posted.body.components(separatedBy: #""token":""#).dropFirst().first?.prefix { $0 != "\"" })
            let action = try fixture("mattermost-action.json").replacingOccurrences(of: sample, with: mmGate)
                .replacingOccurrences(of: "<hex HMAC of the gate and action>", with: String(token))
            let update = try server.post("/v1/callbacks/mattermost", action)
            #expect(keys(update.text) == keys(try fixture("mattermost-update.json")))
            for gate in [slackGate, discordGate, mmGate] { #expect(try server.json("/v1/gates/\(gate)")["state"] == .string("approved")) }
        }
    }

    /// `gatehouse audit verify` names the first entry someone edited.
    @Test func aTamperedLedgerIsDetected() async throws {
        try await offThePool {
            let dir = TempDir()
            var server: ServerProcess? = try ServerProcess(dir: dir)
            let id = try #require(try JSONValue.parse(try server!.post("/v1/gates", #"{"title":"t","pipeline":"audit"}"#).text).objectValue?["id"]?.stringValue)
            _ = try server!.post("/v1/gates/\(id)/decisions", #"{"decision":"reject","by":"web:bob"}"#)
            #expect(try runCLI(["audit", "verify"], environment: ["GATEHOUSE_URL": server!.url]).stdout.contains("ok: 3 entries"))
            let db = server!.db
            server!.kill()
            server = nil
            // Someone with write access to the database edits history.
            try Storage.open(db).writeNow { try $0.execute("UPDATE audit SET actor = 'web:mallory' WHERE seq = 2") }
            let verify = try runCLI(["audit", "verify", "--db", db])
            #expect(verify.status == 1)
            #expect(verify.stdout.contains("broken at entry 2"))
        }
    }
}

/// A port free right now, for tests that restart a server and need it at the same address.
func freePort() throws -> Int {
    // Below Linux's ephemeral range (32768–60999): between this check and the server's own
    // bind, no server or client binding port 0 in a parallel test can be handed this port.
    for _ in 0..<200 {
        let port = Int.random(in: 20_000..<32_768)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        if bound == 0 { return port }
    }
    throw ServerProcess.ServerStartFailure(output: "no free port below the ephemeral range")
}
