import Foundation
import GRDB
import GRDBSQLite

/// The store's statements on a GRDB connection: every statement is a cached prepared statement
/// (no SQL is parsed twice on the hot paths); values are bound and columns read with SQLite's
/// C functions in place. GRDB opens, prepares and caches, and serialises access; its per-statement
/// machinery (`StatementArguments`, `Row`, validation, observation hooks, none of which the
/// store uses) was a third of the writer thread's time under batched ingest.
final class SQLiteSession: SQLSession {
    let db: Database
    init(_ db: Database) { self.db = db }

    /// Inside a transaction this session opened (`transaction`): then finding the connection
    /// back in autocommit means SQLite rolled the transaction back by itself (SQLITE_IOERR,
    /// SQLITE_FULL…), and every later statement must fail rather than commit on its own.
    private var inTransaction = false
    /// A savepoint could not be rolled back to: what it wrote must not be committed.
    private var aborted = false
    /// The error with which SQLite ended the transaction by itself. Every statement refused
    /// after it names it and carries its code: a full disk must not be reported as a mere abort
    /// to the other requests of a group commit (`isStorageFull`).
    private var rolledBackBy: DatabaseError?

    var dialect: SQLDialect { .sqlite }

    @discardableResult
    func execute(_ sql: String, _ arguments: SQLArguments) throws -> Int {
        try checkNotAborted()
        try run(statement(sql), arguments) { _ in }
        return db.changesCount
    }

    func insertedKey(_ sql: String, _ arguments: SQLArguments, column: String) throws -> Int64? {
        try execute(sql, arguments) > 0 ? sqlite3_last_insert_rowid(db.sqliteConnection) : nil
    }

    func query(_ sql: String, _ arguments: SQLArguments, _ body: (any SQLRow) throws -> Void) throws {
        try checkNotAborted()
        try run(statement(sql), arguments) { try body(SQLiteRow(statement: $0)) }
    }

    /// The cached statement, or a fresh one when the cached one is running (the same SQL run
    /// again from inside a row callback must not reset the outer query).
    private func statement(_ sql: String) throws -> Statement {
        let cached = try db.cachedStatement(sql: sql)
        return sqlite3_stmt_busy(cached.sqliteStatement) == 0 ? cached : try db.makeStatement(sql: sql)
    }

    private func checkNotAborted() throws {
        if aborted || (inTransaction && sqlite3_get_autocommit(db.sqliteConnection) != 0) {
            throw DatabaseError(
                resultCode: rolledBackBy?.resultCode ?? .SQLITE_ABORT,
                message: "the transaction was rolled back after an earlier error" + (rolledBackBy.map { ": \($0)" } ?? ""))
        }
    }

    // Transactions and savepoints run their control statements through the statement cache
    // too: GRDB's `inTransaction`, `inSavepoint` and `read` prepare `BEGIN`, `COMMIT`,
    // `SAVEPOINT`… anew every time, and parsing them was 2–3 % of the server's CPU.

    func savepoint<T>(_ body: () throws -> T) throws -> T {
        try execute("SAVEPOINT gatehouse", [])
        do {
            let value = try body()
            try execute("RELEASE gatehouse", [])
            return value
        } catch {
            // Undo what the savepoint wrote. When that fails (or SQLite rolled the whole
            // transaction back already), nothing more may commit: the session is aborted.
            if !(rollback("ROLLBACK TO gatehouse") && rollback("RELEASE gatehouse")) { aborted = true }
            throw error
        }
    }

    /// Runs `body` in a transaction of `kind` (`DEFERRED` for reads, `IMMEDIATE` for writes:
    /// SQLite's one writer is taken at the start, never upgraded midway), committed when it
    /// returns and rolled back when it throws.
    static func transaction<T>(_ db: Database, _ kind: TransactionKind, _ body: (SQLiteSession) throws -> T) throws -> T {
        let session = SQLiteSession(db)
        try session.execute(kind == .immediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED", [])
        session.inTransaction = true
        defer { session.inTransaction = false }
        let value: T
        do {
            value = try body(session)
        } catch {
            _ = session.rollback("ROLLBACK")
            throw error
        }
        do {
            try session.execute("COMMIT", [])
        } catch {
            _ = session.rollback("ROLLBACK")
            // A read that got its answer stands even if ending its snapshot failed.
            if kind == .deferred { return value }
            throw error
        }
        return value
    }

    enum TransactionKind { case deferred, immediate }

    /// Runs a rollback statement past the aborted check, once more if an interrupt (a
    /// cancelled access) cut the first try short; true when it took effect. A transaction left
    /// open would stop GRDB with a fatal error.
    private func rollback(_ sql: String) -> Bool {
        guard db.isInsideTransaction else { return false }
        for _ in 0..<2 {
            do {
                try run(statement(sql), []) { _ in }
                return true
            } catch is CancellationError {
                continue
            } catch {
                return false
            }
        }
        return false
    }

    /// Binds `arguments`, steps through every row, and resets the statement whatever happens
    /// (a statement left mid-rows would hold its read snapshot).
    ///
    /// Texts are bound in place (`SQLITE_STATIC`) from one scratch buffer that outlives the
    /// statement's use of them: with `SQLITE_TRANSIENT` SQLite copied each text into memory of
    /// its own, and the system's SQLite is built without its lookaside allocator, so that was a
    /// `malloc` and a `free` per text value — ~26 per alert, 1,000 per batch of 100 events, on
    /// the one writer thread.
    private func run(_ statement: Statement, _ arguments: SQLArguments, _ row: (OpaquePointer) throws -> Void) throws {
        let handle = statement.sqliteStatement
        let expected = Int(sqlite3_bind_parameter_count(handle))
        guard arguments.values.count == expected else {
            sqlite3_reset(handle)
            throw DatabaseError(
                resultCode: .SQLITE_MISUSE, message: "\(arguments.values.count) arguments for \(expected) parameters", sql: statement.sql)
        }
        var textBytes = 0
        for value in arguments.values {
            switch value {
            case .text(let s), .freeText(let s): textBytes += s.utf8.count
            default: break
            }
        }
        // On the stack when small; one allocation per statement otherwise. One byte more than
        // the texts need, so every text's start — an empty last one's too — is inside it.
        try withUnsafeTemporaryAllocation(byteCount: textBytes + 1, alignment: 1) { scratch in
            // Inside the buffer's lifetime: nothing bound may point at it once it is gone.
            defer {
                sqlite3_reset(handle)
                sqlite3_clear_bindings(handle)
            }
            var used = 0
            for (offset, value) in arguments.values.enumerated() {
                let code = Self.bind(value, to: handle, at: Int32(offset + 1), scratch: scratch, used: &used)
                guard code == SQLITE_OK else { throw error(code, statement) }
            }
            while true {
                let code = sqlite3_step(handle)
                switch code {
                case SQLITE_ROW: try row(handle)
                case SQLITE_DONE: return
                default:
                    let failure = error(code, statement)
                    if inTransaction, rolledBackBy == nil, sqlite3_get_autocommit(db.sqliteConnection) != 0, let failure = failure as? DatabaseError {
                        rolledBackBy = failure
                    }
                    throw failure
                }
            }
        }
    }

    /// SQLITE_INTERRUPT only comes of GRDB interrupting an access whose task was cancelled (a
    /// client gone, a shutdown): it is reported as the cancellation it is, not a failure.
    private func error(_ code: Int32, _ statement: Statement) -> any Error {
        if code == SQLITE_INTERRUPT { return CancellationError() }
        return DatabaseError(
            resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)), sql: statement.sql)
    }

    /// Texts are copied into `scratch` (from `used` on) and bound from there without another
    /// copy (`SQLITE_STATIC`): `run` keeps the buffer alive until the statement is reset.
    private static func bind(_ value: SQLValue, to handle: OpaquePointer, at index: Int32, scratch: UnsafeMutableRawBufferPointer, used: inout Int) -> Int32 {
        switch value {
        case .null: return sqlite3_bind_null(handle, index)
        case .int(let i): return sqlite3_bind_int64(handle, index, i)
        case .double(let d): return sqlite3_bind_double(handle, index, d)
        case .text(let s):
            let (start, count) = copy(s, into: scratch, used: &used)
            return sqlite3_bind_text64(handle, index, start.assumingMemoryBound(to: CChar.self), UInt64(count), staticValue, utf8)
        // Text holding a NUL is kept as a BLOB of its UTF-8 bytes, so that every reader (and
        // any C-string API on the way) keeps its full length; any other text stays TEXT.
        case .freeText(let s):
            let (start, count) = copy(s, into: scratch, used: &used)
            if count > 0, memchr(start, 0, count) != nil {
                return sqlite3_bind_blob64(handle, index, start, UInt64(count), staticValue)
            }
            return sqlite3_bind_text64(handle, index, start.assumingMemoryBound(to: CChar.self), UInt64(count), staticValue, utf8)
        }
    }

    /// `s`'s UTF-8 bytes appended to `scratch`. Never a NULL address, even for an empty text
    /// (a NULL pointer would bind SQL NULL): the buffer has a byte past the texts.
    private static func copy(_ s: String, into scratch: UnsafeMutableRawBufferPointer, used: inout Int) -> (UnsafeMutableRawPointer, Int) {
        var s = s
        let start = scratch.baseAddress! + used
        let count = s.withUTF8 { utf8 in
            // `run` sized the buffer from the same strings' UTF-8 counts.
            precondition(utf8.count < scratch.count - used, "a text outgrew the binding buffer")
            if let base = utf8.baseAddress, utf8.count > 0 { start.copyMemory(from: base, byteCount: utf8.count) }
            return utf8.count
        }
        used += count
        return (start, count)
    }

    /// SQLite's SQLITE_STATIC (a null destructor): the memory is the caller's and stays valid
    /// until the statement is reset.
    private static let staticValue: sqlite3_destructor_type? = nil
    /// The 64-bit binds (a value past 2 GiB is SQLite's SQLITE_TOOBIG, not a crash) name
    /// their encoding.
    private static let utf8 = UInt8(SQLITE_UTF8)
}

/// The current row of a running statement, read with SQLite's column functions (which
/// convert between storage classes as SQLite documents).
struct SQLiteRow: SQLRow {
    let statement: OpaquePointer

    func isNull(_ index: Int) -> Bool { sqlite3_column_type(statement, Int32(index)) == SQLITE_NULL }
    func int64(_ index: Int) -> Int64 { sqlite3_column_int64(statement, Int32(index)) }
    func double(_ index: Int) -> Double { sqlite3_column_double(statement, Int32(index)) }

    /// Free text with a NUL comes back from its BLOB; TEXT is UTF-8 of a known length.
    func text(_ index: Int) -> String {
        let column = Int32(index)
        if sqlite3_column_type(statement, column) == SQLITE_BLOB {
            guard let bytes = sqlite3_column_blob(statement, column) else { return "" }
            let count = Int(sqlite3_column_bytes(statement, column))
            return String(decoding: UnsafeRawBufferPointer(start: bytes, count: count), as: UTF8.self)
        }
        guard let text = sqlite3_column_text(statement, column) else { return "" }
        let count = Int(sqlite3_column_bytes(statement, column))
        return String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self)
    }
}
