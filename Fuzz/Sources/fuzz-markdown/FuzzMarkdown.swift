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

enum MarkdownCheck {
    static let allowed: Set<String> = ["p", "br", "ul", "li", "pre", "code", "strong", "em", "a"]

    /// Why `html` is not what the renderer may produce, or nil. Works on Unicode scalars, as
    /// an HTML parser does (a combining mark after `>` must not hide it).
    static func problem(in html: String) -> String? {
        var stack: [String] = []
        let scalars = Array(html.unicodeScalars)
        func text(_ slice: ArraySlice<Unicode.Scalar>) -> String { var v = String.UnicodeScalarView(); v.append(contentsOf: slice); return String(v) }
        var i = 0
        while let open = scalars[i...].firstIndex(of: "<") {
            guard let close = scalars[open...].firstIndex(of: ">") else { return "an unclosed <" }
            let tag = scalars[(open + 1)..<close]
            i = close + 1
            if tag.first == "/" {
                let name = text(tag.dropFirst())
                guard stack.last == name else { return "</\(name)> closes <\(stack.last ?? "nothing")>" }
                stack.removeLast()
                continue
            }
            let name = text(tag.prefix { $0 != " " })
            guard allowed.contains(name) else { return "a <\(name)> tag" }
            if name == "a" {
                let whole = text(tag)
                // The scheme is case-insensitive (hTtps:// is https://).
                guard whole.lowercased().hasPrefix("a href=\"https://") || whole.lowercased().hasPrefix("a href=\"http://") else { return "a link that is not http(s): <\(whole)>" }
                let attributes = tag.dropFirst("a href=\"".unicodeScalars.count)
                guard let quote = attributes.firstIndex(of: "\""), text(attributes[(quote + 1)...]) == " rel=\"noopener noreferrer nofollow\"" else {
                    return "a link with unexpected attributes: <\(whole)>"
                }
            } else if text(tag) != name {
                return "attributes on <\(name)>"
            }
            if name != "br" { stack.append(name) }
        }
        return stack.isEmpty ? nil : "<\(stack.last!)> is never closed"
    }
}

/// SwiftPM links every executable with `main` = `<module>_main`, which shadows libFuzzer's own
/// main; this is that function, and it hands over to libFuzzer's driver.
@_cdecl("fuzz_markdown_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzMarkdown($0, $1) }
}
