import CFuzzDriver
import GatehouseCore

/// The JSON parser: never crashes, and whatever it accepts serializes to text that parses
/// back to the same value (the server re-serializes what it stores and sends).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: start, count: count)
    guard let value = try? JSONValue.parse(bytes: bytes) else { return 0 }
    let text = value.serialized()
    guard let again = try? JSONValue.parse(text) else { fatalError("serialized JSON does not parse: \(text)") }
    guard again == value else { fatalError("round trip changed the value: \(text)") }
    guard again.serialized() == text else { fatalError("serialization is not stable: \(text)") }
    return 0
}

/// SwiftPM links every executable with `main` = `<module>_main`, which shadows libFuzzer's own
/// main; this is that function, and it hands over to libFuzzer's driver.
@_cdecl("fuzz_json_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzJSON($0, $1) }
}
