/* VFSErrorCheck: does a write error in the writer's WAL, through the WAL-write coalescing VFS
   (Sources/SQLiteShim/WALWriteCoalescing.c), end as it does in plain SQLite? One scenario per
   error-path defect a review found in it:
     D1  a commit at synchronous=NORMAL whose WAL write failed was reported OK (database corrupt);
     D2  a failed flush inside xRead (a spilled page read back) dropped the buffered frames, so
         the later COMMIT succeeded over a hole in the WAL (database corrupt);
     D3  a failed flush as the WAL write lock was released (rollback of a spilled transaction)
         skipped the unlock: every other connection got SQLITE_BUSY.
   Write errors come from RLIMIT_FSIZE with SIGXFSZ ignored (write() then fails with EFBIG): no
   root, no small file system. Each scenario has its own database in the scratch directory.
   usage: VFSErrorCheck SCRATCH_DIR. Exits 0 when every check passes, else 1 after FAIL lines
   saying which check failed and why. With -DNO_SHIM the same checks run on plain SQLite. */
#define _XOPEN_SOURCE 700
#include <sqlite3.h>
#include "SQLiteShim.h"
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *scratch;
static const char *scenario;           /* what the ok and FAIL lines name */
static struct rlimit unlimited;        /* RLIMIT_FSIZE as the program found it */
static sqlite3 *opened[4];             /* the scenario's connections, closed by closeAll */
static int openCount;

/* meta holds the sum and count of t's rows, kept by triggers: every statement keeps it right. */
static const char *schema =
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, pad BLOB NOT NULL);"
    "CREATE TABLE meta(total INTEGER NOT NULL, cnt INTEGER NOT NULL);"
    "INSERT INTO meta VALUES(0, 0);"
    "CREATE TRIGGER ti AFTER INSERT ON t BEGIN UPDATE meta SET total = total + new.v, cnt = cnt + 1; END;"
    "CREATE TRIGGER tu AFTER UPDATE OF v ON t BEGIN UPDATE meta SET total = total + new.v - old.v; END;";

static void die(const char *what, const char *why) { fprintf(stderr, "VFSErrorCheck: %s: %s\n", what, why); exit(2); }

static void limitFileSize(long long bytes) {
    struct rlimit limit = unlimited;
    limit.rlim_cur = (rlim_t)bytes;
    if (setrlimit(RLIMIT_FSIZE, &limit) != 0) die("setrlimit", "cannot limit the file size");
}
static void liftLimit(void) { setrlimit(RLIMIT_FSIZE, &unlimited); }

static long long fileSize(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

/* SCRATCH/name with no database, WAL or shared-memory file left from an earlier run. */
static void freshDatabase(char *path, char *wal, size_t size, const char *name) {
    char shm[1100];
    snprintf(path, size, "%s/%s", scratch, name);
    snprintf(wal, size, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    unlink(path); unlink(wal); unlink(shm);
}

static sqlite3 *openDatabase(const char *path) {
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK) die(path, sqlite3_errmsg(db));
    sqlite3_busy_timeout(db, 200);
    sqlite3_exec(db, "PRAGMA temp_store=MEMORY", 0, 0, 0);   /* no temporary files outside SCRATCH */
    if (openCount < 4) opened[openCount++] = db;
    return db;
}

static void closeAll(void) {
    while (openCount > 0) sqlite3_close_v2(opened[--openCount]);
}

/* The writer, set up as the store sets up its own; only it coalesces its WAL writes. */
static sqlite3 *openWriter(const char *path, const char *synchronous, int cacheSize) {
    sqlite3 *db = openDatabase(path);
    char *sql = sqlite3_mprintf("PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;"
                                "PRAGMA wal_autocheckpoint=4000; PRAGMA cache_size=%d", synchronous, cacheSize);
    int rc = sqlite3_exec(db, sql, 0, 0, 0);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) die("writer pragmas", sqlite3_errmsg(db));
#ifndef NO_SHIM
    if (gh_sqlite_coalesce_wal_writes_of(db) != SQLITE_OK) die("gh_sqlite_coalesce_wal_writes_of", "not the coalescing VFS");
#endif
    return db;
}

static int run(sqlite3 *db, const char *sql) { return sqlite3_exec(db, sql, 0, 0, 0); }

/* The first column of the first row, as text into out (its error message when it fails). */
static int query(sqlite3 *db, const char *sql, char *out, size_t size) {
    sqlite3_stmt *statement;
    int rc = sqlite3_prepare_v2(db, sql, -1, &statement, 0);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(statement);
        if (rc == SQLITE_ROW) {
            const unsigned char *text = sqlite3_column_text(statement, 0);
            snprintf(out, size, "%s", text ? (const char *)text : "NULL");
            rc = SQLITE_OK;
        }
        sqlite3_finalize(statement);
    }
    if (rc != SQLITE_OK) snprintf(out, size, "error %d: %s", rc, sqlite3_errmsg(db));
    for (char *c = out; *c; c++) if (*c == '\n') *c = ' ';   /* integrity_check's lines, on one */
    return rc;
}

/* From a fresh connection: integrity_check says ok, meta agrees with t, and `expectation` (a
   query giving 1 or 0) holds. Returns NULL, or why not. */
static const char *inconsistency(const char *path, const char *expectation, char *why, size_t size) {
    sqlite3 *db = NULL;
    char out[200];
    const char *problem = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK) die(path, sqlite3_errmsg(db));
    if (query(db, "PRAGMA integrity_check", out, sizeof out) != SQLITE_OK || strcmp(out, "ok") != 0)
        problem = "integrity_check";
    else if (query(db, "SELECT (SELECT total FROM meta) = (SELECT coalesce(sum(v), 0) FROM t)"
                       " AND (SELECT cnt FROM meta) = (SELECT count(*) FROM t)", out, sizeof out) != SQLITE_OK
             || strcmp(out, "1") != 0)
        problem = "meta (sum and count) disagrees with t";
    else if (query(db, expectation, out, sizeof out) != SQLITE_OK || strcmp(out, "1") != 0)
        problem = expectation;
    sqlite3_close(db);
    if (problem == NULL) return NULL;
    snprintf(why, size, "%s: got %s", problem, out);
    return why;
}

/* Prints before it closes the connections: the arguments may be their error messages. */
static void fail(const char *format, ...) {
    va_list arguments;
    liftLimit();
    printf("FAIL %s: ", scenario);
    va_start(arguments, format);
    vprintf(format, arguments);
    va_end(arguments);
    printf("\n");
    fflush(stdout);
    closeAll();
}
#define CHECK(condition, ...) do { if (!(condition)) { fail(__VA_ARGS__); return 1; } } while (0)

static int passed(const char *detail) {
    closeAll();
    printf("ok   %s%s\n", scenario, detail);
    fflush(stdout);
    return 0;
}

/* D1: a commit whose WAL frames (~600 KB, all in the default cache) cross the limit must fail, and
   leave the database as it was: readers and a fresh connection see no trace, later commits work. */
static int commitAcrossTheLimit(const char *synchronous) {
    char path[1024], wal[1024], why[300];
    int normal = strcmp(synchronous, "NORMAL") == 0;
    scenario = normal ? "D1 failed WAL write in a commit at synchronous=NORMAL"
                      : "D1 failed WAL write in a commit at synchronous=FULL";
    freshDatabase(path, wal, sizeof path, normal ? "d1-normal.db" : "d1-full.db");
    sqlite3 *writer = openWriter(path, synchronous, -2000);
    CHECK(run(writer, schema) == SQLITE_OK && run(writer, "INSERT INTO t VALUES(1, 1, zeroblob(100))") == SQLITE_OK,
          "setup: %s", sqlite3_errmsg(writer));
    sqlite3 *reader = openDatabase(path);
    CHECK(run(writer, "BEGIN IMMEDIATE; INSERT INTO t VALUES(2, 2, zeroblob(600000))") == SQLITE_OK,
          "setup: the transaction failed before its COMMIT: %s", sqlite3_errmsg(writer));
    long long limit = fileSize(wal) + 65536;
    limitFileSize(limit);
    int rc = run(writer, "COMMIT");
    liftLimit();
    CHECK(rc != SQLITE_OK, "COMMIT returned SQLITE_OK although its WAL frames crossed the file-size limit (%lld bytes; WAL now %lld)",
          limit, fileSize(wal));
    if (!sqlite3_get_autocommit(writer)) run(writer, "ROLLBACK");
    CHECK(!inconsistency(path, "SELECT count(*) = 0 FROM t WHERE id = 2", why, sizeof why),
          "after the failed commit, %s", why);
    CHECK(run(writer, "INSERT INTO t VALUES(3, 3, zeroblob(100))") == SQLITE_OK,
          "a commit after the limit was lifted failed: %s", sqlite3_errmsg(writer));
    char out[200];
    CHECK(query(reader, "SELECT group_concat(id) FROM t", out, sizeof out) == SQLITE_OK && strcmp(out, "1,3") == 0,
          "a reader connection should see rows 1,3 after the next commit, sees %s", out);
    closeAll();
    CHECK(!inconsistency(path, "SELECT group_concat(id) = '1,3' FROM t", why, sizeof why),
          "after closing and reopening, %s", why);
    return passed("");
}

/* D2: a transaction spills ~125 updated pages to the WAL (a 10-page cache), then reads them back
   (the cache grown again, so that reading needs no write) while the WAL cannot grow. It reads
   them with integrity_check: a page it cannot read is a line of its output, not an error, so the
   transaction goes on (an I/O error in an ordinary statement rolls the whole transaction back;
   the review's SQLITE_FULL on a full disk only the statement). After the limit is lifted the
   COMMIT may succeed or fail, but what it leaves must be consistent. */
static int readBackSpilledPages(void) {
    char path[1024], wal[1024], why[300], out[200];
    scenario = "D2 failed flush of spilled frames when a transaction reads them back";
    freshDatabase(path, wal, sizeof path, "d2.db");
    sqlite3 *writer = openWriter(path, "FULL", -2000);
    CHECK(run(writer, schema) == SQLITE_OK
          && run(writer, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)"
                         " INSERT INTO t SELECT i, 0, zeroblob(1000) FROM c") == SQLITE_OK
          && run(writer, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA cache_size=10") == SQLITE_OK
          && run(writer, "BEGIN; UPDATE t SET v = v + 1 WHERE id <= 500; PRAGMA cache_size=2000") == SQLITE_OK,
          "setup: %s", sqlite3_errmsg(writer));
    limitFileSize(fileSize(wal));
    query(writer, "PRAGMA integrity_check", out, sizeof out);   /* plain SQLite: ok */
    liftLimit();
    int committed = run(writer, "COMMIT") == SQLITE_OK;
    if (!sqlite3_get_autocommit(writer)) run(writer, "ROLLBACK");
    CHECK(!inconsistency(path, "SELECT sum(v) IN (0, 500) FROM t", why, sizeof why),
          "after the transaction %s, %s", committed ? "committed" : "failed", why);
    closeAll();
    CHECK(!inconsistency(path, committed ? "SELECT sum(v) = 500 FROM t" : "SELECT sum(v) = 0 FROM t", why, sizeof why),
          "after the transaction %s, closing and reopening, %s", committed ? "committed" : "failed", why);
    return passed(committed ? " (the transaction committed)" : " (the transaction failed)");
}

/* D3: a transaction spills a 600 KB row (a 10-page cache) past the limit and is rolled back; then
   another connection must get the write lock (within its 200 ms busy timeout). */
static int rollBackSpilledFrames(void) {
    char path[1024], wal[1024], why[300];
    scenario = "D3 failed flush as a rolled-back transaction releases the WAL write lock";
    freshDatabase(path, wal, sizeof path, "d3.db");
    sqlite3 *writer = openWriter(path, "FULL", 10);
    CHECK(run(writer, schema) == SQLITE_OK && run(writer, "INSERT INTO t VALUES(1, 1, zeroblob(100))") == SQLITE_OK,
          "setup: %s", sqlite3_errmsg(writer));
    limitFileSize(fileSize(wal) + 65536);
    CHECK(run(writer, "BEGIN IMMEDIATE") == SQLITE_OK, "setup: BEGIN IMMEDIATE: %s", sqlite3_errmsg(writer));
    run(writer, "INSERT INTO t VALUES(2, 2, zeroblob(600000))");   /* plain SQLite fails here */
    if (!sqlite3_get_autocommit(writer)) run(writer, "ROLLBACK");
    liftLimit();
    sqlite3 *other = openDatabase(path);
    int rc = run(other, "BEGIN IMMEDIATE");
    CHECK(rc == SQLITE_OK, "another connection's BEGIN IMMEDIATE got %s (%d): the WAL write lock is still held",
          sqlite3_errstr(rc), rc);
    rc = run(other, "INSERT INTO t VALUES(3, 3, zeroblob(100)); COMMIT");
    CHECK(rc == SQLITE_OK, "another connection's INSERT and COMMIT got %s", sqlite3_errmsg(other));
    CHECK(!inconsistency(path, "SELECT group_concat(id) = '1,3' FROM t", why, sizeof why), "after the rollback, %s", why);
    CHECK(run(writer, "INSERT INTO t VALUES(4, 4, zeroblob(100))") == SQLITE_OK,
          "the writer's next commit failed: %s", sqlite3_errmsg(writer));
    closeAll();
    CHECK(!inconsistency(path, "SELECT group_concat(id) = '1,3,4' FROM t", why, sizeof why),
          "after closing and reopening, %s", why);
    return passed("");
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage", "VFSErrorCheck SCRATCH_DIR");
    scratch = argv[1];
    mkdir(scratch, 0755);                     /* may exist already */
    signal(SIGXFSZ, SIG_IGN);                 /* past the limit write() fails with EFBIG */
    getrlimit(RLIMIT_FSIZE, &unlimited);
#ifndef NO_SHIM
    if (gh_sqlite_install_coalescing_vfs() != SQLITE_OK) die("gh_sqlite_install_coalescing_vfs", "failed");
#endif
    int failures = commitAcrossTheLimit("NORMAL") + commitAcrossTheLimit("FULL")
                 + readBackSpilledPages() + rollBackSpilledFrames();
    if (failures) printf("%d of 4 scenarios failed\n", failures);
    else printf("all 4 scenarios passed\n");
    return failures ? 1 : 0;
}
