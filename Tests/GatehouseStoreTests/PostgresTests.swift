import Foundation
import GatehouseCore
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

    /// Only disk_full is a full disk: the server answers it 503 (see StorageFullTests).
    @Test func onlyDiskFullMeansStorageFull() {
        #expect(isStorageFull(StoreFailure("PostgreSQL: could not extend file (SQLSTATE 53100)", sqlState: "53100")))
        #expect(!isStorageFull(StoreFailure("PostgreSQL: out of memory (SQLSTATE 53200)", sqlState: "53200")))
        #expect(!isStorageFull(StoreFailure("PostgreSQL: insufficient resources (SQLSTATE 53000)", sqlState: "53000")))
        #expect(!isStorageFull(StoreFailure("not a PostgreSQL URL")))
    }

    static let server = ProcessInfo.processInfo.environment["GATEHOUSE_TEST_POSTGRES"] ?? ""

    /// A savepoint that cannot be rolled back to (its connection or disk failing) loses the
    /// transaction. What comes after — the other requests of a group commit, and the commit
    /// itself — must fail with the first error, so a full disk is still answered 503, not 500
    /// about the rollback; and nothing of the transaction is committed.
    @Test(.enabled(if: !server.isEmpty, "needs GATEHOUSE_TEST_POSTGRES"))
    func aSavepointThatCannotBeRolledBackToLosesTheTransactionWithTheFirstError() throws {
        let store = try PostgresStore(url: try PostgresStore.freshDatabase(on: Self.server))
        defer { store.close() }
        try store.writeNow { db in _ = try db.execute("CREATE TABLE t (n BIGINT)") }
        let diskFull = StoreFailure("PostgreSQL: could not extend file (SQLSTATE 53100)", sqlState: "53100")
        var inside: [any Error] = []
        var committed: (any Error)?
        do {
            try store.commit(relaxed: false) { db in
                try db.execute("INSERT INTO t (n) VALUES (1)")
                do {
                    try db.savepoint {
                        try db.execute("INSERT INTO t (n) VALUES (2)")
                        // Gone from under it, the savepoint cannot be rolled back to.
                        try (db as! PostgresSession).run("RELEASE SAVEPOINT gh_1")
                        throw diskFull
                    }
                } catch { inside.append(error) }
                do { _ = try db.savepoint { try db.execute("INSERT INTO t (n) VALUES (3)") } } catch { inside.append(error) }
                do { try db.execute("INSERT INTO t (n) VALUES (4)") } catch { inside.append(error) }
            }
        } catch { committed = error }
        #expect(inside.count == 3)
        #expect(inside.allSatisfy(isStorageFull), "\(inside)")
        #expect(committed.map(isStorageFull) == true, "\(String(describing: committed))")
        #expect(try store.readNow { try $0.value(Int.self, "SELECT COUNT(*) FROM t") } == 0)
        // The connection went back to the pool clean: the next transaction works.
        try store.commit(relaxed: false) { db in try db.execute("INSERT INTO t (n) VALUES (5)") }
        #expect(try store.readNow { try $0.value(Int.self, "SELECT COUNT(*) FROM t") } == 1)
    }

    /// A statement that failed inside a transaction, its error caught, leaves the transaction
    /// aborted; PostgreSQL then answers COMMIT with ROLLBACK and no error. That must not pass
    /// for a commit.
    @Test(.enabled(if: !server.isEmpty, "needs GATEHOUSE_TEST_POSTGRES"))
    func aTransactionPostgreSQLAbortedIsNotTakenForCommitted() throws {
        let store = try PostgresStore(url: try PostgresStore.freshDatabase(on: Self.server))
        defer { store.close() }
        try store.writeNow { db in _ = try db.execute("CREATE TABLE t (n BIGINT)") }
        #expect(throws: (any Error).self) {
            try store.commit(relaxed: false) { db in
                try db.execute("INSERT INTO t (n) VALUES (1)")
                _ = try? db.execute("SELECT 1 / (SELECT COUNT(*) FROM t WHERE n = 2)")  // division by zero
            }
        }
        #expect(try store.readNow { try $0.value(Int.self, "SELECT COUNT(*) FROM t") } == 0)
        try store.commit(relaxed: false) { db in try db.execute("INSERT INTO t (n) VALUES (3)") }
        #expect(try store.readNow { try $0.value(Int.self, "SELECT COUNT(*) FROM t") } == 1)
    }

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

/// Row claims between processes on one database (`DeliveryClaim`): what one process has in
/// hand another does not take, until its outcome is in, it gives the rows back, its claim
/// runs out, or the process is gone.
@Suite(.enabled(if: !PostgresTests.server.isEmpty, "needs GATEHOUSE_TEST_POSTGRES"))
struct DeliveryClaimTests {
    @Test func claimedRowsAreLeftToTheirHolderUntilItIsDoneOrGone() async throws {
        let store = try PostgresStore(url: try PostgresStore.freshDatabase(on: PostgresTests.server))
        defer { store.close() }
        let log = EventLog(database: store, bus: Bus(), planner: { event in
            DeliveryPlan(deliveries: [PlannedDelivery(receiver: "hook", route: "root", groupKey: "root|\(event.id)", groupWait: .seconds(0), groupInterval: .seconds(60), fallback: nil, alone: true)])
        })
        for id in ["a", "b", "c", "d"] {
            _ = try await log.append([Event(id: id, type: "run.failed", pipeline: "p", run: id, time: Timestamp(milliseconds: 1_795_946_400_000))])
        }
        let outbox = SQLOutbox(log: log)
        let (a, b, c) = (DeliveryClaim(owner: "pa", lastsFor: 60_000), DeliveryClaim(owner: "pb", lastsFor: 60_000), DeliveryClaim(owner: "pc", lastsFor: 60_000))
        // A and B are live processes (their leases current); C's lease is not needed to take.
        try store.writeNow { db in
            for owner in ["pa", "pb"] {
                try db.execute("INSERT INTO owners (name, owner, until) VALUES (?, ?, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) + 60000)", ["process:" + owner, owner])
            }
        }
        let now = Timestamp.now().adding(milliseconds: 1000)
        func ids(_ rows: [(Delivery, StoredEvent)]) -> [String] { rows.map(\.1.event.id) }

        let takenByA = try await outbox.due(receiver: "hook", now: now, limit: 2, claim: a)
        #expect(ids(takenByA) == ["a", "b"], "oldest first")
        let takenByB = try await outbox.due(receiver: "hook", now: now, limit: 10, claim: b)
        #expect(ids(takenByB) == ["c", "d"], "A's rows are left out")
        #expect(ids(try await outbox.due(receiver: "hook", now: now, limit: 10, claim: a)) == ["a", "b"], "a process sees its own claims")
        #expect(try await outbox.due(receiver: "hook", now: now, limit: 10, claim: c).isEmpty)
        #expect(try await outbox.nextDueTime(receiver: "hook", claim: c) == nil, "nothing C may send")
        #expect(try await outbox.nextDueTime(receiver: "hook") != nil, "unclaimed reads see every row")

        // A's attempt at `a` failed and is due again: its outcome ends the claim.
        var failed = takenByA[0].0
        failed.state = Delivery.State.failed
        failed.attempts = 1
        try await outbox.record([failed])
        #expect(ids(try await outbox.due(receiver: "hook", now: now, limit: 10, claim: c)) == ["a"])

        // B gives `d` back (its receiver went to another process): C takes it.
        try await outbox.release([takenByB[1].0.id], claim: b)
        let afterRelease = ids(try await outbox.due(receiver: "hook", now: now, limit: 10, claim: c))
        #expect(afterRelease == ["a", "d"], "\(afterRelease)")
        // Another's release changes nothing: `c` stays B's.
        try await outbox.release([takenByB[0].0.id], claim: a)
        #expect(!ids(try await outbox.due(receiver: "hook", now: now, limit: 10, claim: a)).contains("c"))

        // A dies (its lease gone): its `b` is free for whoever holds the receiver next.
        _ = try store.writeNow { db in try db.execute("DELETE FROM owners WHERE owner = 'pa'") }
        #expect(ids(try await outbox.due(receiver: "hook", now: now, limit: 10, claim: b)).contains("b"))

        // A claim past its time limit lapses though its process lives.
        let brief = DeliveryClaim(owner: "pb", lastsFor: -1)
        let briefly = try await outbox.due(receiver: "hook", now: now, limit: 10, claim: brief).map(\.0.id)
        #expect(briefly.count == 4)
        // Renewed, they hold again (a row queued long in memory keeps its claim); renewing
        // answers which rows the process still had claimed.
        #expect(Set(try await outbox.renew(briefly, claim: b)) == Set(briefly))
        #expect(try await outbox.due(receiver: "hook", now: now, limit: 10, claim: c).isEmpty)
        #expect(try await outbox.renew(briefly, claim: a).isEmpty, "A claims none of them")
        _ = try await outbox.renew(briefly, claim: brief)
        #expect(ids(try await outbox.due(receiver: "hook", now: now, limit: 10, claim: c)) == ["a", "b", "c", "d"])
    }
}
