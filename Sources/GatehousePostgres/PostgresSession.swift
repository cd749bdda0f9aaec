import Foundation
import GatehouseCore
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
    let pooled: PooledConnection
    var connection: PostgresConnection { pooled.connection }
    private let logger: Logger
    private var savepoints = 0
    /// Set when a savepoint could not be rolled back to: the transaction is lost (PostgreSQL
    /// refuses everything after it), and every later statement fails with what failed first —
    /// a full disk stays a full disk (503), not an error about the rollback or the aborted
    /// transaction (500). Mirrors SQLiteSession's `aborted`.
    private(set) var lostBy: StoreFailure?
    /// Statements prepared per connection at most: SQL built per call (an IN list per size)
    /// beyond it runs unprepared.
    static let preparedLimit = 256

    init(_ pooled: PooledConnection, logger: Logger) {
        self.pooled = pooled
        self.logger = logger
    }

    var dialect: SQLDialect { .postgres }

    @discardableResult
    func execute(_ sql: String, _ arguments: SQLArguments) throws -> Int {
        if let lostBy { throw lostBy }
        return try send(try statement(sql, arguments)).metadata.rows ?? 0
    }

    func query(_ sql: String, _ arguments: SQLArguments, _ body: (any SQLRow) throws -> Void) throws {
        if let lostBy { throw lostBy }
        let result = try send(try statement(sql, arguments))
        for row in result.rows { try body(PostgresSQLRow(row: row.makeRandomAccess())) }
    }

    /// How long a statement may take before its connection is given up: a backstop for a
    /// server that stopped answering (a statement never legitimately runs this long here).
    static let deadline: DispatchTimeInterval = .seconds(60)

    /// Sends one statement and waits for its answer, at most `deadline`.
    private func send(_ query: PostgresQuery) throws -> PostgresQueryResult {
        let future = connection.query(query, logger: logger)
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<PostgresQueryResult, any Error>?>(nil)
        future.whenComplete { result in
            outcome.withLock { $0 = result }
            done.signal()
        }
        if done.wait(timeout: .now() + Self.deadline) == .timedOut {
            pooled.broken = true
            let _: EventLoopFuture<Void> = connection.close()
            throw StoreFailure("PostgreSQL did not answer within \(Self.deadline); the connection was closed")
        }
        return try Self.explained { try outcome.withLock { $0! }.get() }
    }

    /// PostgresNIO keeps the server's message out of an error's description (it may quote
    /// values); the store's errors reach the operator's log, where the SQLSTATE and message
    /// are what say what went wrong. Values stay out: the statement is not quoted.
    static func explained<T>(_ work: () throws -> T) throws -> T {
        do { return try work() } catch let error as PSQLError {
            let state = error.serverInfo?[.sqlState]
            let message = error.serverInfo?[.message] ?? "\(error.code)"
            throw StoreFailure("PostgreSQL: \(message) (SQLSTATE \(state ?? "-"))", sqlState: state)
        }
    }

    /// The statement to send: `EXECUTE gh_p<n>(…)` of a statement prepared once on this
    /// connection, so PostgreSQL parses and plans the store's statements once per connection,
    /// not once per call (that was most of its CPU under load); the plain statement with bound
    /// parameters past the limit. EXECUTE is a utility statement, which takes no bound
    /// parameters: its arguments are literals, quoted as PostgreSQL's quote_literal does.
    private func statement(_ sql: String, _ arguments: SQLArguments) throws -> PostgresQuery {
        let numbered = Placeholders.numbered(sql)
        var name = pooled.prepared[numbered]
        if name == nil, pooled.prepared.count < Self.preparedLimit, Self.preparable(numbered) {
            let fresh = "gh_p\(pooled.prepared.count + 1)"
            _ = try send(PostgresQuery(unsafeSQL: "PREPARE \(fresh) AS \(numbered)"))
            pooled.prepared[numbered] = fresh
            name = fresh
        }
        guard let name else { return try Self.query(sql, arguments) }
        // PostgreSQL's text cannot hold a NUL (free text that may is stored as bytes): refuse,
        // as the server would, rather than put one into the statement's own text.
        for case .text(let s) in arguments.values where s.utf8.contains(0) {
            throw StoreFailure("PostgreSQL: text cannot contain a NUL character (SQLSTATE 22021)", sqlState: "22021")
        }
        if arguments.values.isEmpty { return PostgresQuery(unsafeSQL: "EXECUTE \(name)") }
        return PostgresQuery(unsafeSQL: "EXECUTE \(name)(" + arguments.values.map(Self.literal).joined(separator: ", ") + ")")
    }

    /// What PREPARE takes: queries and data changes, not DDL or transaction control.
    static func preparable(_ sql: String) -> Bool {
        let head = sql.drop { $0.isWhitespace }.prefix(7).uppercased()
        return ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES"].contains { head.hasPrefix($0) }
    }

    /// A value as an SQL literal: text in an escape string (backslashes and quotes doubled,
    /// safe whatever `standard_conforming_strings` says), free text as BYTEA hex.
    static func literal(_ value: SQLValue) -> String {
        switch value {
        case .null: return "NULL"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? "'\(d)'::float8" : (d.isNaN ? "'NaN'::float8" : (d > 0 ? "'Infinity'::float8" : "'-Infinity'::float8"))
        case .text(let s):
            var out = "E'"
            out.reserveCapacity(s.utf8.count + 4)
            for c in s.unicodeScalars {
                switch c {
                case "'": out += "''"
                case "\\": out += "\\\\"
                default: out.unicodeScalars.append(c)
                }
            }
            return out + "'"
        case .freeText(let s):
            return "E'\\\\x" + s.utf8.hexString + "'::bytea"
        }
    }

    /// Statements without arguments, several separated by `;` (migrations, transaction
    /// control): one after the other, since PostgresNIO sends each through the extended
    /// protocol, which takes one command at a time.
    func run(_ sql: String) throws {
        for statement in Self.statements(sql) {
            _ = try send(PostgresQuery(unsafeSQL: statement))
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
        if let lostBy { throw lostBy }
        savepoints += 1
        let name = "gh_\(savepoints)"
        defer { savepoints -= 1 }
        try run("SAVEPOINT \(name)")
        do {
            let value = try body()
            try run("RELEASE SAVEPOINT \(name)")
            return value
        } catch {
            do {
                try run("ROLLBACK TO SAVEPOINT \(name)")
            } catch let rollback {
                let first = error as? StoreFailure
                lostBy = StoreFailure(
                    "the transaction was lost after an earlier error (\(first?.description ?? String(describing: error))); "
                        + "rolling back to its savepoint failed: \(rollback)",
                    sqlState: first?.sqlState)
            }
            throw error
        }
    }

    /// Ends the transaction. PostgreSQL answers the COMMIT of a transaction that had failed
    /// with ROLLBACK and no error, so that answer is an error here: nothing was committed.
    func commit() throws {
        if let lostBy { throw lostBy }
        let answer = try send(PostgresQuery(unsafeSQL: "COMMIT"))
        if answer.metadata.command == "ROLLBACK" {
            throw StoreFailure(
                "PostgreSQL: the transaction had failed and was rolled back at COMMIT (SQLSTATE 25P02)", sqlState: "25P02")
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
