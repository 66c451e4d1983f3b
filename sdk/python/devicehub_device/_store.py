"""The local database: one SQLite file with the credentials, the outbox
(what waits for the hub's PUBACK) and the inbox (commands the application
has not handled yet).

Every write is one transaction committed with ``synchronous=FULL`` in WAL
mode, so a method that "returns once on disk" returns after the fsync of
the write-ahead log. One connection is shared by the threads of a client,
behind a lock.
"""

import json
import sqlite3
import threading
import time

from ._errors import DeviceHubError

# Kinds of outbox entries.
KIND_DATA = 1  # a message of a stream
KIND_REPORTED = 2  # a reported properties patch
KIND_RESULT = 3  # a command result

# How many handled command ids are remembered against redelivery.
KEEP_DONE = 1000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         INTEGER NOT NULL,
    topic        TEXT NOT NULL,
    content_type TEXT NOT NULL,
    msg_id       TEXT NOT NULL,
    chunk_index  INTEGER NOT NULL DEFAULT 0,
    chunk_count  INTEGER NOT NULL DEFAULT 0,
    payload      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT NOT NULL,
    command_id TEXT NOT NULL UNIQUE,
    payload    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS done_commands (
    command_id TEXT PRIMARY KEY,
    at         INTEGER NOT NULL
);
"""


class Entry(object):
    """One outbox row: a message, or one chunk of one, as it is published."""

    __slots__ = ("seq", "kind", "topic", "content_type", "msg_id", "chunk_index", "chunk_count", "payload")

    def __init__(self, kind, topic, content_type, msg_id, payload, chunk_index=0, chunk_count=0, seq=0):
        self.seq = seq
        self.kind = kind
        self.topic = topic
        self.content_type = content_type
        self.msg_id = msg_id
        self.chunk_index = chunk_index
        self.chunk_count = chunk_count
        self.payload = payload

    def final(self):
        """Whether acknowledging this entry completes its message."""
        return self.chunk_count == 0 or self.chunk_index == self.chunk_count - 1


def _row_entry(row):
    seq, kind, topic, ct, msg_id, ci, cc, payload = row
    return Entry(kind, topic, ct, msg_id, bytes(payload), ci, cc, seq)


class Store(object):
    """The device's SQLite database (see the module documentation)."""

    def __init__(self, path):
        if not isinstance(path, str) or not path.endswith(".db"):
            raise DeviceHubError("db must be the path of a file ending in .db, got %r" % (path,), "invalid_options")
        self._lock = threading.RLock()
        self._lockfile = _lock_file(path + "-lock")
        try:
            self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as e:
            self._lockfile.close()
            raise DeviceHubError("open local database %s: %s" % (path, e), "storage")
        self.path = path

    def close(self):
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._lockfile.close()

    # --- transactions -------------------------------------------------

    def write(self, fn):
        """Runs fn(cursor) in one IMMEDIATE transaction, committed (and
        fsynced) before write returns; returns fn's result."""
        with self._lock:
            cur = self._db.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                out = fn(cur)
                cur.execute("COMMIT")
                return out
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise

    def read(self, sql, args=()):
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- meta ---------------------------------------------------------

    def get_json(self, key):
        rows = self.read("SELECT value FROM meta WHERE key = ?", (key,))
        if not rows:
            return None
        return json.loads(rows[0][0])

    def put_json(self, key, value):
        self.write(lambda c: _put_json(c, key, value))

    def delete_key(self, key):
        self.write(lambda c: c.execute("DELETE FROM meta WHERE key = ?", (key,)))

    # --- outbox -------------------------------------------------------

    def append(self, entries):
        """Stores entries in order in one transaction and sets their seq."""
        self.write(lambda c: append_entries(c, entries))

    def next_after(self, after):
        rows = self.read(
            "SELECT seq, kind, topic, content_type, msg_id, chunk_index, chunk_count, payload"
            " FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1", (after,))
        return _row_entry(rows[0]) if rows else None

    def run_after(self, after, limit):
        rows = self.read(
            "SELECT seq, kind, topic, content_type, msg_id, chunk_index, chunk_count, payload"
            " FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
        return [_row_entry(r) for r in rows]

    def delete(self, seqs):
        self.write(lambda c: c.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs]))

    def outbox_state(self):
        """(messages, reported patches, first seq, last seq ever given)."""
        with self._lock:
            msgs, rep, first = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(kind = ?), 0), COALESCE(MIN(seq), 0) FROM outbox"
                " WHERE chunk_count = 0 OR chunk_index = chunk_count - 1", (KIND_REPORTED,)).fetchone()
            first_any = self._db.execute("SELECT COALESCE(MIN(seq), 0) FROM outbox").fetchone()[0]
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            last = row[0] if row else 0
        return msgs, rep, first_any or first, last

    # --- inbox --------------------------------------------------------

    def add_inbound(self, topic, command_id, payload):
        """Stores a command unless it was stored or handled before;
        returns whether it was added."""
        def fn(c):
            if c.execute("SELECT 1 FROM done_commands WHERE command_id = ?", (command_id,)).fetchone():
                return False
            c.execute("INSERT OR IGNORE INTO inbox (topic, command_id, payload) VALUES (?, ?, ?)",
                      (topic, command_id, sqlite3.Binary(payload)))
            return c.rowcount > 0
        return self.write(fn)

    def next_inbound(self):
        rows = self.read("SELECT seq, topic, command_id, payload FROM inbox ORDER BY seq LIMIT 1")
        if not rows:
            return None
        seq, topic, cid, payload = rows[0]
        return seq, topic, cid, bytes(payload)

    def finish_inbound(self, seq, command_id, result_entries):
        """Removes a handled command and queues its result, in one
        transaction: a crash leaves the command to handle again or the
        result to send."""
        def fn(c):
            c.execute("DELETE FROM inbox WHERE seq = ?", (seq,))
            c.execute("INSERT OR REPLACE INTO done_commands (command_id, at) VALUES (?, ?)",
                      (command_id, int(time.time() * 1000)))
            c.execute("DELETE FROM done_commands WHERE command_id IN (SELECT command_id FROM done_commands"
                      " ORDER BY at DESC LIMIT -1 OFFSET ?)", (KEEP_DONE,))
            append_entries(c, result_entries)
        self.write(fn)


def _lock_file(path):
    """Holds an exclusive lock on path for as long as the returned file is
    open, so that two processes never drain one database (the lock goes
    with the process, kill -9 included)."""
    f = open(path, "a+")
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise DeviceHubError("the local database %s is in use by another process" % path[:-5], "storage")
    return f


def _put_json(c, key, value):
    c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))


put_json_tx = _put_json


def append_entries(c, entries):
    for e in entries:
        c.execute(
            "INSERT INTO outbox (kind, topic, content_type, msg_id, chunk_index, chunk_count, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (e.kind, e.topic, e.content_type, e.msg_id, e.chunk_index, e.chunk_count, sqlite3.Binary(e.payload)))
        e.seq = c.lastrowid
