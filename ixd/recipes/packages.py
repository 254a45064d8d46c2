"""Packages: selectors loaded into a graph with closures and content-addressed uids.

`PackageGraph.load(selector)` renders a recipe, loads its dependencies along each kind of
edge with the flags docs/recipes.md prescribes, and computes the package's uid from what can
change its output. Packages are cached by (name, flags); `invalidate_files` drops exactly the
packages whose render read a changed file, and every package depending on them (whose renders
are kept and reused). The cache is bounded (least recently used packages go first, never one
a cached package depends on), so a stream of distinct flag sets cannot grow the daemon for
good.

The build closures (`tools`, `target_libs`, `host_libs`, `lib_closure`, `run_deps`) are in
stal/IX's order, a package before what it reaches, so the build environment's dir lists come
out as stal/IX's (reversed: dependencies first). `run_closure` is dependencies first, the
package itself last.

One unit though long: `PackageGraph`'s memos (edges, renders shared between flag sets,
descriptors, uids, build nodes) are filled by one load under one lock and counted against one
byte budget that clears them together; what needs no graph is in `ixd.recipes.package` (the
package and its pure functions) and `ixd.recipes.rendercontext` (what a template sees).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import operator
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ixd.model import platforms
from ixd.model.layout import entry_path, source_file
from ixd.model.nodes import Node, Source, url_basename
from ixd.model.selector import (
    ONE_LEVEL_FLAGS,
    EdgeKind,
    Selector,
    child_flags,
    kind_of,
    parse_selector,
    recipe_selector,
    validate_flag_value,
    validate_package_name,
)
from ixd.recipes import snapshot
from ixd.recipes.descriptor import Descriptor, parse_descriptor
from ixd.recipes.hostcapture import HostCapture
from ixd.recipes.hosttools import HostVersions
from ixd.recipes.package import (
    BOOT_PREFIX,
    Build,
    FlagsKey,
    Package,
    PackageKey,
    build_env,
    build_uid,
    content_hash,
    display_name,
    lib_closure_of,
    normal_name,
    package_bytes,
    pkg_name,
    run_deps_of,
    store_dirs,
    unique,
    visit,
)
from ixd.recipes.packagecache import PackageCache
from ixd.recipes.rendercache import (
    DEFAULT_STORE_BYTES,
    DEFAULT_USER_SHARE,
    Asked,
    Owner,
    RenderStore,
    fingerprint,
)
from ixd.recipes.rendercontext import (
    PLATFORM_NAMES,
    SAME_HELPERS,
    HostProbes,
    answers_hold,
    answers_kept,
    mark_probes,
    render_context,
    render_settings,
    values_key,
)
from ixd.recipes.renders import RenderCache
from ixd.recipes.templateindex import look
from ixd.recipes.tree import REALM_FLAG, RecipeTree, Rendered, recipe_file
from ixd.wire.errors import DependencyCycle

#: how many packages a graph keeps cached by default: stal/IX's CI set alone loads 27,416
#: (five platforms), and a warm `dep` of it must not render any of them again
DEFAULT_MAX_PACKAGES = 60_000
#: questions to the host a graph's renders may ask in a run and still be kept across a
#: restart (stal/IX's CI set asks a few hundred)
MAX_ASKED = 100_000
#: bytes the cached packages may take (an estimate: `package_bytes`); one user's loads fill
#: at most DEFAULT_USER_SHARE of them (the daemon's own account is not held to it)
DEFAULT_CACHE_BYTES = 256 << 20
#: renders waiting for the render store (`store_renders`) past which a load puts them there
#: before it returns (a stream of loads with no idle time between them; stal/IX's CI set
#: makes 27,416 keys); and how many are put there under one hold of the graph's lock
MAX_UNSTORED = 60_000
STORE_BATCH = 2_000


@dataclass
class _SharedRender:
    """A render kept for other flag sets of its package: its descriptor, the files it read;
    its digest in the render store once kept there (the other flag sets' keys name it)."""

    parsed: Descriptor
    files: frozenset[Path]
    reads_realm: bool
    #: what it asked the host, with the answers (`rendercontext.mark_probes`)
    probed: tuple[Asked, ...]
    stored: bytes | None = None


#: the cyclic collector's thresholds for a process that holds a package graph (Python's:
#: 700, 10, 10; ixd sets these). A graph holds tens of thousands of long-lived packages and
#: loading a realm allocates hundreds of thousands of objects: at the default, every tenth
#: older collection scans the whole heap with the interpreter lock held (340 ms once every
#: few re-plans of `bench/plan.py`'s realm; with these, a re-plan after an edit takes 103 ms
#: instead of 132, without such pauses).
GC_THRESHOLDS = (50_000, 20, 20)
#: objects a load leaves past which they go to the oldest generation unwalked
#: (`collector_paused`; from stored renders, bin/b64 leaves about 56,000, set/stalix 126,000
#: and stal/IX's CI set 944,000)
PROMOTED_LOAD = 20_000


#: a package's uid (in C: the closures' uids are read by the thousand)
_uid = operator.attrgetter("uid")


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection while a load runs (the graph's lock held: one at a time).

    A load allocates objects by the million, nearly all of them kept (the packages, their
    closures and nodes) and nearly none in cycles (they are freed by their counts): each
    collection it set off would only walk the growing graph again (a quarter of a restart's
    load of stal/IX's CI set, even at `GC_THRESHOLDS`). After a big load, what it made goes
    straight to the oldest generation (`gc.freeze` then `gc.unfreeze`), unwalked: a young
    collection would walk all of it once, then an older one again (a tenth of that load);
    the cyclic garbage among it waits for the next full collection."""
    if not gc.isenabled():  # paused already, or by the program
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if gc.get_count()[0] > PROMOTED_LOAD:
            gc.freeze()
            gc.unfreeze()
        gc.enable()


def _renamed(node: Node, name: str, meta: dict[str, Any], elf_machine: str) -> Node:
    """`dataclasses.replace(node, name=..., meta=..., elf_machine=...)` without its checks
    and keyword handling: a big tree makes thousands of these (one per flag set of a build)."""
    renamed = object.__new__(Node)
    object.__setattr__(renamed, "__dict__", {**node.__dict__, "name": name, "meta": meta,
                                             "elf_machine": elf_machine})
    return renamed


#: an edge in the memo of the edges from packages with the same flags: its kind, the name
#: and flags written
EdgeMemoKey = tuple[str, str, FlagsKey]
#: the edges along which a buildable package passes its flags on (`child_flags`); along the
#: others its child's flags are the same whatever its flags (but a `run.deps` one's target)
PASSING_EDGES = frozenset({"target_lib", "lib_dep"})

#: what a flag checked once (`PackageGraph._checked_flags`) holds: its tuple and set entry
FLAG_ENTRY = 150
#: what an entry of the edge memo (`PackageGraph._edge`) holds: its tuple and dict slot, and
#: (unless its package holds it too) the child's key
EDGE_ENTRY = 250
EDGE_FLAG = 80


def _memo_size(descriptor: Descriptor) -> int:
    """About what a memo's entry for `descriptor` holds: its script text and the rest (the
    parsed render's lists and strings; measured in tests/test_package_cache.py)."""
    return len(descriptor.script_data) + 1024


class PackageGraph:
    """Loads and caches packages for one daemon configuration.

    The cache is bounded by bytes (`max_bytes`, an estimate: `package_bytes`) and by count
    (`max_packages`), checked after each top-level load: the least recently used go first,
    except that a package stays while a cached package depends on it, so every cached
    package's dependencies are cached too and `invalidate_files` still finds every package a
    changed file reaches. Each package counts against the user whose load made it (`owner`):
    one user holds at most `user_share` of the bytes, and past it their own least recently
    used packages go first, so one user's flood of flag sets pushes out nobody else's.
    """

    def __init__(self, tree: RecipeTree, store: Path, host: str | None = None,
                 max_packages: int = DEFAULT_MAX_PACKAGES,
                 settings: Mapping[str, str] | None = None,
                 host_tools_cache: Path | None = None,
                 render_store: Path | None = None,
                 max_bytes: int = DEFAULT_CACHE_BYTES,
                 user_share: float = DEFAULT_USER_SHARE,
                 uncapped: Iterable[Owner] = (),
                 render_store_bytes: int = DEFAULT_STORE_BYTES,
                 host_capture_cache: Path | None = None,
                 snapshot_file: Path | None = None,
                 defer_store_writes: bool = False) -> None:
        self.tree = tree
        self.store = Path(store)
        self.host = host or platforms.host_name()
        self.uncapped = frozenset(uncapped)
        #: the loaded packages (`ixd.recipes.packagecache`)
        self.cache: PackageCache[Package] = PackageCache(max_packages, max_bytes, user_share,
                                                         self.uncapped)
        self.max_packages = max_packages
        #: who the load under way is for (lock held)
        self._owner: Owner = None
        self._lock = threading.RLock()
        self.renders = 0
        #: loads that took a render of another flag set of the package (`_same_render`)
        self.shared_renders = 0
        self.host_versions = HostVersions(host_tools_cache)
        #: stage 0's captures of host programs (`host_capture` in the render context)
        self.host_capture = HostCapture(host_capture_cache)
        self.settings = render_settings(self.store, settings or {})
        #: the host's answers to the probes a render calls (`ix_boot_tool`, ...)
        self._probes = HostProbes(self.settings, self.host_capture)
        #: the flags (name and value) found fit to be pasted into scripts, and each target
        #: name resolved (recipes write a few, tens of thousands of times)
        self._checked_flags: set[tuple[str, str]] = set()
        self._targets: dict[str, str] = {}
        #: where each edge leads (`_edge`): by the parent's flags and hubness (looked up
        #: once a package), then by the edge's kind and the selector written (its name and
        #: flags: a tuple's hash is made in C, a selector's in Python), the child's key
        self._edges: dict[tuple[FlagsKey, bool], dict[EdgeMemoKey, PackageKey]] = {}
        #: the same for the edges whose child's flags do not depend on the parent's
        #: (not `PASSING_EDGES`), and for a buildable package's `run.deps` (the parent's target
        #: only), by that target
        self._fixed_edges: dict[EdgeMemoKey, PackageKey] = {}
        self._run_edges: dict[str | None, dict[EdgeMemoKey, PackageKey]] = {}
        self._edge_count = 0
        #: the closures walked in the load under way (`_walk`), by closure and roots
        self._walks: dict[Callable[[Package], Sequence[Package]],
                          dict[tuple[int, ...], tuple[Package, ...]]] = {}
        #: renders made, by package name, for other flag sets of the package that read the
        #: same values (`_same_render`); dropped with the files they read
        #: name -> the names a render of it looked up -> their values -> the render
        self._shared: dict[str, dict[tuple[str, ...], dict[tuple[Any, ...], _SharedRender]]] = {}
        #: each tuple of names looked up, once, with where the platform names are in it
        self._read_names: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[int, ...]]] = {}
        self._shared_count = 0
        #: one copy of each descriptor (`_intern`), and the uid of each build made of the
        #: same (`_build`) and of each hub by the builds it brings; both dropped
        #: with the renders they came from
        self._descriptors: dict[Descriptor, Descriptor] = {}
        self._uids: dict[tuple[Any, ...], str] = {}
        #: about the bytes `_shared`, `_descriptors` and `_uids` hold (the descriptors they
        #: keep alive after their packages went)
        self._memo_bytes = 0
        #: the descriptor parsed from each render the render store gave (by its digest)
        self._parsed: dict[bytes, Descriptor] = {}
        #: the build node of each build uid while a package holds it
        self._nodes: weakref.WeakValueDictionary[str, Node] = weakref.WeakValueDictionary()
        #: each package's render (descriptor and the files it read), kept while no file it
        #: read changes, even when the package is dropped because a dependency changed; and
        #: across restarts (ixd.recipes.rendercache), if given a file
        self._fingerprint = fingerprint(self.settings, self.host)
        self.render_cache = RenderCache(
            RenderStore(render_store, self._fingerprint,
                        max_bytes=render_store_bytes, user_share=user_share,
                        uncapped=self.uncapped) if render_store is not None else None)
        #: the loaded graph kept across restarts (`ixd.recipes.snapshot`; with a render
        #: store only: the answers its renders were given are asked only then), taken at
        #: the first load
        self.snapshot_file = snapshot_file if render_store is not None else None
        self._snapshot_due = self.snapshot_file is not None
        #: packages restored from it (a test's and the benchmark's figure)
        self.restored = 0
        #: every file the loaded packages read, as a load first looked at it (None: not to
        #: be looked at), and the sets of files looked at so far
        self._seen_files: dict[Path, snapshot.Seen | None] = {}
        self._seen_sets: set[frozenset[Path]] = set()
        #: the keys whose render captured something of the host that cannot be asked again
        self._volatile: set[PackageKey] = set()
        #: every question the renders of this run asked the host, with its answer
        self._asked: dict[tuple[str, tuple[Any, ...]], Any] = {}
        #: packages added or dropped since the snapshot was last written
        self.unsaved = 0
        #: with `defer_store_writes`, the renders a load made are put in the render store
        #: later (`store_renders`, once the daemon has answered), not while it loads: the key
        #: to keep each under, the render, who the load was for
        self._defer_store = defer_store_writes and self.render_store is not None
        self._unstored: list[tuple[PackageKey, _SharedRender, Owner]] = []

    @property
    def render_store(self) -> RenderStore | None:
        """The renders kept across restarts, if the graph has a file for them."""
        return self.render_cache.store

    @property
    def bytes(self) -> int:
        """The estimated bytes of the cached packages (`package_bytes`)."""
        return self.cache.bytes

    @property
    def owner_bytes(self) -> dict[Owner, int]:
        return self.cache.owner_bytes

    @property
    def max_bytes(self) -> int:
        return self.cache.max_bytes

    @property
    def user_bytes(self) -> int:
        """The bytes one owner's packages may take (the `uncapped` owners are not held)."""
        return self.cache.user_bytes

    @property
    def evicted(self) -> int:
        return self.cache.evicted

    def check_invariants(self) -> None:
        """The cache's accounts and dependents agree with the packages cached, and every
        render and file index entry names a cached package or a kept render (what
        invalidation relies on; raises AssertionError)."""
        with self._lock:
            self.cache.check_invariants()
            self.render_cache.check_invariants((p.key, p.files) for p in self.cache.values())

    @property
    def lock(self) -> threading.RLock:
        """Held by every load and invalidation: while a caller holds it, no package it has
        loaded is dropped."""
        return self._lock

    # --- loading ------------------------------------------------------------------------

    def load(self, selector: Selector, owner: Owner = None) -> Package:
        """A top-level package: `target` defaults to the host, `kind` to its name's kind.
        What the load makes counts against `owner` (the requesting uid)."""
        name = normal_name(validate_package_name(selector.name))
        flags = dict(selector.flags)
        for flag, value in flags.items():  # a client's: the strict charset
            validate_flag_value(value, flag)
        flags["target"] = platforms.resolve(flags.get("target", "host"), self.host)
        flags.setdefault("kind", kind_of(name))
        with self._lock, collector_paused():
            if self._snapshot_due:
                self._restore()
            self._owner = owner
            try:
                package = self._load(name, flags, ())
            finally:
                self._walks.clear()
                if len(self._unstored) > MAX_UNSTORED:  # a stream of loads never idle
                    self._store_unstored(len(self._unstored))
                if self.render_store is not None:
                    self.render_store.flush()
                self.tree.flush()
            self._bound()
            return package

    def load_all(self, selectors: Sequence[Selector], owner: Owner = None) -> list[Package]:
        return [self.load(s, owner) for s in selectors]

    def load_tools(self, selectors: Sequence[Selector], owner: Owner = None
                   ) -> list[Package]:
        """Packages a recipe names as build tools (`fix.deps`: the realm's fix-up tools):
        loaded as along a `bld.deps` edge, with only `target=host` and `kind=bin` under
        their written flags (the recipe charset)."""
        with self._lock, collector_paused():
            if self._snapshot_due:
                self._restore()
            self._owner = owner
            loaded = []
            try:
                for sel in selectors:
                    flags = child_flags("bld_tool", {}, False, dict(sel.flags), self.host)
                    flags["target"] = platforms.resolve(flags.get("target", "host"), self.host)
                    loaded.append(self._load(normal_name(sel.name), flags, ()))
            finally:
                self._walks.clear()
            self._bound()
            return loaded

    def _load(self, name: str, flags: dict[str, str], stack: tuple[PackageKey, ...],
              key: PackageKey | None = None) -> Package:
        """The package `name` with `flags` (its key, if the caller has it: the flags
        sorted), from the cache or loaded now."""
        if key is None:
            key = (name, tuple(sorted(flags.items())))
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        if key in stack:
            chain = " -> ".join(f"{recipe_selector(k[0], k[1])} ({recipe_file(k[0])})"
                                for k in (*stack[stack.index(key):], key))
            raise DependencyCycle(f"dependency cycle: {chain}; remove one of these edges")
        deps: dict[PackageKey, None] = {}  # those it is registered as a dependent of, in order
        try:
            return self._load_new(name, flags, key, (*stack, key), deps)
        except BaseException:
            self.cache.undepend(key, deps)  # a load that failed depends on nothing
            raise

    def _load_new(self, name: str, flags: dict[str, str], key: PackageKey,
                  stack: tuple[PackageKey, ...], deps: dict[PackageKey, None]) -> Package:
        validate_package_name(name)
        checked = self._checked_flags
        for item in flags.items():  # recipes paste flags raw: data only, always
            if item not in checked:
                validate_flag_value(item[1], item[0], from_recipe=True)
                checked.add(item)
                self._memo_bytes += FLAG_ENTRY + len(item[1])

        cache = self.cache

        def depend(dep: Package) -> Package:
            cache.depend(key, dep.key)
            deps[dep.key] = None
            return dep

        introduced: dict[PackageKey, Package] = {}

        def intro(text: str) -> Package:
            """`intro(selector)`: load a package with this one's flags (for its uid)."""
            sel = parse_selector(str(text).strip(), from_recipe=True)
            child = {**{k: v for k, v in flags.items() if k not in ONE_LEVEL_FLAGS},
                     **dict(sel.flags)}
            child["target"] = platforms.resolve(child.get("target", "host"), self.host)
            loaded = depend(self._load(normal_name(sel.name), child, stack))
            introduced.setdefault(loaded.key, loaded)
            return loaded

        realm_free_key = _without_realm(key) if REALM_FLAG in flags else key
        cached = self.render_cache.get(key, realm_free_key)
        if cached is None and self.render_store is not None:
            cached = self._stored_render(name, key, realm_free_key)
        volatile = False
        if cached is None:
            probed: list[Asked] = []
            context = render_context(name, flags, self.settings, self.host, self._probes,
                                     self.host_versions, intro)
            shared = self._same_render(name, context)
            if shared is None:
                if self.render_store is not None:
                    mark_probes(context, probed)
                rendered = self.tree.render(name, context)
                self.renders += 1
                descriptor = self._intern(parse_descriptor(rendered.descriptor,
                                                           recipe_file(name)))
                raw, text, files = rendered.descriptor, rendered.text, rendered.files
                reads_realm = rendered.reads_realm
                if not introduced:  # a render that names another package's uid goes with it
                    shared = self._remember_render(name, context, rendered, descriptor,
                                                   tuple(probed))
            else:
                self.shared_renders += 1
                descriptor, files, reads_realm = shared.parsed, shared.files, shared.reads_realm
                raw, text = None, ""
                probed = list(shared.probed)
            if answers_kept(probed):
                self._note_answers(probed)
            else:
                volatile = True
                self._volatile.update((key, realm_free_key))
            if not introduced:
                self.render_cache.keep(key, descriptor, files,
                                       None if reads_realm else realm_free_key)
                # realm-blind: kept once; with what it asked the host, if that can be asked
                # again
                if self.render_store is not None and answers_kept(probed):
                    assert shared is not None
                    store_key = key if reads_realm else realm_free_key
                    if self._defer_store:  # its text made again from the descriptor then
                        self._unstored.append((store_key, shared, self._owner))
                    else:
                        self._store_render(store_key, shared, raw, text, self._owner)
        else:
            descriptor, files = cached
            volatile = key in self._volatile or realm_free_key in self._volatile
        if volatile:
            self._volatile.add(key)
        elif self._volatile:
            self._volatile.discard(key)
        if files not in self._seen_sets:
            self._see(files)
        is_hub = descriptor.is_hub
        passed = key[1]  # the flags its edges pass on, as a key
        if not is_hub and (flags.get("boot") or name.startswith(BOOT_PREFIX)):
            # a bootstrap build passes `boot` on to the libraries it links (stal/IX)
            flags = {**flags, "boot": "1"}
            passed = tuple(sorted(flags.items()))
        load = self._load
        passing: dict[EdgeMemoKey, PackageKey] | None = None

        def edge(kind: EdgeKind, selectors: Sequence[Selector]) -> list[Package]:
            nonlocal passing
            loaded: list[Package] = []
            if not selectors:
                return loaded
            edges: dict[EdgeMemoKey, PackageKey] | None
            if is_hub or kind in PASSING_EDGES:
                edges = passing
                if edges is None:
                    edges = passing = self._edges.setdefault((passed, is_hub), {})
            elif kind == "run_dep":
                edges = self._run_edges.setdefault(flags.get("target"), {})
            else:
                edges = self._fixed_edges
            for sel in selectors:
                child_key = edges.get((kind, sel.name, sel.flags))
                edge_flags: dict[str, str] | None = None
                if child_key is None:
                    child_key, edge_flags = self._edge(kind, flags, is_hub, edges, sel)
                child = cache.get(child_key)
                if child is None:  # its flags in the order the edge gives them (its node's)
                    if edge_flags is None:
                        edge_flags = self._edge_flags(kind, flags, is_hub, sel)
                    child = load(child_key[0], edge_flags, stack, child_key)
                loaded.append(depend(child))
            return loaded

        # the order of every list follows stal/IX's, so the dirs in a build's environment
        # come out in its order (docs/recipes.md, "Closures")
        bld_deps = edge("bld_tool", descriptor.bld_deps)
        walk = self._walk
        tools = walk(bld_deps, run_deps_of)
        induced = [s for t in tools for s in t.descriptor.ind_deps]
        direct_target_libs = edge("target_lib", [*descriptor.target_libs, *induced])
        target_libs = walk(direct_target_libs, lib_closure_of)
        direct_host_libs = edge("host_lib", [*descriptor.host_libs, *induced])
        host_libs = walk(direct_host_libs, lib_closure_of)
        bld_data = edge("data", descriptor.bld_data)
        data = unique(bld_data)
        lib_deps = edge("lib_dep", descriptor.lib_deps)
        lib_closure = walk(lib_deps, lib_closure_of)
        run_dep_list = edge("run_dep", descriptor.run_deps)
        run_data = edge("data", descriptor.run_data)
        run_roots = run_dep_list + run_data
        if flags["kind"] == "lib":
            run_roots.extend(lib_closure)
        for lib in target_libs:
            if lib.descriptor.run_data:
                run_roots.extend(lib.direct("run_data"))
        run_deps = walk(run_roots, run_deps_of)

        build: Build | None = None
        if is_hub:
            # as in stal/IX, a hub is what it brings at run time: hubs that bring the same
            # builds are one node of every walk (docs/recipes.md, "Hubs")
            brings = tuple(p.uid for p in run_deps if p.out_dir is not None)
            uid = self._uids.get(brings)
            if uid is None:
                uid = self._uids[brings] = content_hash({"hub": list(brings)})
        else:
            build = self._build(key, flags, descriptor, tools, host_libs, target_libs, data)
            uid, descriptor = build.uid, build.descriptor
        package = Package(
            key=key, name=name, flags=flags, descriptor=descriptor, uid=uid,
            out_dir=build.out_dir if build is not None else None, tools=tools,
            host_libs=host_libs, target_libs=target_libs, data=data,
            lib_closure=lib_closure, run_deps=run_deps,
            node=build.node if build is not None else None, files=files, deps=tuple(deps),
            intro=tuple(introduced.values()),
            children=(*bld_deps, *direct_target_libs, *direct_host_libs, *bld_data, *lib_deps,
                      *run_dep_list, *run_data),
        )
        self.cache.add(package, package_bytes(package, build is not None and build.shared),
                       self._owner)
        self.render_cache.index(key, files)
        self.unsaved += 1
        return package

    def _walk(self, roots: Sequence[Package],
              closure: Callable[[Package], Sequence[Package]]) -> tuple[Package, ...]:
        """`visit(roots, closure)`, each list of roots walked once a load: the packages of a
        family reach the same ones (one tuple for all of them, too). By the roots' identity,
        which stays theirs while the load runs (nothing is dropped until it ends)."""
        if len(roots) < 2:
            return visit(roots, closure)
        memo = self._walks.setdefault(closure, {})
        ids = tuple(map(id, roots))
        found = memo.get(ids)
        if found is None:
            found = memo[ids] = visit(roots, closure)
        return found

    def _edge(self, kind: EdgeKind, flags: Mapping[str, str], is_hub: bool,
              edges: dict[EdgeMemoKey, PackageKey], selector: Selector
              ) -> tuple[PackageKey, dict[str, str]]:
        """The key of the package `selector` names along an edge of `kind` from a package
        with `flags`, kept in `edges` (the memo of the edges from packages with these flags)
        for the next package with the same flags (most edges of a tree are written alike in
        many packages: lib/c); and its flags in the order the edge gives them."""
        child = self._edge_flags(kind, flags, is_hub, selector)
        name = normal_name(selector.name)
        key: PackageKey = (name, tuple(sorted(child.items())))
        cached = self.cache.peek(key)
        if cached is not None:
            key = cached.key  # one copy
        else:  # it may outlive its package
            self._memo_bytes += EDGE_FLAG * len(child)
        edges[(kind, selector.name, selector.flags)] = key
        self._edge_count += 1
        self._memo_bytes += EDGE_ENTRY
        return key, child

    def _clear_edges(self) -> None:
        self._edges.clear()
        self._fixed_edges.clear()
        self._run_edges.clear()
        self._edge_count = 0

    def _edge_flags(self, kind: EdgeKind, flags: Mapping[str, str], is_hub: bool,
                    selector: Selector) -> dict[str, str]:
        """The flags of the package `selector` names along an edge of `kind` from a package
        with `flags`, in the order the edge gives them."""
        child = child_flags(kind, flags, is_hub, selector.flags_dict, self.host)
        child["target"] = self._target(child.get("target", "host"))
        return child

    def _target(self, name: str) -> str:
        """`platforms.resolve(name, self.host)`, each name once."""
        resolved = self._targets.get(name)
        if resolved is None:
            resolved = platforms.resolve(name, self.host)
            if len(self._targets) < 1024:  # names recipes write (clients' are checked too)
                self._targets[name] = resolved
        return resolved

    def _store_render(self, key: PackageKey, render: _SharedRender,
                      raw: dict[str, Any] | None, text: str, owner: Owner) -> None:
        """Keep a render made (or taken from another flag set) in the render store for
        `owner`: a render kept there already is named by this key too (lock held)."""
        store = self.render_store
        assert store is not None
        if render.stored is not None and store.alias(key, render.stored, owner):
            return
        if raw is None:
            raw = render.parsed.to_raw()
            text = json.dumps(raw)
        render.stored = store.put(key, raw, text, render.files, render.reads_realm,
                                  owner, render.probed)

    @property
    def unstored(self) -> int:
        """Renders loads made that are not yet in the render store (`store_renders`)."""
        return len(self._unstored)

    def store_renders(self, batch: int = STORE_BATCH, wait: bool = True) -> None:
        """Put the renders that loads made since in the render store (with
        `defer_store_writes`; blocking, for idle time): `batch` at a time under the lock, so
        a load waits for one batch at most. Without `wait`, nothing is put there while a
        load holds the graph (a load may take seconds). A daemon stopped before keeps none
        of them (they are made again after the restart); one stopped while writing, the
        lines written whole (`RenderStore`)."""
        while self._unstored:
            if not self._lock.acquire(blocking=wait):
                return
            try:
                self._store_unstored(batch)
                if self.render_store is not None:
                    self.render_store.flush()
            finally:
                self._lock.release()

    def _store_unstored(self, count: int) -> None:
        """The first `count` renders waiting for the store, put there (lock held)."""
        todo = self._unstored[:count]
        del self._unstored[:count]
        for key, render, owner in todo:
            self._store_render(key, render, None, "", owner)

    def _stored_render(self, name: str, key: PackageKey, realm_free_key: PackageKey
                       ) -> tuple[Descriptor, frozenset[Path]] | None:
        """A render kept by an earlier daemon run, now kept in memory too (lock held)."""
        assert self.render_store is not None
        stored = None
        if realm_free_key != key:  # most renders never name target_realm: kept without it
            stored = self.render_store.get(realm_free_key, self._parsed)
            if stored is not None and stored[2]:  # it names target_realm: not this realm's
                stored = None
        if stored is None:
            stored = self.render_store.get(key, self._parsed)
        if stored is None:
            return None
        raw, files, reads_realm, digest, asked = stored
        if asked:
            if not answers_hold(asked, self._probes, self.host_versions):
                return None  # the host answers otherwise now: rendered again
            self._note_answers(asked)
        if raw is None:  # kept alike for another key: parsed then
            descriptor = self._parsed[digest]
        else:
            descriptor = self._parsed[digest] = self._intern(
                parse_descriptor(raw, recipe_file(name)))
        files = self.tree.shared_file_set(files)
        self.render_cache.keep(key, descriptor, files, None if reads_realm else realm_free_key)
        return descriptor, files

    def _see(self, files: frozenset[Path]) -> None:
        """Look at the files a render just read (what the snapshot keeps of them): a file
        changed since is changed after this look, or so shortly before it that the snapshot
        leaves it out (`snapshot.racy`)."""
        seen, now = self._seen_files, time.time_ns()
        store = self.render_store
        for path in files:
            if path not in seen:
                identity = look(path)
                seen[path] = None if identity is None else (identity, now)
                if store is not None:  # what its renders are kept with, written now or later
                    store.saw(path, identity)
        if len(self._seen_sets) > self.max_packages:
            self._seen_sets.clear()
        self._seen_sets.add(files)

    def _note_answers(self, asked: Iterable[Asked]) -> None:
        """What a render asked the host (the snapshot is taken only while the host answers
        every question of its renders alike)."""
        if len(self._asked) > MAX_ASKED:
            return  # past any tree's: no snapshot this run (`save_snapshot`)
        for name, args, answer in asked:
            try:
                self._asked[(name, args)] = answer
            except TypeError:  # an argument that cannot be a key: not kept
                self._asked[("", ())] = None

    def _intern(self, descriptor: Descriptor) -> Descriptor:
        """The one copy of an equal descriptor (flag sets that render the same, made again
        or read back from the render store: one script text in memory)."""
        kept = self._descriptors.setdefault(descriptor, descriptor)
        if kept is descriptor:
            self._memo_bytes += _memo_size(descriptor)
        return kept

    def _same_render(self, name: str, context: Mapping[str, Any]) -> _SharedRender | None:
        """A render of the package `name` made in this run whose every name looked up has
        the same value in `context`: the same templates would render the same text, so
        another flag set of the package (a flag it never reads) costs no render."""
        for names, renders in self._shared.get(name, {}).items():
            found = renders.get(values_key(context, names, self._read_names[names][1]))
            if found is not None:
                return found
        return None

    def _remember_render(self, name: str, context: Mapping[str, Any], rendered: Rendered,
                         descriptor: Descriptor, probed: tuple[Asked, ...]
                         ) -> _SharedRender:
        """Keep `rendered` for `_same_render`, with the values of the names it looked up
        (but the engine's helpers, the same for every render of a graph)."""
        names = tuple(sorted(rendered.reads - SAME_HELPERS))
        kept = self._read_names.get(names)  # renders of a family read alike: one tuple
        if kept is None:
            kept = self._read_names[names] = (
                names, tuple(i for i, n in enumerate(names) if n in PLATFORM_NAMES))
        names, platforms_at = kept
        values = values_key(context, names, platforms_at)
        shared = self._shared.setdefault(name, {}).setdefault(names, {})[values] = \
            _SharedRender(descriptor, rendered.files, rendered.reads_realm, probed)
        self._shared_count += 1
        self._memo_bytes += _memo_size(descriptor)
        return shared

    def _build(self, key: PackageKey, flags: Mapping[str, str], d: Descriptor,
               tools: tuple[Package, ...], host_libs: tuple[Package, ...],
               target_libs: tuple[Package, ...], data: tuple[Package, ...]) -> Build:
        """The build of a package with these closures: its node decides the uid (everything
        that can change the output)."""
        name, kind = key[0], flags["kind"]
        bins = [p for p in (*tools, *data) if p.out_dir is not None]
        hosts = [p for p in host_libs if p.out_dir is not None]
        targets = [p for p in target_libs if p.out_dir is not None]
        inputs = unique([p for p in (*tools, *host_libs, *target_libs, *data)
                          if p.out_dir is not None])
        input_uids = tuple(map(_uid, inputs))
        # the host's system folders only where the recipe or one of its tools needs them
        host_view = d.host_view != "none" or "tool" in [t.descriptor.host_view for t in tools]
        # as in stal/IX, flags (the target among them) count by what they render: two flag
        # sets that render the same build are one build, and its uid is hashed once (the
        # dirs of its environment are those of these builds: their uids stand for them)
        made_of = (name, kind, d, tuple(map(_uid, bins)), tuple(map(_uid, hosts)),
                   tuple(map(_uid, targets)), input_uids, host_view)
        uid = self._uids.get(made_of)
        env: dict[str, str] | None = None
        sources: tuple[Source, ...] | None = None
        if uid is None:
            env = build_env(bins, hosts, targets)
            sources = _sources(d)
            self._memo_bytes += _memo_size(d)  # the memo holds `d` (its package may go)
            uid = self._uids[made_of] = build_uid(name, kind, d.script_exec, d.script_data,
                                                  env, input_uids, sources, d.net, host_view)
        # what its ELF files must be for: its own target's machine, even where the build is
        # shared with another target's (a build the target does not change)
        machine = platforms.elf_machine(platforms.describe(flags["target"]))
        meta = {"package": name, "flags": dict(flags)}
        same = self._nodes.get(uid)
        if same is not None:
            # another flag set of this build: one node, one copy of its (long) script text
            node = _renamed(same, display_name(key), meta, machine)  # its own name, target
            if d.script_data is not same.stdin:
                d = dataclasses.replace(d, script_data=same.stdin)
                self.render_cache.share_text(key, d)  # the kept render shares it too
            return Build(uid, same.outputs[0], node, d, True)
        if env is None:
            env = build_env(bins, hosts, targets)
        if sources is None:
            sources = _sources(d)
        out = str(entry_path(self.store, uid, pkg_name(name, kind)))
        node = self._nodes[uid] = Node(
            uid=uid,
            kind="build",
            name=display_name(key),
            deps=(*[s.sha256 for s in sources], *[p.uid for p in inputs]),
            inputs=(*store_dirs(inputs),
                    *[str(source_file(self.store, s.sha256)) for s in sources]),
            outputs=(out,),
            command=d.script_exec,
            stdin=d.script_data,
            env=env,
            net=d.net,
            sources=sources,
            meta=meta,
            timeout=d.timeout,
            entry_kind=kind,
            elf_machine=machine,
            host_view=host_view,
        )
        return Build(uid, out, node, d, False)

    # --- cache invalidation ---------------------------------------------------------------

    def invalidate_files(self, paths: Iterable[Path]) -> int:
        """Drop the packages whose render read any of `paths`, and their dependents. Only
        the renders that read them are dropped: a dependent's render stays, to be reused
        when it is loaded again (its closures and uid are made anew, which is cheap)."""
        changed = [Path(p) for p in paths]
        with self._lock:
            stale: set[PackageKey] = set()
            direct = self.render_cache.keys_reading(changed)
            for key in direct:
                self.render_cache.drop(key, self.cache)
            todo = list(direct)
            while todo:
                key = todo.pop()
                if key in stale:
                    continue
                stale.add(key)
                todo.extend(self.cache.dependents(key))
            for key in stale:
                package = self.cache.peek(key)
                if package is not None:
                    self.cache.remove(key)
                    self.render_cache.forget_package(key, package.files, keep_render=True)
                self.cache.forget_dependents(key)  # they are all stale too
            changed_set = set(changed)
            for path in changed_set:
                self._seen_files.pop(path, None)
            self._seen_sets.clear()
            self.unsaved += len(stale) + 1
            self._descriptors.clear()
            self._uids.clear()
            self._parsed.clear()
            for by_names in self._shared.values():
                for renders in by_names.values():
                    for values in [v for v, r in renders.items()
                                   if not changed_set.isdisjoint(r.files)]:
                        del renders[values]
            self.tree.invalidate(changed)
            # a render waiting for the store that read a changed file is not kept
            self._unstored = [u for u in self._unstored if changed_set.isdisjoint(u[1].files)]
            if self.render_store is not None:
                self.render_store.forget(changed)
                self.render_store.flush()
            return len(stale)

    # --- the bound ------------------------------------------------------------------------

    def _bound(self) -> None:
        """After a top-level load (lock held): each owner within their share, the cache
        within its bytes and count; the kept renders at most twice the packages."""
        evicted = self.cache.evicted
        self.cache.bound(self._forget)
        self.unsaved += self.cache.evicted - evicted
        if len(self.render_cache) > 2 * len(self.cache) + 1000:
            self._prune_renders()
        self._bound_memos()

    def _forget(self, package: Package, keep_render: bool = False) -> None:
        """Drop the index entries naming a package the cache dropped (lock held); with
        `keep_render`, its render stays cached, and so do the index entries that find it."""
        self.render_cache.forget_package(package.key, package.files, keep_render)

    def _prune_renders(self) -> None:
        """Drop the renders kept for packages not loaded again since (lock held), and those
        kept for other flag sets (made again when needed)."""
        self._shared.clear()
        self._read_names.clear()
        self._shared_count = 0
        self._descriptors.clear()
        self._memo_bytes = 0
        self._uids.clear()
        self._parsed.clear()
        self._clear_edges()
        self._checked_flags.clear()
        self.render_cache.prune(self.cache)

    def _bound_memos(self) -> None:
        """The renders kept for other flag sets, the one copy of each descriptor and the
        uids of builds made alike hold at most as many entries as the package cache: clients
        choose flags, so they must not grow for good (lock held; made again when needed)."""
        if self._memo_bytes > self.max_bytes // 4:  # clients' flag sets: bytes too
            self._shared.clear()
            self._read_names.clear()
            self._shared_count = 0
            self._descriptors.clear()
            self._uids.clear()
            self._parsed.clear()
            self._clear_edges()
            self._checked_flags.clear()
            self._memo_bytes = 0
        if self._shared_count > self.max_packages:
            self._shared.clear()
            self._read_names.clear()
            self._shared_count = 0
        if len(self._descriptors) > self.max_packages:
            self._descriptors.clear()
        if len(self._uids) > self.max_packages:
            self._uids.clear()
        if len(self._parsed) > self.max_packages:
            self._parsed.clear()
        if self._edge_count > self.max_packages:
            self._clear_edges()
        if len(self._checked_flags) > self.max_packages:
            self._checked_flags.clear()

    # --- the snapshot across restarts ---------------------------------------------------

    def _restore(self) -> None:
        """Take the packages of the snapshot an earlier run kept that no change reaches (at
        the first load, lock held; `ixd.recipes.snapshot`)."""
        self._snapshot_due = False
        assert self.snapshot_file is not None
        kept = snapshot.read(self.snapshot_file, self._fingerprint, self.tree.overlays)
        if kept is None or len(self.cache):
            return
        asked = [(str(name), tuple(args), answer) for name, args, answer in kept.asked]
        if not answers_hold(asked, self._probes, self.host_versions):
            return  # the host answers otherwise now: every package loaded again
        shadowed = {Path(p) for p in snapshot.shadowed_files(kept)}
        changed = {Path(p) for p in snapshot.changed_files(kept)} | shadowed
        if shadowed and self.render_store is not None:  # unchanged, but no longer read
            self.render_store.distrust(shadowed)
        keys = {p.key for p in kept.packages}
        stale = {p.key for p in kept.packages
                 if not changed.isdisjoint(p.files) or not keys.issuperset(p.deps)}
        stale = snapshot.dependents_closure(kept.packages, stale)
        cache, nodes = self.cache, self._nodes
        for package, owner, size in zip(kept.packages, kept.owners, kept.sizes, strict=True):
            key = package.key
            if key in stale:
                continue
            cache.add(package, size, owner)
            for dep in package.deps:
                cache.depend(key, dep)
            self.render_cache.index(key, package.files)
            if package.node is not None and package.uid not in nodes:
                nodes[package.uid] = package.node
            self.restored += 1
        seen = self._seen_files
        for name, (identity, at) in kept.files.items():
            path = Path(name)
            if path not in changed:
                seen[path] = (tuple(identity), at)  # type: ignore[assignment]
        self._note_answers(asked)
        self.unsaved = len(stale)
        self.cache.bound(self._forget)

    def save_snapshot(self) -> bool:
        """Keep the loaded packages for the next run (blocking: a few tenths of a second for
        a big graph), if any was added or dropped since the last time; whether it was
        written."""
        if self.snapshot_file is None:
            return False
        with self._lock:
            if not self.unsaved:
                return False
            self.unsaved = 0
            if len(self._asked) > MAX_ASKED or ("", ()) in self._asked:
                snapshot.remove(self.snapshot_file)  # its answers could not all be asked
                return False
            packages = self.cache.values()
            unsafe = snapshot.unsafe_keys(packages, self._seen_files, self._volatile)
            kept = [p for p in packages if p.key not in unsafe]
            files: dict[str, snapshot.Seen] = {}
            for file_set in {p.files for p in kept}:
                for path in file_set:
                    seen = self._seen_files[path]
                    assert seen is not None  # else unsafe
                    files[str(path)] = seen
            kept_now = snapshot.Snapshot(
                packages=kept,
                owners=[self.cache.owner(p.key) for p in kept],
                sizes=[self.cache.size(p.key) for p in kept],
                files=files,
                absent=snapshot.shadowing(files, self.tree.overlays),
                asked=[(name, args, answer) for (name, args), answer in self._asked.items()])
        # pickled without the lock: what it holds is new here or never changes (a package
        # is finished before the graph holds it), and loads need not wait for it
        return snapshot.write(self.snapshot_file, self._fingerprint, self.tree.overlays,
                              snapshot.encode(kept_now))

    def keys_reading(self, path: Path) -> set[PackageKey]:
        """The keys whose kept render or cached package read `path`."""
        return self.render_cache.keys_reading((path,))

    def __len__(self) -> int:
        return len(self.cache)


def _sources(descriptor: Descriptor) -> tuple[Source, ...]:
    """What a build fetches, as its node names it."""
    if not descriptor.fetch:
        return ()
    return tuple([Source(f.url, f.sha256, url_basename(f.url)) for f in descriptor.fetch])


def _without_realm(key: PackageKey) -> PackageKey:
    """The key of the same package outside any realm."""
    name, flags = key
    kept = tuple([kv for kv in flags if kv[0] != REALM_FLAG])
    return key if len(kept) == len(flags) else (name, kept)
