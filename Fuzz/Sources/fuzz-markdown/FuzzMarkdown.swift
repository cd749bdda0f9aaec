import CFuzzDriver
import GatehouseCore

/// The Markdown renderer of gate details (inserted raw into the gate page): whatever the
/// input, the output holds only the tags it means to make, properly nested, and links only
/// to http(s) URLs — no raw HTML from the input gets through.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMarkdown(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    let html = Markdown.html(text)
    if let problem = MarkdownCheck.problem(in: html) { fatalError("\(problem) in \(html.debugDescription) from \(text.debugDescription)") }
    return 0
}
