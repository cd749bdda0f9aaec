import CFuzzDriver
import GatehouseCore

/// Event intake in every format: the first byte picks the media type (JSON, NDJSON,
/// CloudEvents structured, batch, binary), the rest is the body. Accepted events must be
/// valid by the contract's own rules: a type, a pipeline, at most maxItems of them.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIntake(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard count > 0, let start else { return 0 }
    let modes: [EventIntake.MediaType] = [.json, .ndjson, .cloudEvent, .cloudEventBatch, .cloudEventBinary]
    let mode = modes[Int(start[0]) % modes.count]
    let body = Array(UnsafeBufferPointer(start: start + 1, count: count - 1))
    let intake = EventIntake(maxItems: 50)
    let headers: (String) -> String? = { name in
        switch name {
        case "ce-specversion": "1.0"
        case "ce-id": "fuzz-1"
        case "ce-source": "/pipelines/train"
        case "ce-type": "run.failed"
        case "ce-subject": "r1"
        default: nil
        }
    }
    if case .success(let events) = intake.events(from: body, mediaType: mode, headers: headers) {
        guard !events.isEmpty, events.count <= 50 else { fatalError("accepted \(events.count) events") }
        for event in events {
            guard !event.type.isEmpty, !event.pipeline.isEmpty else { fatalError("accepted an event without type or pipeline") }
        }
    }
    _ = EventIntake.mediaType(contentType: String(decoding: body.prefix(64), as: UTF8.self), hasCESpecVersion: count % 2 == 0)
    return 0
}

/// SwiftPM links every executable with `main` = `<module>_main`, which shadows libFuzzer's own
/// main; this is that function, and it hands over to libFuzzer's driver.
@_cdecl("fuzz_intake_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzIntake($0, $1) }
}
