#!/usr/bin/env python3
"""Counts the WAL frames of each commit in a copy of a Gatehouse SQLite database, by B-tree.

    cp DIR/bench.db /tmp/x.db && cp DIR/bench.db-wal /tmp/x.db-wal   # mid-run, e.g. of
    python3 docs/wal-frames.py /tmp/x.db                             # gatehouse-bench --alerts

A WAL frame is a whole page written again by a commit, so frames per commit say how many pages
a commit dirtied and where (docs/performance.md, "Session 21"). Reads the frames of the WAL's
current generation (the header's salts), splits them at commit frames, and names each page's
B-tree with SQLite's `dbstat` (opening the copy applies its WAL).
"""
import collections
import sqlite3
import struct
import sys

database = sys.argv[1]
wal = open(database + "-wal", "rb").read()
_, _, page_size, _, salt1, salt2, _, _ = struct.unpack(">IIIIIIII", wal[:32])
commits, current, offset = [], [], 32
while offset + 24 + page_size <= len(wal):
    page, commit_size, s1, s2, _, _ = struct.unpack(">IIIIII", wal[offset:offset + 24])
    if (s1, s2) != (salt1, salt2):
        break
    current.append(page)
    if commit_size:
        commits.append(current)
        current = []
    offset += 24 + page_size
if not commits:
    sys.exit("no whole commit in the WAL")
names = {page: name for name, page in sqlite3.connect(database).execute("SELECT name, pageno FROM dbstat")}
frames = collections.Counter(names.get(page, "?") for commit in commits for page in commit)
print(f"{len(commits)} commits, {sum(map(len, commits)) / len(commits):.1f} frames per commit")
for name, count in frames.most_common():
    print(f"{count / len(commits):6.2f}  {name}")
