import Foundation
import GRDB
import SQLiteShim
import GatehouseCore
import Logging
import Synchronization

/// The SQLite file: WAL, one writer connection, concurrent readers, schema by named,
/// append-only migrations. Never edit a registered migration; add a new one.
public final class GatehouseDatabase: Sendable {
    public let pool: DatabasePool
    public let path: String
    public let durability: Durability
    private let lockWait = LockWait(limitMilliseconds: 10_000)

    public init(path: String, durability: Durability = .full) throws {
        self.path = path
        self.durability = durability
        var configuration = Configuration()
        configuration.busyMode = .callback { [lockWait] tries in lockWait.retry(after: tries) }
        configuration.maximumReaderCount = 4
        configuration.label = "gatehouse"
        configuration.prepareDatabase { db in
            // Keep each connection's page cache small: idle memory matters more than a few
            // cache hits, and the OS page cache holds the hot pages anyway.
            try db.execute(sql: "PRAGMA cache_size = -2000")
        }
        _ = Self.statementJournalsInMemory
        _ = Self.memoryStatisticsOff
        _ = Self.coalescingVFSInstalled
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        pool = try DatabasePool(path: path, configuration: configuration)
        // GRDB turns WAL mode on with synchronous=NORMAL after prepareDatabase; the writer's
        // setting is the one that decides what an acknowledged commit survives.
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
            // A commit's WAL frames in one write instead of two per frame (WALWriteCoalescing.c):
            // measured 13 pwrite calls per alert before. They go out within the commit's own
            // last write, so a failed write fails the commit at FULL and NORMAL alike.
            if Self.coalescingVFSInstalled {
                _ = gh_sqlite_coalesce_wal_writes_of(db.sqliteConnection)
            }
            // Checkpoint every 4,000 WAL pages (16 MiB), not SQLite's 1,000: the index pages
            // every commit touches (by pipeline, by run) are copied back to the database once
            // per checkpoint however often they changed since, so fewer checkpoints copy fewer
            // pages. Measured: ingest alone and the alerts load ~8–10 % less CPU per event, RSS
            // unchanged (the WAL lives in the OS page cache).
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 4000")
        }
        try Self.migrator.migrate(pool)
    }

    /// The WAL-write coalescing VFS as SQLite's default (it changes nothing until a connection
    /// asks). Registered after the statement journal setting: registering initialises SQLite.
    static let coalescingVFSInstalled: Bool = {
        _ = statementJournalsInMemory
        _ = memoryStatisticsOff
        return applied(gh_sqlite_install_coalescing_vfs(), orWarn: "could not install the WAL write coalescing VFS: each WAL frame is written on its own")
    }()

    /// A savepoint (one per request or delivery outcome sharing a group commit) keeps the
    /// original of every page it first touches in a statement journal. Past 64 KiB, SQLite's
    /// default, that journal spills to a temp file written with a pwrite per page: a third of
    /// the writer thread's time under batched ingest. 8 MiB keeps any request's savepoint in
    /// memory and still spills a large one (a dataset import) to disk. Set once, before the
    /// process's first connection; if SQLite was initialised already it stays as it was.
    static let statementJournalsInMemory: Bool = {
        applied(
            gh_sqlite_set_statement_journal_spill(8 << 20),
            orWarn: "SQLite was initialised before the store opened it: savepoints keep SQLite's default statement journal spill (64 KiB)")
    }()

    /// SQLite counts every allocation it makes for `sqlite3_memory_used` (nothing here reads
    /// it) under one process-wide mutex, and Debian's build has no lookaside allocator, so
    /// every small allocation of every statement on every connection takes that mutex. Set
    /// once, before the process's first connection, like the statement journal's spill.
    static let memoryStatisticsOff: Bool = {
        applied(
            gh_sqlite_disable_memory_statistics(),
            orWarn: "SQLite was initialised before the store opened it: it keeps counting its memory under a process-wide lock")
    }()

    /// Whether a process-wide SQLite setting took (`code` is SQLite's result); if not, says so
    /// in the log (a server test looks for these warnings) and the store goes on without it.
    private static func applied(_ code: Int32, orWarn message: Logger.Message) -> Bool {
        if code != 0 {
            Logger(label: "gatehouse.store").warning(message, metadata: ["code": .stringConvertible(code)])
        }
        return code == 0
    }

    public static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-events") { db in
            try db.execute(sql: """
                CREATE TABLE events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    type TEXT NOT NULL,
                    pipeline TEXT NOT NULL,
                    run TEXT,
                    step TEXT,
                    severity TEXT NOT NULL,
                    summary TEXT,
                    details TEXT,
                    labels TEXT,
                    attributes TEXT,
                    url TEXT,
                    time INTEGER NOT NULL,
                    received_at INTEGER NOT NULL
                );
                CREATE INDEX events_by_pipeline ON events(pipeline, seq);
                CREATE INDEX events_by_run ON events(run, seq) WHERE run IS NOT NULL;
                CREATE TABLE runs (
                    pipeline TEXT NOT NULL,
                    run TEXT NOT NULL,
                    status TEXT NOT NULL,
                    failed_step TEXT,
                    started_at INTEGER NOT NULL,
                    ended_at INTEGER,
                    last_event_at INTEGER NOT NULL,
                    lifecycle_at INTEGER,
                    event_count INTEGER NOT NULL,
                    counts TEXT NOT NULL,
                    PRIMARY KEY (pipeline, run)
                ) WITHOUT ROWID;
                CREATE INDEX runs_by_recency ON runs(last_event_at);
                CREATE INDEX runs_by_run ON runs(run);
                """)
        }
        migrator.registerMigration("v1-tokens") { db in
            try db.execute(sql: """
                CREATE TABLE tokens (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    scopes TEXT NOT NULL,
                    hash TEXT NOT NULL UNIQUE,
                    created_at INTEGER NOT NULL,
                    revoked_at INTEGER
                );
                """)
        }
        migrator.registerMigration("v2-deliveries") { db in
            try db.execute(sql: """
                CREATE TABLE deliveries (
                    id TEXT PRIMARY KEY,
                    event_seq INTEGER NOT NULL REFERENCES events(seq),
                    receiver TEXT NOT NULL,
                    route TEXT NOT NULL,
                    group_key TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    state TEXT NOT NULL,
                    attempts INTEGER NOT NULL,
                    next_attempt_at INTEGER NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    delivered_at INTEGER,
                    last_status INTEGER,
                    last_error TEXT,
                    response_body TEXT,
                    message_id TEXT,
                    fallback TEXT,
                    fallback_of TEXT,
                    -- The deliveries sent together as one message share the id of the first
                    -- (the batch leader): its id is the message's webhook-id.
                    batch_id TEXT
                );
                CREATE INDEX deliveries_by_batch ON deliveries(batch_id) WHERE batch_id IS NOT NULL;
                CREATE INDEX deliveries_by_group ON deliveries(receiver, group_key, next_attempt_at) WHERE state = 'pending' AND batch_id IS NULL;
                -- Alertmanager's aggregation groups, per receiver: when the pending members will
                -- be flushed and when the group last was.
                CREATE TABLE alert_groups (
                    receiver TEXT NOT NULL,
                    group_key TEXT NOT NULL,
                    next_flush_at INTEGER,
                    last_flush_at INTEGER,
                    group_interval_ms INTEGER NOT NULL,
                    PRIMARY KEY (receiver, group_key)
                ) WITHOUT ROWID;
                -- Pipelines a receiver was told are failing and has not heard recover from: the
                -- "firing" state behind repeat_interval reminders and send_resolved.
                CREATE TABLE failing_pipelines (
                    receiver TEXT NOT NULL,
                    pipeline TEXT NOT NULL,
                    route TEXT NOT NULL,
                    since INTEGER NOT NULL,
                    last_event_seq INTEGER NOT NULL,
                    repeat_ms INTEGER NOT NULL,
                    next_repeat_at INTEGER NOT NULL,
                    send_resolved INTEGER NOT NULL,
                    PRIMARY KEY (receiver, pipeline)
                ) WITHOUT ROWID;
                CREATE INDEX failing_by_next_repeat ON failing_pipelines(next_repeat_at);
                CREATE INDEX deliveries_due ON deliveries(receiver, next_attempt_at) WHERE state IN ('pending', 'failed');
                CREATE INDEX deliveries_by_receiver ON deliveries(receiver, created_at);
                CREATE INDEX deliveries_by_state ON deliveries(state, created_at);
                CREATE TABLE silences (
                    id TEXT PRIMARY KEY,
                    matchers TEXT NOT NULL,
                    starts_at INTEGER NOT NULL,
                    ends_at INTEGER NOT NULL,
                    created_by TEXT NOT NULL,
                    comment TEXT NOT NULL,
                    created_at INTEGER NOT NULL
                );
                """)
        }
        migrator.registerMigration("v3-gates") { db in
            try db.execute(sql: """
                CREATE TABLE gates (
                    id TEXT PRIMARY KEY,
                    key TEXT,
                    state TEXT NOT NULL,
                    pipeline TEXT NOT NULL,
                    run TEXT,
                    created_at INTEGER NOT NULL,
                    -- When the scheduler must next look at the gate (expiry, reminder,
                    -- escalation); NULL once it is closed.
                    next_deadline INTEGER,
                    doc TEXT NOT NULL
                );
                CREATE INDEX gates_by_key ON gates(key, created_at) WHERE key IS NOT NULL;
                CREATE INDEX gates_by_state ON gates(state, created_at);
                CREATE INDEX gates_due ON gates(next_deadline) WHERE next_deadline IS NOT NULL;
                -- The audit ledger: each entry carries the previous entry's hash and its own,
                -- over a canonical encoding, so an edit or a deletion breaks the chain.
                CREATE TABLE audit (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    gate_id TEXT,
                    at INTEGER NOT NULL,
                    action TEXT NOT NULL,
                    actor TEXT,
                    detail TEXT NOT NULL,
                    prev_hash TEXT NOT NULL,
                    hash TEXT NOT NULL
                );
                CREATE INDEX audit_by_gate ON audit(gate_id, seq);
                -- Signed callbacks already acted on: a replay within the signature window is refused.
                CREATE TABLE callback_nonces (
                    nonce TEXT PRIMARY KEY,
                    at INTEGER NOT NULL
                ) WITHOUT ROWID;
                -- Secrets the server makes for itself (the key that signs decision links).
                CREATE TABLE server_secrets (
                    name TEXT PRIMARY KEY,
                    value TEXT NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v4-datasets") { db in
            try db.execute(sql: """
                CREATE TABLE datasets (
                    name TEXT PRIMARY KEY,
                    spec TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    item_count INTEGER NOT NULL DEFAULT 0,
                    complete_count INTEGER NOT NULL DEFAULT 0,
                    completed_at INTEGER
                ) WITHOUT ROWID;
                CREATE TABLE items (
                    dataset TEXT NOT NULL,
                    id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    data TEXT NOT NULL,
                    meta TEXT,
                    prediction TEXT,
                    label_count INTEGER NOT NULL DEFAULT 0,
                    skip_count INTEGER NOT NULL DEFAULT 0,
                    complete INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (dataset, id)
                ) WITHOUT ROWID;
                -- "Next item": the oldest incomplete items of a dataset, in import order.
                CREATE INDEX items_open ON items(dataset, complete, seq);
                CREATE INDEX items_by_seq ON items(dataset, seq);
                CREATE TABLE labels (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    dataset TEXT NOT NULL,
                    item_id TEXT NOT NULL,
                    annotator TEXT NOT NULL,
                    value TEXT NOT NULL,
                    at INTEGER NOT NULL,
                    UNIQUE (dataset, item_id, annotator)
                );
                CREATE INDEX labels_by_annotator ON labels(dataset, annotator, id);
                CREATE TABLE skips (
                    dataset TEXT NOT NULL,
                    item_id TEXT NOT NULL,
                    annotator TEXT NOT NULL,
                    at INTEGER NOT NULL,
                    PRIMARY KEY (dataset, item_id, annotator)
                ) WITHOUT ROWID;
                -- Items of an import still being streamed in: moved into items in one
                -- transaction when the whole body was valid, dropped otherwise.
                CREATE TABLE import_staging (
                    import_id TEXT NOT NULL,
                    n INTEGER NOT NULL,
                    id TEXT NOT NULL,
                    data TEXT NOT NULL,
                    meta TEXT,
                    prediction TEXT,
                    PRIMARY KEY (import_id, n)
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v5-web-identities") { db in
            // Annotators were stored as given: `alice` from the web page or a token, `web:alice`
            // when an API call named her so — two people in stats and agreement. One form now,
            // `web:<name>`. Where both forms labelled the same item, the bare row goes
            // and the item's label count is recounted.
            try db.execute(sql: """
                UPDATE OR IGNORE labels SET annotator = 'web:' || annotator WHERE instr(annotator, ':') = 0;
                DELETE FROM labels WHERE instr(annotator, ':') = 0;
                UPDATE OR IGNORE skips SET annotator = 'web:' || annotator WHERE instr(annotator, ':') = 0;
                DELETE FROM skips WHERE instr(annotator, ':') = 0;
                UPDATE items SET
                    label_count = (SELECT COUNT(*) FROM labels WHERE labels.dataset = items.dataset AND labels.item_id = items.id),
                    skip_count = (SELECT COUNT(*) FROM skips WHERE skips.dataset = items.dataset AND skips.item_id = items.id);
                """)
        }
        migrator.registerMigration("v6-event-time-given") { db in
            // Whether the sender gave the event's time: a re-sent event without one is the
            // same content at another time of receipt (idempotent), not a conflict.
            try db.execute(sql: "ALTER TABLE events ADD COLUMN time_given INTEGER NOT NULL DEFAULT 1")
        }
        migrator.registerMigration("v7-deliveries-by-event") { db in
            // A run's page lists the deliveries its events caused.
            try db.execute(sql: "CREATE INDEX deliveries_by_event ON deliveries(event_seq)")
        }
        migrator.registerMigration("v8-leases") { db in
            // "Next item" leases, formerly in memory: rows, so that every process sharing a
            // database sees them (and a restart keeps them until they expire).
            try db.execute(sql: """
                CREATE TABLE leases (
                    dataset TEXT NOT NULL,
                    item_id TEXT NOT NULL,
                    annotator TEXT NOT NULL,
                    until INTEGER NOT NULL,
                    PRIMARY KEY (dataset, item_id, annotator)
                ) WITHOUT ROWID;
                CREATE INDEX leases_by_annotator ON leases(dataset, annotator);
                """)
        }
        // Only an index goes: GRDB's foreign-key check after the migration (every delivery's
        // event looked up) would be start-up time spent for nothing.
        migrator.registerMigration("v9-drop-deliveries-by-group", foreignKeyChecks: .immediate) { db in
            // No query reads deliveries by group (groups are flushed from `alert_groups`), and
            // its group keys scatter: each delivery dirtied a page of it twice (queued, then
            // sent), two of the ~7 pages an alert wrote to the WAL.
            try db.execute(sql: "DROP INDEX IF EXISTS deliveries_by_group")
        }
        // When an operator last retried a delivery: max_age counts from it (Delivery.retried_at).
        migrator.registerMigration("v10-deliveries-retried-at", foreignKeyChecks: .immediate) { db in
            try db.execute(sql: "ALTER TABLE deliveries ADD COLUMN retried_at INTEGER")
        }
        // Runs in arrival order. Keyed by (pipeline, run), WITHOUT ROWID, a new run's whole row
        // went into its pipeline's part of the table: a commit of alerts from many pipelines
        // dirtied a page of full rows per pipeline (12 of the 44 WAL frames of a commit under
        // the alerts load), and `runs_by_run` one more. A rowid table appends them; one unique
        // index on (run, pipeline) finds a run by both keys (the upsert's conflict target) and
        // by run alone; a pipeline's runs, newest first, come from (pipeline, last_event_at) —
        // small entries, and a listing that reads only what it shows (the key sorted all of a
        // pipeline's runs for each page of them).
        migrator.registerMigration("v11-runs-in-arrival-order", foreignKeyChecks: .immediate) { db in
            try db.execute(sql: """
                CREATE TABLE runs_in_arrival_order (
                    pipeline TEXT NOT NULL,
                    run TEXT NOT NULL,
                    status TEXT NOT NULL,
                    failed_step TEXT,
                    started_at INTEGER NOT NULL,
                    ended_at INTEGER,
                    last_event_at INTEGER NOT NULL,
                    lifecycle_at INTEGER,
                    event_count INTEGER NOT NULL,
                    counts TEXT NOT NULL
                );
                INSERT INTO runs_in_arrival_order
                    SELECT pipeline, run, status, failed_step, started_at, ended_at, last_event_at, lifecycle_at, event_count, counts
                    FROM runs ORDER BY started_at, last_event_at;
                DROP TABLE runs;
                ALTER TABLE runs_in_arrival_order RENAME TO runs;
                CREATE UNIQUE INDEX runs_by_key ON runs(run, pipeline);
                CREATE INDEX runs_by_pipeline ON runs(pipeline, last_event_at);
                CREATE INDEX runs_by_recency ON runs(last_event_at);
                """)
        }
        // Receivers held back after failures or a 429, kept across restarts (ReceiverHold).
        migrator.registerMigration("v12-receiver-holds", foreignKeyChecks: .immediate) { db in
            try db.execute(sql: """
                CREATE TABLE receiver_holds (
                    receiver TEXT PRIMARY KEY,
                    state TEXT NOT NULL,
                    until INTEGER,
                    consecutive_failures INTEGER NOT NULL
                );
                """)
        }
        // The runs listing filtered by status alone (`GET /v1/runs?status=failed`) walked
        // runs_by_recency until it found a page of them: 65 ms at 300,000 runs with one failure
        // in 3,000, growing with the history; 0.5 ms through this index.
        migrator.registerMigration("v13-runs-by-status", foreignKeyChecks: .immediate) { db in
            try db.execute(sql: "CREATE INDEX runs_by_status ON runs(status, last_event_at)")
        }
        // A fallback's original, found at once (a delivery retried by hand that dies again is
        // not handed to its fallback twice). Partial: the other deliveries, nearly all, add
        // nothing to it.
        migrator.registerMigration("v14-deliveries-by-fallback-of", foreignKeyChecks: .immediate) { db in
            try db.execute(sql: "CREATE INDEX deliveries_by_fallback_of ON deliveries(fallback_of) WHERE fallback_of IS NOT NULL")
        }
        return migrator
    }

    /// Names of the migrations applied so far, in order.
    public func appliedMigrations() throws -> [String] {
        try pool.read { db in try Self.migrator.appliedMigrations(db) }
    }

    /// The writer's WAL writes since it opened: asked of the coalescing VFS, and made to the
    /// file system for them (both 0 when it does not coalesce); nil without that VFS.
    func coalescedWALWrites() throws -> (asked: Int64, made: Int64)? {
        try pool.writeWithoutTransaction { db in
            var asked: Int64 = 0
            var made: Int64 = 0
            guard gh_sqlite_coalesced_wal_writes_of(db.sqliteConnection, &asked, &made) == 0 else { return nil }
            return (asked, made)
        }
    }
}

/// Whether `error` is a wait for another process's SQLite lock that ran out: the database is
/// busy, the transaction changed nothing, and the same request may succeed in a moment.
public func isLockTimeout(_ error: any Error) -> Bool {
    guard let error = error as? DatabaseError else { return false }
    // Not SQLITE_LOCKED: that is a conflict inside this process (a bug), not another's lock.
    return error.resultCode == .SQLITE_BUSY
}

/// An error of a store other than SQLite that can tell it means a full disk.
public protocol StorageFullTelling: Error {
    var meansStorageFull: Bool { get }
}

/// Whether `error` says the database's disk (or file) is full — SQLite's SQLITE_FULL, or a
/// store's own (PostgreSQL's SQLSTATE 53100, disk_full): the transaction was rolled back and
/// changed nothing; the same request can succeed once space is freed.
public func isStorageFull(_ error: any Error) -> Bool {
    if let error = error as? any StorageFullTelling { return error.meansStorageFull }
    guard let error = error as? DatabaseError else { return false }
    return error.resultCode == .SQLITE_FULL
}

/// How long a statement waits for a lock another process holds (up to 10 s, in SQLite's own
/// steps), and the switch that ends every such wait at once: at the shutdown deadline a write
/// still waiting behind another process's lock fails (`503`) instead of holding the shutdown
/// past its budget, which ended in a crash.
final class LockWait: Sendable {
    let limitMilliseconds: Int
    let givenUp = Atomic<Bool>(false)
    /// SQLite's `sqliteDefaultBusyCallback` steps, in milliseconds, then 100 each.
    static let steps: [Int] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100]
    static let stepsTotal = steps.reduce(0, +)

    init(limitMilliseconds: Int) { self.limitMilliseconds = limitMilliseconds }

    /// Sleeps before try `tries + 1`; false when the wait is over (SQLite then answers BUSY).
    func retry(after tries: Int) -> Bool {
        if givenUp.load(ordering: .relaxed) { return false }
        let (slept, step) = tries < Self.steps.count
            ? (Self.steps[..<tries].reduce(0, +), Self.steps[tries])
            : (Self.stepsTotal + (tries - Self.steps.count) * 100, 100)
        let delay = min(step, limitMilliseconds - slept)
        guard delay > 0 else { return false }
        usleep(UInt32(delay) * 1000)
        return !givenUp.load(ordering: .relaxed)
    }
}

extension GatehouseDatabase: StoreDatabase {
    public func stopWaitingForLocks() { lockWait.givenUp.store(true, ordering: .relaxed) }

    public var dialect: SQLDialect { .sqlite }
    public var location: String { path }

    // Reads and writes open their transactions themselves (`SQLiteSession.transaction`), with
    // cached statements; GRDB provides the connections and their queues.

    public func read<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T {
        try await pool.unsafeRead { db in try SQLiteSession.transaction(db, .deferred, body) }
    }

    public func write<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T {
        try await pool.writeWithoutTransaction { db in try SQLiteSession.transaction(db, .immediate, body) }
    }

    public func readNow<T>(_ body: (any SQLSession) throws -> T) throws -> T {
        try pool.unsafeRead { db in try SQLiteSession.transaction(db, .deferred, body) }
    }

    public func writeNow<T>(_ body: (any SQLSession) throws -> T) throws -> T {
        try pool.writeWithoutTransaction { db in try SQLiteSession.transaction(db, .immediate, body) }
    }

    /// SQLite has one writer: `BEGIN IMMEDIATE` is the serialisation. A relaxed commit runs at
    /// `synchronous = NORMAL`: it becomes durable with the next full commit (WAL order).
    public func commit(relaxed: Bool, _ body: (any SQLSession) throws -> Void) throws {
        try pool.writeWithoutTransaction { db in
            let relax = relaxed && durability == .full
            if relax { try db.cachedStatement(sql: "PRAGMA synchronous = NORMAL").execute() }
            defer { if relax { try? db.cachedStatement(sql: "PRAGMA synchronous = FULL").execute() } }
            try SQLiteSession.transaction(db, .immediate, body)
        }
    }
}
