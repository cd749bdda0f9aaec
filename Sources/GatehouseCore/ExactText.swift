#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A string compared byte for byte, as the databases compare ids and names (SQLite's BINARY,
/// PostgreSQL's `COLLATE "C"`). Swift's `String` equality is Unicode canonical equivalence:
/// "caf\u{E9}" and "cafe\u{301}" are equal to Swift and two different ids to the store, so a
/// map keyed by `String` would merge what the store keeps apart.
public struct ExactText: Hashable, Sendable {
    public let text: String
    public init(_ text: String) { self.text = text }

    /// The bytes compared in one `memcmp` (the UTF-8 view's `elementsEqual` went byte by byte
    /// through its indices: 2 % of the writer thread under batched ingest, in the run map).
    public static func == (a: ExactText, b: ExactText) -> Bool {
        var (x, y) = (a.text, b.text)
        return x.withUTF8 { p in
            y.withUTF8 { q in
                p.count == q.count && (p.isEmpty || memcmp(p.baseAddress!, q.baseAddress!, p.count) == 0)
            }
        }
    }

    public func hash(into hasher: inout Hasher) {
        var copy = text
        // With the length: bytes alone are not delimited, so in a key of two texts ("ab", "c")
        // and ("a", "bc") would always hash alike — a crafted batch could pile them up.
        copy.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)); hasher.combine($0.count) }
    }
}
