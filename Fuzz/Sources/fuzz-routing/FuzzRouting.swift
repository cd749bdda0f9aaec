import CFuzzDriver
import GatehouseCore

/// Matchers and the routing tree: each input line is a matcher list (the syntax of routes'
/// `matchers:`, silences and inhibit rules); line n becomes a route nested under line n-1
/// (indented lines) or beside it, with `continue` and `group_by` taken from the input, and
/// sample events are routed through the tree and an inhibit rule. Parsing never crashes,
/// matchers print back to the same matchers, and routing always reaches a receiver.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRouting(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    let events = [
        Event(id: "e1", type: "run.failed", pipeline: "train", run: "r1", step: "fit", summary: "s", labels: [("team", "ml")], time: .now()),
        Event(id: "e2", type: "step.succeeded", pipeline: "etl", labels: [("team", "data"), ("env", "prod")], time: .now()),
    ]
    var root = GatehouseConfig.Route()
    root.receiver = "root"
    root.groupBy = text.count % 3 == 0 ? ["..."] : ["pipeline", "run"]
    var parents: [Int] = []  // path to the last route added at each depth
    for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).prefix(32).enumerated() {
        guard let matchers = try? Matcher.parseList(String(line.drop { $0 == " " })) else { continue }
        for event in events { for m in matchers { _ = m.matches(event) } }
        for m in matchers {
            guard let again = try? Matcher.parse(m.description), again == m else { fatalError("matcher \(m) does not parse back from \(m.description)") }
        }
        var route = GatehouseConfig.Route()
        route.receiver = "r\(n)"
        route.matchers = matchers
        route.continueMatching = line.hasSuffix(" ")
        route.groupBy = line.contains("run") ? ["run"] : nil
        let depth = min(line.prefix { $0 == " " }.count, parents.count)
        parents = Array(parents.prefix(depth))
        func insert(_ r: inout GatehouseConfig.Route, _ path: ArraySlice<Int>) -> Int {
            guard let first = path.first, first < r.routes.count else { r.routes.append(route); return r.routes.count - 1 }
            return insert(&r.routes[first], path.dropFirst())
        }
        parents.append(insert(&root, parents[...]))
        var rule = GatehouseConfig.InhibitRule()
        rule.sourceMatchers = matchers
        rule.targetMatchers = matchers
        rule.equal = ["run"]
        _ = Inhibitor(rules: [rule]).mutingRule(for: events[1], among: [events[0]])
    }
    guard let tree = RouteTree(root) else { fatalError("no tree for a route with a receiver") }
    for event in events {
        let nodes = tree.match(event)
        guard !nodes.isEmpty else { fatalError("an event reached no receiver") }
        for node in nodes { _ = node.groupKey(for: event) }
    }
    return 0
}

/// SwiftPM links every executable with `main` = `<module>_main`, which shadows libFuzzer's own
/// main; this is that function, and it hands over to libFuzzer's driver.
@_cdecl("fuzz_routing_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzRouting($0, $1) }
}
