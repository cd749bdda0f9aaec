import Crypto
import Foundation
import GatehouseCore
@testable import GatehouseDelivery
import Testing

let templatesFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("templates").path

func response(_ status: Int, _ body: String = "", headers: [(String, String)] = [], error: String? = nil) -> OutboundResponse {
    OutboundResponse(status: status, headers: headers.map { (name: $0.0, value: $0.1) }, body: Array(body.utf8), transportError: error, timedOut: false, seconds: 0.01)
}

func message(summary: String? = "OOM <!channel> & <@U123>", details: String? = nil, kind: OutboundMessage.Kind = .event) -> OutboundMessage {
    let event = Event(
        id: "e1", type: "step.failed", pipeline: "train", run: "r42", step: "fit", summary: summary, details: details,
        labels: [("team", "ml")], url: "https://ci.example/r42", time: Timestamp(rfc3339: "2026-11-29T10:05:00Z")!)
    return OutboundMessage(kind: kind, deliveryID: "msg_1", receiver: "r", groupKey: "root|", events: [StoredEvent(cursor: 7, event: event, receivedAt: event.time)], publicURL: "http://gatehouse.test")
}

func body(_ request: OutboundRequest) throws -> JSONObject {
    try #require(try JSONValue.parse(bytes: request.body).objectValue)
}

struct StandardWebhooksTests {
    /// The spec's test vector (docs/platforms/standard-webhooks.md).
    @Test func signatureMatchesTheSpecVector() throws {
        let key = try #require(WebhookReceiver.key(fromSecret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        let signature = WebhookReceiver.signature(id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1614265330, body: Array(#"{"test": 2432232314}"#.utf8), key: key)
        #expect(signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    }

    @Test func requestCarriesTheHeadersAndSignsTheExactBody() async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let receiver = try WebhookReceiver(name: "audit", url: Secret("http://127.0.0.1:1/hook"), secret: Secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), templates: templates)
        let request = try receiver.request(for: message(), now: Timestamp(milliseconds: 1_795_946_400_000))
        let headers = Dictionary(uniqueKeysWithValues: request.headers)
        #expect(headers["webhook-id"] == "msg_1")
        #expect(headers["webhook-timestamp"] == "1795946400")
        let key = try #require(WebhookReceiver.key(fromSecret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        var signed = Data("msg_1.1795946400.".utf8)
        signed.append(contentsOf: request.body)
        let expected = "v1," + Data(HMAC<SHA256>.authenticationCode(for: signed, using: key)).base64EncodedString()
        #expect(headers["webhook-signature"] == expected)
        let o = try body(request)
        #expect(o["kind"] == .string("event"))
        #expect(o["events"]?.arrayValue?.first?.objectValue?["id"] == .string("e1"))
        #expect(throws: DeliveryError.self) { try WebhookReceiver(name: "x", url: Secret("http://h"), secret: Secret("whsec_!!!"), templates: templates) }
    }

    @Test func classification() {
        #expect(Classifier.classify(response(204)) == .delivered(messageID: nil))
        #expect(Classifier.classify(response(302)) == .dead(reason: "HTTP 302 redirect (not followed; fix the URL)"))
    }
}

struct ClassifierTests {
    @Test(arguments: [408, 429, 500, 502, 503, 504])
    func retriesTransientStatuses(_ status: Int) {
        guard case .retry = Classifier.classify(response(status)) else { Issue.record("\(status) not retried"); return }
    }

    @Test(arguments: [400, 401, 403, 404, 410, 413, 422])
    func otherClientErrorsAreFinal(_ status: Int) {
        guard case .dead = Classifier.classify(response(status, "nope")) else { Issue.record("\(status) retried"); return }
    }

    @Test func transportErrorsRetry() {
        guard case .retry(_, let reason) = Classifier.classify(response(0, error: "Couldn't connect to server")) else { Issue.record("not retried"); return }
        #expect(reason == "Couldn't connect to server")
    }

    @Test func retryAfterSecondsAndDates() {
        #expect(Classifier.retryAfter(response(429, headers: [("Retry-After", "7")])) == 7)
        let now = Date(timeIntervalSince1970: 1_795_946_400)
        #expect(Classifier.retryAfter(response(429, headers: [("retry-after", "Sun, 29 Nov 2026 10:00:30 GMT")]), now: now) == 30)
        #expect(Classifier.retryAfter(response(429)) == nil)
        guard case .retry(let after, _) = Classifier.classify(response(429, headers: [("Retry-After", "3")])) else { Issue.record("not retried"); return }
        #expect(after == 3)
    }

    @Test func slackAndMattermostNeedTheOkBody() async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let slack = SlackReceiver(name: "s", webhookURL: Secret("http://h"), templates: templates)
        #expect(slack.classify(response(200, "ok")) == .delivered(messageID: nil))
        guard case .dead = slack.classify(response(200, "invalid_payload")) else { Issue.record("accepted a non-ok body"); return }
        guard case .dead = slack.classify(response(404, "channel_not_found")) else { Issue.record("404 retried"); return }
        guard case .dead = slack.classify(response(410, "channel_is_archived")) else { Issue.record("410 retried"); return }
        guard case .retry = slack.classify(response(500, "rollup_error")) else { Issue.record("500 not retried"); return }
        let mm = MattermostReceiver(name: "m", webhookURL: Secret("http://h"), templates: templates)
        #expect(mm.classify(response(200, "ok")) == .delivered(messageID: nil))
        guard case .dead = mm.classify(response(400, #"{"id":"web.incoming_webhook.invalid.app_error"}"#)) else { Issue.record("retried"); return }
        // 501: incoming webhooks are disabled on that server — retrying cannot help.
        guard case .dead = mm.classify(response(501, #"{"id":"web.incoming_webhook.disabled.app_error"}"#)) else { Issue.record("501 retried"); return }
        guard case .retry = mm.classify(response(503, "")) else { Issue.record("503 not retried"); return }
    }

    @Test func discordReadsItsRateLimitAndMessageID() async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let discord = DiscordReceiver(name: "d", webhookURL: Secret("http://h"), templates: templates)
        #expect(discord.classify(response(429, #"{"message":"You are being rate limited.","retry_after":64.57,"global":false}"#, headers: [("Retry-After", "65")])) == .retry(after: 64.57, reason: "HTTP 429 rate limited"))
        // An unusable retry_after (negative, zero) gives way to the headers.
        for bad in ["-3", "0"] {
            #expect(discord.classify(response(429, #"{"retry_after":\#(bad)}"#, headers: [("Retry-After", "5")])) == .retry(after: 5, reason: "HTTP 429 rate limited"), "\(bad)")
            #expect(discord.classify(response(429, #"{"retry_after":\#(bad)}"#, headers: [("X-RateLimit-Reset-After", "2.5"), ("Retry-After", "5")])) == .retry(after: 2.5, reason: "HTTP 429 rate limited"), "\(bad)")
        }
        #expect(discord.classify(response(200, #"{"id":"1234","channel_id":"9"}"#)) == .delivered(messageID: "1234"))
        #expect(discord.classify(response(204)) == .delivered(messageID: nil))
        // Only a snowflake is kept: the id goes into the path of the message's later edit.
        #expect(discord.classify(response(200, #"{"id":"../../../x?y#z"}"#)) == .delivered(messageID: nil))
        guard case .dead = discord.classify(response(404, #"{"message":"Unknown Webhook","code":10015}"#)) else { Issue.record("404 retried"); return }
        #expect(DiscordReceiver.pause(after: response(200, headers: [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset-After", "1.5")])) == 1.5)
    }
}

struct PayloadTests {
    @Test func slackBlockKitWithFallbackAndEscaping() async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let request = try SlackReceiver(name: "s", webhookURL: Secret("https://hooks.slack.test/x"), templates: templates).request(for: message(), now: .now())
        #expect(request.url == "https://hooks.slack.test/x")
        let o = try body(request)
        let text = try #require(o["text"]?.stringValue)
        #expect(text.contains("step.failed · train/r42/fit"))
        // Untrusted text cannot mention anyone: < and & are escaped.
        #expect(text.contains("OOM &lt;!channel&gt; &amp; &lt;@U123&gt;"))
        #expect(!text.contains("<!channel>"))
        let blocks = try #require(o["blocks"]?.arrayValue)
        #expect(blocks.first?.objectValue?["type"] == .string("section"))
        #expect(blocks.last?.objectValue?["type"] == .string("context"))
        let context = blocks.last?.serialized() ?? ""
        #expect(context.contains("<https://ci.example/r42|open in orchestrator>"))
        #expect(context.contains("team=ml"))
    }

    @Test func discordEmbedsWithoutMentions() async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let request = try DiscordReceiver(name: "d", webhookURL: Secret("https://discord.test/api/webhooks/1/t"), templates: templates).request(for: message(), now: .now())
        #expect(request.url == "https://discord.test/api/webhooks/1/t?wait=true")
        #expect(request.headers.contains { $0.0 == "User-Agent" && $0.1.hasPrefix("DiscordBot (") })
        let o = try body(request)
        #expect(o["allowed_mentions"] == .object(JSONObject([("parse", .array([]))])))
        let embed = try #require(o["embeds"]?.arrayValue?.first?.objectValue)
        #expect(embed["color"] == .number("15158332"))
        #expect(embed["timestamp"] == .string("2026-11-29T10:05:00.000Z"))
        #expect(embed["fields"]?.arrayValue?.count == 5)
        // Without summary and details there is no empty description (Discord refuses "").
        let bare = try body(try DiscordReceiver(name: "d", webhookURL: Secret("https://d"), templates: templates).request(for: message(summary: nil), now: .now()))
        #expect(bare["embeds"]?.arrayValue?.first?.objectValue?["description"] == nil)
    }

    @Test func mattermostAttachmentsWithoutMassMentions() async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let request = try MattermostReceiver(name: "m", webhookURL: Secret("https://mm.test/hooks/x"), templates: templates)
            .request(for: message(summary: "ping @channel and @ALL and @here <!channel>"), now: .now())
        let o = try body(request)
        let text = try #require(o["text"]?.stringValue)
        for word in ["@channel", "@ALL", "@here", "<!channel>"] { #expect(!text.contains(word), "\(word)") }
        #expect(text.contains("@\u{200B}channel"))
        #expect(o["attachments"]?.arrayValue?.first?.objectValue?["title_link"] == .string("https://ci.example/r42"))
    }

    /// Oversized text is cut with a marker and a link, never dropped, and stays inside every
    /// platform's limits.
    @Test func truncatesAtEveryLimit() async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let huge = String(repeating: "x", count: 20000)
        let m = message(summary: String(repeating: "s", count: 1000), details: huge)

        let slack = try body(try SlackReceiver(name: "s", webhookURL: Secret("https://s"), templates: templates).request(for: m, now: .now()))
        #expect((slack["text"]?.stringValue?.count ?? 0) <= 4000)
        for block in slack["blocks"]?.arrayValue ?? [] {
            if let t = block.objectValue?["text"]?.objectValue?["text"]?.stringValue { #expect(t.count <= 3000) }
        }
        #expect(JSONValue.object(slack).serialized().contains("truncated, <https://ci.example/r42|full text>"))

        let discord = try body(try DiscordReceiver(name: "d", webhookURL: Secret("https://d"), templates: templates).request(for: m, now: .now()))
        let embed = try #require(discord["embeds"]?.arrayValue?.first?.objectValue)
        #expect((discord["content"]?.stringValue?.count ?? 0) <= 2000)
        #expect((embed["title"]?.stringValue?.count ?? 0) <= 256)
        #expect((embed["description"]?.stringValue?.count ?? 0) <= 4096)
        var total = (embed["title"]?.stringValue?.count ?? 0) + (embed["description"]?.stringValue?.count ?? 0)
        for field in embed["fields"]?.arrayValue ?? [] {
            let f = field.objectValue ?? JSONObject()
            total += (f["name"]?.stringValue?.count ?? 0) + (f["value"]?.stringValue?.count ?? 0)
        }
        #expect(total <= 6000)
        #expect(embed["description"]?.stringValue?.contains("truncated, [full text](https://ci.example/r42)") == true)

        let mm = try body(try MattermostReceiver(name: "m", webhookURL: Secret("https://m"), templates: templates).request(for: m, now: .now()))
        #expect(JSONValue.object(mm).serialized().count <= 16383)
        #expect(mm["attachments"]?.arrayValue?.first?.objectValue?["text"]?.stringValue?.contains("truncated") == true)

        // A long title is cut too.
        let longRun = Event(id: "e", type: "step.failed", pipeline: String(repeating: "p", count: 256), run: String(repeating: "r", count: 256), time: .now())
        let lm = OutboundMessage(kind: .event, deliveryID: "m", receiver: "d", groupKey: "", events: [StoredEvent(cursor: 1, event: longRun, receivedAt: .now())], publicURL: nil)
        let d2 = try body(try DiscordReceiver(name: "d", webhookURL: Secret("https://d"), templates: templates).request(for: lm, now: .now()))
        #expect((d2["embeds"]?.arrayValue?.first?.objectValue?["title"]?.stringValue?.count ?? 999) <= 256)
    }

    /// A digest of many long events stays inside every limit and says how many did not fit.
    @Test func digestsAreCutToTheLimits() async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let events = (0..<300).map { i in
            let e = Event(id: "e\(i)", type: "step.failed", pipeline: "train", run: "r\(i % 7)", step: "s\(i)",
                          summary: String(repeating: "x", count: 400), time: .now())
            return StoredEvent(cursor: Int64(i + 1), event: e, receivedAt: .now())
        }
        let m = OutboundMessage(kind: .digest, deliveryID: "msg_d", receiver: "r", groupKey: "root|", events: events, publicURL: nil)
        let url = Secret("https://x")
        let slack = try body(try SlackReceiver(name: "s", webhookURL: url, templates: templates).request(for: m, now: .now()))
        for block in slack["blocks"]?.arrayValue ?? [] {
            if let t = block.objectValue?["text"]?.objectValue?["text"]?.stringValue { #expect(t.count <= 3000) }
        }
        #expect(JSONValue.object(slack).serialized().contains("more"))
        let discord = try body(try DiscordReceiver(name: "d", webhookURL: url, templates: templates).request(for: m, now: .now()))
        let description = discord["embeds"]?.arrayValue?.first?.objectValue?["description"]?.stringValue ?? ""
        #expect(description.count <= 4096 && description.hasSuffix("more"))
        #expect(discord["content"]?.stringValue == "🔴 300 events · train")
        let mm = try body(try MattermostReceiver(name: "m", webhookURL: url, templates: templates).request(for: m, now: .now()))
        #expect(JSONValue.object(mm).serialized().count <= 16383)
    }

    @Test func brokenOverrideIsReported() async throws {
        let dir = NSTemporaryDirectory() + "tpl-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir + "/slack", withIntermediateDirectories: true)
        try "{{% CONTENT_TYPE: JSON}}\n{\"text\": \"{{title}}\",}".write(toFile: dir + "/slack/event.mustache", atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let templates = try await TemplateSet(directory: templatesFolder, overrides: dir)
        #expect(throws: DeliveryError.self) { try SlackReceiver(name: "s", webhookURL: Secret("https://s"), templates: templates).request(for: message(), now: .now()) }
    }
}

struct PacerTests {
    @Test func slackIsPacedToOnePerSecondWithABurst() throws {
        var pacer = try #require(Pacer.for(.slack))
        let t0 = Timestamp(milliseconds: 1_000_000)
        #expect(pacer.take(now: t0) == 0)
        #expect(pacer.take(now: t0) == 0)
        #expect(pacer.take(now: t0) == 0)
        #expect(pacer.take(now: t0) == 1000)
        #expect(pacer.take(now: t0.adding(milliseconds: 1000)) == 0)
        #expect(Pacer.for(.webhook) == nil)
    }
}
