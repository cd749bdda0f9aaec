/// What may never be part of an identifier — ids, names and keys end up in URLs, log lines,
/// SQL lookups, pages and chat messages:
/// - the C0 and C1 controls (U+0000–U+001F, U+007F–U+009F) and the line and paragraph
///   separators (U+2028, U+2029), where a NUL or a line break cuts or forges them;
/// - the bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069), which make a
///   name read as another on screen (`deploy-‮gnp.exe`), the "Trojan Source" trick.
/// Free text (summaries, details, comments) may hold them and is stored exactly as sent.
public enum ControlCharacters {
    @inlinable
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        let v = scalar.value
        return v < 0x20 || (0x7F...0x9F).contains(v) || (0x2028...0x202E).contains(v) || (0x2066...0x2069).contains(v)
    }

    /// Checks UTF-8 bytes without decoding: a C0 control or DEL is one byte; a C1 control is
    /// C2 80–9F; the separators and bidi controls are E2 80 A8–AE and E2 81 A6–A9.
    @inlinable
    public static func contains(_ string: String) -> Bool {
        var utf8 = string.utf8.makeIterator()
        var previous: (UInt8, UInt8) = (0, 0)
        while let byte = utf8.next() {
            if byte < 0x20 || byte == 0x7F { return true }
            if byte >= 0x80 {
                if previous.1 == 0xC2 && byte <= 0x9F { return true }
                if previous.0 == 0xE2 && previous.1 == 0x80 && (0xA8...0xAE).contains(byte) { return true }
                if previous.0 == 0xE2 && previous.1 == 0x81 && (0xA6...0xA9).contains(byte) { return true }
            }
            previous = (previous.1, byte)
        }
        return false
    }

    /// The C0 controls and DEL alone: what a lookup must never pass on (PostgreSQL's text
    /// cannot hold a NUL). Lookups use this, not `contains`, so that an id stored before the
    /// rule widened still names its row.
    @inlinable
    public static func containsC0(_ string: String) -> Bool {
        string.utf8.contains { $0 < 0x20 || $0 == 0x7F }
    }

    public static func removing(from string: String) -> String {
        guard contains(string) else { return string }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: string.unicodeScalars.lazy.filter { !isControl($0) })
        return String(out)
    }

    public static let described = "control characters (U+0000–U+001F, U+007F–U+009F), line separators (U+2028, U+2029) or bidirectional overrides (U+202A–U+202E, U+2066–U+2069)"

    /// The `422` entry for an identifier holding a control character, or nil when it is clean.
    public static func fieldError(_ field: String, _ value: String, index: Int? = nil, line: Int? = nil) -> FieldError? {
        guard contains(value) else { return nil }
        return FieldError(index: index, line: line, field: field, detail: "must not contain \(described)")
    }
}
