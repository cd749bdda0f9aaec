import GatehouseCore
@testable import GatehouseDelivery
import GatehouseStore
import Testing

/// What an event causes at delivery, decided in Delivery and persisted by the store as is.
struct DeliveryPlannerTests {
    static func planner() -> DeliveryPlanner {
        var root = GatehouseConfig.Route()
        root.receiver = "team"
        root.groupBy = ["pipeline"]
        var ops = GatehouseConfig.Route()
        ops.receiver = "ops"
        ops.matchers = [try! Matcher.parse(#"severity="critical""#)]
        ops.continueMatching = true
        root.routes = [ops]
        return DeliveryPlanner(routes: RouteTree(root), sendResolved: ["team"])
    }

    func event(_ type: String, severity: Severity = .error, attributes: JSONObject? = nil) -> Event {
        Event(id: "e-\(type)", type: type, pipeline: "train", run: "r1", severity: severity, attributes: attributes, time: Timestamp(milliseconds: 1000))
    }

    @Test func failuresAreGroupedAndMarkTheirPipelineFailing() {
        let plan = Self.planner().plan(event("step.failed"))
        #expect(plan.isFailure && !plan.resolvesFailures)
        #expect(plan.deliveries.count == 1)
        let team = plan.deliveries.first { $0.receiver == "team" }
        #expect(team?.groupKey.hasSuffix("pipeline=train") == true && team?.sendResolved == true && team?.alone == false)
        // A child route takes the critical one (the root only gets what no child took).
        let critical = Self.planner().plan(event("run.failed", severity: .critical))
        #expect(critical.deliveries.map(\.receiver) == ["ops"] && critical.deliveries[0].sendResolved == false)
    }

    @Test func aSuccessResolves() {
        let plan = Self.planner().plan(event("run.succeeded", severity: .info))
        #expect(!plan.isFailure && plan.resolvesFailures)
    }

    @Test func gateEventsAreMessagesOfTheirOwnAndEscalationsGoWhereTheGateSays() {
        let opened = Self.planner().plan(event("gate.opened"))
        #expect(opened.deliveries.allSatisfy { $0.alone && $0.groupKey == "gate|e-gate.opened" && $0.groupWait == .init(milliseconds: 0) })
        #expect(opened.deliveries.map(\.receiver) == ["team"])
        let escalated = Self.planner().plan(event("gate.escalated", attributes: JSONObject([("escalate_to", .array([.string("oncall"), .string("ops")]))])))
        #expect(escalated.deliveries.map(\.receiver) == ["oncall", "ops"])
        #expect(escalated.deliveries.allSatisfy { $0.route == "escalate_to" })
    }

    @Test func withoutRoutesNothingIsPlanned() {
        #expect(DeliveryPlanner(routes: nil).plan(event("run.failed")).deliveries.isEmpty)
    }
}
