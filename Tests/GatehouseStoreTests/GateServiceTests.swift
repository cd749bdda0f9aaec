import Foundation
import GRDB
import GatehouseCore
import GatehouseServices
@testable import GatehouseStore
import Testing

/// The gate use cases over the SQLite repository: what a gate does, as a pipeline and its
/// approvers see it, and what is kept of it.
struct GateServiceTests {
    static let t0 = Timestamp(milliseconds: 1_795_946_400_000)

    static func service(_ log: EventLog) -> GateService {
        GateService(repository: SQLGateRepository(log: log), bus: log.bus)
    }

    func store() throws -> (GateService, String) {
        let path = freshStoreLocation("gates")
        return (Self.service(EventLog(database: try openTestStore(path), bus: Bus())), path)
    }

    func spec(_ json: String) throws -> GateSpec { try GateSpec.parse(JSONValue.parse(json)).get() }

    func minutes(_ m: Int64) -> Timestamp { Self.t0.adding(milliseconds: m * 60_000) }

    @Test func theSameKeyResumesAndANewDigestSupersedes() async throws {
        let (gates, path) = try store()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let a = try spec(#"{"title": "Deploy?", "key": "r42/deploy", "subject": {"digest": "sha256:a"}}"#)
        let first = try await gates.open(a, requestedVia: "api", now: Self.t0)
        let again = try await gates.open(a, requestedVia: "api", now: minutes(1))
        #expect(first.created && !again.created && again.gate.id == first.gate.id)

        let b = try spec(#"{"title": "Deploy?", "key": "r42/deploy", "subject": {"digest": "sha256:b"}}"#)
        let second = try await gates.open(b, requestedVia: "api", now: minutes(2))
        #expect(second.created && second.gate.id != first.gate.id && second.gate.supersedes == first.gate.id)
        let old = try #require(try await gates.get(first.gate.id))
        #expect(old.state == .superseded && old.supersededBy == second.gate.id && old.outcome?.reason == .superseded)
        // Deciding the superseded gate is refused with its outcome.
        guard case .refused(.closed(let outcome), _) = try await gates.decide(first.gate.id, GateDecision(by: "web:bob", decision: "approve", via: "api", at: minutes(3))) else {
            Issue.record("a superseded gate took a decision"); return
        }
        #expect(outcome?.state == .superseded)
        let types = try await (gates.repository as! SQLGateRepository).log.events(EventFilter()).map(\.event.type)
        #expect(types == ["gate.opened", "gate.superseded", "gate.opened"])
    }

    /// Reminders, escalation and expiry, under a clock the test moves by hand.
    @Test func remindersEscalationAndExpiryFollowTheClock() async throws {
        let (gates, path) = try store()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let opened = try await gates.open(try spec("""
            {"title": "Ship?", "pipeline": "p", "timeout": "1h", "on_timeout": "reject", "remind_every": "10m",
             "escalate_after": "30m", "escalate_to": ["ops"]}
            """), requestedVia: "api", now: Self.t0)
        let id = opened.gate.id
        #expect(try await gates.nextDeadline() == minutes(10))
        #expect(try await gates.runDue(now: minutes(5)).isEmpty)
        #expect(try await gates.runDue(now: minutes(10)).count == 1)
        #expect(try await gates.nextDeadline() == minutes(20))
        // Down from minute 12 to 31: one reminder (no burst), and the escalation.
        _ = try await gates.runDue(now: minutes(31))
        var gate = try #require(try await gates.get(id))
        #expect(gate.reminders == 2 && gate.escalated && gate.nextReminderAt == minutes(41))
        _ = try await gates.runDue(now: minutes(41))
        _ = try await gates.runDue(now: minutes(75))
        gate = try #require(try await gates.get(id))
        #expect(gate.state == .rejected && gate.outcome?.reason == .timeout)
        // The outcome carries the deadline, not the moment the scheduler noticed.
        #expect(gate.outcome?.at == minutes(60))
        #expect(try await gates.nextDeadline() == nil)
        let events = try await (gates.repository as! SQLGateRepository).log.events(EventFilter())
        #expect(events.map(\.event.type) == ["gate.opened", "gate.reminder", "gate.escalated", "gate.reminder", "gate.reminder", "gate.rejected"])
        #expect(events[2].event.attributes?["escalate_to"] == .array([.string("ops")]))
        let actions = try await gates.audit(id).map(\.action)
        #expect(actions == ["opened", "reminded", "escalated", "reminded", "reminded", "expired"])
    }

    @Test func aGateThatExpiredWhileDownExpiresOnRestart() async throws {
        let path = freshStoreLocation("gates")
        defer { try? FileManager.default.removeItem(atPath: path) }
        var id = ""
        do {
            let gates = Self.service(EventLog(database: try openTestStore(path), bus: Bus()))
            id = try await gates.open(try spec(#"{"title": "t", "timeout": "5m", "on_timeout": "approve"}"#), requestedVia: "api", now: Self.t0).gate.id
        }
        let reopened = Self.service(EventLog(database: try openTestStore(path), bus: Bus()))
        #expect(try await reopened.nextDeadline() == minutes(5))
        _ = try await reopened.runDue(now: minutes(90))
        let gate = try #require(try await reopened.get(id))
        #expect(gate.state == .approved && gate.outcome?.reason == .timeout && gate.outcome?.at == minutes(5))
    }

    @Test func decisionsRefusalsAndTamperingAreInTheLedger() async throws {
        let (gates, path) = try store()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let id = try await gates.open(try spec(#"{"title": "t", "approvers": ["web:bob"]}"#), requestedVia: "api", now: Self.t0).gate.id
        _ = try await gates.decide(id, GateDecision(by: "web:eve", decision: "approve", via: "api", at: minutes(1)))
        _ = try await gates.decide(id, GateDecision(by: "web:bob", decision: "approve", via: "api", at: minutes(2)))
        let entries = try await gates.audit(id)
        #expect(entries.map(\.action) == ["opened", "refused", "decided", "closed"])
        #expect(entries[1].actor == "web:eve")
        #expect(entries.first?.prevHash == AuditLedger.genesis && entries[1].prevHash == entries[0].hash)
        #expect(try await gates.verifyAudit() == AuditLedger.Verification(entries: 4, firstBroken: nil))

        // Someone rewrites history: the refusal becomes an approval.
        try await (gates.repository as! SQLGateRepository).log.database.write { db in
            try db.execute("UPDATE audit SET detail = replace(detail, 'not an approver', 'an approver') WHERE seq = 2")
        }
        let broken = try await gates.verifyAudit()
        #expect(broken.firstBroken?.seq == 2 && broken.firstBroken?.reason.contains("edited") == true)
        // Deleting an entry breaks the link of the next one.
        try await (gates.repository as! SQLGateRepository).log.database.write { db in
            try db.execute("DELETE FROM audit WHERE seq = 2")
        }
        #expect(try await gates.verifyAudit().firstBroken?.seq == 2)
    }

    @Test func autoApproveReadsTheGateAndItsRunsEvent() async throws {
        let (gates, path) = try store()
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try await (gates.repository as! SQLGateRepository).log.append([Event(id: "m", type: "model.registered", pipeline: "train", run: "r9", attributes: JSONObject([("auc", .number("0.93"))]), time: Self.t0)])
        let policy = #"{"title": "t", "pipeline": "train", "run": "r9", "auto_approve": {"when": "attributes.auc >= 0.9 and event.attributes.auc >= 0.9"}}"#
        let approved = try await gates.open(try spec(policy), requestedVia: "api", now: minutes(1)).gate
        #expect(approved.state == .approved && approved.outcome?.by == "policy:auto" && approved.outcome?.reason == .policy)
        let other = try await gates.open(try spec(policy.replacingOccurrences(of: "r9", with: "r10")), requestedVia: "api", now: minutes(1)).gate
        #expect(other.state == .pending)
        // Only the server's own `gate.*` events are passed over, by exact prefix: a user's
        // `GATE.metrics` is the run's latest event on both stores (SQLite's LIKE ignored case).
        _ = try await (gates.repository as! SQLGateRepository).log.append([
            Event(id: "m11", type: "model.registered", pipeline: "train", run: "r11", attributes: JSONObject([("auc", .number("0.5"))]), time: Self.t0),
            Event(id: "g11", type: "GATE.metrics", pipeline: "train", run: "r11", attributes: JSONObject([("auc", .number("0.95"))]), time: Self.t0),
        ])
        let upper = try await gates.open(try spec(policy.replacingOccurrences(of: "r9", with: "r11")), requestedVia: "api", now: minutes(1)).gate
        #expect(upper.state == .approved)
        let deciding = GateService(repository: gates.repository, bus: Bus(), autoDecide: "reject")
        let auto = try await deciding.open(try spec(#"{"title": "t"}"#), requestedVia: "api", now: minutes(2)).gate
        #expect(auto.state == .rejected && auto.outcome?.by == "policy:auto-decide")
    }
}
