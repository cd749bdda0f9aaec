/// What the Markdown renderer may produce: only the allowed tags, properly nested, links to
/// http(s) with our `rel`. The fuzzer (Fuzz/Sources/fuzz-markdown) and the regression tests
/// check every rendering against it.
public enum MarkdownCheck {
    public static let allowed: Set<String> = ["p", "br", "ul", "li", "pre", "code", "strong", "em", "a"]

    /// Why `html` is not what the renderer may produce, or nil. Works on Unicode scalars, as
    /// an HTML parser does (a combining mark after `>` must not hide it).
    public static func problem(in html: String) -> String? {
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
