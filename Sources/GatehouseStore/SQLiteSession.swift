import Foundation
import GRDB

/// The store's statements on a GRDB connection: every statement is a cached prepared statement
/// (no SQL is parsed twice on the hot paths), rows are read by index in place.
final class SQLiteSession: SQLSession {
    let db: Database
    init(_ db: Database) { self.db = db }

    var dialect: SQLDialect { .sqlite }

    @discardableResult
    func execute(_ sql: String, _ arguments: SQLArguments) throws -> Int {
        try db.cachedStatement(sql: sql).execute(arguments: Self.bind(arguments))
        return db.changesCount
    }

    func query(_ sql: String, _ arguments: SQLArguments, _ body: (any SQLRow) throws -> Void) throws {
        let rows = try Row.fetchCursor(db.cachedStatement(sql: sql), arguments: Self.bind(arguments))
        while let row = try rows.next() { try body(SQLiteRow(row: row)) }
    }

    func savepoint<T>(_ body: () throws -> T) throws -> T {
        var value: T?
        try db.inSavepoint {
            value = try body()
            return .commit
        }
        return value!
    }

    /// Arguments as GRDB takes them: through its initialiser for optional existentials, which
    /// maps with a closure. The one for a sequence of `DatabaseValue` maps with a key path that
    /// the runtime instantiated anew on every statement (2 % of the server's CPU).
    static func bind(_ arguments: SQLArguments) -> StatementArguments {
        StatementArguments(arguments.values.map { value -> (any DatabaseValueConvertible)? in
            switch value {
            case .null: return nil
            case .int(let i): return i.databaseValue
            case .double(let d): return d.databaseValue
            case .text(let s): return s.databaseValue
            // GRDB binds a String as a C string and reads TEXT back with String(cString:):
            // both stop at the first NUL. Text holding a NUL is therefore kept as a BLOB of its
            // UTF-8 bytes (SQLite keeps a blob's length); any other text stays TEXT.
            case .freeText(let s): return s.utf8.contains(0) ? Data(s.utf8).databaseValue : s.databaseValue
            }
        })
    }
}

struct SQLiteRow: SQLRow {
    let row: Row

    func isNull(_ index: Int) -> Bool { row.hasNull(atIndex: index) }
    func int64(_ index: Int) -> Int64 { (row[index] as Int64?) ?? 0 }
    func double(_ index: Int) -> Double { (row[index] as Double?) ?? 0 }

    func text(_ index: Int) -> String {
        let value: DatabaseValue = row[index]
        switch value.storage {
        case .string(let s): return s
        case .blob(let data): return String(decoding: data, as: UTF8.self)
        case .int64(let i): return String(i)
        case .double(let d): return String(d)
        case .null: return ""
        }
    }
}
