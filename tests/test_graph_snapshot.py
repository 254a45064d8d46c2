"""The loaded graph kept across restarts (ixd.recipes.snapshot): a restarted graph takes the
packages an earlier run loaded, exactly those no change reaches (an edit, a file replaced
with the same size and times, a new file that shadows, a removed file, another host answer),
and never a snapshot it did not write whole."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest

from ixd.model.layout import Layout
from ixd.model.selector import parse_selector
from ixd.recipes import snapshot
from ixd.recipes.loadorder import load_order
from ixd.recipes.package import Package
from ixd.recipes.packages import PackageGraph
from ixd.recipes.plan import build_plan
from ixd.recipes.tree import RecipeTree
from ixd.wire.errors import RecipeNotFound
from tests.test_stalix_render import recipe

HOST = "linux-x86_64"


@pytest.fixture(autouse=True)
def _not_racy(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """The files these tests write are seconds old at most: not racy for them (the one test
    of racy files keeps the rule), each change made a tick of the file clock later
    (`later`)."""
    if "racy" not in request.node.name:
        monkeypatch.setattr(snapshot, "RACY_SECONDS", 0.0)


def graph(tmp_path: Path, overlays: list[Path] | None = None, **settings: str) -> PackageGraph:
    return PackageGraph(RecipeTree(overlays or [tmp_path / "o"]), tmp_path / "store",
                        host=HOST, settings=settings, render_store=tmp_path / "renders.jsonl",
                        snapshot_file=tmp_path / "graph.snapshot")


def plain_graph(tmp_path: Path, overlays: list[Path] | None = None) -> PackageGraph:
    """A graph with nothing kept: what a load gives from the files alone."""
    return PackageGraph(RecipeTree(overlays or [tmp_path / "o"]), tmp_path / "store",
                        host=HOST)


def overlay(root: Path) -> None:
    """bin/top needs bin/x (linking lib/a(opt=1)) and bin/y (linking lib/b); bin/other is
    apart."""
    recipe(root, "lib/a", "'a ' + (opt or '')")
    recipe(root, "lib/b", "'b'")
    recipe(root, "bin/x", "'x'", target_libs=["lib/a(opt=1)"])
    recipe(root, "bin/y", "'y'", target_libs=["lib/b"])
    recipe(root, "bin/top", "'top'", deps=["bin/x", "bin/y"])
    recipe(root, "bin/other", "'other'")


TARGETS = ("bin/top", "bin/other")


def load(g: PackageGraph) -> list[Package]:
    return g.load_all([parse_selector(t) for t in TARGETS])


def later(path: Path) -> None:
    """Wait until the file system's clock is past `path`'s change time (polling, with a
    deadline): a change made now gets another change time (the racy rule's reason)."""
    probe = path.with_name(".probe")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        probe.write_text("")
        if probe.stat().st_ctime_ns > path.stat().st_ctime_ns:
            probe.unlink()
            return
    raise AssertionError("the file system's clock did not move")


def saved(tmp_path: Path, overlays: list[Path] | None = None) -> list[Package]:
    g = graph(tmp_path, overlays)
    packages = load(g)
    assert g.save_snapshot()
    return packages


def same_as_from_files(tmp_path: Path, packages: list[Package],
                       overlays: list[Path] | None = None) -> None:
    """`packages` are what a graph with nothing kept loads: uids, nodes, order, plan."""
    fresh = load(plain_graph(tmp_path, overlays))
    assert [p.uid for p in packages] == [p.uid for p in fresh]
    layout = Layout(tmp_path)
    assert build_plan(packages, layout) == build_plan(fresh, layout)
    assert [p.key for p in load_order(packages)] == [p.key for p in load_order(fresh)]


def script_of(packages: list[Package], name: str) -> str:
    for package in load_order(packages):
        if package.name == name:
            return package.descriptor.script_data
    raise AssertionError(name)


def test_a_restart_takes_the_loaded_graph_from_the_snapshot(tmp_path: Path) -> None:
    overlay(tmp_path / "o")
    first = saved(tmp_path)
    file = tmp_path / "graph.snapshot"
    assert file.stat().st_mode & 0o777 == 0o600
    again = graph(tmp_path)
    packages = load(again)
    assert again.restored == 6  # top, x, y, lib/a(opt=1), lib/b, other
    assert again.renders == 0 and again.render_store is not None
    assert again.render_store.used == 0  # not a render read
    assert [p.uid for p in packages] == [p.uid for p in first]
    same_as_from_files(tmp_path, packages)
    again.check_invariants()
    assert not again.save_snapshot()  # nothing changed since: not written again


def test_an_edit_drops_exactly_what_reads_the_file_and_its_dependents(tmp_path: Path) -> None:
    overlay(tmp_path / "o")
    saved(tmp_path)
    lib_b = tmp_path / "o" / "lib" / "b" / "ix.sh"
    later(lib_b)
    lib_b.write_text(lib_b.read_text().replace("'b'", "'changed b'"))
    again = graph(tmp_path)
    packages = load(again)
    # lib/b, bin/y and bin/top go; lib/a(opt=1), bin/x and bin/other stay
    assert again.restored == 3
    assert again.renders == 1  # lib/b; bin/y and bin/top from the render store
    assert script_of(packages, "lib/b") == "changed b"
    same_as_from_files(tmp_path, packages)
    again.check_invariants()


@pytest.mark.parametrize("how", ["renamed over", "written in place"])
def test_a_file_replaced_with_the_same_size_and_times_is_caught(tmp_path: Path,
                                                                how: str) -> None:
    """Same size, same modification time: a new inode (renamed over) or a new change time
    (written in place, its time put back) tells."""
    overlay(tmp_path / "o")
    saved(tmp_path)
    lib_b = tmp_path / "o" / "lib" / "b" / "ix.sh"
    before = lib_b.stat()
    text = lib_b.read_text().replace("'b'", "'B'")
    later(lib_b)
    if how == "renamed over":
        new = lib_b.with_name("new")
        new.write_text(text)
        os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
        new.rename(lib_b)
    else:
        with open(lib_b, "r+") as stream:
            stream.write(text)
        os.utime(lib_b, ns=(before.st_atime_ns, before.st_mtime_ns))
    now = lib_b.stat()
    assert (now.st_size, now.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    again = graph(tmp_path)
    packages = load(again)
    assert script_of(packages, "lib/b") == "B"
    assert again.restored == 3
    same_as_from_files(tmp_path, packages)


def test_a_new_file_in_an_earlier_overlay_shadows_the_one_read(tmp_path: Path) -> None:
    front, back = tmp_path / "front", tmp_path / "back"
    front.mkdir()
    overlay(back)
    overlays = [front, back]
    saved(tmp_path, overlays)
    recipe(front, "lib/b", "'front b'")  # the same name, found first now
    again = graph(tmp_path, overlays)
    packages = load(again)
    assert script_of(packages, "lib/b") == "front b"
    assert again.restored == 3
    same_as_from_files(tmp_path, packages, overlays)
    # and the render store does not serve the shadowed file's render either
    assert again.load(parse_selector("lib/b")).descriptor.script_data == "front b"


def test_a_removed_recipe_is_missing_again(tmp_path: Path) -> None:
    overlay(tmp_path / "o")
    saved(tmp_path)
    (tmp_path / "o" / "lib" / "b" / "ix.sh").unlink()
    again = graph(tmp_path)
    assert again.load(parse_selector("bin/x")).descriptor.script_data == "x"
    with pytest.raises(RecipeNotFound):
        again.load(parse_selector("bin/top"))
    assert again.restored == 3
    again.check_invariants()


def test_a_change_seen_while_running_is_in_the_next_snapshot(tmp_path: Path) -> None:
    overlay(tmp_path / "o")
    g = graph(tmp_path)
    load(g)
    assert g.save_snapshot()
    lib_a = tmp_path / "o" / "lib" / "a" / "ix.sh"
    later(lib_a)
    lib_a.write_text(lib_a.read_text().replace("'a '", "'A '"))
    g.invalidate_files([lib_a])
    load(g)
    assert g.save_snapshot()
    again = graph(tmp_path)
    packages = load(again)
    assert again.restored == 6 and again.renders == 0
    assert script_of(packages, "lib/a") == "A 1"
    same_as_from_files(tmp_path, packages)


def test_another_host_answer_drops_the_whole_snapshot(tmp_path: Path) -> None:
    root = tmp_path / "o"
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "mytool").write_text("#!/bin/sh\n")
    (tools / "mytool").chmod(0o755)
    recipe(root, "bin/t", "ix_boot_tool('mytool') or 'none'")
    recipe(root, "bin/plain", "'plain'")
    names = [parse_selector("bin/t"), parse_selector("bin/plain")]

    def restarted() -> tuple[PackageGraph, list[str]]:
        g = PackageGraph(RecipeTree([root]), tmp_path / "store", host=HOST,
                         settings={"ix_boot_path": str(tools)},
                         render_store=tmp_path / "renders.jsonl",
                         snapshot_file=tmp_path / "graph.snapshot")
        scripts = [p.descriptor.script_data for p in g.load_all(names)]
        g.save_snapshot()
        return g, scripts

    _, first = restarted()
    same, again = restarted()
    assert again == first and same.restored == 2
    (tools / "mytool").unlink()
    changed, now = restarted()
    assert changed.restored == 0 and now == ["none", "plain"]


def test_a_render_that_captured_the_host_is_not_kept_nor_what_needs_it(tmp_path: Path
                                                                        ) -> None:
    root = tmp_path / "o"
    recipe(root, "bin/c", "'walked' if (host_versions | list) is not none else ''")
    recipe(root, "bin/d", "'d'", deps=["bin/c"])
    recipe(root, "bin/plain", "'plain'")
    names = [parse_selector("bin/d"), parse_selector("bin/plain")]
    g = graph(tmp_path)
    g.load_all(names)
    assert g.save_snapshot()
    again = graph(tmp_path)
    again.load_all(names)
    assert again.restored == 1  # bin/plain
    assert again.renders == 1  # bin/c; bin/d from the render store


def test_files_changed_in_the_last_seconds_are_not_kept_racy(tmp_path: Path) -> None:
    """A file written within the racy window (all of this test's) could change again within
    the same tick of the clock and keep its identity: nothing reading it is kept."""
    overlay(tmp_path / "o")
    saved(tmp_path)
    again = graph(tmp_path)
    load(again)
    assert again.restored == 0


def snapshot_file_variants(tmp_path: Path) -> list[tuple[str, bytes]]:
    data = (tmp_path / "graph.snapshot").read_bytes()
    header_end = data.index(b"\n", len(snapshot.MAGIC)) + 1
    flipped = bytearray(data)
    flipped[-100] ^= 1
    forbidden = pickle.dumps(_Evil(tmp_path / "ran"))
    digest = snapshot.hashlib.blake2b(forbidden, digest_size=32).digest()
    return [("a flipped byte", bytes(flipped)),
            ("cut short", data[:len(data) // 2]),
            ("another format", b"ix-graph-snapshot 0\n" + data[len(snapshot.MAGIC):]),
            ("another tree", data[:len(snapshot.MAGIC)] + b"0" * 64 + b"\n" + data[header_end:]),
            ("code to run, its digest right", data[:header_end] + digest + forbidden)]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_damaged_or_foreign_snapshot_is_an_empty_one(tmp_path: Path) -> None:
    overlay(tmp_path / "o")
    saved(tmp_path)
    file = tmp_path / "graph.snapshot"
    good = file.read_bytes()
    cases: list[tuple[str, bytes | None, int]] = [
        (name, data, 0o600) for name, data in snapshot_file_variants(tmp_path)]
    cases += [("writable by the group", good, 0o620), ("writable by others", good, 0o602)]
    for name, data, mode in cases:
        file.unlink()
        assert data is not None
        file.write_bytes(data)
        file.chmod(mode)
        again = graph(tmp_path)
        packages = load(again)
        assert again.restored == 0, name
        same_as_from_files(tmp_path, packages)
    assert not (tmp_path / "ran").exists()
    # a link to a good snapshot is not followed
    kept = tmp_path / "kept.snapshot"
    kept.write_bytes(good)
    kept.chmod(0o600)
    file.unlink()
    file.symlink_to(kept)
    again = graph(tmp_path)
    load(again)
    assert again.restored == 0
    if os.geteuid() == 0:  # another user's file
        file.unlink()
        file.write_bytes(good)
        file.chmod(0o600)
        os.chown(file, 65534, 65534)
        again = graph(tmp_path)
        load(again)
        assert again.restored == 0
        os.chown(file, 0, 0)  # and the same file as root's is taken
        again = graph(tmp_path)
        load(again)
        assert again.restored == 6
