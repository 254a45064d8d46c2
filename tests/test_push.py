"""Pushing to a binary cache (ixd/cache/substitute.Pusher), in process, to a folder cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.cache import format as fmt
from ixd.cache.binarycache import BinaryCache
from ixd.cache.stores import open_store
from ixd.cache.substitute import Pusher
from ixd.model.layout import Layout
from ixd.store.db import BuildDatabase
from ixd.store.treehash import tree_hash
from ixd.wire.errors import CacheError

LIB, APP, REALM = "a" * 32, "b" * 32, "c" * 32
#: entries of the store the pushed closure does not touch
OTHERS = [f"{n:032x}" for n in range(1, 41)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Layout, BuildDatabase]]:
    layout = Layout(tmp_path / "ix")
    layout.ensure()
    db = BuildDatabase(layout.database)

    def entry(uid: str, name: str, kind: str, files: dict[str, str]) -> Path:
        path = layout.store / f"{uid}-{name.replace('/', '-')}"
        for relative, text in files.items():
            (path / relative).parent.mkdir(parents=True, exist_ok=True)
            (path / relative).write_text(text)
        db.register_valid(uid, str(path), name, kind, tree_hash(path))
        return path

    lib = entry(LIB, "lib/x", "lib", {"lib/libx.a": "x"})
    # the program names the library's store path: a reference, found as Nix finds them
    entry(APP, "bin/y", "bin", {"bin/y": f"#!/bin/sh\nexec {lib}/lib/libx.a\n"})
    entry(REALM, "realm", "rlm", {"meta.json": "{}"})
    for uid in OTHERS:
        entry(uid, f"lib/other{uid[-2:]}", "lib", {"lib/o": uid})
    try:
        yield layout, db
    finally:
        db.close()


def test_a_push_reads_the_rows_of_what_it_uploads_not_the_whole_store(
        store: tuple[Layout, BuildDatabase], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    layout, db = store
    cache = BinaryCache(open_store(f"file://{tmp_path}/cache"), str(layout.store),
                        signing_key=fmt.generate_key("test-1"))
    looked: list[str] = []
    look_up = db.store_entry

    def store_entry(uid: str) -> dict[str, object] | None:
        looked.append(uid)
        return look_up(uid)

    def whole_table() -> list[dict[str, object]]:
        raise AssertionError("a push read the whole store table")

    monkeypatch.setattr(db, "store_entry", store_entry)
    monkeypatch.setattr(db, "store_entries", whole_table)
    report = Pusher(cache, db, layout).push([APP])
    assert report.pushed == [LIB, APP]  # references first
    assert set(looked) == {APP, LIB}
    assert cache.has_index(LIB) and cache.has_index(APP)
    # pushed again: both are there already, and nothing more is read
    looked.clear()
    again = Pusher(cache, db, layout).push([APP])
    assert again.pushed == [] and again.present == 1 and looked == [APP]


def test_a_realm_is_not_pushed(store: tuple[Layout, BuildDatabase], tmp_path: Path) -> None:
    layout, db = store
    cache = BinaryCache(open_store(f"file://{tmp_path}/cache"), str(layout.store),
                        signing_key=fmt.generate_key("test-1"))
    with pytest.raises(CacheError, match="not a valid store entry here"):
        Pusher(cache, db, layout).push([REALM])
    assert not cache.has_index(REALM)


@pytest.mark.parametrize("planted", ["unsigned index", "index of another key",
                                     "archive deleted", "garbage archive"])
def test_a_push_repairs_a_bad_entry_instead_of_skipping_it(
        store: tuple[Layout, BuildDatabase], tmp_path: Path, planted: str) -> None:
    """Issue 21, row 7: whatever someone with write access to the bucket left under an
    entry's name, the builder's push makes it the good, signed entry."""
    layout, db = store
    key = fmt.generate_key("builder-1")
    folder = tmp_path / "cache"
    cache = BinaryCache(open_store(f"file://{folder}"), str(layout.store), signing_key=key)
    path = db.store_entry(LIB)["path"]  # type: ignore[index]
    forged = fmt.Entry(LIB, path, "0" * 64, 1, "0" * 64, 1)
    if planted == "unsigned index":
        cache.ensure_info()
        (folder / fmt.index_key(LIB)).write_text(forged.serialise())
    elif planted == "index of another key":
        cache.ensure_info()
        other = fmt.sign(forged, fmt.generate_key("mallory"))
        (folder / fmt.index_key(LIB)).write_text(other.serialise())
    else:
        Pusher(cache, db, layout).push([LIB])
        good = fmt.parse_entry(LIB, (folder / fmt.index_key(LIB)).read_text(),
                               str(layout.store))
        if planted == "archive deleted":
            (folder / good.url).unlink()
        else:  # a reproducible archive's name, taken before the builder's first push
            (folder / good.url).write_bytes(b"x" * good.file_size)
            (folder / fmt.index_key(LIB)).unlink()
    report = Pusher(cache, db, layout).push([APP])
    assert report.pushed == [LIB, APP]
    reader = BinaryCache(open_store(f"file://{folder}"), str(layout.store),
                         {"builder-1": key.public()})
    entry = reader.lookup([LIB])[LIB]
    with open(tmp_path / "fetched", "wb") as handle:
        reader.download(entry, handle)  # the archive is there, and the signed one
    assert Pusher(cache, db, layout).push([APP]).pushed == []  # now it holds: skipped
