/// C0 controls (U+0000–U+001F) and DEL (U+007F): what may never be part of an identifier —
/// ids, names and keys end up in URLs, log lines, SQL lookups and chat messages, where a NUL
/// or a newline cuts or forges them. Free text (summaries, details, comments) may hold them
/// and is stored exactly as sent.
public enum ControlCharacters {
    @inlinable
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool { scalar.value < 0x20 || scalar.value == 0x7F }

    /// Checks UTF-8 bytes: a control character is always one byte, never part of a longer
    /// sequence, so no decoding is needed.
    @inlinable
    public static func contains(_ string: String) -> Bool {
        string.utf8.contains { $0 < 0x20 || $0 == 0x7F }
    }

    public static func removing(from string: String) -> String {
        guard contains(string) else { return string }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: string.unicodeScalars.lazy.filter { !isControl($0) })
        return String(out)
    }

    /// The `422` entry for an identifier holding a control character, or nil when it is clean.
    public static func fieldError(_ field: String, _ value: String, index: Int? = nil, line: Int? = nil) -> FieldError? {
        guard contains(value) else { return nil }
        return FieldError(index: index, line: line, field: field, detail: "must not contain control characters (U+0000–U+001F, U+007F)")
    }
}
