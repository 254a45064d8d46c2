"""The package graph's cache is bounded: least recently used packages go, never one a cached
package depends on, and what comes back after an eviction is what a fresh load gives."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ixd.model.selector import Selector
from ixd.recipes.owned import OwnedBytes
from ixd.recipes.packagecache import PackageCache, PackageKey
from ixd.recipes.packages import (
    DEFAULT_MAX_PACKAGES,
    PROMOTED_LOAD,
    PackageGraph,
    collector_paused,
)
from ixd.recipes.tree import RecipeTree
from ixd.wire.errors import RecipeNotFound
from tests.test_engine import HOST, PROJECT_PKGS, write


def recipe(script: str, **edges: list[str]) -> str:
    """A recipe that renders its descriptor itself (no base template: quick to render)."""
    bld = {"script": {"exec": ["/bin/sh", "-s"], "data": script + "\n" + "#" * 1000}}
    lib: dict[str, list[str]] = {}
    for edge, selectors in edges.items():
        (lib if edge == "lib_deps" else bld)[edge.removeprefix("lib_")] = selectors
    return json.dumps({"bld": bld, "lib": lib})


@pytest.fixture
def overlay(tmp_path: Path) -> Path:
    """bin/app(v=...) links lib/a, which drags lib/b; all three see the flag `v`, so every
    flag set makes three packages of its own; all share the build tool bld/tool."""
    root = tmp_path / "overlay"
    write(root, "bin/app/ix.sh", recipe("echo app {{ v }}", target_libs=["lib/a"],
                                        deps=["bld/tool"]))
    write(root, "lib/a/ix.sh", recipe("echo a {{ v }}", lib_deps=["lib/b"], deps=["bld/tool"]))
    write(root, "lib/b/ix.sh", recipe("echo b {{ v }}", deps=["bld/tool"]))
    write(root, "bld/tool/ix.sh", recipe("echo tool"))
    write(root, "bin/broken/ix.sh", recipe("echo broken", target_libs=["lib/a", "lib/missing"]))
    return root


def graph(overlay: Path, tmp_path: Path, bound: int = DEFAULT_MAX_PACKAGES) -> PackageGraph:
    return PackageGraph(RecipeTree([overlay, PROJECT_PKGS]), tmp_path / "store", host=HOST,
                        max_packages=bound)


def app(value: int | str) -> Selector:
    return Selector("bin/app", (("v", str(value)),))


def check_consistent(g: PackageGraph) -> None:
    """Every index names cached packages (or kept renders) only, every cached package's
    dependencies are cached, the byte counts add up: what invalidation and the bounds rely
    on."""
    g.check_invariants()
    for package in g.cache.values():
        assert all(package.key in g.keys_reading(f) for f in package.files)


def test_the_default_bound() -> None:
    assert DEFAULT_MAX_PACKAGES == 60_000
    with pytest.raises(ValueError, match="room for a package"):
        PackageGraph(RecipeTree([PROJECT_PKGS]), Path("/nonexistent"), HOST, max_packages=0)


def held(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes a snapshot holds, but for the interpreter's table of interned strings (pathlib
    interns path parts): it grows in steps whoever is the one to fill it."""
    kept = snapshot.filter_traces([tracemalloc.Filter(False, "*/pathlib.py")])
    return sum(stat.size for stat in kept.statistics("filename"))


#: the bound of the memory test, and how many flag sets it loads: five times what fits
BOUND = 250
FLAG_SETS = 5 * BOUND


def test_five_times_the_flag_sets_a_bounded_graph_holds(overlay: Path, tmp_path: Path) -> None:
    g = graph(overlay, tmp_path, bound=BOUND)
    gc.collect()
    tracemalloc.start()
    try:
        empty = held(tracemalloc.take_snapshot())
        for i in range(BOUND):  # 3 * BOUND packages made: the cache is full from here on
            g.load(app(i))
            assert len(g) <= BOUND
        gc.collect()
        full = held(tracemalloc.take_snapshot())
        for i in range(BOUND, FLAG_SETS):
            g.load(app(i))
            assert len(g) <= BOUND
        gc.collect()
        after = held(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    assert g.renders == FLAG_SETS * 3 + 1  # (+ bld/tool, shared and never evicted)
    assert g.evicted == g.renders - len(g)
    # four times as many flag sets again, and the memory held stays what a full cache holds
    assert after - full < 0.2 * (full - empty), (empty, full, after)
    check_consistent(g)
    assert g.cache.dependents(("bld/tool", (("kind", "bin"), ("target", HOST))))
    # what stays is whole flag sets, the most recent ones: no orphaned libraries
    whole = (BOUND - 1) // 3
    assert Counter(k[0] for k in g.cache.keys()) == {"bin/app": whole, "lib/a": whole,
                                                     "lib/b": whole, "bld/tool": 1}
    assert {k for k in g.cache.keys() if k[0] == "bin/app"} == {
        ("bin/app", (("kind", "bin"), ("target", HOST), ("v", str(i))))
        for i in range(FLAG_SETS - whole, FLAG_SETS)}


def test_what_comes_back_after_eviction_is_a_fresh_load(overlay: Path, tmp_path: Path
                                                         ) -> None:
    g = graph(overlay, tmp_path, bound=50)
    first = {i: g.load(app(i)).uid for i in range(5)}
    for i in range(5, 200):
        g.load(app(i))
    assert all((("bin/app", (("kind", "bin"), ("target", HOST), ("v", str(i)))) not in
                g.cache) for i in range(5))
    renders, shared = g.renders, g.shared_renders
    again = {i: g.load(app(i)).uid for i in range(5)}
    # not found in the cache: rendered again (or a render kept for another flag set taken)
    assert g.renders + g.shared_renders == renders + shared + 5 * 3
    fresh = graph(overlay, tmp_path)
    assert again == first == {i: fresh.load(app(i)).uid for i in range(5)}
    assert len({*again.values()}) == 5
    check_consistent(g)


def test_recently_used_packages_stay(overlay: Path, tmp_path: Path) -> None:
    g = graph(overlay, tmp_path, bound=30)
    kept = g.load(app("kept"))
    for i in range(100):
        g.load(app(i))
        assert g.load(app("kept")) is kept  # used all along: never evicted
    renders = g.renders
    g.load(app(99))
    assert g.renders == renders  # the most recent others are still there too


def test_invalidation_still_reaches_every_cached_dependent(overlay: Path, tmp_path: Path
                                                           ) -> None:
    g = graph(overlay, tmp_path, bound=40)
    for i in range(100):
        g.load(app(i))
    check_consistent(g)
    cached_apps = [k for k in g.cache.keys() if k[0] == "bin/app"]
    assert cached_apps
    old = {p.key: p.uid for p in g.cache.values() if p.name == "bin/app"}
    lib_b = write(overlay, "lib/b/ix.sh", recipe("echo b2 {{ v }}", deps=["bld/tool"]))
    dropped = g.invalidate_files([lib_b])
    assert dropped >= 3 * len(cached_apps)
    assert not [k for k in g.cache.keys() if k[0] in ("bin/app", "lib/a", "lib/b")]
    check_consistent(g)
    for key in cached_apps:
        reloaded = g.load(Selector("bin/app", tuple(kv for kv in key[1]
                                                    if kv[0] not in ("kind", "target"))))
        assert reloaded.uid != old[key]  # lib/b changed under it


def test_a_failed_load_leaves_nothing_pinned(overlay: Path, tmp_path: Path) -> None:
    g = graph(overlay, tmp_path, bound=5)
    for i in range(3):
        with pytest.raises(RecipeNotFound):
            g.load(Selector("bin/broken", (("v", str(i)),)))
    check_consistent(g)
    assert not any(k[0] == "bin/broken" for p in g.cache.values()
                   for k in g.cache.dependents(p.key))
    for i in range(20):
        g.load(app(i))
    assert len(g) <= 5  # lib/a of the failed loads went like everything else
    check_consistent(g)


def owned_graph(overlay: Path, tmp_path: Path, max_bytes: int) -> PackageGraph:
    return PackageGraph(RecipeTree([overlay, PROJECT_PKGS]), tmp_path / "store", host=HOST,
                        max_bytes=max_bytes, user_share=0.25, uncapped=(0,))


def check_bytes(g: PackageGraph) -> None:
    """The byte counts add up to the packages cached, by owner."""
    g.check_invariants()
    assert g.bytes == sum(g.owner_bytes.values())


def test_the_cache_is_bounded_by_bytes_and_its_estimate_by_memory(overlay: Path,
                                                                    tmp_path: Path) -> None:
    g = owned_graph(overlay, tmp_path, max_bytes=400 << 10)
    gc.collect()
    tracemalloc.start()
    try:
        empty = held(tracemalloc.take_snapshot())
        for i in range(200):
            g.load(app(i), 0)  # (uncapped: the cache's own bound alone)
            assert g.bytes <= g.max_bytes
        gc.collect()
        full = held(tracemalloc.take_snapshot())
        for i in range(200, 1000):
            g.load(app(i), 0)
            assert g.bytes <= g.max_bytes
        gc.collect()
        after = held(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    check_bytes(g)
    check_consistent(g)
    assert g.evicted > 1000
    # the estimate is the memory held, within half again either way
    assert 0.5 * g.max_bytes < full - empty < 1.5 * g.max_bytes, (full - empty, g.bytes)
    assert after - full < 0.2 * (full - empty)


def test_one_user_fills_only_their_share_of_the_cache(overlay: Path, tmp_path: Path) -> None:
    """Row 6: a flood of flag sets from one user pushes out their own packages, nobody
    else's."""
    g = owned_graph(overlay, tmp_path, max_bytes=1 << 20)
    victims = [g.load(app(f"victim{i}"), 1001) for i in range(10)]
    mine = g.owner_bytes[1001]
    for i in range(1000):
        g.load(app(i), 6666)
        assert g.owner_bytes[6666] <= g.user_bytes == (1 << 20) // 4
    check_bytes(g)
    check_consistent(g)
    renders = g.renders
    assert [g.load(app(f"victim{i}"), 1001) for i in range(10)] == victims
    assert g.renders == renders and g.owner_bytes[1001] == mine  # all still cached
    # the shared build tool counts against whoever loaded it first: the victim
    assert g.cache.owner(("bld/tool", (("kind", "bin"), ("target", HOST)))) == 1001


@dataclass(frozen=True)
class Loaded:
    """A package as the cache sees one: its key and the keys it depends on."""

    key: PackageKey
    deps: tuple[PackageKey, ...] = ()


def test_the_cache_drops_a_dependent_before_what_it_depends_on() -> None:
    cache: PackageCache[Loaded] = PackageCache(2, 1 << 20, 0.25, frozenset())
    lib = Loaded(("lib/a", ()))
    app = Loaded(("bin/app", ()), (lib.key,))
    other = Loaded(("bin/other", ()))
    for package, owner in ((lib, 1001), (app, 1001), (other, 1002)):
        cache.add(package, 100, owner)
        for dep in package.deps:
            cache.depend(package.key, dep)
    cache.check_invariants()
    dropped: list[Loaded] = []
    cache.bound(dropped.append)  # three packages, room for two: lib/a is the oldest, but
    assert dropped == [app]      # bin/app needs it
    assert set(cache.keys()) == {lib.key, other.key}
    assert cache.owner_bytes == {1001: 100, 1002: 100} and cache.bytes == 200
    cache.check_invariants()


def test_check_invariants_finds_a_dependent_that_is_not_cached() -> None:
    cache: PackageCache[Loaded] = PackageCache(10, 1 << 20, 0.25, frozenset())
    lib = Loaded(("lib/a", ()))
    cache.add(lib, 100, None)
    cache.depend(("bin/gone", ()), lib.key)  # a load that failed and did not say so
    with pytest.raises(AssertionError):
        cache.check_invariants()
    cache.undepend(("bin/gone", ()), (lib.key,))
    cache.check_invariants()


def test_owned_bytes_adds_up_by_owner_in_use_order() -> None:
    owned: OwnedBytes[str] = OwnedBytes()
    owned.charge("a", 10, 1)
    owned.charge("b", 20, 1)
    owned.charge("c", 5, None)
    with pytest.raises(KeyError):
        owned.charge("a", 1, 2)
    owned.touch("a")
    assert list(owned.owned(1)) == ["b", "a"] and owned.of(1) == 30 and owned.total == 35
    assert owned.discharge("b") == (20, 1) and owned.discharge("b") is None
    assert owned.discharge("c") == (5, None) and None not in owned.by_owner
    owned.check_invariants()


def test_a_load_sets_off_no_cyclic_collection(overlay: Path, tmp_path: Path) -> None:
    """A load's objects are kept and acyclic: a collection while it runs would only walk
    them (a quarter of a restart's load of a big tree)."""
    g = graph(overlay, tmp_path)
    started: list[int] = []
    depth = [0]
    loading = g._load

    def load(*args: Any, **kwargs: Any) -> Any:
        depth[0] += 1
        try:
            return loading(*args, **kwargs)
        finally:
            depth[0] -= 1

    g._load = load  # type: ignore[method-assign]

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and depth[0]:
            started.append(info["generation"])

    thresholds = gc.get_threshold()
    gc.set_threshold(10)  # a young collection every ten objects, were it running
    gc.callbacks.append(note)
    try:
        for i in range(20):
            g.load(app(i))
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(note)
        gc.set_threshold(*thresholds)
    assert started == []


def test_what_a_big_load_made_goes_to_the_oldest_generation_unwalked() -> None:
    kept = None
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested: the outer one resumes it
            pass
        assert not gc.isenabled()
        kept = [[i] for i in range(PROMOTED_LOAD + 1)]
    assert gc.isenabled()
    assert any(o is kept for o in gc.get_objects(generation=2))
    small = None
    with collector_paused():
        small = [[1]]
    assert any(o is small for o in gc.get_objects(generation=0))
    gc.disable()  # paused by the program: left so
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
