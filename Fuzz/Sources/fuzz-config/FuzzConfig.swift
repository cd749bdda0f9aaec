import CFuzzDriver
import GatehouseConfigFile
import GatehouseCore

/// `gatehouse.yml` (routes, matchers, receivers, inhibit rules, timers): any text loads or is
/// refused with line-numbered issues, never a crash, and loading is deterministic; a config
/// that loads clean builds its routing tree.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    let loader = ConfigLoader(environment: ["SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x"])
    let first = loader.load(yaml: text)
    let second = loader.load(yaml: text)
    guard first.issues == second.issues else { fatalError("loading the same text twice gave different issues") }
    for issue in first.issues where issue.line < 0 { fatalError("an issue with a negative line: \(issue)") }
    if first.issues.isEmpty {
        let tree = RouteTree(first.config.route)
        let event = Event(id: "e", type: "run.failed", pipeline: "train", run: "r1", step: "fit", labels: [("team", "ml")], time: Timestamp(milliseconds: 0))
        _ = tree?.match(event)
    }
    return 0
}

@_cdecl("fuzz_config_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzConfig($0, $1) }
}
