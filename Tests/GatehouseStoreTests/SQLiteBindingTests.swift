import Foundation
import GRDB
import GRDBSQLite
import GatehouseCore
@testable import GatehouseStore
import Testing

/// Texts are bound in place from a scratch buffer (`SQLITE_STATIC`, SQLiteSession.run): these
/// check that every value arrives whole, in its own parameter, with its storage class —
/// whatever the mix, the sizes and the nesting of statements.
struct SQLiteBindingTests {
    private func withDatabase(_ body: (GatehouseDatabase) throws -> Void) throws {
        let path = NSTemporaryDirectory() + "gatehouse-binding-\(UUID().uuidString).db"
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let database = try GatehouseDatabase(path: path)
        try database.writeNow { db in _ = try db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v, kind TEXT)") }
        try body(database)
    }

    @Test func textsOfEveryShapeRoundTripWithTheirStorageClass() throws {
        let large = String(repeating: "ü€𝄞x", count: 20_000)  // ~200 KB: past any stack buffer
        let values: [(SQLValue, String, String)] = [
            (.text(""), "", "text"),  // empty is '' — not NULL
            (.text("a"), "a", "text"),  // small (inline) string
            (.text("caf\u{E9}"), "caf\u{E9}", "text"),
            (.text("cafe\u{301}"), "cafe\u{301}", "text"),  // canonically equal to the one above, other bytes
            (.text(large), large, "text"),
            (.freeText("line\u{0}after"), "line\u{0}after", "blob"),  // a NUL: kept whole as a BLOB
            (.freeText("no nul here"), "no nul here", "text"),
            (.freeText(""), "", "text"),
        ]
        try withDatabase { database in
            try database.writeNow { db in
                for (k, (value, _, _)) in values.enumerated() {
                    _ = try db.execute("INSERT INTO t (k, v) VALUES (?, ?)", SQLArguments(values: [.int(Int64(k)), value]))
                }
            }
            let stored = try database.readNow { db in
                try db.all("SELECT k, v, typeof(v), length(CAST(v AS BLOB)) FROM t ORDER BY k") { row in
                    (row.int64(0), row.text(1), row.text(2), row.int64(3))
                }
            }
            #expect(stored.count == values.count)
            for (k, (_, text, kind)) in values.enumerated() {
                #expect(stored[k].1.utf8.elementsEqual(text.utf8), "value \(k)")
                #expect(stored[k].2 == kind, "value \(k)")
                #expect(stored[k].3 == Int64(text.utf8.count), "value \(k)")
            }
        }
    }

    @Test func emptyTextsAtTheBufferEndStayEmptyTexts() throws {
        // The last texts of a statement start at the end of the scratch buffer.
        try withDatabase { database in
            try database.writeNow { db in
                _ = try db.execute("INSERT INTO t (k, v, kind) VALUES (1, ?, ?), (2, ?, ?), (3, ?, ?)", SQLArguments(values: [
                    .text("abc"), .text(""), .freeText("a\u{0}b"), .text("x"), .freeText(""), .freeText(""),
                ]))
            }
            let stored = try database.readNow { db in
                try db.all("SELECT typeof(v), length(CAST(v AS BLOB)), typeof(kind), length(CAST(kind AS BLOB)) FROM t ORDER BY k") { row in
                    [row.text(0), String(row.int64(1)), row.text(2), String(row.int64(3))]
                }
            }
            #expect(stored == [["text", "3", "text", "0"], ["blob", "3", "text", "1"], ["text", "0", "text", "0"]])
        }
    }

    /// What the statement cached for `sql` on the writer has bound now, as SQLite expands it.
    private func boundNow(_ database: GatehouseDatabase, _ sql: String) throws -> (String, Bool) {
        try database.pool.writeWithoutTransaction { db in
            let statement = try db.cachedStatement(sql: sql).sqliteStatement
            guard let expanded = sqlite3_expanded_sql(statement) else { return ("", false) }
            defer { sqlite3_free(expanded) }
            return (String(cString: expanded), sqlite3_stmt_busy(statement) != 0)
        }
    }

    @Test func noBindingOutlivesItsStatementWhateverEndsIt() throws {
        try withDatabase { database in
            let insert = "INSERT INTO t (k, v) VALUES (?, ?)"
            try database.writeNow { db in _ = try db.execute(insert, [Int64(1), "first"]) }
            #expect(try boundNow(database, insert) == ("INSERT INTO t (k, v) VALUES (NULL, NULL)", false))
            // A step that fails (a primary-key clash).
            #expect(throws: (any Error).self) { try database.writeNow { db in _ = try db.execute(insert, [Int64(1), "clash"]) } }
            #expect(try boundNow(database, insert) == ("INSERT INTO t (k, v) VALUES (NULL, NULL)", false))
            // A row callback that throws mid-rows.
            let select = "SELECT v FROM t WHERE v >= ?"
            struct Stop: Error {}
            #expect(throws: Stop.self) { try database.writeNow { db in try db.query(select, ["a"]) { _ in throw Stop() } } }
            #expect(try boundNow(database, select) == ("SELECT v FROM t WHERE v >= NULL", false))
            // Too few arguments: refused before anything is bound.
            #expect(throws: (any Error).self) { try database.writeNow { db in _ = try db.execute(insert, [Int64(2)]) } }
            #expect(try boundNow(database, insert) == ("INSERT INTO t (k, v) VALUES (NULL, NULL)", false))
            // And the statement still works.
            try database.writeNow { db in _ = try db.execute(insert, [Int64(2), "second"]) }
            #expect(try database.readNow { db in try db.all("SELECT v FROM t ORDER BY k") { $0.text(0) } } == ["first", "second"])
        }
    }

    @Test func manyTextsInOneStatementEachLandInTheirOwnColumn() throws {
        try withDatabase { database in
            // 400 rows × (key, text, text) in one statement: 800 texts from one scratch buffer,
            // mixed with integers and NULLs between them.
            let rows = 400
            var values: [SQLValue] = []
            for i in 0..<rows {
                values += [.int(Int64(i)), i % 7 == 0 ? .null : .text("value-\(i)-" + String(repeating: "z", count: i % 50)), .text(i.isMultiple(of: 2) ? "even" : "odd")]
            }
            let sql = "INSERT INTO t (k, v, kind) VALUES " + Array(repeating: "(?, ?, ?)", count: rows).joined(separator: ", ")
            let inserted = try database.writeNow { db in try db.execute(sql, SQLArguments(values: values)) }
            #expect(inserted == rows)
            let stored = try database.readNow { db in
                try db.all("SELECT k, v, kind, v IS NULL FROM t ORDER BY k") { row in (row.int64(0), row.text(1), row.text(2), row.int64(3)) }
            }
            #expect(stored.count == rows)
            for (i, row) in stored.enumerated() {
                #expect(row.0 == Int64(i))
                if i % 7 == 0 { #expect(row.3 == 1) } else { #expect(row.1 == "value-\(i)-" + String(repeating: "z", count: i % 50)) }
                #expect(row.2 == (i.isMultiple(of: 2) ? "even" : "odd"))
            }
        }
    }

    @Test func theSameStatementRunFromInsideItsOwnRowsKeepsBothBindings() throws {
        try withDatabase { database in
            try database.writeNow { db in
                for k in 0..<5 { _ = try db.execute("INSERT INTO t (k, v) VALUES (?, ?)", [Int64(k), "outer-\(k)"]) }
            }
            // The inner query runs the same SQL on a fresh statement while the outer one is
            // mid-rows, with its own texts bound: neither may see the other's.
            let pairs = try database.readNow { db in
                var pairs: [(String, String)] = []
                try db.query("SELECT v FROM t WHERE v >= ? ORDER BY k", ["outer-"]) { row in
                    let outer = row.text(0)
                    let inner = try db.first("SELECT v FROM t WHERE v >= ? ORDER BY k", [outer]) { $0.text(0) }
                    pairs.append((outer, inner ?? "missing"))
                }
                return pairs
            }
            #expect(pairs.map(\.0) == (0..<5).map { "outer-\($0)" })
            #expect(pairs.map(\.1) == pairs.map(\.0))
        }
    }

    @Test func aFailedStatementLeavesTheNextOneBoundAfresh() throws {
        try withDatabase { database in
            try database.writeNow { db in _ = try db.execute("INSERT INTO t (k, v) VALUES (?, ?)", [Int64(1), "first"]) }
            // A primary-key clash fails mid-statement; the same cached statement then runs
            // with other texts and must not carry the failed run's bindings.
            #expect(throws: (any Error).self) {
                try database.writeNow { db in _ = try db.execute("INSERT INTO t (k, v) VALUES (?, ?)", [Int64(1), "clash"]) }
            }
            try database.writeNow { db in _ = try db.execute("INSERT INTO t (k, v) VALUES (?, ?)", [Int64(2), "second"]) }
            let stored = try database.readNow { db in try db.all("SELECT v FROM t ORDER BY k") { $0.text(0) } }
            #expect(stored == ["first", "second"])
        }
    }
}

struct ExactTextTests {
    @Test func comparesBytesNotCanonicalEquivalence() {
        #expect(ExactText("caf\u{E9}") != ExactText("cafe\u{301}"))
        #expect("caf\u{E9}" == "cafe\u{301}")  // what Swift's String would have said
        #expect(ExactText("run-1") == ExactText("run-" + String(1)))
        #expect(ExactText("") == ExactText(""))
        #expect(ExactText("") != ExactText("a"))
        #expect(ExactText("ab") != ExactText("abc"))
        #expect(ExactText("abc") != ExactText("abd"))
        let long = String(repeating: "x", count: 5000)
        #expect(ExactText(long + "1") != ExactText(long + "2"))
        #expect(ExactText(long) == ExactText(String(repeating: "x", count: 5000)))
    }

    @Test func aKeyOfTwoTextsDoesNotHashLikeItsRegrouping() {
        // ("ab", "c") and ("a", "bc"): the same bytes in a row, split differently.
        var one = Hasher(), other = Hasher()
        one.combine(ExactText("ab")); one.combine(ExactText("c"))
        other.combine(ExactText("a")); other.combine(ExactText("bc"))
        #expect(one.finalize() != other.finalize())
    }

    @Test func keysAMapByBytes() {
        var map: [ExactText: Int] = [:]
        map[ExactText("caf\u{E9}")] = 1
        map[ExactText("cafe\u{301}")] = 2
        map[ExactText("caf\u{E9}")] = 3
        #expect(map.count == 2)
        #expect(map[ExactText("caf\u{E9}")] == 3 && map[ExactText("cafe\u{301}")] == 2)
    }
}
