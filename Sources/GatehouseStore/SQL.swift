import GatehouseCore

/// The SQL dialects the store speaks. Store code is written once in the SQL both accept
/// (`?` placeholders, `INSERT … ON CONFLICT`, `RETURNING`, a `rowid` column for insertion
/// order); a session translates what little differs (placeholders, transactions, free text).
public enum SQLDialect: String, Sendable {
    case sqlite
    case postgres
}

/// One value bound to a statement.
public enum SQLValue: Sendable, Equatable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    /// Free text stored exactly as sent, NUL included (an event's summary, a silence's
    /// comment): SQLite keeps it as a BLOB when it holds a NUL, PostgreSQL in a BYTEA column.
    case freeText(String)
}

/// A Swift value a statement can bind.
public protocol SQLBindable {
    var sqlValue: SQLValue { get }
}

extension SQLValue: SQLBindable { public var sqlValue: SQLValue { self } }
extension String: SQLBindable { public var sqlValue: SQLValue { .text(self) } }
extension Substring: SQLBindable { public var sqlValue: SQLValue { .text(String(self)) } }
extension Int: SQLBindable { public var sqlValue: SQLValue { .int(Int64(self)) } }
extension Int64: SQLBindable { public var sqlValue: SQLValue { .int(self) } }
extension Double: SQLBindable { public var sqlValue: SQLValue { .double(self) } }
/// Booleans are 0 or 1 in an integer column on both databases.
extension Bool: SQLBindable { public var sqlValue: SQLValue { .int(self ? 1 : 0) } }
extension Optional: SQLBindable where Wrapped: SQLBindable {
    public var sqlValue: SQLValue { self?.sqlValue ?? .null }
}

/// Free text stored exactly as sent, NUL included (see `SQLValue.freeText`). Identifiers
/// never need this: they refuse control characters at validation.
struct StoredText: SQLBindable, Sendable {
    var string: String
    init(_ string: String) { self.string = string }
    var sqlValue: SQLValue { .freeText(string) }
}

/// The values bound to one statement, in placeholder order.
public struct SQLArguments: ExpressibleByArrayLiteral, Sendable {
    public var values: [SQLValue]

    public init(arrayLiteral elements: (any SQLBindable)?...) {
        values = elements.map { $0?.sqlValue ?? .null }
    }

    public init(_ elements: [some SQLBindable]) {
        values = elements.map(\.sqlValue)
    }

    public init(values: [SQLValue]) { self.values = values }

    public mutating func append(_ value: some SQLBindable) { values.append(value.sqlValue) }

    public static func + (a: SQLArguments, b: SQLArguments) -> SQLArguments { SQLArguments(values: a.values + b.values) }
    public static func += (a: inout SQLArguments, b: SQLArguments) { a.values += b.values }
}

/// One result row, read by column index while the query runs (queries name their columns:
/// no `SELECT *`, whose order differs between a table created whole and one migrated).
public protocol SQLRow {
    func isNull(_ index: Int) -> Bool
    /// 0 for NULL.
    func int64(_ index: Int) -> Int64
    func double(_ index: Int) -> Double
    /// "" for NULL; free text stored as bytes reads back as the text it was.
    func text(_ index: Int) -> String
}

/// A Swift value read from a result column.
public protocol SQLColumn {
    static func read(_ row: any SQLRow, _ index: Int) -> Self
}

extension String: SQLColumn { @inlinable public static func read(_ row: any SQLRow, _ i: Int) -> String { row.text(i) } }
extension Int64: SQLColumn { @inlinable public static func read(_ row: any SQLRow, _ i: Int) -> Int64 { row.int64(i) } }
extension Int: SQLColumn { @inlinable public static func read(_ row: any SQLRow, _ i: Int) -> Int { Int(row.int64(i)) } }
extension Double: SQLColumn { @inlinable public static func read(_ row: any SQLRow, _ i: Int) -> Double { row.double(i) } }
extension Bool: SQLColumn { @inlinable public static func read(_ row: any SQLRow, _ i: Int) -> Bool { row.int64(i) != 0 } }
extension Optional: SQLColumn where Wrapped: SQLColumn {
    @inlinable public static func read(_ row: any SQLRow, _ i: Int) -> Wrapped? { row.isNull(i) ? nil : Wrapped.read(row, i) }
}

extension SQLRow {
    // Inlined so that each call site reads its concrete type: called on an `any SQLRow`, the
    // generic subscript otherwise ran unspecialised, looking up `Optional<T>`'s metadata and
    // conformance for every column of every row (3 % of the server's CPU on the alerts load).
    @inlinable @inline(__always)
    public subscript<T: SQLColumn>(_ index: Int) -> T { T.read(self, index) }
}

/// A row held in memory, read as a result row is: what was just written, decoded by the same
/// code that decodes it when read back (the dispatcher's hand-off of new deliveries).
struct ValuesRow: SQLRow {
    let values: [SQLValue]
    init(_ values: [SQLValue]) { self.values = values }

    func isNull(_ index: Int) -> Bool { values[index] == .null }

    func int64(_ index: Int) -> Int64 {
        switch values[index] {
        case .int(let v): return v
        case .double(let v): return Int64(v)
        default: return 0
        }
    }

    func double(_ index: Int) -> Double {
        switch values[index] {
        case .int(let v): return Double(v)
        case .double(let v): return v
        default: return 0
        }
    }

    func text(_ index: Int) -> String {
        switch values[index] {
        case .text(let v), .freeText(let v): return v
        case .int(let v): return String(v)
        case .double(let v): return String(v)
        case .null: return ""
        }
    }
}

/// A connection inside a transaction (or a read snapshot): what store code runs statements
/// through. Never kept past the closure it was given to.
public protocol SQLSession: AnyObject {
    var dialect: SQLDialect { get }
    /// Runs a statement (prepared once and cached where the database allows); returns the
    /// number of rows it changed.
    @discardableResult
    func execute(_ sql: String, _ arguments: SQLArguments) throws -> Int
    /// Runs a query and calls `body` with each row, which is valid only during that call.
    func query(_ sql: String, _ arguments: SQLArguments, _ body: (any SQLRow) throws -> Void) throws
    /// Runs `body` in a savepoint: what it wrote is undone when it throws, and the enclosing
    /// transaction goes on.
    func savepoint<T>(_ body: () throws -> T) throws -> T
    /// Runs an `INSERT` (without `RETURNING`) and returns the integer key `column` of the row
    /// it inserted, or nil when it inserted none (`ON CONFLICT … DO NOTHING`). On SQLite
    /// `column` must be the table's rowid alias, read back with `sqlite3_last_insert_rowid`:
    /// there a `RETURNING` clause builds a temporary table for every statement.
    func insertedKey(_ sql: String, _ arguments: SQLArguments, column: String) throws -> Int64?
}

extension SQLSession {
    @discardableResult
    public func execute(_ sql: String) throws -> Int { try execute(sql, []) }

    public func insertedKey(_ sql: String, _ arguments: SQLArguments, column: String) throws -> Int64? {
        try value(Int64.self, sql + " RETURNING " + column, arguments)
    }

    public func all<T>(_ sql: String, _ arguments: SQLArguments = [], _ map: (any SQLRow) throws -> T) throws -> [T] {
        var out: [T] = []
        try query(sql, arguments) { out.append(try map($0)) }
        return out
    }

    public func first<T>(_ sql: String, _ arguments: SQLArguments = [], _ map: (any SQLRow) throws -> T) throws -> T? {
        var out: T?
        try query(sql, arguments) { row in if out == nil { out = try map(row) } }
        return out
    }

    /// The first column of the first row; nil when there is no row or the value is NULL.
    public func value<T: SQLColumn>(_ type: T.Type, _ sql: String, _ arguments: SQLArguments = []) throws -> T? {
        try first(sql, arguments) { row in row.isNull(0) ? nil : T.read(row, 0) } ?? nil
    }

    /// The first column of every row.
    public func values<T: SQLColumn>(_ type: T.Type, _ sql: String, _ arguments: SQLArguments = []) throws -> [T] {
        try all(sql, arguments) { T.read($0, 0) }
    }

    /// Whether the query returns a row.
    public func exists(_ sql: String, _ arguments: SQLArguments = []) throws -> Bool {
        try first(sql, arguments) { _ in true } ?? false
    }
}

/// The store's database, SQLite file or PostgreSQL server: snapshots to read, transactions to
/// write, and the group commit's transaction.
public protocol StoreDatabase: Sendable {
    var dialect: SQLDialect { get }
    var durability: Durability { get }
    /// The file path, or the server URL without its password (logs, `/readyz`).
    var location: String { get }

    /// A read, off the caller's thread: each statement sees one committed state (SQLite reads
    /// a whole snapshot; PostgreSQL runs the statements in autocommit, so a read of several may
    /// see a commit land between them — the store's multi-statement reads tolerate that).
    func read<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T
    /// A transaction of its own (not the group commit's), off the caller's thread.
    func write<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T
    /// The same, blocking the caller: command-line tools and start-up checks only.
    func readNow<T>(_ body: (any SQLSession) throws -> T) throws -> T
    func writeNow<T>(_ body: (any SQLSession) throws -> T) throws -> T

    /// One group commit, blocking the caller (the commit queue): `body` runs in a transaction
    /// that every process writing events serialises on, so event cursors grow in commit order.
    /// `relaxed` (nothing in it needs to survive a power cut on its own) may skip the fsync.
    func commit(relaxed: Bool, _ body: (any SQLSession) throws -> Void) throws

    /// Names of the migrations applied, in order.
    func appliedMigrations() throws -> [String]

    /// From now on a statement waiting for a lock another process holds fails at once
    /// (shutdown: the deadline has come).
    func stopWaitingForLocks()
}

extension StoreDatabase {
    /// A secret the server keeps for itself, made on first use (32 random bytes, hex); every
    /// process sharing the database reads the same one.
    public func serverSecret(_ name: String) throws -> [UInt8] {
        try writeNow { db in
            if let hex = try db.value(String.self, "SELECT value FROM server_secrets WHERE name = ?", [name]) {
                return Array(hexString: hex)
            }
            var bytes = [UInt8](repeating: 0, count: 32)
            var generator = SystemRandomNumberGenerator()
            for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &generator) }
            let hex = bytes.hexString
            // Another process may have made it meanwhile: keep the first, read it back.
            try db.execute("INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", [name, hex])
            return Array(hexString: try db.value(String.self, "SELECT value FROM server_secrets WHERE name = ?", [name]) ?? hex)
        }
    }
}
