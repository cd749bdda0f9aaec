import GatehouseCore
import Testing

struct JSONTests {
    @Test func parsesAndSerialisesLosslessly() throws {
        let text = #"{"a":1,"b":[true,false,null],"c":"x\"y\\z\n","d":-0.5e10,"e":{"f":12345678901234567890},"g":"é✓😀"}"#
        let value = try JSONValue.parse(text)
        #expect(value.serialized() == text)
        #expect(value.objectValue?["e"]?.objectValue?["f"] == .number("12345678901234567890"))
    }

    @Test func decodesEscapesAndSurrogatePairs() throws {
        #expect(try JSONValue.parse(#""\u00e9\ud83d\ude00\/\t""#) == .string("é😀/\t"))
        #expect(throws: JSONParseError.self) { try JSONValue.parse(#""\ud83d""#) }
    }

    @Test(arguments: [
        ("", "unexpected end"), ("{", "expected a string key"), ("[1,]", "unexpected character"), ("01", "leading zero"),
        ("{\"a\" 1}", "expected ':'"), ("trux", "invalid literal"), ("\"a\nb\"", "control character"), ("1 2", "unexpected data"),
        ("-", "invalid number"), ("1.", "digits expected"),
    ])
    func rejectsMalformedInput(_ text: String, _ message: String) {
        do {
            _ = try JSONValue.parse(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.message.contains(message), "\(text): \(error.message)")
        }
    }

    @Test func reportsLineAndColumn() {
        do {
            _ = try JSONValue.parse("{\n  \"a\": 1,\n  \"b\": }")
            Issue.record("accepted")
        } catch {
            #expect(error.line == 3)
            #expect(error.column == 8)
        }
    }

    @Test func limitsNesting() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
    }

    @Test func duplicateKeysKeepTheLast() throws {
        let value = try JSONValue.parse(#"{"a":1,"a":2}"#)
        #expect(value.objectValue?.count == 1)
        #expect(value.objectValue?["a"] == .number("2"))
    }

    @Test func sortedKeysAreCanonical() throws {
        #expect(try JSONValue.parse(#"{"b":1,"a":{"d":1,"c":2}}"#).serialized(sortedKeys: true) == #"{"a":{"c":2,"d":1},"b":1}"#)
    }
}

struct TimeTests {
    @Test(arguments: [
        ("2026-11-29T10:00:00Z", Int64(1_795_946_400_000)),
        ("2026-11-29T10:00:00.123Z", 1_795_946_400_123),
        ("2026-11-29T12:00:00+02:00", 1_795_946_400_000),
        ("2026-11-29t10:00:00.1z", 1_795_946_400_100),
        // More than three fractional digits (nanoseconds, as Go and Python send) used to trap.
        ("2026-11-29T10:00:00.1234Z", 1_795_946_400_123),
        ("2026-11-29T10:00:00.123456789Z", 1_795_946_400_123),
        ("2026-11-29 05:30:00-04:30", 1_795_946_400_000),
        ("1970-01-01T00:00:00Z", 0),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
    ])
    func parsesRFC3339(_ text: String, _ ms: Int64) {
        #expect(Timestamp(rfc3339: text)?.milliseconds == ms)
    }

    @Test(arguments: ["2026-11-29", "2026-11-29T10:00:00", "2026-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2026-11-29T25:00:00Z", "yesterday", "2026-11-29T10:00:00.Z", "2026-11-29T10:00:00+0200"])
    func rejectsNonRFC3339(_ text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    @Test func formatsUTCWithMilliseconds() {
        #expect(Timestamp(milliseconds: 1_795_946_400_123).rfc3339 == "2026-11-29T10:00:00.123Z")
        #expect(Timestamp(milliseconds: -1).rfc3339 == "1969-12-31T23:59:59.999Z")
        for ms in stride(from: Int64(-10_000_000_000), to: 4_000_000_000_000, by: 97_654_321_987) {
            #expect(Timestamp(rfc3339: Timestamp(milliseconds: ms).rfc3339)?.milliseconds == ms)
        }
    }

    @Test func parsesDurations() {
        #expect(GatehouseDuration("30s")?.milliseconds == 30_000)
        #expect(GatehouseDuration("1h30m")?.milliseconds == 5_400_000)
        #expect(GatehouseDuration("500ms")?.milliseconds == 500)
        #expect(GatehouseDuration("2d")?.milliseconds == 172_800_000)
        #expect(GatehouseDuration("0")?.milliseconds == 0)
        #expect(GatehouseDuration("0s")?.milliseconds == 0)
        for bad in ["", "5", "5 minutes", "1m1h", "m", "-1s", "1.5h", "1x"] { #expect(GatehouseDuration(bad) == nil, "\(bad)") }
        #expect(GatehouseDuration("1h30m")?.description == "1h30m")
    }
}
