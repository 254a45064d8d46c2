"""The build database in process: store entries, builds, realms and their generations,
schema migrations, and what another process's lock or a newer ixd's schema does."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.store.db import SCHEMA_VERSION, BuildDatabase
from ixd.wire.errors import DatabaseBusy, DatabaseTooNew


@pytest.fixture
def db(tmp_path: Path) -> Iterator[BuildDatabase]:
    database = BuildDatabase(tmp_path / "ixd.sqlite")
    yield database
    database.close()


def schema_of(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
                   .fetchone()[0])
    finally:
        conn.close()


def test_a_new_database_has_the_current_schema_and_nothing_in_it(tmp_path: Path) -> None:
    path = tmp_path / "ixd.sqlite"
    db = BuildDatabase(path)
    assert db.valid_uids() == set() and db.realms() == [] and db.builds() == []
    db.close()
    assert schema_of(path) == SCHEMA_VERSION
    assert path.stat().st_mode & 0o777 == 0o600  # builds name their requesters


def test_store_entries_registered_and_unregistered(db: BuildDatabase) -> None:
    uids = [f"{i:032x}" for i in range(1200)]  # more than one chunk of the DELETE
    for uid in uids:
        db.register_valid(uid, f"/ix/store/{uid}-bin-x", "bin/x", "bin", "sha256:" + uid)
    assert db.valid_uids() == set(uids)
    entry = db.store_entries()[0]
    assert (entry["uid"], entry["kind"], entry["hash"]) == (uids[0], "bin", "sha256:" + uids[0])
    db.unregister(uids[:1100])
    assert db.valid_uids() == set(uids[1100:])
    # registering again (a rebuild after gc) replaces the row
    db.register_valid(uids[1100], "/ix/store/other", "bin/x", "bin", "sha256:new")
    assert [e["path"] for e in db.store_entries() if e["uid"] == uids[1100]] == [
        "/ix/store/other"]


def test_an_entry_remembers_the_store_dirs_it_was_built_from(db: BuildDatabase) -> None:
    db.register_valid("a" * 32, "/ix/store/a-bin-x", "bin/x", "bin", "h",
                      inputs=["/ix/store/c-lib-c", "/ix/store/t-bin-cc"])
    db.register_valid("b" * 32, "/ix/store/b-rlm-r", "realm r", "rlm", "h")
    assert db.build_inputs() == {"/ix/store/a-bin-x": ["/ix/store/c-lib-c",
                                                       "/ix/store/t-bin-cc"],
                                 "/ix/store/b-rlm-r": []}


def test_last_durations_are_each_names_latest_successful_build(db: BuildDatabase) -> None:
    for seconds, (name, state) in enumerate([("bin/a", "valid"), ("bin/b", "valid"),
                                             ("bin/a", "valid"), ("bin/a", "failed"),
                                             ("bin/b", "cancelled")], start=1):
        build_id = db.build_started(f"u{seconds}", name, {}, "/log", requested_by=0)
        # each build took about `seconds` hours
        db._db.execute("UPDATE builds SET started = started - ? WHERE id = ?",
                       [seconds * 3600, build_id])
        db.build_ended(build_id, state)
    assert {name: round(took / 3600) for name, took in db.last_durations().items()} == \
        {"bin/a": 3, "bin/b": 2}
    assert db.valid_paths() == set()


def test_builds_record_how_they_ended(db: BuildDatabase) -> None:
    ok = db.build_started("u1", "bin/a", {"opt": "1"}, "/log/u1", requested_by=1001)
    bad = db.build_started("u2", "bin/b", {}, "/log/u2", requested_by=1002)
    running = db.build_started("u3", "bin/c", {}, "/log/u3", requested_by=1001)
    db.build_ended(ok, "valid")
    db.build_ended(bad, "failed", "exit status 2")
    rows = {r["uid"]: r for r in db.builds()}
    assert [r["uid"] for r in db.builds()] == ["u3", "u2", "u1"]  # newest first
    assert rows["u1"]["state"] == "valid" and rows["u1"]["duration"] >= 0
    assert rows["u1"]["flags"] == '{"opt": "1"}'
    assert (rows["u2"]["state"], rows["u2"]["error"]) == ("failed", "exit status 2")
    assert rows["u3"]["state"] == "building" and rows["u3"]["ended"] is None
    assert db.builds(limit=1)[0]["id"] == running
    assert db.last_durations() == {"bin/a": rows["u1"]["duration"]}
    # a restart: what was building did not finish
    assert db.interrupt_running_builds() == 1
    assert db.builds(limit=1)[0]["state"] == "interrupted"
    assert db.interrupt_running_builds() == 0


def test_generations_number_up_and_roll_back(db: BuildDatabase) -> None:
    assert db.current_generation("alice") is None
    one = db.add_generation("alice", "/ix/store/r1", {"packages": ["bin/a"]}, by=1001,
                            owner=1001)
    two = db.add_generation("alice", "/ix/store/r2", {"packages": []}, by=0, owner=0)
    assert (one.number, two.number) == (1, 2)
    realm = db.realm("alice")
    assert realm is not None and (realm["owner"], realm["current"]) == (1001, 2)
    assert db.current_generation("alice") == two
    assert db.set_current("alice", 1) == one
    assert db.current_generation("alice") == one
    with pytest.raises(KeyError):
        db.set_current("alice", 7)
    # after a rollback the next generation still gets a new number
    assert db.add_generation("alice", "/ix/store/r3", {}, by=1001, owner=1001).number == 3
    assert [g.number for g in db.generations("alice")] == [1, 2, 3]
    assert [g.realm for g in db.all_generations()] == ["alice"] * 3


def test_a_dropped_realm_starts_afresh_with_a_new_owner(db: BuildDatabase) -> None:
    db.add_generation("shared", "/ix/store/r1", {}, by=1001, owner=1001)
    db.add_generation("shared", "/ix/store/r2", {}, by=1001, owner=1001)
    db.add_generation("other", "/ix/store/r3", {}, by=1002, owner=1002)
    db.drop_realm("shared")
    assert db.realm("shared") is None and db.generations("shared") == []
    again = db.add_generation("shared", "/ix/store/r4", {}, by=1003, owner=1003)
    assert again.number == 1
    assert (db.realm("shared") or {}).get("owner") == 1003
    assert [g.number for g in db.generations("other")] == [1]


def test_an_old_schema_is_migrated_and_orphans_dropped(tmp_path: Path) -> None:
    path = tmp_path / "ixd.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE store (uid TEXT PRIMARY KEY, path TEXT, name TEXT, kind TEXT,
                            registered FLOAT);
        CREATE TABLE builds (id INTEGER PRIMARY KEY, uid TEXT, name TEXT, flags TEXT,
            state TEXT, started FLOAT, ended FLOAT, duration FLOAT, exit_status INTEGER,
            log TEXT, requested_by INTEGER, error TEXT);
        CREATE TABLE realms (name TEXT PRIMARY KEY, owner INTEGER, current INTEGER,
                             created FLOAT);
        CREATE TABLE generations (realm TEXT, number INTEGER, path TEXT, state TEXT,
            created FLOAT, created_by INTEGER, PRIMARY KEY (realm, number));
        INSERT INTO store VALUES ('u1', '/ix/store/u1-bin-a', 'bin/a', 'bin', 1.0);
        INSERT INTO realms VALUES ('kept', 1001, 1, 1.0);
        INSERT INTO generations VALUES ('kept', 1, '/ix/store/r1', '{}', 1.0, 1001);
        INSERT INTO generations VALUES ('purged', 1, '/ix/store/r2', '{}', 1.0, 1002);
        INSERT INTO builds (uid, name, state, duration) VALUES ('u0', 'bin/a', 'valid', 4.0),
            ('u1', 'bin/a', 'valid', 5.0), ('u2', 'bin/a', 'failed', 6.0),
            ('u3', 'bin/b', 'building', NULL);
    """)
    conn.close()
    db = BuildDatabase(path)
    try:
        assert db.valid_uids() == {"u1"}
        assert db.store_entries()[0]["hash"] is None  # v2's column, unknown for old entries
        assert [g.realm for g in db.all_generations()] == ["kept"]  # v3
        assert db.build_inputs() == {}  # v4: unknown for entries registered before
        assert db.last_durations() == {"bin/a": 5.0}  # v5: from the history
        assert db.interrupt_running_builds() == 1
    finally:
        db.close()
    assert schema_of(path) == SCHEMA_VERSION


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ixd.sqlite"
    BuildDatabase(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                 [str(SCHEMA_VERSION + 1)])
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(DatabaseTooNew, match=f"schema {SCHEMA_VERSION + 1}, newer") as info:
        BuildDatabase(path)
    assert info.value.code == "E_DATABASE_TOO_NEW" and "upgrade ixd" in info.value.message
    assert path.read_bytes() == before


def test_another_process_holding_the_lock_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ixd.sqlite"
    db = BuildDatabase(path, busy_timeout=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseBusy, match="locked by another process") as info:
            db.register_valid("u1", "/ix/store/u1", "bin/a", "bin", "h")
        assert info.value.code == "E_DATABASE_BUSY"
        other.execute("ROLLBACK")
        db.register_valid("u1", "/ix/store/u1", "bin/a", "bin", "h")  # and it recovers
        assert db.valid_uids() == {"u1"}
    finally:
        other.close()
        db.close()


def test_a_batch_commits_its_writes_together_and_undoes_a_failing_one_alone(
        db: BuildDatabase) -> None:
    def refused() -> None:
        db.register_valid("u2", "/ix/store/u2", "bin/b", "bin", "h2")
        raise ValueError("refused half way")

    started = db.build_started("u1", "bin/a", {}, "/log/u1", requested_by=0)
    results = db.write_batch([
        lambda: db.register_valid("u1", "/ix/store/u1", "bin/a", "bin", "h1"),
        refused,
        lambda: db.build_ended(started, "valid"),
        lambda: db.build_started("u3", "bin/c", {}, "/log/u3", requested_by=0),
    ])
    assert results[0].unwrap() is None
    with pytest.raises(ValueError, match="refused half way"):
        results[1].unwrap()
    assert db.valid_uids() == {"u1"}  # u2's registration went with the failing write
    assert {r["uid"]: r["state"] for r in db.builds()} == {"u1": "valid", "u3": "building"}
    assert results[3].unwrap() == max(r["id"] for r in db.builds())
    assert not db._db.conn.in_transaction


def test_a_batch_another_process_keeps_locked_fails_whole(tmp_path: Path) -> None:
    path = tmp_path / "ixd.sqlite"
    db = BuildDatabase(path, busy_timeout=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        results = db.write_batch([
            lambda: db.register_valid("u1", "/ix/store/u1", "bin/a", "bin", "h"),
            lambda: db.register_valid("u2", "/ix/store/u2", "bin/b", "bin", "h")])
        for result in results:
            with pytest.raises(DatabaseBusy):
                result.unwrap()
        other.execute("ROLLBACK")
        assert db.valid_uids() == set()
    finally:
        other.close()
        db.close()
