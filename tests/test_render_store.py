"""Renders kept across daemon restarts (ixd.recipes.rendercache): a restarted graph gets the same
packages without rendering, and never a render whose files or host answers changed."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

from ixd.daemon import catalog as catalog_module
from ixd.daemon.catalog import Catalog
from ixd.model.layout import Layout
from ixd.model.selector import parse_selector
from ixd.recipes import packages
from ixd.recipes.descriptor import parse_descriptor
from ixd.recipes.packages import PackageGraph
from ixd.recipes.tree import RecipeTree
from tests.test_stalix_render import recipe

HOST = "linux-x86_64"


def graph(tmp_path: Path, **settings: str) -> PackageGraph:
    return PackageGraph(RecipeTree([tmp_path / "o"]), tmp_path / "store", host=HOST,
                        settings=settings, render_store=tmp_path / "renders.jsonl")


def overlay(tmp_path: Path) -> Path:
    root = tmp_path / "o"
    recipe(root, "lib/a", "'a ' + (opt or '')")
    recipe(root, "bin/x", "'x\\n\"quoted\"\\n' + name", target_libs=["lib/a(opt=1)"])
    return recipe(root, "bin/top", "'top'", deps=["bin/x"], target_libs=["lib/a"])


def test_a_restart_gets_the_same_packages_without_rendering(tmp_path: Path) -> None:
    overlay(tmp_path)
    first = graph(tmp_path).load(parse_selector("bin/top"))
    again = graph(tmp_path)
    top = again.load(parse_selector("bin/top"))
    assert again.renders == 0 and again.render_store is not None
    assert again.render_store.used == 4
    assert top.uid == first.uid and top.node == first.node
    assert top.tools[0].descriptor.script_data == 'x\n"quoted"\nbin/x/ix.sh'


def test_renders_taken_by_other_flag_sets_are_kept_too(tmp_path: Path) -> None:
    """A render another flag set took (it reads none of the flags that differ) is kept under
    that flag set's key as well: a restart renders neither."""
    overlay(tmp_path)
    first_graph = graph(tmp_path)
    first = first_graph.load_all([parse_selector("bin/top"), parse_selector("bin/top(k=1)")])
    assert first_graph.shared_renders >= 2  # bin/top(k=1), lib/a(k=1)
    again = graph(tmp_path)
    loaded = again.load_all([parse_selector("bin/top"), parse_selector("bin/top(k=1)")])
    assert again.renders == 0
    assert [p.uid for p in loaded] == [p.uid for p in first]
    assert [p.node for p in loaded] == [p.node for p in first]
    for package in (*loaded, *loaded[1].target_libs):
        assert package.descriptor == first_graph.load(package.selector).descriptor


def test_a_changed_file_is_rendered_again(tmp_path: Path) -> None:
    top_file = overlay(tmp_path)
    first = graph(tmp_path).load(parse_selector("bin/top"))
    lib = tmp_path / "o" / "lib" / "a" / "ix.sh"
    lib.write_text(lib.read_text().replace("'a '", "'A '"))  # same size: the time tells
    os.utime(lib, ns=(lib.stat().st_atime_ns, lib.stat().st_mtime_ns + 1_000_000))
    again = graph(tmp_path)
    top = again.load(parse_selector("bin/top"))
    assert again.renders == 2  # lib/a, lib/a(opt=1); bin/x and bin/top come from the store
    assert top.uid != first.uid and top.target_libs[0].descriptor.script_data == "A "
    assert top_file.exists()


def edit_keeping_times(tmp_path: Path, text: str) -> Path:
    """lib/a's recipe written in place with `text` for `'a '` (the same size), its
    modification time put back; the file."""
    lib = tmp_path / "o" / "lib" / "a" / "ix.sh"
    before = lib.stat()
    lib.write_text(lib.read_text().replace("'a '", text))
    os.utime(lib, ns=(before.st_atime_ns, before.st_mtime_ns))
    return lib


def test_a_file_changed_while_running_is_never_taken_back(tmp_path: Path) -> None:
    """A change seen by the watcher drops the kept renders that read the file, even if the
    next start would find the file looking as it did (same size and time)."""
    overlay(tmp_path)
    g = graph(tmp_path)
    g.load(parse_selector("bin/top"))
    g.invalidate_files([edit_keeping_times(tmp_path, "'B '")])
    again = graph(tmp_path)
    assert again.load(parse_selector("lib/a")).descriptor.script_data == "B "
    assert again.renders == 1


def test_renders_that_ask_the_host_are_kept_while_it_answers_alike(tmp_path: Path) -> None:
    """A render that asked the host is kept with the answers, and used after a restart only
    while the host answers each question as it did: a tool gone from the boot path, a file
    appeared, and those renders are made again (with the new answers)."""
    root = tmp_path / "o"
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "mytool").write_text("#!/bin/sh\n")
    (tools / "mytool").chmod(0o755)
    flag = tmp_path / "flag"
    recipe(root, "bin/f", f"'yes' if isfile('{flag}') else 'no'")
    recipe(root, "bin/t", "ix_boot_tool('mytool') or 'none'")
    recipe(root, "bin/v", "host_versions['sh']")
    recipe(root, "bin/c", "'walked' if (host_versions | list) is not none else ''")
    recipe(root, "bin/plain", "'plain'")
    names = ("bin/f", "bin/t", "bin/v", "bin/c", "bin/plain")

    def load_all() -> tuple[PackageGraph, dict[str, str]]:
        g = graph(tmp_path, ix_boot_path=str(tools))
        return g, {n: g.load(parse_selector(n)).descriptor.script_data for n in names}

    _, first = load_all()
    assert first["bin/t"] == str(tools / "mytool") and first["bin/f"] == "no"
    again, same = load_all()
    assert same == first
    assert again.renders == 1  # bin/c: a walk of every host tool is not kept
    (tools / "mytool").unlink()
    flag.write_text("")
    changed, now = load_all()
    assert now["bin/t"] == "none" and now["bin/f"] == "yes"
    assert now["bin/v"] == first["bin/v"] and now["bin/plain"] == "plain"
    assert changed.renders == 3  # bin/t, bin/f and bin/c


def test_a_kept_question_the_host_answers_otherwise_is_never_served(tmp_path: Path) -> None:
    """The answers a kept render holds are the ones asked again: a store whose answer was
    changed on disk (a damaged or foreign file) is rendered again, not trusted."""
    root = tmp_path / "o"
    tools = tmp_path / "tools"
    tools.mkdir()
    recipe(root, "bin/t", "ix_boot_tool('mytool') or 'none'")
    g = graph(tmp_path, ix_boot_path=str(tools))
    assert g.load(parse_selector("bin/t")).descriptor.script_data == "none"
    store = tmp_path / "renders.jsonl"
    text = store.read_text()
    assert '["ix_boot_tool",["mytool"],null]' in text.replace(" ", "")
    store.write_text(text.replace("null]]]", '"/evil"]]]'))
    again = graph(tmp_path, ix_boot_path=str(tools))
    assert again.load(parse_selector("bin/t")).descriptor.script_data == "none"
    assert again.renders == 1


def test_other_settings_start_a_new_store(tmp_path: Path) -> None:
    overlay(tmp_path)
    graph(tmp_path).load(parse_selector("bin/top"))
    other = graph(tmp_path, ix_dir="/elsewhere")
    other.load(parse_selector("bin/top"))
    assert other.renders == 4
    lines = (tmp_path / "renders.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 4  # the old settings' renders are gone


def test_a_realm_blind_render_is_kept_once_for_every_realm(tmp_path: Path) -> None:
    root = tmp_path / "o"
    recipe(root, "bin/blind", "'blind'")
    recipe(root, "bin/aware", "'in ' + (target_realm or 'none')")
    g = graph(tmp_path)
    for name in ("bin/blind", "bin/aware"):
        g.load(parse_selector(f"{name}(target_realm=alice)"))
    again = graph(tmp_path)
    assert again.load(parse_selector("bin/blind(target_realm=bob)")).descriptor.script_data \
        == "blind"
    assert again.load(parse_selector("bin/aware(target_realm=bob)")).descriptor.script_data \
        == "in bob"
    assert again.load(parse_selector("bin/aware(target_realm=alice)")).descriptor.script_data \
        == "in alice"
    assert again.renders == 1


def test_a_store_mostly_of_dropped_renders_is_written_anew(tmp_path: Path) -> None:
    root = tmp_path / "o"
    path = recipe(root, "bin/churn", "'v0'")
    g = graph(tmp_path)
    for i in range(1, 1200):  # every edit drops the kept render and keeps a new one
        path.write_text(path.read_text().replace(f"'v{i - 1}'", f"'v{i}'"))
        g.invalidate_files([path])
        g.load(parse_selector("bin/churn"))
    store = tmp_path / "renders.jsonl"
    assert len(store.read_text().splitlines()) > 2000
    again = graph(tmp_path)
    assert len(store.read_text().splitlines()) == 2  # the header and the one render kept
    assert again.load(parse_selector("bin/churn")).descriptor.script_data == "v1199"
    assert again.renders == 0


def test_no_more_renders_are_kept_than_the_bound(tmp_path: Path) -> None:
    """Clients choose flags: the renders of their flag sets must not grow the store without
    end. Past the bound the least recently used render goes (made again when asked for)."""
    root = tmp_path / "o"
    recipe(root, "bin/flagged", "'v ' + (n or '')")
    g = graph(tmp_path)
    assert g.render_store is not None
    g.render_store.max_renders = 5
    for i in range(50):
        g.load(parse_selector(f"bin/flagged(n={i})"))
    g.render_store.flush()
    assert g.render_store.evicted == 45

    def kept(n: int) -> bool:
        key = ("bin/flagged", (("kind", "bin"), ("n", str(n)), ("target", HOST)))
        return g.render_store is not None and g.render_store.get(key) is not None

    assert [n for n in range(50) if kept(n)] == [45, 46, 47, 48, 49]


def fill(tmp_path: Path, owner: int | None, tags: range, **bounds: float) -> PackageGraph:
    """A graph whose store bounds are `bounds`, loaded with bin/flagged(n=TAG) by `owner`."""
    g = PackageGraph(RecipeTree([tmp_path / "o"]), tmp_path / "store", host=HOST,
                     render_store=tmp_path / "renders.jsonl",
                     render_store_bytes=int(bounds.get("store", 1 << 20)),
                     user_share=bounds.get("share", 0.25), uncapped=(0,))
    for n in tags:
        g.load(parse_selector(f"bin/flagged(n={n})"), owner)
    assert g.render_store is not None
    g.render_store.flush()
    return g


def test_the_store_file_never_outgrows_its_bytes(tmp_path: Path) -> None:
    recipe(tmp_path / "o", "bin/flagged", "'v ' + (n or '') + '" + "x" * 500 + "'")
    store = tmp_path / "renders.jsonl"
    g = fill(tmp_path, None, range(0), store=64 << 10)
    rs = g.render_store
    assert rs is not None
    largest = 0
    for n in range(600):  # ~600 KiB of renders through a 64 KiB store
        g.load(parse_selector(f"bin/flagged(n={n})"), 1001 + n % 3)
        rs.flush()
        largest = max(largest, store.stat().st_size)
        assert rs.bytes <= rs.live_bytes
    assert 32 << 10 < largest <= 64 << 10
    assert rs.evicted > 500
    # what is kept is what is newest, and it reads back after a restart
    again = fill(tmp_path, None, range(0), store=64 << 10)
    assert again.load(parse_selector("bin/flagged(n=599)")).descriptor.script_data.startswith(
        "v 599x")
    assert again.renders == 0


def test_one_owner_fills_only_their_share_of_the_store(tmp_path: Path) -> None:
    recipe(tmp_path / "o", "bin/flagged", "'v ' + (n or '') + '" + "x" * 500 + "'")
    g = fill(tmp_path, 1001, range(20), store=256 << 10)  # a victim's renders
    rs = g.render_store
    assert rs is not None
    victims = rs.owner_bytes[1001]
    for n in range(100, 1000):  # an attacker's flood of flag sets
        g.load(parse_selector(f"bin/flagged(n={n})"), 6666)
    rs.flush()
    assert rs.owner_bytes[6666] <= rs.user_bytes == (128 << 10) // 4
    assert rs.owner_bytes[1001] == victims  # nothing of the victim's was pushed out
    assert (tmp_path / "renders.jsonl").stat().st_size <= 256 << 10
    again = fill(tmp_path, None, range(0), store=256 << 10)  # owners survive a restart
    assert again.render_store is not None
    assert again.render_store.owner_bytes[1001] == victims
    assert again.render_store.owner_bytes[6666] <= rs.user_bytes
    # the daemon's own account (uid 0 here) is held to the store's bound only
    for n in range(2000, 2200):
        g.load(parse_selector(f"bin/flagged(n={n})"), 0)
    assert rs.owner_bytes[0] > rs.user_bytes and rs.bytes <= rs.live_bytes


def test_flag_sets_that_render_alike_keep_one_render_in_the_file(tmp_path: Path) -> None:
    """stal/IX's CI set loads 27,416 packages from 4,361 renders: a render is kept once, and
    each flag set's key names it, so a store that holds the renders holds all their keys
    (one line per key and render would push most of them out at every restart)."""
    recipe(tmp_path / "o", "bin/same", "'same " + "x" * 2000 + "'")
    tags = range(200)  # 200 keys, each one a few dozen bytes; the render 2 KB
    g = fill(tmp_path, None, range(0), store=64 << 10)
    for n in tags:  # by the daemon's own account: held to the store's bound only
        g.load(parse_selector(f"bin/same(n={n})"), 0)
    assert g.renders == 1 and g.render_store is not None
    g.render_store.flush()
    g.render_store.check_invariants()
    assert (tmp_path / "renders.jsonl").stat().st_size < 2000 + 200 * 150  # not 200 renders
    again = fill(tmp_path, None, range(0), store=64 << 10)
    for n in tags:
        assert again.load(parse_selector(f"bin/same(n={n})")).descriptor.script_data \
            .startswith("same x")
    assert again.renders == 0 and again.render_store is not None
    assert again.render_store.used == 200
    again.render_store.check_invariants()


def test_a_damaged_render_is_made_again_not_trusted(tmp_path: Path) -> None:
    """The file is the daemon's own, but a crash or a disk may damage it: a render whose
    text is not what its digest says is dropped (with every key naming it) and made again."""
    recipe(tmp_path / "o", "bin/plain", "'plain'")
    graph(tmp_path).load(parse_selector("bin/plain"))
    store = tmp_path / "renders.jsonl"
    text = store.read_bytes()
    assert text.count(b"plain") >= 2
    store.write_bytes(text.replace(b'"plain"', b'"PLAIN"'))  # the same length
    again = graph(tmp_path)
    assert again.load(parse_selector("bin/plain")).descriptor.script_data == "plain"
    assert again.renders == 1 and again.render_store is not None
    again.render_store.check_invariants()


def test_a_store_file_the_daemon_may_not_trust_is_not_read(tmp_path: Path) -> None:
    """Writable by others, a link, or another user's: an empty store (written anew)."""
    recipe(tmp_path / "o", "bin/plain", "'plain'")
    graph(tmp_path).load(parse_selector("bin/plain"))
    store = tmp_path / "renders.jsonl"
    good = store.read_bytes()
    kept = tmp_path / "kept.jsonl"
    kept.write_bytes(good)

    def renders() -> int:
        g = graph(tmp_path)
        assert g.load(parse_selector("bin/plain")).descriptor.script_data == "plain"
        return g.renders

    store.chmod(0o666)
    assert renders() == 1
    store.unlink()
    store.symlink_to(kept)
    assert renders() == 1
    assert not store.is_symlink() and kept.read_bytes() == good  # replaced, not followed
    if os.geteuid() == 0:
        store.write_bytes(good)
        os.chown(store, 65534, 65534)
        assert renders() == 1
    store.write_bytes(good)
    os.chown(store, os.geteuid(), os.getegid())
    store.chmod(0o644)
    assert renders() == 0


def test_a_descriptor_reads_back_from_its_raw_form_whole() -> None:
    """What the store keeps of a render another flag set took (`Descriptor.to_raw`) reads
    back as the same descriptor, its view of the host included."""
    raw = {"bld": {"script": {"exec": ["/bin/sh"], "data": "x"}, "deps": ["bin/t(k=v)"]},
           "host_view": "tool", "timeout": 5, "repo": {"version": "1.0"}}
    descriptor = parse_descriptor(raw, "bin/x")
    assert descriptor.host_view == "tool"
    assert parse_descriptor(json.loads(json.dumps(descriptor.to_raw())), "bin/x") == descriptor


def test_the_accounts_stay_true_through_evictions_and_changes(tmp_path: Path) -> None:
    """Keys, renders and their owners' bytes agree after floods, aliases, evictions,
    invalidations and a restart (`check_invariants`)."""
    root = tmp_path / "o"
    recipe(root, "bin/flagged", "'v ' + (n or '') + '" + "x" * 300 + "'")
    path = recipe(root, "bin/same", "'same " + "y" * 300 + "'")
    g = fill(tmp_path, None, range(0), store=32 << 10)
    rs = g.render_store
    assert rs is not None
    for n in range(120):
        owner = 1001 + n % 3
        g.load(parse_selector(f"bin/flagged(n={n % 40})"), owner)
        g.load(parse_selector(f"bin/same(n={n})"), owner)
        if n % 50 == 49:
            path.write_text(path.read_text().replace("'same ", f"'same {n}", 1))
            g.invalidate_files([path])
        rs.check_invariants()
        assert rs.bytes <= rs.live_bytes
    rs.flush()
    again = fill(tmp_path, None, range(0), store=32 << 10)
    assert again.render_store is not None
    again.render_store.check_invariants()
    assert again.load(parse_selector("bin/same(n=119)")).descriptor.script_data \
        .startswith("same 9949y")


def test_the_render_cache_shares_a_realm_blind_render_and_forgets_by_file(tmp_path: Path
                                                                          ) -> None:
    """RenderCache alone: a realm-blind render serves every realm; a changed file finds the
    renders and packages that read it; a package's render outlives it when asked to."""
    from ixd.recipes.descriptor import parse_descriptor
    from ixd.recipes.renders import RenderCache

    cache = RenderCache(None)
    blind = parse_descriptor({"bld": {"script": {"exec": ["/bin/sh", "-s"], "data": "x"}}},
                             "bin/x/ix.sh")
    a, b = tmp_path / "a.sh", tmp_path / "b.sh"
    files = frozenset({a, b})
    alice = ("bin/x", (("kind", "bin"), ("target_realm", "alice")))
    bob = ("bin/x", (("kind", "bin"), ("target_realm", "bob")))
    anywhere = ("bin/x", (("kind", "bin"),))
    cache.keep(alice, blind, files, anywhere)
    assert cache.get(bob, anywhere) == (blind, files)  # another realm takes it
    assert cache.keys_reading([a]) == {alice, anywhere}
    cache.index(bob, files)  # bob's package, cached
    cache.check_invariants([(bob, files)])
    cache.forget_package(bob, files, keep_render=True)
    cache.check_invariants([])
    for key in cache.keys_reading([b]):
        cache.drop(key, ())
    assert cache.get(bob, anywhere) is None and not cache.keys_reading([a, b])
    cache.check_invariants([])


# --- writes put off until the daemon is idle (`defer_store_writes`, the daemon's) -----------


def deferring(tmp_path: Path) -> PackageGraph:
    return PackageGraph(RecipeTree([tmp_path / "o"]), tmp_path / "store", host=HOST,
                        render_store=tmp_path / "renders.jsonl", defer_store_writes=True)


def keys_and_owners(store: Path) -> list[tuple[str, str]]:
    """The keys a store file names, each with its owner's word."""
    return sorted((line.split("\t")[0], line.split("\t")[1])
                  for line in store.read_text().splitlines()[1:])


def test_renders_put_off_are_kept_as_at_once_with_the_same_accounts(tmp_path: Path) -> None:
    """A deferring graph puts nothing in the store while it loads; `store_renders` then
    keeps the keys an immediate one keeps, charged to the same owners (a restart renders
    none)."""
    overlay(tmp_path)
    store = tmp_path / "renders.jsonl"
    at_once = graph(tmp_path)
    at_once.load(parse_selector("bin/top"), owner=1001)
    expected = keys_and_owners(store)
    assert len(expected) == 4
    store.unlink()

    g = deferring(tmp_path)
    first = g.load(parse_selector("bin/top"), owner=1001)
    assert g.unstored == 4 and g.render_store is not None and g.render_store.bytes == 0
    assert not store.exists() or keys_and_owners(store) == []
    g.store_renders(batch=3)  # two holds of the lock
    assert g.unstored == 0
    g.render_store.check_invariants()
    assert set(g.render_store.owner_bytes) == {1001}
    assert keys_and_owners(store) == expected
    again = graph(tmp_path)
    top = again.load(parse_selector("bin/top"))
    assert again.renders == 0 and top.uid == first.uid and top.node == first.node


def test_a_file_changed_before_a_put_off_write_is_never_taken_back(tmp_path: Path) -> None:
    """A render is kept with its files as the load read them: one edited before the store
    is written (the daemon stopping before the watcher told it) is rendered again at the
    next start, even though it looks as it did (same size and modification time)."""
    overlay(tmp_path)
    g = deferring(tmp_path)
    g.load(parse_selector("bin/top"))
    edit_keeping_times(tmp_path, "'B '")
    g.store_renders()
    again = graph(tmp_path)
    assert again.load(parse_selector("lib/a")).descriptor.script_data == "B "
    assert again.renders == 1


def test_a_change_seen_drops_the_renders_waiting_for_the_store(tmp_path: Path) -> None:
    """The renders that read a changed file are not written at all (those of the others
    are)."""
    overlay(tmp_path)
    g = deferring(tmp_path)
    g.load(parse_selector("bin/top"))
    lib = tmp_path / "o" / "lib" / "a" / "ix.sh"
    lib.write_text(lib.read_text().replace("'a '", "'C '"))
    g.invalidate_files([lib])
    assert g.unstored == 2  # bin/top, bin/x
    g.store_renders()
    lines = (tmp_path / "renders.jsonl").read_text().splitlines()[1:]
    assert sorted(json.loads(line.split("\t")[0])[0] for line in lines) == ["bin/top", "bin/x"]


def test_a_stream_of_loads_never_idle_still_keeps_its_renders(tmp_path: Path,
                                                              monkeypatch: Any) -> None:
    """Past MAX_UNSTORED waiting renders a load writes them before it returns: a client
    that never lets the daemon idle cannot grow them without bound."""
    monkeypatch.setattr(packages, "MAX_UNSTORED", 3)
    overlay(tmp_path)
    g = deferring(tmp_path)
    g.load(parse_selector("bin/top"))
    assert g.unstored == 0 and g.render_store is not None and g.render_store.bytes > 0


@contextlib.asynccontextmanager
async def daemon_after_dep(tmp_path: Path) -> AsyncIterator[tuple[Catalog, Path]]:
    """The daemon's catalog (its watcher running) just after `dep bin/top`, and its store
    file; stopped on leaving."""
    overlay(tmp_path)
    layout = Layout(tmp_path / "root")
    layout.ensure()
    catalog = Catalog((tmp_path / "o",), layout, {})
    async with trio.open_nursery() as nursery:
        await nursery.start(catalog.watch)
        await catalog.dep([parse_selector("bin/top")])
        assert catalog.graph.unstored == 4
        yield catalog, layout.var / "renders.jsonl"
        nursery.cancel_scope.cancel()


async def test_the_daemon_stores_the_renders_once_requests_are_quiet(tmp_path: Path) -> None:
    async with daemon_after_dep(tmp_path) as (catalog, store):
        with trio.fail_after(60):  # the idle writer's time: polled, with a deadline
            while True:
                if not catalog.graph.unstored:
                    break
                await trio.sleep(0.05)
        assert len(keys_and_owners(store)) == 4


async def test_status_and_a_stop_store_the_renders_waiting(tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    """`status` tells the store's bytes with every render loaded so far in it, and a daemon
    stopping writes those still waiting (never idle long enough here)."""
    monkeypatch.setattr(catalog_module, "RENDERS_QUIET", 3600.0)
    async with daemon_after_dep(tmp_path) as (catalog, store):
        usage = await catalog.cache_usage(os.getuid())
        assert catalog.graph.unstored == 0 and usage["render_store_bytes"] > 0
        assert len(keys_and_owners(store)) == 4
        await catalog.plan_text([parse_selector("bin/x(k=2)")])
        assert catalog.graph.unstored == 2  # bin/x(k=2), lib/a(opt=1,k=2): one render each
    assert catalog.graph.unstored == 0
    assert len(keys_and_owners(store)) == 6


def test_storing_without_waiting_leaves_a_held_graph_alone(tmp_path: Path) -> None:
    """`store_renders(wait=False)` (what `status` asks) puts nothing in the store while a
    load holds the graph, and everything once it is free."""
    overlay(tmp_path)
    g = deferring(tmp_path)
    g.load(parse_selector("bin/top"), owner=1001)
    waiting = g.unstored
    assert waiting == 4
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with g._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    g.store_renders(wait=False)  # returns at once
    assert g.unstored == waiting
    release.set()
    holder.join()
    g.store_renders(wait=False)
    assert g.unstored == 0
