import GatehouseCore
@testable import GatehouseServer
import Logging
import Testing

/// The text log keeps one event on one line whatever its values hold (found by a hostile
/// review: a receiver's reply or a header with a newline wrote a forged line of its own).
struct LogFormatTests {
    func line(_ message: Logger.Message, _ metadata: Logger.Metadata) -> String {
        TextLogHandler.line(
            LogEvent(level: .warning, message: message, metadata: metadata, source: nil, file: #fileID, function: #function, line: #line),
            metadata: ["hb.request.id": "r1"], time: Timestamp(milliseconds: 0))
    }

    @Test func plainValuesStayAsTheyAre() {
        #expect(line("delivery dead", ["receiver": "team", "count": "3"]) == "1970-01-01T00:00:00.000Z WARNING delivery dead count=3 request_id=r1 receiver=team\n")
    }

    @Test func valuesThatCouldBreakTheLineAreQuotedAndEscaped() {
        let forged = "ok\n1970-01-01T00:00:00.000Z ERROR forged admin=true"
        let text = line("delivery failed\r\n", [
            "reason": .string(forged), "quote": #"say "hi" \ bye"#, "empty": "", "nul": "a\u{0}b", "sep": "x\u{2028}y", "csi": "\u{9B}31m", "spaced": "a b",
        ])
        #expect(text.filter { $0 == "\n" || $0 == "\r\n" }.count == 1 && text.hasSuffix("\n"))
        #expect(!text.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
        #expect(text.contains(#"WARNING delivery failed\r\n "#))
        #expect(text.contains(#"reason="ok\n1970-01-01T00:00:00.000Z ERROR forged admin=true""#))
        #expect(text.contains(#"quote="say \"hi\" \\ bye""#))
        #expect(text.contains(#"empty="""#))
        #expect(text.contains(#"nul="a\u{0}b""#))
        #expect(text.contains(#"sep="x\u{2028}y""#))
        #expect(text.contains(#"csi="\u{9b}31m""#))
        #expect(text.contains(#"spaced="a b""#))
    }
}
