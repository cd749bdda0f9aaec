import Foundation
import GatehouseCore
@testable import GatehouseDelivery
import Testing

/// Every payload Gatehouse sends has an example in webhooks/<platform>/<kind>.json; rendering
/// the shipped templates must give exactly that. Set GATEHOUSE_UPDATE_GOLDEN=1 to rewrite them
/// after an intended change (and read the diff).
struct GoldenTests {
    static let webhooks = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("webhooks")

    static func sample(_ kind: OutboundMessage.Kind) -> OutboundMessage {
        if kind == .resolved {
            let event = Event(
                id: "r43-done", type: "run.succeeded", pipeline: "train", run: "r43", summary: "all 7 steps green",
                url: "https://orchestrator.example/runs/r43", time: Timestamp(rfc3339: "2026-11-29T11:40:00Z")!)
            return OutboundMessage(
                kind: .resolved, deliveryID: "msg_01a22a0c1f2e3d4c5b6a79880f1e2d3c", receiver: "example", groupKey: "resolved|train",
                events: [StoredEvent(cursor: 57, event: event, receivedAt: event.time)], publicURL: "https://gatehouse.example")
        }
        if kind == .repeat {
            var reminder = sample()
            reminder.kind = .repeat
            return reminder
        }
        guard kind == .digest else { return sample() }
        var message = sample()
        let more: [(String, String, String?, String?)] = [
            ("step.retried", "fit", "retrying with batch size 256", nil),
            ("run.failed", "evaluate", "evaluation aborted", "https://orchestrator.example/runs/r42"),
        ]
        for (i, (type, step, summary, url)) in more.enumerated() {
            let e = Event(
                id: "r42-\(i)", type: type, pipeline: "train", run: "r42", step: step, summary: summary, url: url,
                time: Timestamp(rfc3339: "2026-11-29T10:0\(6 + i):00Z")!)
            message.events.append(StoredEvent(cursor: Int64(43 + i), event: e, receivedAt: e.time))
        }
        message.kind = .digest
        return message
    }

    static func sample() -> OutboundMessage {
        let event = Event(
            id: "r42-fit-oom", type: "step.failed", pipeline: "train", run: "r42", step: "fit", severity: .error,
            summary: "CUDA out of memory", details: "Batch size 512 does not fit on one A100.\n\nTry `--batch-size 256`.",
            labels: [("team", "ml"), ("env", "prod")], attributes: JSONObject([("gpu", .string("a100"))]),
            url: "https://orchestrator.example/runs/r42", time: Timestamp(rfc3339: "2026-11-29T10:05:00Z")!)
        return OutboundMessage(
            kind: .event, deliveryID: "msg_01a2291118934293c868e9abd71a37dd", receiver: "example", groupKey: "root.0|pipeline=train,run=r42",
            events: [StoredEvent(cursor: 42, event: event, receivedAt: Timestamp(rfc3339: "2026-11-29T10:05:00.120Z")!)],
            publicURL: "https://gatehouse.example")
    }

    @Test(arguments: GatehouseConfig.ReceiverKind.allCases, [OutboundMessage.Kind.event, .digest, .resolved, .repeat])
    func renderedPayloadMatchesTheExample(_ platform: GatehouseConfig.ReceiverKind, _ kind: OutboundMessage.Kind) async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let url = Secret("https://example.invalid/hook")
        let receiver: any Receiver = switch platform {
        case .slack: SlackReceiver(name: "example", webhookURL: url, templates: templates)
        case .discord: DiscordReceiver(name: "example", webhookURL: url, templates: templates)
        case .mattermost: MattermostReceiver(name: "example", webhookURL: url, templates: templates)
        case .webhook: try WebhookReceiver(name: "example", url: url, secret: nil, templates: templates)
        }
        let request = try receiver.request(for: Self.sample(kind), now: Timestamp(rfc3339: "2026-11-29T10:05:01Z")!)
        let rendered = try JSONValue.parse(bytes: request.body)
        let file = Self.webhooks.appendingPathComponent("\(platform.rawValue)/\(kind.rawValue).json")
        if ProcessInfo.processInfo.environment["GATEHOUSE_UPDATE_GOLDEN"] == "1" {
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try (pretty(rendered) + "\n").write(to: file, atomically: true, encoding: .utf8)
        }
        let expected = try JSONValue.parse(String(contentsOf: file, encoding: .utf8))
        #expect(rendered == expected, "\(platform.rawValue)/\(kind.rawValue).json differs from the rendering:\n\(pretty(rendered))")
        try checkLimits(platform, expected)
    }

    /// The webhook body for the shipped templates is written without Mustache; it must be byte
    /// for byte what the templates render, for every kind, gates, digests and awkward text.
    @Test func shippedWebhookBodyEqualsTheTemplateRendering() async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let receiver = try WebhookReceiver(name: "example", url: Secret("https://example.invalid/hook"), secret: nil, templates: templates)
        #expect(receiver.shipped == ["event", "digest", "resolved", "gate"])
        var messages = [OutboundMessage.Kind.event, .digest, .resolved, .repeat].map { Self.sample($0) }
        var gate = Self.sample()
        gate.gate = GateNotice.sample(open: true)
        messages.append(gate)
        var awkward = Self.sample()
        let odd = Event(
            id: "q\"uote\\slash", type: "run.failed", pipeline: "p\u{1}ctl\ttab", run: "r\n1", summary: "é ✅ \u{2028} </script>",
            labels: [("k\"", "v\\")], attributes: JSONObject([("n", .number("1.50e3")), ("nested", .array([.null, .bool(true)]))]),
            time: Timestamp(rfc3339: "2026-11-29T10:05:00Z")!)
        awkward.events = [StoredEvent(cursor: 9, event: odd, receivedAt: odd.time)]
        awkward.groupKey = "g\"k"
        messages.append(awkward)
        for message in messages {
            #expect(WebhookReceiver.shippedBody(message) == (try receiver.templatedBody(message)), "\(message.kind) \(message.gate != nil)")
        }
    }

    /// An event's link is the orchestrator's page; a dataset event's is the labelling page,
    /// and Slack's link text says which.
    @Test func datasetEventsLinkToTheLabellingPage() async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let receiver = SlackReceiver(name: "example", webhookURL: Secret("https://example.invalid/hook"), templates: templates)
        var message = Self.sample()
        let event = Event(
            id: "dataset.reviews.items_added.1", type: "dataset.items_added", pipeline: "datasets", summary: "reviews: 20 items to label",
            url: "https://gatehouse.example/annotate/reviews", time: Timestamp(rfc3339: "2026-11-29T10:05:00Z")!)
        message.events = [StoredEvent(cursor: 50, event: event, receivedAt: event.time)]
        let text = String(decoding: try receiver.request(for: message, now: Timestamp(rfc3339: "2026-11-29T10:05:01Z")!).body, as: UTF8.self)
        #expect(text.contains("<https://gatehouse.example/annotate/reviews|open labelling page>"))
        #expect(!text.contains("orchestrator"))
        let pipeline = String(decoding: try receiver.request(for: Self.sample(), now: Timestamp(rfc3339: "2026-11-29T10:05:01Z")!).body, as: UTF8.self)
        #expect(pipeline.contains("|open in orchestrator>"))
    }

    /// Gate messages: the question with links and native buttons (`gate-open`), and the
    /// closing update (`gate-closed`; on Discord a PATCH of the original message).
    @Test(arguments: GatehouseConfig.ReceiverKind.allCases, [true, false])
    func gateMessageMatchesTheExample(_ platform: GatehouseConfig.ReceiverKind, _ open: Bool) async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let url = Secret("https://example.invalid/hook")
        let receiver: any Receiver = switch platform {
        case .slack: SlackReceiver(name: "example", webhookURL: url, templates: templates, buttons: true)
        case .discord: DiscordReceiver(name: "example", webhookURL: url, templates: templates, buttons: true)
        case .mattermost: MattermostReceiver(name: "example", webhookURL: url, templates: templates, buttons: true)
        case .webhook: try WebhookReceiver(name: "example", url: url, secret: nil, templates: templates)
        }
        let gateID = GateNotice.sample(open: open).id
        let event = Event(
            id: "\(gateID).\(open ? "opened" : "approved")", type: open ? "gate.opened" : "gate.approved", pipeline: "train", run: "r42", step: "deploy",
            summary: "Approval needed: Deploy fraud-model v7 to production?", attributes: JSONObject([("gate_id", .string(gateID))]),
            time: Timestamp(rfc3339: "2026-11-29T10:00:00Z")!)
        var message = OutboundMessage(
            kind: .event, deliveryID: "msg_01a2291118934293c868e9abd71a37de", receiver: "example", groupKey: "gate|\(event.id)",
            events: [StoredEvent(cursor: 60, event: event, receivedAt: event.time)], publicURL: "https://gatehouse.example.org")
        message.gate = GateNotice.sample(open: open)
        let request = try receiver.request(for: message, now: Timestamp(rfc3339: "2026-11-29T10:00:01Z")!)
        let rendered = try JSONValue.parse(bytes: request.body)
        let file = Self.webhooks.appendingPathComponent("\(platform.rawValue)/gate-\(open ? "open" : "closed").json")
        if ProcessInfo.processInfo.environment["GATEHOUSE_UPDATE_GOLDEN"] == "1" {
            try (pretty(rendered) + "\n").write(to: file, atomically: true, encoding: .utf8)
        }
        let expected = try JSONValue.parse(String(contentsOf: file, encoding: .utf8))
        #expect(rendered == expected, "\(file.lastPathComponent) differs from the rendering:\n\(pretty(rendered))")
        try checkLimits(platform, expected)
        let text = JSONValue.object(expected.objectValue!).serialized()
        // Untrusted details are escaped per platform; the buttons exist only while the gate is open.
        if platform == .slack { #expect(text.contains("&lt;b&gt;") && !text.contains("<b>")) }
        switch platform {
        case .slack: #expect(text.contains(#""type":"actions""#) == open)
        case .discord:
            #expect(text.contains(#""custom_id":"approve:\#(gateID)""#) == open)
            #expect(request.method == (open ? "POST" : "PATCH"))
            #expect(open ? request.url.hasSuffix("?wait=true") : request.url.hasSuffix("/messages/1180000000000000000"))
        case .mattermost: #expect(text.contains(#""integration""#) == open)
        case .webhook: #expect(expected.objectValue?["gate"]?.objectValue?["id"] == .string(gateID))
        }
    }

    /// The platform limits of docs/platforms/, checked on the examples themselves.
    func checkLimits(_ platform: GatehouseConfig.ReceiverKind, _ payload: JSONValue) throws {
        let o = try #require(payload.objectValue)
        switch platform {
        case .slack:
            #expect((o["text"]?.stringValue?.count ?? 0) <= 4000)
            let blocks = o["blocks"]?.arrayValue ?? []
            #expect(!blocks.isEmpty && blocks.count <= 50)
            for b in blocks { if let t = b.objectValue?["text"]?.objectValue?["text"]?.stringValue { #expect(t.count <= 3000) } }
        case .discord:
            #expect((o["content"]?.stringValue?.count ?? 0) <= 2000)
            #expect(o["allowed_mentions"] == .object(JSONObject([("parse", .array([]))])))
            let embeds = o["embeds"]?.arrayValue ?? []
            #expect(embeds.count <= 10)
            for e in embeds.compactMap(\.objectValue) {
                #expect((e["title"]?.stringValue?.count ?? 0) <= 256)
                #expect((e["description"]?.stringValue?.count ?? 0) <= 4096)
                #expect((e["fields"]?.arrayValue?.count ?? 0) <= 25)
            }
        case .mattermost:
            #expect(JSONValue.object(o).serialized().count <= 16383)
            #expect(o["text"] != nil || o["attachments"] != nil)
        case .webhook:
            #expect(JSONValue.object(o).serialized().utf8.count < 20_000)
        }
    }

    func pretty(_ value: JSONValue, indent: String = "") -> String {
        let inner = indent + "  "
        switch value {
        case .array(let items) where !items.isEmpty:
            return "[\n" + items.map { inner + pretty($0, indent: inner) }.joined(separator: ",\n") + "\n" + indent + "]"
        case .object(let o) where !o.isEmpty:
            return "{\n" + o.map { key, v in
                var k = ""
                JSONValue.writeString(key, to: &k)
                return inner + k + ": " + pretty(v, indent: inner)
            }.joined(separator: ",\n") + "\n" + indent + "}"
        default:
            return value.serialized()
        }
    }
}
