"""Start-up recovery, in-process: what a crash left behind is trashed, realm links follow the
database, and nothing registered valid is touched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.model.layout import Layout
from ixd.store.db import BuildDatabase
from ixd.store.recovery import recover


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "root")
    layout.ensure()
    return layout


@pytest.fixture
def db(layout: Layout) -> Iterator[BuildDatabase]:
    database = BuildDatabase(layout.database)
    yield database
    database.close()


def entry(layout: Layout, name: str, *, valid: BuildDatabase | None = None) -> Path:
    """A store entry with one file; registered valid in `valid` if given."""
    path = layout.store / name
    path.mkdir()
    (path / "file").write_text(name)
    if valid is not None:
        valid.register_valid(name.split("-")[0], str(path), "bin/x", "bin", "hash")
    return path


def generation(db: BuildDatabase, realm: str, path: Path) -> int:
    return db.add_generation(realm, str(path), {"packages": []}, by=0, owner=0).number


def link_of(layout: Layout, realm: str) -> str:
    return os.readlink(layout.realm_link(realm))


def test_a_clean_root_needs_nothing(layout: Layout, db: BuildDatabase) -> None:
    kept = entry(layout, "aaa-bin-kept", valid=db)
    report = recover(layout, db)
    assert (report.interrupted_builds, report.trashed, report.repaired_realms) == (0, [], [])
    assert (kept / "file").read_text() == "aaa-bin-kept"


def test_unregistered_entries_scratch_and_partial_downloads_go(layout: Layout,
                                                              db: BuildDatabase) -> None:
    kept = entry(layout, "aaa-bin-kept", valid=db)
    half = entry(layout, "bbb-bin-half")  # renamed in, never registered: a crash between
    scratch = layout.scratch("ccc")
    (scratch / "out").mkdir(parents=True)
    partial = layout.sources / ".0123abcd.part"
    partial.write_bytes(b"half a tarball")
    source = layout.source_path("0123abcd")
    source.write_bytes(b"a whole tarball")

    report = recover(layout, db)

    assert sorted(report.trashed) == ["bbb-bin-half", "build/ccc"]
    assert kept.is_dir() and not half.exists() and not scratch.exists()
    assert not partial.exists() and source.read_bytes() == b"a whole tarball"
    assert list(layout.trash.iterdir()) == []  # trashed, then deleted
    assert "2 unregistered entries and scratch dirs moved to trash" in report.summary()


def test_builds_recorded_as_running_become_interrupted(layout: Layout,
                                                       db: BuildDatabase) -> None:
    running = db.build_started("u1", "bin/a", {}, "/log", requested_by=0)
    done = db.build_started("u2", "bin/b", {}, "/log", requested_by=0)
    db.build_ended(done, "valid")
    assert recover(layout, db).interrupted_builds == 1
    states = {b["id"]: b["state"] for b in db.builds()}
    assert states == {running: "interrupted", done: "valid"}


def test_a_missing_or_stale_realm_link_is_pointed_at_the_current_generation(
        layout: Layout, db: BuildDatabase) -> None:
    first = entry(layout, "r01-realm-work", valid=db)
    second = entry(layout, "r02-realm-work", valid=db)
    generation(db, "work", first)
    generation(db, "work", second)
    generation(db, "home", first)
    # the crash came after the database switched `work`, before its link did; `home`'s link
    # was never made
    os.symlink(os.path.relpath(first, layout.realms), layout.realm_link("work"))

    report = recover(layout, db)

    assert sorted(report.repaired_realms) == ["home -> generation 1", "work -> generation 2"]
    assert link_of(layout, "work") == "../store/r02-realm-work"
    assert link_of(layout, "home") == "../store/r01-realm-work"
    assert recover(layout, db).repaired_realms == []  # nothing left to repair


def test_a_current_generation_not_in_the_store_falls_back_to_the_newest_that_is(
        layout: Layout, db: BuildDatabase) -> None:
    one = entry(layout, "r01-realm-work", valid=db)
    two = entry(layout, "r02-realm-work", valid=db)
    generation(db, "work", one)
    generation(db, "work", two)
    generation(db, "work", layout.store / "r03-realm-work")  # never made it to the store
    report = recover(layout, db)
    assert report.repaired_realms == ["work -> generation 2"]
    assert link_of(layout, "work") == "../store/r02-realm-work"
    current = db.current_generation("work")
    assert current is not None and current.number == 2


def test_a_realm_without_any_generation_left_is_dropped(layout: Layout,
                                                       db: BuildDatabase) -> None:
    gone = layout.store / "r01-realm-lost"
    generation(db, "lost", gone)
    os.symlink("../store/r01-realm-lost", layout.realm_link("lost"))
    report = recover(layout, db)
    assert report.repaired_realms == ["lost (dropped)"]
    assert not os.path.lexists(layout.realm_link("lost"))
    assert db.realm("lost") is None and db.generations("lost") == []


def test_links_of_unknown_realms_and_half_switches_are_removed(layout: Layout,
                                                               db: BuildDatabase) -> None:
    target = entry(layout, "r01-realm-work", valid=db)
    generation(db, "work", target)
    os.symlink("../store/r01-realm-work", layout.realm_link("work"))
    os.symlink("../store/r01-realm-work", layout.realms / ".work.0a1b.tmp")  # cut short
    os.symlink("../store/r01-realm-work", layout.realm_link("purged"))  # purged in the db
    report = recover(layout, db)
    assert report.repaired_realms == ["purged (removed)"]
    assert sorted(os.listdir(layout.realms)) == ["work"]
    assert link_of(layout, "work") == "../store/r01-realm-work"
