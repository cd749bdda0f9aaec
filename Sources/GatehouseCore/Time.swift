import Foundation

/// A point in time as milliseconds since the Unix epoch: compact to store, cheap to compare,
/// and formatted as RFC 3339 in UTC on the way out.
public struct Timestamp: Sendable, Hashable, Comparable, Codable {
    public var milliseconds: Int64

    public init(milliseconds: Int64) { self.milliseconds = milliseconds }
    public init(_ date: Date) { self.milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded(.down)) }
    public static func now() -> Timestamp { Timestamp(Date()) }

    public var date: Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }
    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.milliseconds < b.milliseconds }

    public func adding(milliseconds delta: Int64) -> Timestamp { Timestamp(milliseconds: milliseconds + delta) }

    /// Parses RFC 3339 (`2026-11-29T10:00:00Z`, `…T10:00:00.123+02:00`); `t`/`z` and a space
    /// separator are accepted as RFC 3339 allows. Returns nil for anything else.
    public init?(rfc3339 text: String) {
        var text = text
        guard let value = text.withUTF8({ Timestamp.parse(Array($0)) }) else { return nil }
        self = value
    }

    private static func parse(_ b: [UInt8]) -> Timestamp? {
        var i = 0
        func number(_ count: Int) -> Int? {
            guard i + count <= b.count else { return nil }
            var value = 0
            for _ in 0..<count {
                let c = b[i]
                guard c >= 48, c <= 57 else { return nil }
                value = value * 10 + Int(c - 48)
                i += 1
            }
            return value
        }
        func expect(_ chars: UInt8...) -> Bool {
            guard i < b.count, chars.contains(b[i]) else { return false }
            i += 1
            return true
        }
        guard let year = number(4), expect(UInt8(ascii: "-")), let month = number(2), expect(UInt8(ascii: "-")),
              let day = number(2), expect(UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")),
              let hour = number(2), expect(UInt8(ascii: ":")), let minute = number(2), expect(UInt8(ascii: ":")),
              let second = number(2)
        else { return nil }
        guard (1...12).contains(month), day >= 1, day <= daysInMonth(year: year, month: month),
              hour <= 23, minute <= 59, second <= 60
        else { return nil }
        var millis = 0
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            var digits = 0
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                if digits < 3 { millis = millis * 10 + Int(b[i] - 48) }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            // Beyond milliseconds the digits are dropped (a range digits..<3 with more digits
            // than 3 would trap).
            if digits < 3 { for _ in digits..<3 { millis *= 10 } }
        }
        var offsetMinutes = 0
        guard i < b.count else { return nil }
        if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
            i += 1
        } else if b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
            let sign = b[i] == UInt8(ascii: "-") ? -1 : 1
            i += 1
            guard let oh = number(2), expect(UInt8(ascii: ":")), let om = number(2), oh <= 23, om <= 59 else { return nil }
            offsetMinutes = sign * (oh * 60 + om)
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = Int64(days) * 86400 + Int64(hour * 3600 + minute * 60 + min(second, 59)) - Int64(offsetMinutes * 60)
        let time = Timestamp(milliseconds: seconds * 1000 + Int64(millis))
        // An offset can carry a time past the years RFC 3339 writes (0000-01-01T00:00:00+23:59
        // is in year -1): it could not be written back as RFC 3339.
        return writable.contains(time.milliseconds) ? time : nil
    }

    /// The times RFC 3339 can write in UTC: years 0000 to 9999.
    static let writable = Int64(daysFromCivil(year: 0, month: 1, day: 1)) * 86_400_000...(Int64(daysFromCivil(year: 9999, month: 12, day: 31)) * 86_400_000 + 86_399_999)

    /// RFC 3339 in UTC with milliseconds: `2026-11-29T10:00:00.000Z`.
    public var rfc3339: String {
        let totalSeconds = milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000
        let ms = Int(milliseconds - totalSeconds * 1000)
        var days = Int(totalSeconds / 86400)
        var secondOfDay = Int(totalSeconds % 86400)
        if secondOfDay < 0 { secondOfDay += 86400; days -= 1 }
        let (y, m, d) = civilFromDays(days)
        func pad(_ v: Int, _ width: Int) -> String {
            let s = String(v)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(ms, 3))Z"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rfc3339)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let value = Timestamp(rfc3339: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an RFC 3339 time: \(text)")
        }
        self = value
    }
}

private func isLeap(_ y: Int) -> Bool { (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 }
private func daysInMonth(year: Int, month: Int) -> Int {
    switch month {
    case 2: return isLeap(year) ? 29 : 28
    case 4, 6, 9, 11: return 30
    default: return 31
    }
}

// Howard Hinnant's days_from_civil / civil_from_days: exact proleptic Gregorian conversion.
private func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let mp = (month + 9) % 12
    let doy = (153 * mp + 2) / 5 + day - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146097 + doe - 719468
}

private func civilFromDays(_ z0: Int) -> (Int, Int, Int) {
    let z = z0 + 719468
    let era = (z >= 0 ? z : z - 146096) / 146097
    let doe = z - era * 146097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
    let y = yoe + era * 400
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = doy - (153 * mp + 2) / 5 + 1
    let m = mp < 10 ? mp + 3 : mp - 9
    return (m <= 2 ? y + 1 : y, m, d)
}

/// A duration in Prometheus/Alertmanager syntax: `500ms`, `30s`, `5m`, `4h`, `1h30m`, `2d`, `1w`.
public struct GatehouseDuration: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var milliseconds: Int64
    public init(milliseconds: Int64) { self.milliseconds = milliseconds }
    public static func seconds(_ s: Int64) -> GatehouseDuration { .init(milliseconds: s * 1000) }
    public static func < (a: GatehouseDuration, b: GatehouseDuration) -> Bool { a.milliseconds < b.milliseconds }
    public var seconds: Double { Double(milliseconds) / 1000 }

    public init?(_ text: String) {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000), ("w", 604_800_000), ("y", 31_536_000_000)]
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        if rest == "0" { self.milliseconds = 0; return }
        var total: Int64 = 0
        var lastUnitIndex = -1
        while !rest.isEmpty {
            let digits = rest.prefix(while: { $0.isASCII && $0.isNumber })
            guard !digits.isEmpty, let value = Int64(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            // Longest unit first so "ms" is not read as "m" followed by garbage.
            guard let index = units.indices.filter({ rest.hasPrefix(units[$0].0) }).max(by: { units[$0].0.count < units[$1].0.count }) else { return nil }
            // Units must descend, as in Prometheus: "1h30m" yes, "30m1h" no.
            let order = [6, 5, 4, 3, 2, 1, 0]
            let rank = order[index]
            guard lastUnitIndex == -1 || rank > lastUnitIndex else { return nil }
            lastUnitIndex = rank
            rest = rest.dropFirst(units[index].0.count)
            let (product, overflow) = value.multipliedReportingOverflow(by: units[index].1)
            guard !overflow, product <= Self.maximum.milliseconds - total else { return nil }
            total += product
        }
        self.milliseconds = total
    }

    /// The longest duration written: 100 years. Durations are added to timestamps (and
    /// multiplied, for a group's ticks), and 292 million years overflowed that arithmetic —
    /// a crash at the group's second event.
    public static let maximum = GatehouseDuration(milliseconds: 100 * 31_536_000_000)

    public var description: String {
        var ms = milliseconds
        if ms == 0 { return "0s" }
        var out = ""
        for (unit, size) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] where ms >= size {
            out += "\(ms / size)\(unit)"
            ms %= size
        }
        return out
    }
}
