/* A VFS in front of the platform's own that turns the many small writes of a WAL commit into
   one.

   SQLite writes each WAL frame with two pwrite calls (its 24-byte header, then the page), so a
   group commit of ~7 alerts (~43 frames) cost ~86 system calls: 13 pwrites per event, ~10 % of
   the server's CPU under the alerts load. Here a connection's WAL file collects contiguous
   writes in memory and hands them to the kernel together:

   - at the latest inside the write of the commit frame's page (the commit frame is the one
     whose header carries the database's size), so that a failed write fails the commit itself,
     whatever the synchronous setting — the store's writer runs FULL, or NORMAL (its relaxed
     housekeeping commits; every commit of a `durability: normal` store); after it, until the
     write lock is released, writes go straight out (checksum rewrites of pages written twice,
     padding frames);
   - before the file's xSync, xTruncate, xFileSize, xClose, and any xRead that overlaps them
     (frames a large transaction spilled before its commit).
   A failed write keeps its bytes buffered: SQLite believes them written, so every later flush,
   the commit's at the latest, meets the error again. Releasing the write lock with bytes still
   buffered (a rolled-back transaction's spilled frames: a commit's went out with it) drops
   them, and an unlock is never failed (SQLite ignores a shared-memory unlock's result).

   SQLite publishes a commit to other connections by writing the wal-index header twice with
   xShmBarrier on the database file in between (walIndexWriteHdr), and readers accept a header
   only when both copies agree. By then the commit's frames are in the file; the barrier, and
   the database file's xShmLock and xUnlock, flush anyway, as a safety net.

   So durability is untouched (xSync still comes after the data), a crash loses only what a
   crash before the commit's end would lose anyway, and readers never see a frame the file
   does not yet hold. Only a connection asked to (gh_sqlite_coalesce_wal_writes_of: the
   store's writer) buffers; every other file and connection passes straight through.

   A WAL file is tied to its connection's database file with sqlite3_database_file_object;
   one that could not be tied passes through. */

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include "SQLiteShim.h"

typedef struct CoalescingFile CoalescingFile;
struct CoalescingFile {
    sqlite3_file base;
    sqlite3_file *real;           /* the platform VFS's file, allocated right after this struct */
    int isMainDB;
    int coalesce;                 /* main database: its connection asked for coalesced WAL writes */
    long long writesAsked;        /* main database: WAL writes SQLite asked for while coalescing, */
    long long writesMade;         /* and the writes that reached the platform VFS for them */
    CoalescingFile *wal;          /* main database → its connection's WAL file, when open */
    CoalescingFile *db;           /* WAL file → its connection's main database file */
    unsigned char *buffer;        /* WAL: pending bytes for [start, start + length) */
    sqlite3_int64 start;
    int length;
    int capacity;
    sqlite3_int64 commitPage;     /* WAL: where the page of the commit frame whose header is buffered goes */
    int committed;                /* WAL: this write transaction's commit frame is out: write through */
};

static sqlite3_vfs *platform;
static sqlite3_vfs coalescing;

/* A commit larger than this (a batch of thousands of events) goes out in several writes. */
enum { maximumBuffer = 1 << 20 };

/* The unix VFS takes at most 128 KiB - 1 per write (seekAndWriteFd masks the length with
   0x1ffff), so a buffer goes out in pieces of 124 KiB: a typical commit in one or two. */
enum { largestWrite = 31 * 4096 };

static int writeThrough(CoalescingFile *f, const unsigned char *data, int amount, sqlite3_int64 offset) {
    while (amount > 0) {
        if (f->db) f->db->writesMade += 1;
        int piece = amount < largestWrite ? amount : largestWrite;
        int rc = f->real->pMethods->xWrite(f->real, data, piece, offset);
        if (rc != SQLITE_OK) return rc;
        data += piece;
        amount -= piece;
        offset += piece;
    }
    return SQLITE_OK;
}

/* On failure the bytes stay buffered: SQLite believes them written, so every later flush (the
   commit frame's at the latest) must meet the error again rather than find an empty buffer. */
static int flush(CoalescingFile *f) {
    if (f->length == 0) return SQLITE_OK;
    int rc = writeThrough(f, f->buffer, f->length, f->start);
    if (rc == SQLITE_OK) f->length = 0;
    return rc;
}

/* Before anything reads, sizes, syncs or publishes what this file's connection wrote. */
static int flushWAL(CoalescingFile *f) {
    return f->wal ? flush(f->wal) : flush(f);
}

static int cClose(sqlite3_file *file) {
    CoalescingFile *f = (CoalescingFile *)file;
    int rc = flush(f);
    /* A database file and its WAL belong to one connection, which SQLite serialises. */
    if (f->wal) f->wal->db = NULL;
    if (f->db) f->db->wal = NULL;
    free(f->buffer);
    f->buffer = NULL;
    int closed = f->real->pMethods->xClose(f->real);
    return rc != SQLITE_OK ? rc : closed;
}

static int cRead(sqlite3_file *file, void *out, int amount, sqlite3_int64 offset) {
    CoalescingFile *f = (CoalescingFile *)file;
    if (f->length > 0 && offset < f->start + f->length && offset + amount > f->start) {
        int rc = flush(f);
        if (rc != SQLITE_OK) return rc;
    }
    return f->real->pMethods->xRead(f->real, out, amount, offset);
}

static int buffer(CoalescingFile *f, const void *data, int amount, sqlite3_int64 offset) {
    if (f->length > 0 && offset >= f->start && offset + amount <= f->start + f->length) {
        /* Rewriting a frame of this commit (SQLite does, for a page written twice). */
        memcpy(f->buffer + (offset - f->start), data, (size_t)amount);
        return SQLITE_OK;
    }
    int appends = f->length > 0 && offset == f->start + f->length;
    if (!appends || f->length + amount > maximumBuffer) {
        int rc = flush(f);
        if (rc != SQLITE_OK) return rc;
        if (amount > maximumBuffer) return writeThrough(f, data, amount, offset);
        f->start = offset;
    }
    if (f->length + amount > f->capacity) {
        int capacity = f->capacity ? f->capacity : 64 << 10;
        while (capacity < f->length + amount) capacity *= 2;
        unsigned char *grown = realloc(f->buffer, (size_t)capacity);
        if (grown == NULL) {
            int rc = flush(f);
            return rc != SQLITE_OK ? rc : writeThrough(f, data, amount, offset);
        }
        f->buffer = grown;
        f->capacity = capacity;
    }
    memcpy(f->buffer + f->length, data, (size_t)amount);
    f->length += amount;
    return SQLITE_OK;
}

static int cWrite(sqlite3_file *file, const void *data, int amount, sqlite3_int64 offset) {
    CoalescingFile *f = (CoalescingFile *)file;
    if (f->db == NULL || !f->db->coalesce) {
        int rc = flush(f);
        return rc != SQLITE_OK ? rc : f->real->pMethods->xWrite(f->real, data, amount, offset);
    }
    f->db->writesAsked += 1;
    if (f->committed) {
        /* After the commit frame come only checksum rewrites (a page written twice) and
           padding frames (no powersafe overwrite): they go straight out, so that their errors
           too are the commit's. */
        int rc = flush(f);
        return rc != SQLITE_OK ? rc : writeThrough(f, data, amount, offset);
    }
    int rc = buffer(f, data, amount, offset);
    if (rc != SQLITE_OK) return rc;
    if (amount == 24) {
        /* A frame header. Bytes 4-7, the database's size after the commit, are set only in a
           commit frame; SQLite writes its page next. */
        const unsigned char *h = data;
        if (h[4] | h[5] | h[6] | h[7]) f->commitPage = offset + 24;
    } else if (f->commitPage != 0 && offset == f->commitPage) {
        /* The commit frame's page: the whole commit is buffered. It goes out now, inside the
           commit's last write, so that a failed write fails the commit whatever the
           synchronous setting (at NORMAL no xSync comes before SQLite publishes it). */
        f->commitPage = 0;
        f->committed = 1;
        return flush(f);
    }
    return SQLITE_OK;
}

static int cTruncate(sqlite3_file *file, sqlite3_int64 size) {
    CoalescingFile *f = (CoalescingFile *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int cSync(sqlite3_file *file, int flags) {
    CoalescingFile *f = (CoalescingFile *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int cFileSize(sqlite3_file *file, sqlite3_int64 *size) {
    CoalescingFile *f = (CoalescingFile *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int cLock(sqlite3_file *file, int level) {
    CoalescingFile *f = (CoalescingFile *)file;
    return f->real->pMethods->xLock(f->real, level);
}

/* An unlock always happens and reports only its own outcome: a failed flush keeps its bytes
   for the WAL's next flush (its close at the latest) to meet. */
static int cUnlock(sqlite3_file *file, int level) {
    CoalescingFile *f = (CoalescingFile *)file;
    (void)flushWAL(f);
    return f->real->pMethods->xUnlock(f->real, level);
}

static int cCheckReservedLock(sqlite3_file *file, int *out) {
    CoalescingFile *f = (CoalescingFile *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int cFileControl(sqlite3_file *file, int op, void *arg) {
    CoalescingFile *f = (CoalescingFile *)file;
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int cSectorSize(sqlite3_file *file) {
    CoalescingFile *f = (CoalescingFile *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int cDeviceCharacteristics(sqlite3_file *file) {
    CoalescingFile *f = (CoalescingFile *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int cShmMap(sqlite3_file *file, int region, int size, int extend, void volatile **out) {
    CoalescingFile *f = (CoalescingFile *)file;
    return f->real->pMethods->xShmMap(f->real, region, size, extend, out);
}

static int cShmLock(sqlite3_file *file, int offset, int n, int flags) {
    CoalescingFile *f = (CoalescingFile *)file;
    if (f->wal && (flags & SQLITE_SHM_UNLOCK) && offset == 0) {
        f->wal->committed = 0;       /* the write transaction is over */
        f->wal->commitPage = 0;
    }
    if (f->wal && f->wal->length > 0) {
        if (flags & SQLITE_SHM_UNLOCK) {
            /* SQLite ignores an unlock's result: never fail (and so skip) one. Releasing the write
               lock (WAL_WRITE_LOCK is lock 0) ends the write transaction; a commit went out with its
               commit frame, so what is left belongs to a rolled-back transaction and is dropped,
               not written after another connection may have started writing. */
            if (offset == 0) f->wal->length = 0;
            else (void)flush(f->wal);
        } else {
            int rc = flush(f->wal);
            if (rc != SQLITE_OK) return rc;
        }
    }
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

/* The moment a commit becomes visible to other connections (see the top of this file); its
   frames went out with its commit frame already. A barrier cannot report an error: what fails
   here stays buffered for the next flush to meet. */
static void cShmBarrier(sqlite3_file *file) {
    CoalescingFile *f = (CoalescingFile *)file;
    if (f->wal) (void)flush(f->wal);
    f->real->pMethods->xShmBarrier(f->real);
}

static int cShmUnmap(sqlite3_file *file, int deleteFlag) {
    CoalescingFile *f = (CoalescingFile *)file;
    return f->real->pMethods->xShmUnmap(f->real, deleteFlag);
}

static int cFetch(sqlite3_file *file, sqlite3_int64 offset, int amount, void **out) {
    CoalescingFile *f = (CoalescingFile *)file;
    return f->real->pMethods->xFetch(f->real, offset, amount, out);
}

static int cUnfetch(sqlite3_file *file, sqlite3_int64 offset, void *page) {
    CoalescingFile *f = (CoalescingFile *)file;
    return f->real->pMethods->xUnfetch(f->real, offset, page);
}

static const sqlite3_io_methods methodsV1 = {
    1, cClose, cRead, cWrite, cTruncate, cSync, cFileSize, cLock, cUnlock, cCheckReservedLock,
    cFileControl, cSectorSize, cDeviceCharacteristics, 0, 0, 0, 0, 0, 0,
};
static const sqlite3_io_methods methodsV2 = {
    2, cClose, cRead, cWrite, cTruncate, cSync, cFileSize, cLock, cUnlock, cCheckReservedLock,
    cFileControl, cSectorSize, cDeviceCharacteristics, cShmMap, cShmLock, cShmBarrier, cShmUnmap, 0, 0,
};
static const sqlite3_io_methods methodsV3 = {
    3, cClose, cRead, cWrite, cTruncate, cSync, cFileSize, cLock, cUnlock, cCheckReservedLock,
    cFileControl, cSectorSize, cDeviceCharacteristics, cShmMap, cShmLock, cShmBarrier, cShmUnmap, cFetch, cUnfetch,
};

static int cOpen(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags, int *outFlags) {
    (void)vfs;
    CoalescingFile *f = (CoalescingFile *)file;
    memset(f, 0, sizeof(*f));
    f->real = (sqlite3_file *)(f + 1);
    int rc = platform->xOpen(platform, name, f->real, flags, outFlags);
    if (rc != SQLITE_OK || f->real->pMethods == NULL) {
        /* SQLite calls no method of a file whose open failed: pMethods must stay NULL. */
        if (f->real->pMethods) f->real->pMethods->xClose(f->real);
        f->base.pMethods = NULL;
        return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
    }
    int version = f->real->pMethods->iVersion;
    f->base.pMethods = version >= 3 ? &methodsV3 : version == 2 ? &methodsV2 : &methodsV1;
    if (flags & SQLITE_OPEN_MAIN_DB) {
        f->isMainDB = 1;
    } else if ((flags & SQLITE_OPEN_WAL) && name != NULL) {
        /* The connection's main database file, which SQLite opened (through this VFS) first. */
        sqlite3_file *database = sqlite3_database_file_object(name);
        if (database != NULL && database->pMethods != NULL && database->pMethods->xClose == cClose) {
            CoalescingFile *db = (CoalescingFile *)database;
            if (db->isMainDB && db->wal == NULL) {
                db->wal = f;
                f->db = db;
            }
        }
    }
    return SQLITE_OK;
}

static int cDelete(sqlite3_vfs *vfs, const char *name, int syncDir) {
    (void)vfs;
    return platform->xDelete(platform, name, syncDir);
}
static int cAccess(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
    (void)vfs;
    return platform->xAccess(platform, name, flags, out);
}
static int cFullPathname(sqlite3_vfs *vfs, const char *name, int size, char *out) {
    (void)vfs;
    return platform->xFullPathname(platform, name, size, out);
}
static void *cDlOpen(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return platform->xDlOpen(platform, name);
}
static void cDlError(sqlite3_vfs *vfs, int size, char *out) {
    (void)vfs;
    platform->xDlError(platform, size, out);
}
static void (*cDlSym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void) {
    (void)vfs;
    return platform->xDlSym(platform, handle, symbol);
}
static void cDlClose(sqlite3_vfs *vfs, void *handle) {
    (void)vfs;
    platform->xDlClose(platform, handle);
}
static int cRandomness(sqlite3_vfs *vfs, int size, char *out) {
    (void)vfs;
    return platform->xRandomness(platform, size, out);
}
static int cSleep(sqlite3_vfs *vfs, int microseconds) {
    (void)vfs;
    return platform->xSleep(platform, microseconds);
}
static int cCurrentTime(sqlite3_vfs *vfs, double *out) {
    (void)vfs;
    return platform->xCurrentTime(platform, out);
}
static int cGetLastError(sqlite3_vfs *vfs, int size, char *out) {
    (void)vfs;
    return platform->xGetLastError ? platform->xGetLastError(platform, size, out) : 0;
}
static int cCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
    (void)vfs;
    return platform->xCurrentTimeInt64(platform, out);
}

int gh_sqlite_install_coalescing_vfs(void) {
    if (sqlite3_vfs_find("gatehouse-coalescing")) return SQLITE_OK;
    platform = sqlite3_vfs_find(NULL);
    if (platform == NULL) return SQLITE_ERROR;
    /* Version 2 of the VFS: the system-call overrides of version 3 are for SQLite's own tests. */
    coalescing.iVersion = platform->iVersion >= 2 ? 2 : 1;
    coalescing.szOsFile = (int)sizeof(CoalescingFile) + platform->szOsFile;
    coalescing.mxPathname = platform->mxPathname;
    coalescing.zName = "gatehouse-coalescing";
    coalescing.xOpen = cOpen;
    coalescing.xDelete = cDelete;
    coalescing.xAccess = cAccess;
    coalescing.xFullPathname = cFullPathname;
    coalescing.xDlOpen = cDlOpen;
    coalescing.xDlError = cDlError;
    coalescing.xDlSym = cDlSym;
    coalescing.xDlClose = cDlClose;
    coalescing.xRandomness = cRandomness;
    coalescing.xSleep = cSleep;
    coalescing.xCurrentTime = cCurrentTime;
    coalescing.xGetLastError = cGetLastError;
    coalescing.xCurrentTimeInt64 = cCurrentTimeInt64;
    return sqlite3_vfs_register(&coalescing, 1);
}

static CoalescingFile *mainDatabaseOf(sqlite3 *connection) {
    sqlite3_file *file = NULL;
    if (sqlite3_file_control(connection, "main", SQLITE_FCNTL_FILE_POINTER, &file) != SQLITE_OK) return NULL;
    if (file == NULL || file->pMethods == NULL || file->pMethods->xClose != cClose) return NULL;
    CoalescingFile *f = (CoalescingFile *)file;
    return f->isMainDB ? f : NULL;
}

int gh_sqlite_coalesce_wal_writes_of(sqlite3 *connection) {
    CoalescingFile *f = mainDatabaseOf(connection);
    if (f == NULL) return SQLITE_NOTFOUND;
    f->coalesce = 1;
    return SQLITE_OK;
}

int gh_sqlite_coalesced_wal_writes_of(sqlite3 *connection, long long *asked, long long *made) {
    CoalescingFile *f = mainDatabaseOf(connection);
    if (f == NULL) return SQLITE_NOTFOUND;
    *asked = f->writesAsked;
    *made = f->writesMade;
    return SQLITE_OK;
}
