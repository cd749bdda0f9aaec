/// Splits a streamed NDJSON body into lines as its chunks arrive, whatever their boundaries: a
/// line cut between two chunks is kept until its newline (or the end) comes. Lines are numbered
/// from 1; blank lines (spaces, tabs, a CR) are counted but not returned. The dataset import
/// reads its items through this, and Fuzz/fuzz-items checks that any chunking gives the same
/// lines. Event ingest reads a whole NDJSON body through `lines(in:)`.
///
/// A UTF-8 byte order mark opening the body is skipped (RFC 8259 lets a parser ignore it, and
/// files saved by Windows tools begin with one); anywhere else it is the line's own.
public struct NDJSONLines: Sendable {
    private var pending: [UInt8] = []
    private var line = 0
    /// Whether the start of the body has been seen (and a byte order mark there dropped).
    private var started = false

    static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]

    public init() {}

    /// The complete lines in `chunk` and what came before it.
    public mutating func feed<Bytes: Sequence<UInt8>>(_ chunk: Bytes) -> [(line: Int, bytes: [UInt8])] {
        pending.append(contentsOf: chunk)
        if !started {
            // Undecided while what came could still be the start of a mark.
            if pending.count < 3 && Self.byteOrderMark.starts(with: pending) { return [] }
            started = true
            if pending.starts(with: Self.byteOrderMark) { pending.removeFirst(3) }
        }
        var lines: [(line: Int, bytes: [UInt8])] = []
        let consumed = Self.scan(pending[...], firstLine: line + 1, final: false) { number, bytes in lines.append((number, Array(bytes))) }
        line += consumed.lines
        pending.removeFirst(consumed.bytes)
        return lines
    }

    /// The lines of a whole body (received at once), without copying them: what event ingest
    /// reads an NDJSON batch with.
    public static func lines(in body: ArraySlice<UInt8>) -> [(line: Int, bytes: ArraySlice<UInt8>)] {
        var lines: [(line: Int, bytes: ArraySlice<UInt8>)] = []
        let text = body.starts(with: byteOrderMark) ? body.dropFirst(3) : body
        _ = scan(text, firstLine: 1, final: true) { number, bytes in lines.append((number, bytes)) }
        return lines
    }

    /// Calls `line` for each non-blank line of `bytes`, numbered from `firstLine`; a last line
    /// without its newline counts only when `final`. Returns the lines and bytes consumed.
    static func scan(_ bytes: ArraySlice<UInt8>, firstLine: Int, final: Bool, _ line: (Int, ArraySlice<UInt8>) -> Void) -> (lines: Int, bytes: Int) {
        var start = bytes.startIndex
        var number = firstLine
        while let newline = bytes[start...].firstIndex(of: 0x0A) {
            if !isBlank(bytes[start..<newline]) { line(number, bytes[start..<newline]) }
            number += 1
            start = newline + 1
        }
        if final, start < bytes.endIndex {
            if !isBlank(bytes[start...]) { line(number, bytes[start...]) }
            number += 1
            start = bytes.endIndex
        }
        return (number - firstLine, start - bytes.startIndex)
    }

    /// The last line, when the body does not end with a newline.
    public mutating func finish() -> (line: Int, bytes: [UInt8])? {
        defer { pending.removeAll() }
        // A body shorter than a mark: it is what it is (a mark's first bytes alone are not one).
        started = true
        guard !pending.isEmpty else { return nil }
        line += 1
        return Self.isBlank(pending[...]) ? nil : (line, pending)
    }

    static func isBlank(_ bytes: ArraySlice<UInt8>) -> Bool {
        bytes.allSatisfy { $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }
    }
}
