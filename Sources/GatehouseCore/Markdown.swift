import Foundation

/// A small, safe Markdown to HTML renderer for gate details shown on the web page. Every
/// character of the input is HTML-escaped first, so raw HTML can never pass through; then
/// paragraphs, line breaks, `# headings`, `- ` lists, fenced and inline code, **bold**,
/// *emphasis* and [links](https://…) are recognised. Links keep only http(s) URLs (no
/// `javascript:`). Headings render three levels down (`#` is `<h3>`): the page's own `<h1>`
/// and `<h2>` stay above whatever a pipeline writes.
public enum Markdown {
    public static func html(_ text: String) -> String {
        var out = ""
        var paragraph: [String] = []
        var list: [String] = []
        var code: [String]?

        func flushParagraph() {
            if !paragraph.isEmpty { out += "<p>" + paragraph.map(inline).joined(separator: "<br>") + "</p>\n" }
            paragraph = []
        }
        func flushList() {
            if !list.isEmpty { out += "<ul>" + list.map { "<li>" + inline($0) + "</li>" }.joined() + "</ul>\n" }
            list = []
        }

        for rawLine in text.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(rawLine)
            if line.hasPrefix("```") {
                if let lines = code {
                    out += "<pre><code>" + lines.map(escape).joined(separator: "\n") + "</code></pre>\n"
                    code = nil
                } else {
                    flushParagraph()
                    flushList()
                    code = []
                }
                continue
            }
            if code != nil { code!.append(line); continue }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty {
                flushParagraph()
                flushList()
            } else if let (level, title) = heading(trimmed) {
                flushParagraph()
                flushList()
                out += "<h\(level)>" + inline(title) + "</h\(level)>\n"
            } else if trimmed.hasPrefix("- ") || trimmed.hasPrefix("* ") {
                flushParagraph()
                list.append(String(trimmed.dropFirst(2)))
            } else {
                flushList()
                paragraph.append(trimmed)
            }
        }
        if let lines = code { out += "<pre><code>" + lines.map(escape).joined(separator: "\n") + "</code></pre>\n" }
        flushParagraph()
        flushList()
        return out
    }

    /// `## Title` (1–6 `#`, then a space): the HTML level, `#` being 3 and anything past 6
    /// staying 6, and the title without closing `#`s.
    static func heading(_ line: String) -> (Int, String)? {
        let hashes = line.prefix { $0 == "#" }.count
        guard (1...6).contains(hashes) else { return nil }
        let rest = line.dropFirst(hashes)
        guard rest.first == " " else { return nil }
        var title = rest.trimmingCharacters(in: .whitespaces)
        while title.hasSuffix("#") { title.removeLast() }
        title = title.trimmingCharacters(in: .whitespaces)
        guard !title.isEmpty else { return nil }
        return (min(hashes + 2, 6), title)
    }

    /// By Unicode scalar, not Character: `"` or `<` followed by a combining mark is one
    /// Character that equals neither, and must be escaped all the same (found by
    /// Fuzz/fuzz-markdown).
    public static func escape(_ s: String) -> String {
        var out = String.UnicodeScalarView()
        for c in s.unicodeScalars {
            switch c {
            case "&": out.append(contentsOf: "&amp;".unicodeScalars)
            case "<": out.append(contentsOf: "&lt;".unicodeScalars)
            case ">": out.append(contentsOf: "&gt;".unicodeScalars)
            case "\"": out.append(contentsOf: "&quot;".unicodeScalars)
            case "'": out.append(contentsOf: "&#39;".unicodeScalars)
            default: out.append(c)
            }
        }
        return String(out)
    }

    /// Inline spans on one line: code first (its content is literal), then links, bold, em.
    static func inline(_ line: String) -> String {
        var out = ""
        var rest = Substring(line)
        while let tick = rest.firstIndex(of: "`") {
            let after = rest.index(after: tick)
            guard let close = rest[after...].firstIndex(of: "`") else { break }
            out += spans(String(rest[..<tick])) + "<code>" + escape(String(rest[after..<close])) + "</code>"
            rest = rest[rest.index(after: close)...]
        }
        return out + spans(String(rest))
    }

    static func spans(_ text: String) -> String {
        var out = ""
        var rest = Substring(text)
        // [label](url)
        while let open = rest.firstIndex(of: "["),
              let closeLabel = rest[open...].firstIndex(of: "]"),
              rest.index(after: closeLabel) < rest.endIndex, rest[rest.index(after: closeLabel)] == "(",
              let closeURL = rest[closeLabel...].firstIndex(of: ")") {
            let label = String(rest[rest.index(after: open)..<closeLabel])
            let url = String(rest[rest.index(closeLabel, offsetBy: 2)..<closeURL])
            out += emphasis(String(rest[..<open]))
            let lower = url.lowercased()
            if (lower.hasPrefix("https://") || lower.hasPrefix("http://")) && !url.contains(where: { $0.isWhitespace }) {
                out += "<a href=\"" + escape(url) + "\" rel=\"noopener noreferrer nofollow\">" + emphasis(label) + "</a>"
            } else {
                out += emphasis(String(rest[open...closeURL]))
            }
            rest = rest[rest.index(after: closeURL)...]
        }
        return out + emphasis(String(rest))
    }

    /// `**bold**` first, then `*em*` within each piece separately (inside and between the bold
    /// spans), so the tags always nest: `**a*b**c*` must not become
    /// `<strong>a<em>b</strong>c</em>` (found by Fuzz/fuzz-markdown).
    static func emphasis(_ text: String) -> String {
        replacePairs(in: escape(text), marker: "**", open: "<strong>", close: "</strong>") { piece in
            replacePairs(in: piece, marker: "*", open: "<em>", close: "</em>") { $0 }
        }
    }

    /// Pairs of `marker` become `open`…`close`; `inner` renders every piece of text between
    /// markers (never across one), unpaired markers stay as they are.
    static func replacePairs(in text: String, marker: String, open: String, close: String, inner: (String) -> String) -> String {
        let parts = text.components(separatedBy: marker)
        guard parts.count >= 3 else { return inner(text) }
        var out = inner(parts[0])
        var i = 1
        while i < parts.count {
            if i + 1 < parts.count, !parts[i].isEmpty {
                out += open + inner(parts[i]) + close + inner(parts[i + 1])
                i += 2
            } else {
                out += marker + inner(parts[i])
                i += 1
            }
        }
        return out
    }
}
