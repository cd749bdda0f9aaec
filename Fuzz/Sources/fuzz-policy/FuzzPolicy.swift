import CFuzzDriver
import GatehouseCore

/// `auto_approve.when` expressions: parsing never crashes (deep nesting included), evaluation
/// terminates, and an expression parses the same from its own text.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPolicy(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    guard let expression = try? PolicyExpression(text) else { return 0 }
    let context = JSONObject([
        ("type", .string("model.registered")), ("pipeline", .string("train")),
        ("labels", .object(JSONObject([("team", .string("risk")), ("env", .string("prod"))]))),
        ("attributes", .object(JSONObject([
            ("auc", .number("0.93")), ("n", .int(7)), ("name", .string("fraud")), ("ok", .bool(true)), ("none", .null),
            ("list", .array([.int(1), .string("a")])),
        ]))),
    ])
    let verdict = expression.evaluate(context)
    guard let again = try? PolicyExpression(expression.description), again == expression, again.evaluate(context) == verdict else {
        fatalError("the expression does not parse back the same: \(text)")
    }
    return 0
}

/// SwiftPM links every executable with `main` = `<module>_main`, which shadows libFuzzer's own
/// main; this is that function, and it hands over to libFuzzer's driver.
@_cdecl("fuzz_policy_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzPolicy($0, $1) }
}
