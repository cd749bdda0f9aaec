extension StringProtocol {
    /// Without leading and trailing spaces, tabs, CR and LF. Foundation's
    /// `trimmingCharacters(in:)` bridges through NSString and showed in the ingest profile;
    /// header values and media types only ever need these four ASCII characters trimmed.
    public var trimmingASCIIWhitespace: Substring {
        let text = self[...]
        func blank(_ c: Character) -> Bool { c == " " || c == "\t" || c == "\r" || c == "\n" || c == "\r\n" }
        guard let first = text.firstIndex(where: { !blank($0) }), let last = text.lastIndex(where: { !blank($0) }) else {
            return Substring()
        }
        return Substring(text[first...last])
    }
}
