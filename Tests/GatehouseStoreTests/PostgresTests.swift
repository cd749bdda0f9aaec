import Foundation
@testable import GatehousePostgres
import GatehouseStore
import Testing

/// The PostgreSQL session's own translations, and values that must survive a round trip
/// through its literals and parameters (on a real server in the PostgreSQL pass).
struct PostgresTests {
    @Test func placeholdersBecomeNumberedOutsideQuotes() {
        #expect(Placeholders.translate("SELECT ? , ?") == "SELECT $1 , $2")
        #expect(Placeholders.translate("UPDATE t SET a = ?3 WHERE b = ?1") == "UPDATE t SET a = $3 WHERE b = $1")
        #expect(Placeholders.translate("SELECT '?', \"a?\", ? FROM t WHERE x = 'it''s ?'") == "SELECT '?', \"a?\", $1 FROM t WHERE x = 'it''s ?'")
        #expect(PostgresSession.statements("BEGIN; SELECT ';'; COMMIT;") == ["BEGIN", "SELECT ';'", "COMMIT"])
    }

    @Test func literalsQuoteEverythingThatCouldEscape() {
        #expect(PostgresSession.literal(.text("it's")) == "E'it''s'")
        #expect(PostgresSession.literal(.text(#"a\'); DROP TABLE events; --"#)) == #"E'a\\''); DROP TABLE events; --'"#)
        #expect(PostgresSession.literal(.int(-42)) == "-42")
        #expect(PostgresSession.literal(.null) == "NULL")
        #expect(PostgresSession.literal(.freeText("a\u{0}b")) == #"E'\\x610062'::bytea"#)
    }

    static let server = ProcessInfo.processInfo.environment["GATEHOUSE_TEST_POSTGRES"] ?? ""

    @Test(.enabled(if: !server.isEmpty, "needs GATEHOUSE_TEST_POSTGRES"))
    func awkwardValuesRoundTrip() throws {
        let store = try PostgresStore(url: try PostgresStore.freshDatabase(on: Self.server))
        defer { store.close() }
        let awkward = ["it's", #"back\slash \' \\"#, "ünïcødé ✓ 🚀", "line\nbreak\ttab", "$1 ? ?2 $$ -- /*", String(repeating: "x", count: 100_000)]
        try store.writeNow { db in
            try db.execute("CREATE TABLE t (n BIGINT, s TEXT, f BYTEA)")
            for (n, text) in awkward.enumerated() {
                // The first call prepares; later ones execute the prepared statement.
                try db.execute("INSERT INTO t (n, s, f) VALUES (?, ?, ?)", [n, text, SQLValue.freeText(text + "\u{0}end")])
            }
        }
        let back = try store.readNow { db in try db.all("SELECT s, f FROM t ORDER BY n") { ($0[0] as String, $0[1] as String) } }
        #expect(back.map(\.0) == awkward)
        #expect(back.map(\.1) == awkward.map { $0 + "\u{0}end" })
        #expect(try store.readNow { try $0.value(Int.self, "SELECT COUNT(*) FROM t WHERE s = ?", [awkward[1]]) } == 1)
    }
}
