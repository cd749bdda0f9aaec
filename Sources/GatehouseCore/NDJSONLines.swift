/// Splits a streamed NDJSON body into lines as its chunks arrive, whatever their boundaries: a
/// line cut between two chunks is kept until its newline (or the end) comes. Lines are numbered
/// from 1; blank lines (spaces, tabs, a CR) are counted but not returned. The dataset import
/// reads its items through this, and Fuzz/fuzz-items checks that any chunking gives the same
/// lines.
public struct NDJSONLines: Sendable {
    private var pending: [UInt8] = []
    private var line = 0

    public init() {}

    /// The complete lines in `chunk` and what came before it.
    public mutating func feed<Bytes: Sequence<UInt8>>(_ chunk: Bytes) -> [(line: Int, bytes: [UInt8])] {
        pending.append(contentsOf: chunk)
        var lines: [(line: Int, bytes: [UInt8])] = []
        var start = 0
        while let newline = pending[start...].firstIndex(of: 0x0A) {
            line += 1
            let bytes = pending[start..<newline]
            if !Self.isBlank(bytes) { lines.append((line, Array(bytes))) }
            start = newline + 1
        }
        pending.removeFirst(start)
        return lines
    }

    /// The last line, when the body does not end with a newline.
    public mutating func finish() -> (line: Int, bytes: [UInt8])? {
        defer { pending.removeAll() }
        guard !pending.isEmpty else { return nil }
        line += 1
        return Self.isBlank(pending[...]) ? nil : (line, pending)
    }

    static func isBlank(_ bytes: ArraySlice<UInt8>) -> Bool {
        bytes.allSatisfy { $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }
    }
}
