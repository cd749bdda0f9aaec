import CFuzzDriver
import GatehouseCore

/// Dataset items as `POST /v1/datasets/{name}/items` reads them from NDJSON: the first byte
/// picks the task (classification, multilabel, spans), the rest is split into lines, each
/// parsed as JSON and validated as an item; labels are normalized against the item's text.
/// Nothing may crash, and an accepted item keeps a non-empty id and its text or image.
let specs: [DatasetSpec] = [
    DatasetSpec(name: "fuzz-classification", task: .classification, labels: ["pos", "neg", "neutral"]),
    DatasetSpec(name: "fuzz-multilabel", task: .multilabel, labels: ["a", "b", "c"]),
    DatasetSpec(name: "fuzz-spans", task: .spans, labels: ["PER", "ORG"]),
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzItems(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard count > 0, let start else { return 0 }
    let spec = specs[Int(start[0]) % specs.count]
    let body = UnsafeBufferPointer(start: start + 1, count: count - 1)
    // The streamed import's splitter gives the same numbered lines whatever the chunk
    // boundaries, and they are the body's non-blank newline-separated pieces.
    var whole = NDJSONLines()
    var all = whole.feed(body)
    if let last = whole.finish() { all.append(last) }
    var chunked = NDJSONLines()
    var pieces: [(line: Int, bytes: [UInt8])] = []
    var offset = 0, size = 1
    while offset < body.count {
        let end = min(body.count, offset + size)
        pieces += chunked.feed(body[offset..<end])
        offset = end
        size = size % 7 + 1
    }
    if let last = chunked.finish() { pieces.append(last) }
    guard all.map(\.line) == pieces.map(\.line), all.map(\.bytes) == pieces.map(\.bytes) else { fatalError("chunking changed the lines") }
    let reference = body.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated()
        .filter { !$0.element.allSatisfy { $0 == 0x20 || $0 == 0x0D || $0 == 0x09 } }
    guard reference.map({ $0.offset + 1 }) == all.map(\.line), reference.map({ Array($0.element) }) == all.map(\.bytes) else {
        fatalError("the splitter disagrees with a plain split")
    }
    for (_, line) in all.prefix(200) {
        guard let value = try? JSONValue.parse(bytes: line) else { continue }
        if case .success(let item) = DatasetItem.parse(value, for: spec) {
            guard !item.id.isEmpty else { fatalError("accepted an item without id") }
            let text = item.data["text"]?.stringValue
            if let label = value.objectValue?["label"] ?? value.objectValue?["prediction"] {
                _ = spec.normalize(label, text: text)
            }
            if let text {
                let n = text.utf16.count
                _ = DatasetSpec.slice(text, 0, n)
                _ = DatasetSpec.slice(text, n / 2, n)
            }
        }
        _ = DatasetSpec.parse(value)
    }
    return 0
}

/// SwiftPM links every executable with `main` = `<module>_main`, which shadows libFuzzer's own
/// main; this is that function, and it hands over to libFuzzer's driver.
@_cdecl("fuzz_items_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzItems($0, $1) }
}
