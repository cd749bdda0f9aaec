import Foundation

/// An Alertmanager matcher: `name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`.
/// Regexes are fully anchored, as in Alertmanager. Names are event fields (`type`, `pipeline`,
/// `run`, `step`, `severity`) or label names.
public struct Matcher: Sendable, Equatable, CustomStringConvertible {
    public enum Operator: String, Sendable { case equal = "=", notEqual = "!=", regexMatch = "=~", regexNoMatch = "!~" }

    public var name: String
    public var op: Operator
    public var value: String
    private let regex: AnchoredRegex?

    public init(name: String, op: Operator, value: String) throws(MatcherError) {
        guard EventValidator.isLabelName(name) else { throw MatcherError("invalid name \"\(name)\"") }
        self.name = name
        self.op = op
        self.value = value
        if op == .regexMatch || op == .regexNoMatch {
            do { regex = try AnchoredRegex(value) } catch { throw MatcherError("invalid regular expression \"\(value)\"") }
        } else {
            regex = nil
        }
    }

    public static func == (a: Matcher, b: Matcher) -> Bool { a.name == b.name && a.op == b.op && a.value == b.value }

    public var description: String {
        var quoted = ""
        JSONValue.writeString(value, to: &quoted)
        return "\(name)\(op.rawValue)\(quoted)"
    }

    /// The value an event offers for `name`; an absent field or label matches as "" (Alertmanager).
    public static func value(of name: String, in event: Event) -> String {
        switch name {
        case "type": return event.type
        case "pipeline": return event.pipeline
        case "run": return event.run ?? ""
        case "step": return event.step ?? ""
        case "severity": return event.severity.rawValue
        default: return event.label(name) ?? ""
        }
    }

    public func matches(_ event: Event) -> Bool { matches(value: Matcher.value(of: name, in: event)) }

    public func matches(value candidate: String) -> Bool {
        switch op {
        case .equal: return candidate == value
        case .notEqual: return candidate != value
        case .regexMatch: return regex!.matches(candidate)
        case .regexNoMatch: return !regex!.matches(candidate)
        }
    }

    /// Parses one matcher, or a braced list `{a="b", c=~"d"}`.
    public static func parseList(_ text: String) throws(MatcherError) -> [Matcher] {
        var s = Substring(text.trimmingCharacters(in: .whitespaces))
        if s.hasPrefix("{") {
            guard s.hasSuffix("}") else { throw MatcherError("missing closing '}' in \"\(text)\"") }
            s = s.dropFirst().dropLast()
        }
        var matchers: [Matcher] = []
        var rest = s
        while true {
            rest = rest.drop(while: { $0 == " " })
            if rest.isEmpty { break }
            let (matcher, remainder) = try parseOne(rest, whole: text)
            matchers.append(matcher)
            rest = remainder.drop(while: { $0 == " " })
            if rest.isEmpty { break }
            guard rest.first == "," else { throw MatcherError("expected ',' between matchers in \"\(text)\"") }
            rest = rest.dropFirst()
        }
        guard !matchers.isEmpty else { throw MatcherError("empty matcher") }
        return matchers
    }

    /// The scalar of `XXXX` (after `\\u`) and what follows it; a UTF-16 surrogate pair written
    /// as two escapes is one scalar, a lone surrogate U+FFFD. nil when not 4 hex digits.
    static func unicodeEscape(_ s: Substring.UnicodeScalarView) -> (Unicode.Scalar, Substring.UnicodeScalarView)? {
        func hex4(_ s: Substring.UnicodeScalarView) -> UInt32? {
            let digits = s.prefix(4)
            guard digits.count == 4 else { return nil }
            return UInt32(String(String.UnicodeScalarView(digits)), radix: 16)
        }
        guard let first = hex4(s) else { return nil }
        var rest = s.dropFirst(4)
        var value = first
        if (0xD800...0xDBFF).contains(first), rest.starts(with: "\\u".unicodeScalars), let low = hex4(rest.dropFirst(2)), (0xDC00...0xDFFF).contains(low) {
            value = 0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
            rest = rest.dropFirst(6)
        }
        return (Unicode.Scalar(value) ?? "\u{FFFD}", rest)
    }

    public static func parse(_ text: String) throws(MatcherError) -> Matcher {
        let list = try parseList(text)
        guard list.count == 1 else { throw MatcherError("expected one matcher in \"\(text)\"") }
        return list[0]
    }

    private static func parseOne(_ s: Substring, whole: String) throws(MatcherError) -> (Matcher, Substring) {
        let name = s.prefix(while: { $0.isLetter || $0.isNumber || $0 == "_" })
        guard !name.isEmpty else { throw MatcherError("expected a name in \"\(whole)\"") }
        var rest = s.dropFirst(name.count).drop(while: { $0 == " " })
        let op: Operator
        if rest.hasPrefix("=~") { op = .regexMatch } else if rest.hasPrefix("!~") { op = .regexNoMatch }
        else if rest.hasPrefix("!=") { op = .notEqual } else if rest.hasPrefix("=") { op = .equal }
        else { throw MatcherError("expected one of = != =~ !~ after \"\(name)\" in \"\(whole)\"") }
        rest = rest.dropFirst(op.rawValue.count).drop(while: { $0 == " " })
        var value = ""
        if rest.first == "\"" {
            // Unicode scalars, not Characters: a combining mark after a backslash or a quote
            // must not hide it. The escapes are JSON's, the ones `description` writes (a
            // stored silence is parsed back from its description); others stay as written.
            var scalars = rest.unicodeScalars.dropFirst()
            var out = String.UnicodeScalarView()
            var closed = false
            while let c = scalars.first {
                scalars = scalars.dropFirst()
                if c == "\\" {
                    guard let next = scalars.first else { break }
                    scalars = scalars.dropFirst()
                    switch next {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "r": out.append("\r")
                    case "b": out.append("\u{08}")
                    case "f": out.append("\u{0C}")
                    case "\"", "\\", "/": out.append(next)
                    case "u":
                        if let (scalar, remaining) = Self.unicodeEscape(scalars) {
                            out.append(scalar)
                            scalars = remaining
                        } else {
                            out.append("\\")
                            out.append(next)
                        }
                    default: out.append("\\"); out.append(next)
                    }
                } else if c == "\"" {
                    closed = true
                    break
                } else {
                    out.append(c)
                }
            }
            guard closed else { throw MatcherError("unterminated quoted value in \"\(whole)\"") }
            value = String(out)
            rest = Substring(scalars)
        } else {
            let raw = rest.prefix(while: { $0 != "," && $0 != "}" })
            value = raw.trimmingCharacters(in: .whitespaces)
            rest = rest.dropFirst(raw.count)
        }
        return (try Matcher(name: String(name), op: op, value: value), rest)
    }
}

public struct MatcherError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A regex anchored at both ends (`^(?:…)$`), compiled once.
final class AnchoredRegex: @unchecked Sendable {
    // NSRegularExpression is immutable once built and documented thread-safe for matching.
    private let regex: NSRegularExpression

    init(_ pattern: String) throws {
        regex = try NSRegularExpression(pattern: "^(?:\(pattern))$", options: [.dotMatchesLineSeparators])
    }

    func matches(_ s: String) -> Bool {
        regex.firstMatch(in: s, options: [], range: NSRange(s.startIndex..., in: s)) != nil
    }
}
