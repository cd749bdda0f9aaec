/// Alertmanager's routing tree applied to events. A route matches when all its matchers do; the
/// first matching child takes the event unless it says `continue`, and a route none of whose
/// children match takes the event itself. Children inherit the receiver, grouping and timers
/// of their parents.
public struct RouteTree: Sendable {
    public struct Node: Sendable {
        /// Position in the tree: "root", "root.0", "root.0.1" — stable for a given config.
        public var path: String
        public var matchers: [Matcher]
        public var receiver: String
        public var groupBy: GroupBy
        public var groupWait: GatehouseDuration
        public var groupInterval: GatehouseDuration
        public var repeatInterval: GatehouseDuration
        public var continueMatching: Bool
        public var fallback: String?
        public var children: [Node]
        public var line: Int
    }

    public enum GroupBy: Sendable, Equatable {
        /// Group by these fields/labels.
        case fields([String])
        /// `...`: every event is its own group.
        case everything
    }

    public static let defaultGroupWait = GatehouseDuration(milliseconds: 0)
    public static let defaultGroupInterval = GatehouseDuration.seconds(60)
    public static let defaultRepeatInterval = GatehouseDuration.seconds(4 * 3600)

    public var root: Node

    /// Builds the tree from the config; nil when the config has no route.
    public init?(_ route: GatehouseConfig.Route?) {
        guard let route, let receiver = route.receiver else { return nil }
        root = Self.compile(route, path: "root", parent: nil, inheritedReceiver: receiver)
    }

    private static func compile(_ route: GatehouseConfig.Route, path: String, parent: Node?, inheritedReceiver: String) -> Node {
        let groupBy: GroupBy = route.groupBy.map { $0.contains("...") ? .everything : .fields($0) } ?? parent?.groupBy ?? .fields([])
        var node = Node(
            path: path, matchers: route.matchers, receiver: route.receiver ?? inheritedReceiver, groupBy: groupBy,
            groupWait: route.groupWait ?? parent?.groupWait ?? defaultGroupWait,
            groupInterval: route.groupInterval ?? parent?.groupInterval ?? defaultGroupInterval,
            repeatInterval: route.repeatInterval ?? parent?.repeatInterval ?? defaultRepeatInterval,
            continueMatching: route.continueMatching, fallback: route.fallback ?? parent?.fallback, children: [], line: route.line)
        node.children = route.routes.enumerated().map { compile($0.element, path: "\(path).\($0.offset)", parent: node, inheritedReceiver: node.receiver) }
        return node
    }

    /// The routes that take `event`, in tree order.
    public func match(_ event: Event) -> [Node] {
        Self.match(root, event)
    }

    private static func match(_ node: Node, _ event: Event) -> [Node] {
        guard node.matchers.allSatisfy({ $0.matches(event) }) else { return [] }
        var taken: [Node] = []
        for child in node.children {
            let matches = match(child, event)
            if matches.isEmpty { continue }
            taken += matches
            if !child.continueMatching { break }
        }
        return taken.isEmpty ? [node] : taken
    }

    /// Every node, depth first.
    public var allNodes: [Node] {
        var out: [Node] = []
        func walk(_ n: Node) { out.append(n); n.children.forEach(walk) }
        walk(root)
        return out
    }
}

extension RouteTree.Node {
    /// The group an event falls into on this route: the route's path and the values of its
    /// `group_by` fields, as a stable string.
    public func groupKey(for event: Event) -> String {
        switch groupBy {
        case .everything:
            return path + "|" + event.id
        case .fields(let names):
            return path + "|" + names.map { "\($0)=\(Matcher.value(of: $0, in: event))" }.joined(separator: ",")
        }
    }
}

/// Alertmanager's inhibition: an event matching a rule's `target_matchers` is muted while an
/// event matching its `source_matchers` with the same values for `equal` is known — so a
/// `run.failed` mutes the `step.failed` storm of the same run.
public struct Inhibitor: Sendable {
    public var rules: [GatehouseConfig.InhibitRule]
    public init(rules: [GatehouseConfig.InhibitRule]) { self.rules = rules }

    /// The rule muting `target` given the `sources` seen, if any. An event never mutes itself.
    public func mutingRule(for target: Event, among sources: [Event]) -> (rule: Int, source: Event)? {
        for (index, rule) in rules.enumerated() where rule.targetMatchers.allSatisfy({ $0.matches(target) }) {
            for source in sources where source.id != target.id && rule.sourceMatchers.allSatisfy({ $0.matches(source) }) {
                if rule.equal.allSatisfy({ Matcher.value(of: $0, in: source) == Matcher.value(of: $0, in: target) }) {
                    return (index, source)
                }
            }
        }
        return nil
    }
}

/// A silence: events matching all its matchers between `startsAt` and `endsAt` are not sent.
public struct Silence: Sendable, Equatable {
    public var id: String
    public var matchers: [Matcher]
    public var startsAt: Timestamp
    public var endsAt: Timestamp
    public var createdBy: String
    public var comment: String

    public init(id: String, matchers: [Matcher], startsAt: Timestamp, endsAt: Timestamp, createdBy: String, comment: String) {
        self.id = id
        self.matchers = matchers
        self.startsAt = startsAt
        self.endsAt = endsAt
        self.createdBy = createdBy
        self.comment = comment
    }

    public func isActive(at time: Timestamp) -> Bool { startsAt <= time && time < endsAt }
    public func mutes(_ event: Event, at time: Timestamp) -> Bool { isActive(at: time) && matchers.allSatisfy { $0.matches(event) } }
}
