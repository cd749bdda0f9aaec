#ifndef GATEHOUSE_SQLITE_SHIM_H
#define GATEHOUSE_SQLITE_SHIM_H

/* sqlite3_config is variadic, which Swift cannot call. Sets how large a statement journal (what
   a savepoint keeps to roll back to) grows in memory before it spills to a temp file; only
   effective before SQLite initialises, that is before the process opens its first database.
   Returns SQLite's result code. */
int gh_sqlite_set_statement_journal_spill(int bytes);

/* Stops SQLite counting the memory it allocates (SQLITE_CONFIG_MEMSTATUS, on in Debian's build):
   the count takes a process-wide mutex around every allocation and free, and with lookaside
   compiled out every small allocation is one. Only effective before SQLite initialises, like
   the setting above. Returns SQLite's result code. */
int gh_sqlite_disable_memory_statistics(void);

/* Puts the WAL-write coalescing VFS (WALWriteCoalescing.c) in front of the platform's and makes
   it the default, for the databases opened after. It changes nothing by itself: a connection
   coalesces only once asked with gh_sqlite_coalesce_wal_writes_of. Call after
   gh_sqlite_set_statement_journal_spill (registering a VFS initialises SQLite). Returns
   SQLite's result code. */
int gh_sqlite_install_coalescing_vfs(void);

typedef struct sqlite3 sqlite3;
/* Makes this connection's WAL writes go out one write per commit (a write per 124 KiB).
   Returns SQLITE_NOTFOUND when its database was not opened through the coalescing VFS. */
int gh_sqlite_coalesce_wal_writes_of(sqlite3 *connection);

/* How many WAL writes SQLite asked of this connection while it coalesced, and how many writes
   reached the file system for them (what the store's tests check). Call on the connection's
   own thread or queue. */
int gh_sqlite_coalesced_wal_writes_of(sqlite3 *connection, long long *asked, long long *made);

#endif
