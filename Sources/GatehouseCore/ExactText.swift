/// A string compared byte for byte, as the databases compare ids and names (SQLite's BINARY,
/// PostgreSQL's `COLLATE "C"`). Swift's `String` equality is Unicode canonical equivalence:
/// "caf\u{E9}" and "cafe\u{301}" are equal to Swift and two different ids to the store, so a
/// map keyed by `String` would merge what the store keeps apart.
public struct ExactText: Hashable, Sendable {
    public let text: String
    public init(_ text: String) { self.text = text }

    public static func == (a: ExactText, b: ExactText) -> Bool { a.text.utf8.elementsEqual(b.text.utf8) }

    public func hash(into hasher: inout Hasher) {
        var copy = text
        copy.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}
