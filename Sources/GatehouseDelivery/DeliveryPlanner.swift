import GatehouseCore
import GatehouseStore

/// Routing at commit time: what an event causes at delivery. The event log runs it inside the
/// event's commit and persists the plan in the same transaction, so an acknowledged event's
/// deliveries are on disk with it.
public struct DeliveryPlanner: Sendable {
    public let routes: RouteTree?
    /// Receivers with `send_resolved`.
    public let sendResolved: Set<String>

    public init(routes: RouteTree?, sendResolved: Set<String> = []) {
        self.routes = routes
        self.sendResolved = sendResolved
    }

    /// One planned delivery per route the event reaches. Gate events are messages of their own
    /// (never digested or repeated: the gate's reminders do that); an escalation goes to the
    /// gate's `escalate_to` receivers instead of the routes. A `*.failed` event marks its
    /// pipeline failing; `run.succeeded` resolves it.
    @Sendable public func plan(_ event: Event) -> DeliveryPlan {
        DeliveryPlan(deliveries: deliveries(for: event), isFailure: event.type.hasSuffix(".failed"), resolvesFailures: event.type == "run.succeeded")
    }

    func deliveries(for event: Event) -> [PlannedDelivery] {
        if event.type.hasPrefix("gate.") {
            let key = "gate|\(event.id)"
            if event.type == "gate.escalated" {
                let targets = event.attributes?["escalate_to"]?.arrayValue?.compactMap(\.stringValue) ?? []
                return targets.map { PlannedDelivery(receiver: $0, route: "escalate_to", groupKey: key, groupWait: .init(milliseconds: 0), groupInterval: .init(milliseconds: 0), fallback: nil, alone: true) }
            }
            guard let routes else { return [] }
            return routes.match(event).map { node in
                PlannedDelivery(receiver: node.receiver, route: node.path, groupKey: key, groupWait: .init(milliseconds: 0), groupInterval: .init(milliseconds: 0), fallback: node.fallback, alone: true)
            }
        }
        guard let routes else { return [] }
        return routes.match(event).map { node -> PlannedDelivery in
            var plan = PlannedDelivery(
                receiver: node.receiver, route: node.path, groupKey: node.groupKey(for: event), groupWait: node.groupWait,
                groupInterval: node.groupInterval, fallback: node.fallback, alone: node.groupBy == .everything)
            plan.sendResolved = sendResolved.contains(node.receiver)
            plan.repeatInterval = node.repeatInterval
            return plan
        }
    }
}
