import Foundation
import GatehouseStore
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// The store's statements on one PostgreSQL connection, blocking the calling thread (the
/// commit queue or a reader thread, never an event loop or Swift's cooperative pool): the
/// store's transactions are synchronous closures, on SQLite and here alike, so one body of
/// SQL serves both databases.
final class PostgresSession: SQLSession {
    let connection: PostgresConnection
    private let logger: Logger
    private var savepoints = 0

    init(_ connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    var dialect: SQLDialect { .postgres }

    @discardableResult
    func execute(_ sql: String, _ arguments: SQLArguments) throws -> Int {
        let result = try connection.query(Self.query(sql, arguments), logger: logger).wait()
        return result.metadata.rows ?? 0
    }

    func query(_ sql: String, _ arguments: SQLArguments, _ body: (any SQLRow) throws -> Void) throws {
        let result = try connection.query(Self.query(sql, arguments), logger: logger).wait()
        for row in result.rows { try body(PostgresSQLRow(row: row.makeRandomAccess())) }
    }

    /// Statements without arguments, several separated by `;` (migrations, transaction
    /// control): one after the other, since PostgresNIO sends each through the extended
    /// protocol, which takes one command at a time.
    func run(_ sql: String) throws {
        for statement in Self.statements(sql) {
            _ = try connection.query(PostgresQuery(unsafeSQL: statement), logger: logger).wait()
        }
    }

    /// `sql` split at the semicolons outside quotes.
    static func statements(_ sql: String) -> [String] {
        var out: [String] = []
        var current = ""
        var quote: Character?
        for c in sql {
            if let q = quote {
                if c == q { quote = nil }
            } else if c == "'" || c == "\"" {
                quote = c
            } else if c == ";" {
                out.append(current)
                current = ""
                continue
            }
            current.append(c)
        }
        out.append(current)
        return out.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
    }

    func savepoint<T>(_ body: () throws -> T) throws -> T {
        savepoints += 1
        let name = "gh_\(savepoints)"
        defer { savepoints -= 1 }
        try run("SAVEPOINT \(name)")
        do {
            let value = try body()
            try run("RELEASE SAVEPOINT \(name)")
            return value
        } catch {
            try run("ROLLBACK TO SAVEPOINT \(name)")
            throw error
        }
    }

    static func query(_ sql: String, _ arguments: SQLArguments) throws -> PostgresQuery {
        var binds = PostgresBindings(capacity: arguments.values.count)
        for value in arguments.values {
            switch value {
            case .null: binds.appendNull()
            case .int(let i): binds.append(i)
            case .double(let d): binds.append(d)
            case .text(let s): binds.append(s)
            // PostgreSQL's text cannot hold a NUL: free text lives in BYTEA columns.
            case .freeText(let s): binds.append(ByteBuffer(string: s))
            }
        }
        return PostgresQuery(unsafeSQL: Placeholders.numbered(sql), binds: binds)
    }
}

/// `?` and `?NNN` placeholders as PostgreSQL's `$n`, once per distinct statement.
enum Placeholders {
    private static let cache = Mutex<[String: String]>([:])

    static func numbered(_ sql: String) -> String {
        if let done = cache.withLock({ $0[sql] }) { return done }
        let translated = translate(sql)
        cache.withLock { cache in
            // Statements are written in the source, so the set is small; a bound keeps a
            // generated one (an IN list per size) from growing it without end.
            if cache.count > 4096 { cache.removeAll() }
            cache[sql] = translated
        }
        return translated
    }

    /// Skips quoted strings and identifiers, so a `?` inside them stays.
    static func translate(_ sql: String) -> String {
        var out = ""
        out.reserveCapacity(sql.utf8.count + 16)
        var next = 1
        var quote: Character?
        var chars = Array(sql)
        chars.append(" ")
        var i = 0
        while i < chars.count - 1 {
            let c = chars[i]
            if let q = quote {
                out.append(c)
                if c == q { quote = nil }
                i += 1
                continue
            }
            if c == "'" || c == "\"" {
                quote = c
                out.append(c)
                i += 1
                continue
            }
            if c == "?" {
                var j = i + 1
                var digits = ""
                while j < chars.count - 1, chars[j].isASCII, chars[j].isNumber {
                    digits.append(chars[j])
                    j += 1
                }
                if digits.isEmpty {
                    out += "$\(next)"
                    next += 1
                } else {
                    out += "$" + digits
                }
                i = j
                continue
            }
            out.append(c)
            i += 1
        }
        return out
    }
}

struct PostgresSQLRow: SQLRow {
    let row: PostgresRandomAccessRow

    func isNull(_ index: Int) -> Bool { row[index].bytes == nil }

    func int64(_ index: Int) -> Int64 {
        let cell = row[index]
        guard cell.bytes != nil else { return 0 }
        if let i = try? cell.decode(Int64.self) { return i }
        if let b = try? cell.decode(Bool.self) { return b ? 1 : 0 }
        if let s = try? cell.decode(String.self) { return Int64(s) ?? 0 }
        return 0
    }

    func double(_ index: Int) -> Double {
        let cell = row[index]
        guard cell.bytes != nil else { return 0 }
        if let d = try? cell.decode(Double.self) { return d }
        return Double(int64(index))
    }

    func text(_ index: Int) -> String {
        let cell = row[index]
        guard var bytes = cell.bytes else { return "" }
        if cell.dataType == .bytea { return bytes.readString(length: bytes.readableBytes) ?? "" }
        if let s = try? cell.decode(String.self) { return s }
        if let i = try? cell.decode(Int64.self) { return String(i) }
        return ""
    }
}
