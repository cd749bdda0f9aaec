/// What may not be part of an identifier — ids, names and keys end up in URLs, log lines,
/// SQL lookups, pages and chat messages. Two rules:
/// - the C0 controls and DEL (U+0000–U+001F, U+007F), where a NUL or a newline cuts or forges
///   them, and which PostgreSQL's text cannot even hold (NUL): every identifier, always —
///   records stored long ago are read back through the same checks;
/// - what deceives rather than breaks (`Deceptive`): the C1 controls (U+0080–U+009F), the
///   line and paragraph separators (U+2028, U+2029) and the bidirectional overrides and
///   isolates (U+202A–U+202E, U+2066–U+2069), which make a name read as another on screen
///   (`deploy-‮gnp.exe`, the "Trojan Source" trick). Refused in what arrives new — events,
///   dataset items, token names — but not where a stored gate or dataset is read back, which
///   an older server may have accepted with one.
/// Free text (summaries, details, comments) may hold any of them and is stored as sent.
public enum ControlCharacters {
    @inlinable
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool { scalar.value < 0x20 || scalar.value == 0x7F }

    /// Checks UTF-8 bytes: a control character is always one byte, never part of a longer
    /// sequence, so no decoding is needed.
    @inlinable
    public static func contains(_ string: String) -> Bool {
        string.utf8.contains { $0 < 0x20 || $0 == 0x7F }
    }

    /// The same (what a lookup must never pass on), by the name its callers mean.
    @inlinable
    public static func containsC0(_ string: String) -> Bool { contains(string) }

    public static let described = "control characters (U+0000–U+001F, U+007F)"

    /// The `422` entry for an identifier holding a control character, or nil when it is clean.
    public static func fieldError(_ field: String, _ value: String, index: Int? = nil, line: Int? = nil) -> FieldError? {
        guard contains(value) else { return nil }
        return FieldError(index: index, line: line, field: field, detail: "must not contain \(described)")
    }

    public enum Deceptive {
        @inlinable
        public static func isDeceptive(_ scalar: Unicode.Scalar) -> Bool {
            let v = scalar.value
            return (0x80...0x9F).contains(v) || (0x2028...0x202E).contains(v) || (0x2066...0x2069).contains(v)
        }

        /// Checks UTF-8 bytes without decoding: a C1 control is C2 80–9F; the separators and
        /// bidi controls are E2 80 A8–AE and E2 81 A6–A9 (C2 and E2 are never continuation
        /// bytes, so a match cannot straddle two characters).
        @inlinable
        public static func contains(_ string: String) -> Bool {
            var previous: (UInt8, UInt8) = (0, 0)
            for byte in string.utf8 {
                if byte >= 0x80 {
                    if previous.1 == 0xC2 && byte <= 0x9F { return true }
                    if previous.0 == 0xE2 && previous.1 == 0x80 && (0xA8...0xAE).contains(byte) { return true }
                    if previous.0 == 0xE2 && previous.1 == 0x81 && (0xA6...0xA9).contains(byte) { return true }
                }
                previous = (previous.1, byte)
            }
            return false
        }

        public static let described = "control characters (U+0000–U+001F, U+007F–U+009F), line separators (U+2028, U+2029) or bidirectional overrides (U+202A–U+202E, U+2066–U+2069)"
    }

    /// The `422` entry for a new identifier (an event's, an item's, a token's name) holding a
    /// control character or a deceptive one, or nil when it is clean.
    public static func newIdentifierError(_ field: String, _ value: String, index: Int? = nil, line: Int? = nil) -> FieldError? {
        guard contains(value) || Deceptive.contains(value) else { return nil }
        return FieldError(index: index, line: line, field: field, detail: "must not contain \(Deceptive.described)")
    }

    /// The text without either kind (for a log line, an audit actor, a path).
    public static func removing(from string: String) -> String {
        guard contains(string) || Deceptive.contains(string) else { return string }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: string.unicodeScalars.lazy.filter { !isControl($0) && !Deceptive.isDeceptive($0) })
        return String(out)
    }
}
