import GatehouseCore
@testable import GatehouseDelivery
import Testing

/// Retry-or-not in one place: the outcome, the delivery's age and the receiver's health.
struct RetryPolicyTests {
    let policy = RetryPolicy(schedule: RetrySchedule(base: .seconds(1), cap: .seconds(60), jitter: 0, maxAge: .seconds(300)))
    let created = Timestamp(milliseconds: 1_000_000)

    @Test func deliveredAndDeadAreFinal() {
        let now = created.adding(milliseconds: 10)
        #expect(policy.decide(.delivered(messageID: "m1"), attempts: 1, created: created, now: now, random: 0.5) == .delivered(messageID: "m1"))
        #expect(policy.decide(.dead(reason: "HTTP 404"), attempts: 1, created: created, now: now, random: 0.5) == .dead(reason: "HTTP 404"))
    }

    @Test func retriesBackOffExponentiallyAndHonourRetryAfter() {
        let now = created.adding(milliseconds: 10)
        #expect(policy.decide(.retry(after: nil, reason: "HTTP 503"), attempts: 1, created: created, now: now, random: 0.5) == .retry(at: now.adding(milliseconds: 1000), reason: "HTTP 503"))
        #expect(policy.decide(.retry(after: nil, reason: "HTTP 503"), attempts: 4, created: created, now: now, random: 0.5) == .retry(at: now.adding(milliseconds: 8000), reason: "HTTP 503"))
        #expect(policy.decide(.retry(after: nil, reason: "x"), attempts: 30, created: created, now: now, random: 0.5) == .retry(at: now.adding(milliseconds: 60_000), reason: "x"))
        // A receiver's Retry-After wins over a shorter back-off.
        #expect(policy.decide(.retry(after: 30, reason: "HTTP 429"), attempts: 1, created: created, now: now, random: 0.5) == .retry(at: now.adding(milliseconds: 30_000), reason: "HTTP 429"))
    }

    @Test func aRetryBeyondMaxAgeIsDead() {
        let now = created.adding(milliseconds: 299_500)
        let decision = policy.decide(.retry(after: nil, reason: "HTTP 500"), attempts: 3, created: created, now: now, random: 0.5)
        #expect(decision == .dead(reason: "gave up after 3 attempts (max_age 5m): HTTP 500"))
        #expect(!policy.expired(created: created, at: created.adding(milliseconds: 300_000)))
        #expect(policy.expired(created: created, at: created.adding(milliseconds: 300_001)))
    }

    @Test func verdictsSayHowTheReceiverIsDoing() {
        #expect(RetryPolicy.verdict(.delivered(messageID: nil), status: 200, pause: nil) == .answered)
        #expect(RetryPolicy.verdict(.dead(reason: "HTTP 400"), status: 400, pause: nil) == .answered)
        #expect(RetryPolicy.verdict(.retry(after: nil, reason: "HTTP 502"), status: 502, pause: nil) == .failed(retryAfter: nil))
        #expect(RetryPolicy.verdict(.retry(after: nil, reason: "refused"), status: 0, pause: nil) == .failed(retryAfter: nil))
        #expect(RetryPolicy.verdict(.retry(after: nil, reason: "HTTP 429"), status: 429, pause: nil) == .rateLimited(0))
        #expect(RetryPolicy.verdict(.retry(after: 3, reason: "HTTP 429"), status: 429, pause: 5) == .rateLimited(5))
        // A 5xx or 408 that asks for a wait is still a failure (backed off, counted), not a
        // rate limit: with `Retry-After: 0` it used to let every held delivery go at once.
        #expect(RetryPolicy.verdict(.retry(after: 7, reason: "HTTP 503"), status: 503, pause: nil) == .failed(retryAfter: 7))
        #expect(RetryPolicy.verdict(.retry(after: 0, reason: "HTTP 408"), status: 408, pause: nil) == .failed(retryAfter: 0))
        // Discord's headers pause the receiver even after a success, which is still an answer.
        #expect(RetryPolicy.verdict(.delivered(messageID: "1"), status: 200, pause: 2.5) == .answeredButPaused(2.5))
    }

    @Test func onlyDiscordReadsItsRateLimitHeaders() throws {
        let headers: [(name: String, value: String)] = [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset-After", "2.5")]
        let response = OutboundResponse(status: 200, headers: headers, body: [], transportError: nil, timedOut: false, seconds: 0.01)
        let templates = try TemplateSet()
        let url = Secret("https://example.invalid/hook")
        #expect(DiscordReceiver(name: "d", webhookURL: url, templates: templates).pause(after: response) == 2.5)
        #expect(SlackReceiver(name: "s", webhookURL: url, templates: templates).pause(after: response) == nil)
        #expect(try WebhookReceiver(name: "w", url: url, secret: nil, templates: templates).pause(after: response) == nil)
    }
}
