"""Garbage collection's marking, in-process: it fails closed when a root cannot be read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ixd.store import gc
from ixd.store.db import Generation
from ixd.wire.errors import GcAborted


def realm_entry(tmp_path: Path, name: str, meta: str | None) -> Path:
    entry = tmp_path / name
    entry.mkdir()
    if meta is not None:
        (entry / "meta.json").write_text(meta)
    return entry


def test_realm_links_reads_the_store_dirs(tmp_path: Path) -> None:
    entry = realm_entry(tmp_path, "r1", json.dumps({"store_dirs": ["/s/a", "/s/b"]}))
    assert gc.realm_links(str(entry)) == ["/s/a", "/s/b"]


@pytest.mark.parametrize("case", ["missing", "garbage", "no-dirs", "not-a-list", "fifo",
                                  "link-to-dev-zero"])
def test_an_unreadable_root_aborts_the_collection(tmp_path: Path, case: str) -> None:
    entry = realm_entry(tmp_path, "r", {
        "missing": None, "garbage": "{not json", "no-dirs": "{}",
        "not-a-list": json.dumps({"store_dirs": "/s/a"}), "fifo": None,
        "link-to-dev-zero": None}[case])
    if case == "fifo":
        os.mkfifo(entry / "meta.json")
    if case == "link-to-dev-zero":
        (entry / "meta.json").symlink_to("/dev/zero")
    with pytest.raises(GcAborted) as caught:
        gc.realm_links(str(entry))  # never hangs on the FIFO or reads /dev/zero
    assert str(entry) in caught.value.message and "nothing was deleted" in caught.value.message


def test_mark_follows_realm_links_from_the_roots() -> None:
    links = {"/s/realm1": ["/s/a", "/s/b"], "/s/realm2": ["/s/c"]}
    assert gc.mark({"/s/realm1"}, links) == {"/s/realm1", "/s/a", "/s/b"}


def test_roots_keep_current_and_newest_generations() -> None:
    generations = [Generation("r", n, f"/s/g{n}", {}, 0.0, 0) for n in range(1, 6)]
    roots = gc.root_paths(generations, {"r": 2}, keep=2, in_flight=["/s/flight"])
    assert roots == {"/s/g2", "/s/g4", "/s/g5", "/s/flight"}


def test_kept_build_inputs_are_marked_through_every_kept_entry() -> None:
    links = {"/s/realm": ["/s/app"]}
    built_from = {"/s/app": ["/s/lib", "/s/cc"], "/s/lib": ["/s/cc", "/s/libc"],
                  "/s/orphan": ["/s/other"], "/s/libc": []}
    assert gc.mark({"/s/realm"}, links) == {"/s/realm", "/s/app"}
    merged = gc.with_build_inputs(links, built_from)
    assert gc.mark({"/s/realm"}, merged) == {"/s/realm", "/s/app", "/s/lib", "/s/cc",
                                             "/s/libc"}
    assert links == {"/s/realm": ["/s/app"]}  # the realm links themselves are left alone
