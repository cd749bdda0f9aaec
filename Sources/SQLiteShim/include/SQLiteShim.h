#ifndef GATEHOUSE_SQLITE_SHIM_H
#define GATEHOUSE_SQLITE_SHIM_H

/* sqlite3_config is variadic, which Swift cannot call. Sets how large a statement journal (what
   a savepoint keeps to roll back to) grows in memory before it spills to a temp file; only
   effective before SQLite initialises, that is before the process opens its first database.
   Returns SQLite's result code. */
int gh_sqlite_set_statement_journal_spill(int bytes);

#endif
