"""The build database: valid store entries, builds, realms and their generations.

SQLite in WAL mode (the standard library's sqlite3). One connection, guarded by a lock, so
the daemon can call it from worker threads (`trio.to_thread`); every method is one short
transaction, or part of a batch (`write_batch`: several writes in one transaction, as
`ixd.store.dbwriter` commits them). The schema is versioned in `meta` and migrated forward on open.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import outcome

from ixd.wire.errors import DatabaseBusy, DatabaseTooNew

SCHEMA_VERSION = 5

#: SQLite's page cache of the connection, in KiB (its default: 2,000). What the daemon reads
#: again and again (the store's and the realms' indexes, the newest builds) is a few hundred
#: KiB; past that the cache only keeps pages a collection or `verify` scanned once, which the
#: system's page cache holds anyway (bench/memory.py --allocators, bench/scale.py)
CACHE_KIB = 512


@dataclass(frozen=True)
class Generation:
    realm: str
    number: int
    path: str
    state: dict[str, Any]
    created: float
    created_by: int

    def to_json(self) -> dict[str, Any]:
        return {
            "realm": self.realm, "number": self.number, "path": self.path,
            "state": self.state, "created": self.created, "created_by": self.created_by,
        }


# Writes are plain SQL inside our own transactions.
_SCHEMA_V1 = """
CREATE TABLE store (uid TEXT PRIMARY KEY, path TEXT, name TEXT, kind TEXT, registered FLOAT);
CREATE TABLE builds (id INTEGER PRIMARY KEY, uid TEXT, name TEXT, flags TEXT, state TEXT,
    started FLOAT, ended FLOAT, duration FLOAT, exit_status INTEGER, log TEXT,
    requested_by INTEGER, error TEXT);
CREATE INDEX idx_builds_uid ON builds (uid);
CREATE TABLE realms (name TEXT PRIMARY KEY, owner INTEGER, current INTEGER, created FLOAT);
CREATE TABLE generations (realm TEXT, number INTEGER, path TEXT, state TEXT, created FLOAT,
    created_by INTEGER, PRIMARY KEY (realm, number));
"""

# v2: each valid entry's content hash (for `ixd verify`), and pins for the collector (never
# written: the table stays for the schema's sake, the collector no longer reads it)
_SCHEMA_V2 = """
ALTER TABLE store ADD COLUMN hash TEXT;
CREATE TABLE pins (uid TEXT PRIMARY KEY, by INTEGER, created FLOAT);
"""

# v3: a purged realm's generations go with it (before, they stayed, for a new owner of the
# name to roll back to and for the collector to keep)
_SCHEMA_V3 = """
DELETE FROM generations WHERE realm NOT IN (SELECT name FROM realms);
"""

# v4: the store dirs each entry was built from (JSON list; NULL for entries registered before):
# what `ixd --keep-build-inputs` keeps from the collector
_SCHEMA_V4 = """
ALTER TABLE store ADD COLUMN inputs TEXT;
"""

# v5: what the daemon reads of the build history at each start, without reading the history
# (which only grows): each package name's latest successful build's duration (the ETAs), and
# the builds still marked running (those a restart interrupted)
_SCHEMA_V5 = """
CREATE TABLE durations (name TEXT PRIMARY KEY, duration FLOAT);
INSERT INTO durations (name, duration)
    SELECT name, duration FROM (SELECT name, duration, MAX(id) FROM builds
                                WHERE state = 'valid' GROUP BY name);
CREATE INDEX idx_builds_running ON builds (state) WHERE state = 'building';
"""

_MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4, 5: _SCHEMA_V5}


class GenerationRef(NamedTuple):
    """A realm's generation as gc and recovery see it: which one, and its store path."""

    realm: str
    number: int
    path: str


class StoreRef(NamedTuple):
    """A valid store entry as gc sees it."""

    uid: str
    path: str
    kind: str


class _Connection:
    """The connection with the two calls this module makes of it: `execute`, and `query`
    (rows as dicts). Plain sqlite3: sqlite-utils' Database, which offered them, imports click,
    dateutil and pluggy, a seventh of the daemon's start-up and 3 MiB of its memory at rest."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        cursor = self.conn.execute(sql, params)
        names = [column[0] for column in cursor.description]
        for row in cursor:
            yield dict(zip(names, row, strict=True))

    def enable_wal(self) -> None:
        if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.conn.execute("PRAGMA journal_mode=wal")

    def close(self) -> None:
        self.conn.close()


class BuildDatabase:
    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        self.path = path
        path.touch(mode=0o600, exist_ok=True)
        # sqlite waits up to busy_timeout for another process's lock before giving up
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=busy_timeout,
                               isolation_level=None)
        self._db = _Connection(conn)
        # reentrant: the writes of a batch run inside its transaction (`write_batch`)
        self._lock = threading.RLock()
        with self._lock, _busy_is_an_error(self.path):
            self._db.enable_wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._migrate()

    def close(self) -> None:
        with self._lock, _busy_is_an_error(self.path):
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[_Connection]:
        """One transaction; inside a batch's (this thread holds the lock, so the transaction
        under way is the batch's), a savepoint: the write is undone alone if it fails."""
        with self._lock, _busy_is_an_error(self.path):
            nested = self._db.conn.in_transaction
            self._db.execute("SAVEPOINT write" if nested else "BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if nested:
                    self._db.execute("ROLLBACK TO write")
                    self._db.execute("RELEASE write")
                elif self._db.conn.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("RELEASE write" if nested else "COMMIT")

    def write_batch(self, writes: Sequence[Callable[[], object]]) -> list[outcome.Outcome[Any]]:
        """Call each of `writes` (methods of this database, blocking) in one transaction:
        one commit for all. Each write's outcome, in order; a write that raises is undone
        alone, the others are kept. If the commit itself fails, none of them is written and
        every outcome is that error."""
        def alone(write: Callable[[], object]) -> object:
            with self._transaction():  # a savepoint of its own
                return write()

        try:
            with self._transaction():
                done: list[outcome.Outcome[Any]] = [outcome.capture(alone, w) for w in writes]
        except Exception as exc:
            return [outcome.Error(exc) for _ in writes]
        return done

    def _migrate(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = list(self._db.query("SELECT value FROM meta WHERE key = 'schema_version'"))
        version = int(row[0]["value"]) if row else 0
        if version > SCHEMA_VERSION:
            raise DatabaseTooNew(f"the build database {self.path} has schema {version}, newer "
                                 f"than this ixd knows ({SCHEMA_VERSION}); upgrade ixd")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) "
                                 "VALUES ('schema_version', ?)", [str(target)])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- store entries -----------------------------------------------------------------

    def valid_uids(self) -> set[str]:
        with self._lock, _busy_is_an_error(self.path):
            return {uid for (uid,) in self._db.execute("SELECT uid FROM store")}

    def valid_paths(self) -> set[str]:
        """Every valid entry's store path."""
        with self._lock, _busy_is_an_error(self.path):
            return {path for (path,) in self._db.execute("SELECT path FROM store")}

    def register_valid(self, uid: str, path: str, name: str, kind: str,
                       content_hash: str, inputs: Sequence[str] = ()) -> None:
        """Record a valid entry; `inputs`: the store dirs it was built from."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO store (uid, path, name, kind, registered, hash, "
                       "inputs) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [uid, path, name, kind, time.time(), content_hash,
                        json.dumps(list(inputs))])

    def build_inputs(self) -> dict[str, list[str]]:
        """Each valid entry's path -> the store dirs it was built from (entries registered
        before schema 4 have none recorded)."""
        with self._lock, _busy_is_an_error(self.path):
            return {r["path"]: json.loads(r["inputs"]) for r in self._db.query(
                "SELECT path, inputs FROM store WHERE inputs IS NOT NULL")}

    def store_entries(self) -> list[dict[str, Any]]:
        with self._lock, _busy_is_an_error(self.path):
            return list(self._db.query("SELECT * FROM store ORDER BY path"))

    def store_refs(self) -> list[StoreRef]:
        """Every valid entry's uid, path and kind, as plain tuples (a store of tens of
        thousands of entries is read whole by gc: without a dict per row it takes
        a tenth of the time)."""
        with self._lock, _busy_is_an_error(self.path):
            rows = self._db.conn.execute("SELECT uid, path, kind FROM store").fetchall()
        return [StoreRef(*row) for row in rows]

    def store_entry(self, uid: str) -> dict[str, Any] | None:
        with self._lock, _busy_is_an_error(self.path):
            rows = list(self._db.query("SELECT * FROM store WHERE uid = ?", [uid]))
        return rows[0] if rows else None

    def unregister(self, uids: list[str]) -> None:
        with self._transaction() as db:
            for start in range(0, len(uids), 500):
                chunk = uids[start:start + 500]
                db.execute(f"DELETE FROM store WHERE uid IN ({','.join('?' * len(chunk))})",
                           chunk)

    def all_generations(self) -> list[Generation]:
        with self._lock, _busy_is_an_error(self.path):
            rows = self._db.query("SELECT * FROM generations ORDER BY realm, number")
            return [_generation(r) for r in rows]

    # --- builds --------------------------------------------------------------------------

    def build_started(self, uid: str, name: str, flags: dict[str, str], log: str,
                      requested_by: int) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO builds (uid, name, flags, state, started, log, requested_by) "
                "VALUES (?, ?, ?, 'building', ?, ?, ?)",
                [uid, name, json.dumps(flags, sort_keys=True), time.time(), log, requested_by])
            return int(cursor.lastrowid or 0)

    def build_ended(self, build_id: int, state: str, error: str = "") -> None:
        """Record how a build ended. (The `exit_status` column of schema 1 stays NULL: the
        builder reports a failure as a message, which `error` holds.)"""
        ended = time.time()
        with self._transaction() as db:
            db.execute("UPDATE builds SET state = ?, ended = ?, duration = ? - started, "
                       "error = ? WHERE id = ?",
                       [state, ended, ended, error, build_id])
            if state == "valid":
                db.execute("INSERT OR REPLACE INTO durations (name, duration) "
                           "SELECT name, duration FROM builds WHERE id = ?", [build_id])

    def builds(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest builds first."""
        with self._lock, _busy_is_an_error(self.path):
            return list(self._db.query(
                "SELECT * FROM builds ORDER BY id DESC LIMIT ?", [limit]))

    def built_valid_uids(self) -> set[str]:
        """The valid entries this store built itself (not substituted from a cache)."""
        with self._lock, _busy_is_an_error(self.path):
            return {r["uid"] for r in self._db.query(
                "SELECT DISTINCT b.uid FROM builds b JOIN store s ON s.uid = b.uid "
                "WHERE b.state = 'valid'")}

    def last_durations(self) -> dict[str, float]:
        """The duration of each package name's latest successful build (kept apart from the
        history, which may hold hundreds of thousands of builds)."""
        with self._lock, _busy_is_an_error(self.path):
            return dict(self._db.execute("SELECT name, duration FROM durations"))

    def interrupt_running_builds(self) -> int:
        """Builds recorded as running when the daemon (re)starts did not finish."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE builds SET state = 'interrupted' WHERE state = 'building'")
            return int(cursor.rowcount)

    # --- realms --------------------------------------------------------------------------

    def realm(self, name: str) -> dict[str, Any] | None:
        with self._lock, _busy_is_an_error(self.path):
            rows = list(self._db.query("SELECT * FROM realms WHERE name = ?", [name]))
        return rows[0] if rows else None

    def realms(self) -> list[dict[str, Any]]:
        with self._lock, _busy_is_an_error(self.path):
            return list(self._db.query("SELECT * FROM realms ORDER BY name"))

    def current_generation(self, realm: str) -> Generation | None:
        with self._lock, _busy_is_an_error(self.path):
            rows = list(self._db.query(
                "SELECT g.* FROM generations g JOIN realms r ON r.name = g.realm "
                "AND r.current = g.number WHERE r.name = ?", [realm]))
        return _generation(rows[0]) if rows else None

    def generation_refs(self) -> list[GenerationRef]:
        """Every realm's generations, their states not read (what gc and recovery need)."""
        with self._lock, _busy_is_an_error(self.path):
            rows = self._db.execute("SELECT realm, number, path FROM generations").fetchall()
        return [GenerationRef(*row) for row in rows]

    def generations(self, realm: str) -> list[Generation]:
        with self._lock, _busy_is_an_error(self.path):
            rows = self._db.query(
                "SELECT * FROM generations WHERE realm = ? ORDER BY number", [realm])
            return [_generation(r) for r in rows]

    def add_generation(self, realm: str, path: str, state: dict[str, Any], by: int,
                       owner: int) -> Generation:
        """Record a new generation and make it the realm's current one. A realm without a
        record starts at generation 1 with `owner`, whatever generations its name once had."""
        now = time.time()
        with self._transaction() as db:
            if not list(db.query("SELECT 1 FROM realms WHERE name = ?", [realm])):
                db.execute("DELETE FROM generations WHERE realm = ?", [realm])
            rows = list(db.query(
                "SELECT MAX(number) AS n FROM generations WHERE realm = ?", [realm]))
            number = (rows[0]["n"] or 0) + 1
            db.execute("INSERT INTO generations (realm, number, path, state, created, "
                       "created_by) VALUES (?, ?, ?, ?, ?, ?)",
                       [realm, number, path, json.dumps(state, sort_keys=True), now, by])
            db.execute("INSERT INTO realms (name, owner, current, created) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET current = excluded.current",
                       [realm, owner, number, now])
        return Generation(realm, number, path, state, now, by)

    def set_current(self, realm: str, number: int) -> Generation:
        """Make an existing generation current again (rollback)."""
        with self._transaction() as db:
            rows = list(db.query(
                "SELECT * FROM generations WHERE realm = ? AND number = ?", [realm, number]))
            if not rows:
                raise KeyError(number)
            db.execute("UPDATE realms SET current = ? WHERE name = ?", [number, realm])
        return _generation(rows[0])

    def drop_generations_at(self, paths: Sequence[str]) -> int:
        """Forget the generations whose realm entries the collector deletes (never a
        realm's current one: that is a root); how many went."""
        dropped = 0
        with self._transaction() as db:
            for start in range(0, len(paths), 500):
                chunk = list(paths[start:start + 500])
                cursor = db.execute(f"DELETE FROM generations WHERE path IN "
                                    f"({','.join('?' * len(chunk))})", chunk)
                dropped += int(cursor.rowcount)
        return dropped

    def drop_realm(self, realm: str) -> None:
        """Forget a realm and its generations: whoever creates the name again starts afresh
        (no rollback to what was purged), and the collector no longer keeps them."""
        with self._transaction() as db:
            db.execute("DELETE FROM realms WHERE name = ?", [realm])
            db.execute("DELETE FROM generations WHERE realm = ?", [realm])


@contextmanager
def _busy_is_an_error(path: Path) -> Iterator[None]:
    """A database another process keeps locked past the busy timeout fails the request
    with a clear error; the daemon goes on serving."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise DatabaseBusy(f"the build database {path} is locked by another process "
                               f"({exc}); try again when it is released") from None
        raise


def _generation(row: dict[str, Any]) -> Generation:
    return Generation(row["realm"], row["number"], row["path"], json.loads(row["state"]),
                      row["created"], row["created_by"])
