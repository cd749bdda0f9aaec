import Foundation

/// `auto_approve.when`: a small boolean language over JSON values, e.g.
/// `attributes.auc >= 0.9 and labels.team == "risk"`. Paths, literals (numbers, strings,
/// true/false/null), comparisons (== != < <= > >=), `and`, `or`, `not` and parentheses —
/// nothing else, so a policy can never run code or loop.
public struct PolicyExpression: Sendable, Equatable, CustomStringConvertible {
    indirect enum Node: Sendable, Equatable {
        case literal(JSONValue)
        case path([String])
        case compare(String, Node, Node)
        case and(Node, Node)
        case or(Node, Node)
        case not(Node)
    }

    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public var description: String
    }

    let root: Node
    public let description: String

    public init(_ text: String) throws(ParseError) {
        guard text.count <= 1000 else { throw ParseError(description: "is longer than 1000 characters") }
        var parser = Parser(tokens: try Self.tokenize(text))
        let node = try parser.parseOr(depth: 0)
        if parser.position < parser.tokens.count { throw ParseError(description: "unexpected \"\(parser.tokens[parser.position].text)\"") }
        root = node
        description = text
    }

    /// True only when the expression evaluates to `true`; anything missing or mistyped is false.
    public func evaluate(_ context: JSONObject) -> Bool { Self.eval(root, context) == .bool(true) }

    static func eval(_ node: Node, _ context: JSONObject) -> JSONValue {
        switch node {
        case .literal(let v): return v
        case .path(let parts):
            var current: JSONValue = .object(context)
            for part in parts {
                guard let next = current.objectValue?[part] else { return .null }
                current = next
            }
            return current
        case .and(let a, let b): return .bool(eval(a, context) == .bool(true) && eval(b, context) == .bool(true))
        case .or(let a, let b): return .bool(eval(a, context) == .bool(true) || eval(b, context) == .bool(true))
        case .not(let a): return .bool(eval(a, context) != .bool(true))
        case .compare(let op, let a, let b):
            let l = eval(a, context), r = eval(b, context)
            if let x = l.doubleValue, let y = r.doubleValue { return .bool(compare(op, x, y)) }
            if let x = l.stringValue, let y = r.stringValue { return .bool(compare(op, x, y)) }
            // Mixed or structured values: only (in)equality means anything.
            switch op {
            case "==": return .bool(l == r)
            case "!=": return .bool(l != r)
            default: return .bool(false)
            }
        }
    }

    static func compare<T: Comparable>(_ op: String, _ x: T, _ y: T) -> Bool {
        switch op {
        case "==": x == y
        case "!=": x != y
        case "<": x < y
        case "<=": x <= y
        case ">": x > y
        default: x >= y
        }
    }

    struct Token: Equatable {
        enum Kind { case word, number, string, symbol }
        var kind: Kind
        var text: String
    }

    static func tokenize(_ text: String) throws(ParseError) -> [Token] {
        var tokens: [Token] = []
        let chars = Array(text)
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if c.isWhitespace { i += 1; continue }
            if c == "(" || c == ")" { tokens.append(Token(kind: .symbol, text: String(c))); i += 1; continue }
            if "=!<>".contains(c) {
                var op = String(c)
                if i + 1 < chars.count, chars[i + 1] == "=" { op.append("="); i += 1 }
                i += 1
                guard ["==", "!=", "<", "<=", ">", ">="].contains(op) else { throw ParseError(description: "unknown operator \"\(op)\" (use == != < <= > >=)") }
                tokens.append(Token(kind: .symbol, text: op))
                continue
            }
            if c == "\"" || c == "'" {
                var s = ""
                i += 1
                while i < chars.count, chars[i] != c {
                    if chars[i] == "\\", i + 1 < chars.count { i += 1 }
                    s.append(chars[i])
                    i += 1
                }
                guard i < chars.count else { throw ParseError(description: "unterminated string") }
                i += 1
                tokens.append(Token(kind: .string, text: s))
                continue
            }
            if c.isNumber || (c == "-" && i + 1 < chars.count && chars[i + 1].isNumber) {
                var s = String(c)
                i += 1
                while i < chars.count, chars[i].isNumber || chars[i] == "." || chars[i] == "e" || chars[i] == "E" { s.append(chars[i]); i += 1 }
                guard Double(s) != nil else { throw ParseError(description: "bad number \"\(s)\"") }
                tokens.append(Token(kind: .number, text: s))
                continue
            }
            if c.isLetter || c == "_" {
                var s = ""
                while i < chars.count, chars[i].isLetter || chars[i].isNumber || chars[i] == "_" || chars[i] == "." || chars[i] == "-" { s.append(chars[i]); i += 1 }
                tokens.append(Token(kind: .word, text: s))
                continue
            }
            throw ParseError(description: "unexpected character \"\(c)\"")
        }
        return tokens
    }

    struct Parser {
        let tokens: [Token]
        var position = 0

        mutating func peek() -> Token? { position < tokens.count ? tokens[position] : nil }

        mutating func parseOr(depth: Int) throws(ParseError) -> Node {
            guard depth < 32 else { throw ParseError(description: "is nested too deeply") }
            var node = try parseAnd(depth: depth)
            while peek() == Token(kind: .word, text: "or") {
                position += 1
                node = .or(node, try parseAnd(depth: depth))
            }
            return node
        }

        mutating func parseAnd(depth: Int) throws(ParseError) -> Node {
            var node = try parseNot(depth: depth)
            while peek() == Token(kind: .word, text: "and") {
                position += 1
                node = .and(node, try parseNot(depth: depth))
            }
            return node
        }

        mutating func parseNot(depth: Int) throws(ParseError) -> Node {
            if peek() == Token(kind: .word, text: "not") {
                position += 1
                return .not(try parseNot(depth: depth + 1))
            }
            if peek() == Token(kind: .symbol, text: "(") {
                position += 1
                let inner = try parseOr(depth: depth + 1)
                guard peek() == Token(kind: .symbol, text: ")") else { throw ParseError(description: "missing \")\"") }
                position += 1
                return inner
            }
            let left = try parseOperand()
            if let op = peek(), op.kind == .symbol, op.text != "(", op.text != ")" {
                position += 1
                return .compare(op.text, left, try parseOperand())
            }
            return left
        }

        mutating func parseOperand() throws(ParseError) -> Node {
            guard let token = peek() else { throw ParseError(description: "ends too early") }
            position += 1
            switch token.kind {
            case .number: return .literal(.number(token.text))
            case .string: return .literal(.string(token.text))
            case .word:
                switch token.text {
                case "true": return .literal(.bool(true))
                case "false": return .literal(.bool(false))
                case "null": return .literal(.null)
                case "and", "or", "not": throw ParseError(description: "unexpected \"\(token.text)\"")
                default:
                    let parts = token.text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
                    guard !parts.contains(where: \.isEmpty) else { throw ParseError(description: "bad path \"\(token.text)\"") }
                    return .path(parts)
                }
            case .symbol: throw ParseError(description: "unexpected \"\(token.text)\"")
            }
        }
    }
}
