import Foundation
import GatehouseCore
@testable import GatehouseDelivery
import Testing

/// `webhook` receivers with `format: cloudevents` / `cloudevents-binary`: each request is held
/// to its example in webhooks/cloudevents/ (headers and raw body), which `make test` also parses
/// with the CloudEvents Python SDK (tests/python/test_cloudevents.py).
struct CloudEventsTests {
    static let secret = Secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    static let now = Timestamp(rfc3339: "2026-11-29T10:05:01Z")!

    static func gateMessage() -> OutboundMessage {
        let event = Event(
            id: "gate_01.approved", type: "gate.approved", pipeline: "train", run: "r42", step: "deploy",
            summary: "Approved by web:bob", attributes: JSONObject([("gate_id", .string("gate_01")), ("gate_key", .string("r42/deploy"))]),
            time: Timestamp(rfc3339: "2026-11-29T10:00:00Z")!)
        var message = OutboundMessage(
            kind: .event, deliveryID: "msg_01a2291118934293c868e9abd71a37de", receiver: "example", groupKey: "gate|\(event.id)",
            events: [StoredEvent(cursor: 60, event: event, receivedAt: event.time)], publicURL: "https://gatehouse.example")
        message.gate = GateNotice.sample(open: false)
        return message
    }

    @Test(arguments: [WebhookReceiver.Format.cloudevents, .cloudeventsBinary], ["event", "digest", "gate"])
    func requestMatchesTheExample(_ format: WebhookReceiver.Format, _ sample: String) async throws {
        let templates = try await TemplateSet(directory: templatesFolder)
        let receiver = try WebhookReceiver(name: "example", url: Secret("https://example.invalid/hook"), secret: Self.secret, templates: templates, format: format)
        let message = switch sample {
        case "digest": GoldenTests.sample(.digest)
        case "gate": Self.gateMessage()
        default: GoldenTests.sample(.event)
        }
        let request = try receiver.request(for: message, now: Self.now)
        var headers = JSONObject()
        for (name, value) in request.headers { headers.append(name, .string(value)) }
        let rendered = JSONValue.object(JSONObject([("headers", .object(headers)), ("body", .string(String(decoding: request.body, as: UTF8.self)))]))
        let pretty = { (value: JSONValue) in GoldenTests().pretty(value) }
        let file = GoldenTests.webhooks.appendingPathComponent("cloudevents/\(format.rawValue)-\(sample).json")
        if ProcessInfo.processInfo.environment["GATEHOUSE_UPDATE_GOLDEN"] == "1" {
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try (pretty(rendered) + "\n").write(to: file, atomically: true, encoding: .utf8)
        }
        let expected = try JSONValue.parse(String(contentsOf: file, encoding: .utf8))
        #expect(rendered == expected, "cloudevents/\(format.rawValue)-\(sample).json differs:\n\(pretty(rendered))")

        // Still signed per Standard Webhooks, over the exact body.
        let key = try #require(WebhookReceiver.key(fromSecret: Self.secret.value))
        let signature = request.headers.first { $0.0 == "webhook-signature" }?.1
        #expect(signature == WebhookReceiver.signature(id: message.deliveryID, timestamp: Self.now.milliseconds / 1000, body: request.body, key: key))
    }

    @Test func formatIsCheckedInTheSettings() {
        guard case .failure(let problems) = WebhookSettings.decode(["url": Secret("https://h/x"), "format": Secret("cloudevent")]) else {
            Issue.record("a bad format was accepted"); return
        }
        #expect(problems.summary == "webhook.format must be webhook, cloudevents, cloudevents-binary (got \"cloudevent\")")
        #expect((try? WebhookSettings.decode(["url": Secret("https://h/x"), "format": Secret("cloudevents-binary")]).get().format) == .cloudeventsBinary)
    }

    /// Binary mode puts event text in headers: percent-encoded, so no run name breaks a line.
    @Test func headerValuesArePercentEncoded() {
        #expect(CloudEvents.headerValue("run 1/é\"%\r\nx: y") == "run%201/%C3%A9%22%25%0D%0Ax:%20y")
        #expect(CloudEvents.headerValue("msg_01.2") == "msg_01.2")
    }
}
