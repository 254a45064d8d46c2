"""The daemon's packages: the recipe graph loaded off the event loop, realm plans made from
it, the index of the overlays' packages (search, suggestions for a misspelt name), the flags
recipes read, and the watcher that drops what a changed recipe file made.

`changes` counts the batches of recipe changes seen so far: a plan made while it was lower
is stale (the realm ops compare it before answering a change from what they remember).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio

from ixd.daemon.watch import watch_tree
from ixd.model.layout import Layout
from ixd.model.nodes import Plan
from ixd.model.selector import Selector
from ixd.recipes import plan as planning
from ixd.recipes.fixup import fixer_selectors
from ixd.recipes.flagnames import TemplateNames
from ixd.recipes.index import RecipeIndex
from ixd.recipes.loadorder import load_order
from ixd.recipes.package import Package, walk_closure
from ixd.recipes.packages import DEFAULT_CACHE_BYTES, PackageGraph, collector_paused
from ixd.recipes.rendercache import DEFAULT_STORE_BYTES, Owner
from ixd.recipes.tree import REALM_FLAG, RecipeTree
from ixd.wire.errors import RecipeNotFound

log = logging.getLogger("ixd")

#: a plan as text is kept for the next request if it compresses to at most this many bytes
MAX_KEPT_PLAN = 64 << 20

#: seconds without a load or change before the graph's snapshot is written
SNAPSHOT_QUIET = 5.0
#: seconds without a request for packages before the renders loads made are put in the
#: render store (`PackageGraph.store_renders`): not while a client's next request (`plan`
#: after `dep`) may come
RENDERS_QUIET = 1.0

#: the realm stal/IX's `ix build` and `ix run` put their packages in: `dep`, `plan`, `build`
#: and `run` load theirs in it too
EPHEMERAL_REALM = "ephemeral"


def in_realm(realm: str, selectors: Sequence[Selector]) -> list[Selector]:
    """As stal/IX's, every package of a realm has the flag target_realm=REALM (unless it sets
    it itself): recipes add what only a realm needs (lib/glib/ix: its fix-up)."""
    return [s if REALM_FLAG in s.flags_dict else s.with_flags({REALM_FLAG: realm})
            for s in selectors]


T = TypeVar("T")


@dataclass(frozen=True)
class RealmPackages:
    """A realm's packages as loaded for it (front first) and its fix-up tools."""

    packages: list[Package]
    fixers: list[Package]


class Catalog:
    def __init__(self, overlays: Sequence[Path], layout: Layout,
                 settings: Mapping[str, str], template_cache: Path | None = None, *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES,
                 render_store_bytes: int = DEFAULT_STORE_BYTES) -> None:
        self.overlays = tuple(overlays)
        self.layout = layout
        tree = RecipeTree(self.overlays, bytecode_dir=layout.var / "jinja",
                          shared_templates=template_cache)
        # what each user's requests load counts against their share of the caches; the
        # daemon's own account (root for the system's daemon) is not held to one
        self.graph = PackageGraph(
            tree, layout.store,
            settings=dict(settings), host_tools_cache=layout.var / "host-tools.json",
            render_store=layout.var / "renders.jsonl", max_bytes=cache_bytes,
            render_store_bytes=render_store_bytes, uncapped=(os.getuid(),),
            host_capture_cache=layout.var / "host-capture.json",
            snapshot_file=layout.var / "graph.snapshot", defer_store_writes=True)
        #: batches of recipe changes seen (and dropped from the package cache) so far
        self.changes = 0
        #: the last plan asked for as text (`plan_text`): its request, the changes it saw
        self._plan_text: tuple[tuple[tuple[str, ...], int], planning.PlanText] | None = None
        #: the last `dep` answered, the same way
        self._dep: tuple[tuple[tuple[str, ...], int], list[Package]] | None = None
        #: the overlays' packages by name and description
        self.index = RecipeIndex(self.overlays)
        #: the names (flags) each recipe file reads
        self.names = TemplateNames()
        #: requests for packages under way, and when the last one ended (trio's clock):
        #: renders are put in the store once none came for RENDERS_QUIET seconds
        self._requests = 0
        self._last_request = 0.0
        self._renders_due = trio.Event()

    @contextlib.contextmanager
    def _request(self) -> Iterator[None]:
        """A request for packages under way (it may make renders for the store)."""
        self._requests += 1
        try:
            yield
        finally:
            self._requests -= 1
            self._last_request = trio.current_time()
            if self.graph.unstored:
                self._renders_due.set()

    async def load(self, selectors: Sequence[Selector], owner: Owner = None
                   ) -> list[Package]:
        """The packages of `selectors` as stal/IX's `ix build` loads them, in its realm
        `ephemeral`, for `owner`'s request (in a worker thread: rendering is CPU work)."""
        with self._request():
            packages: list[Package] = await trio.to_thread.run_sync(
                self.explained, lambda: self.graph.load_all(
                    in_realm(EPHEMERAL_REALM, selectors), owner), selectors)
        return packages

    async def dep(self, selectors: Sequence[Selector], owner: Owner = None) -> list[Package]:
        """Every package of the closure of `selectors`, in the order stal/IX's `ix build`
        loads them (`ixd.recipes.loadorder`); the last one asked for is kept until a recipe
        changes."""

        key = (tuple(str(s) for s in selectors), self.changes)
        kept = self._dep
        if kept is not None and kept[0] == key:
            return kept[1]

        def ordered() -> list[Package]:
            with self.graph.lock:  # no package of the closure dropped meanwhile
                packages = self.graph.load_all(in_realm(EPHEMERAL_REALM, selectors), owner)
                with collector_paused():  # sets and lists by the hundred thousand, no cycle
                    return load_order(packages)

        with self._request():
            packages: list[Package] = await trio.to_thread.run_sync(
                self.explained, ordered, selectors)
        self._dep = (key, packages)
        return packages

    async def plan_text(self, selectors: Sequence[Selector], owner: Owner = None
                        ) -> planning.PlanText:
        """The plan of `selectors` as `ixc plan` prints it, compressed; the last one asked
        for is kept until a recipe changes (a warm `ixc plan` sends it again as it is)."""
        key = (tuple(str(s) for s in selectors), self.changes)
        kept = self._plan_text
        if kept is not None and kept[0] == key:
            return kept[1]
        packages = await self.load(selectors, owner)
        layout = self.layout

        def make() -> planning.PlanText:
            return planning.compressed_plan_text(planning.build_plan(packages, layout))

        with self._request():
            text: planning.PlanText = await trio.to_thread.run_sync(make)
        if sum(len(p) for p in text.pieces) <= MAX_KEPT_PLAN:
            self._plan_text = (key, text)
        return text

    def load_realm(self, realm: str, selectors: Sequence[Selector], owner: Owner = None
                   ) -> RealmPackages:
        """A realm's packages and fix-up tools for `owner`'s request (blocking: rendering is
        CPU)."""
        def load() -> RealmPackages:
            packages = self.graph.load_all(in_realm(realm, selectors), owner)
            return RealmPackages(packages,
                                 self.graph.load_tools(fixer_selectors(packages), owner))
        return self.explained(load, selectors)

    def plan_realm(self, realm: str, selectors: Sequence[Selector], owner: Owner = None,
                   **meta: Any) -> Plan:
        """Load the packages and plan the realm's assembly for `owner`'s request (blocking:
        rendering is CPU)."""
        return self.plan_loaded(realm, self.load_realm(realm, selectors, owner), **meta)

    def plan_loaded(self, realm: str, loaded: RealmPackages, **meta: Any) -> Plan:
        meta.update(realm=realm, packages=[str(p.selector) for p in loaded.packages])
        return planning.realm_plan(realm, loaded.packages, meta, self.layout, loaded.fixers)

    def flags_read(self, packages: Iterable[Package]) -> set[str]:
        """Every name the recipes of `packages` and their closures read (blocking)."""
        files: set[Path] = set()
        for package in walk_closure(packages):
            files.update(package.files)
        return set(self.names.of_files(files))

    def explained(self, load: Callable[[], T], selectors: Sequence[Selector]) -> T:
        """`load()`, a missing recipe told with the names most like it, and a flag that
        names one (`--cc=tcc`: bld/host/tcc) with the recipes it may name."""
        try:
            return load()
        except RecipeNotFound as exc:
            if not exc.package:
                raise
            raise RecipeNotFound(self._missing(exc, selectors), exc.package) from None

    def _missing(self, exc: RecipeNotFound, selectors: Sequence[Selector]) -> str:
        missing = exc.package
        folder, base = posixpath.split(missing)
        for key, value in (kv for s in selectors for kv in s.flags):
            if value == base and folder:
                # `cc` names a compiler: the recipes beside it that extend compiler.sh
                choices = self.index.beside(missing, "compiler.sh" if key == "cc" else "")
                return (f"--{key}={value} names {missing}, which no overlay holds; "
                        f"--{key} may be: {', '.join(choices) or '(nothing beside it)'}")
        closest = self.index.closest(missing)
        if not closest:
            return f"{exc.message}; `ixc search WORD` finds packages"
        return f"{exc.message}; did you mean {' or '.join(closest)}?"

    async def cache_usage(self, uid: int) -> dict[str, int]:
        """The caches' bytes against their bounds, in all and `uid`'s own (for `status`):
        the renders waiting for the store put there first, unless a load holds the graph
        (`status` does not wait seconds for it: the store's figures are then as they
        stand)."""
        if self.graph.unstored:
            await trio.to_thread.run_sync(functools.partial(self.graph.store_renders, wait=False))
        graph, store = self.graph, self.graph.render_store
        usage = {"packages": len(graph), "packages_restored": graph.restored,
                 "package_bytes": graph.bytes,
                 "package_bytes_max": graph.max_bytes,
                 "package_bytes_yours": graph.owner_bytes.get(uid, 0),
                 "package_bytes_per_user_max": graph.user_bytes}
        if store is not None:
            usage.update(render_store_bytes=store.file_bytes,
                         render_store_bytes_max=store.max_bytes,
                         render_store_bytes_yours=store.owner_bytes.get(uid, 0),
                         render_store_bytes_per_user_max=store.user_bytes)
        return usage

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Drop the cached renders that read a changed recipe file; no restart needed. And
        keep the loaded graph for the next run (`ixd.recipes.snapshot`): once loads have
        been quiet for a while, and when the daemon stops."""
        try:
            async with trio.open_nursery() as nursery:

                def on_change(paths: set[Path]) -> None:
                    # invalidation waits for the graph's lock, which a render may hold
                    nursery.start_soon(self._invalidate, paths)

                await nursery.start(functools.partial(watch_tree, self.overlays, on_change))
                nursery.start_soon(self._keep_snapshot)
                nursery.start_soon(self._keep_renders)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.graph.store_renders)
                await trio.to_thread.run_sync(self._save_snapshot)

    async def _keep_renders(self) -> None:
        """Put the renders loads made in the render store once requests for packages have
        been quiet for RENDERS_QUIET seconds (a daemon stopped meanwhile puts them there as
        it stops; one killed outright makes them again after its restart). Loads outside
        these requests (a realm's) are looked at every SNAPSHOT_QUIET seconds."""
        while True:
            with trio.move_on_after(SNAPSHOT_QUIET):
                await self._renders_due.wait()
            self._renders_due = trio.Event()
            while True:
                wait = self._last_request + RENDERS_QUIET - trio.current_time()
                if not self._requests and wait <= 0:
                    break
                await trio.sleep(wait if wait > 0 else RENDERS_QUIET)
            if self.graph.unstored:
                await trio.to_thread.run_sync(self.graph.store_renders)

    async def _keep_snapshot(self) -> None:
        """Write the graph's snapshot when it changed and then stayed as it was for
        SNAPSHOT_QUIET seconds (a daemon killed outright keeps what it had then)."""
        last = self.graph.unsaved
        while True:
            await trio.sleep(SNAPSHOT_QUIET)
            now = self.graph.unsaved
            if now and now == last:
                await trio.to_thread.run_sync(self._save_snapshot)
                now = self.graph.unsaved
            last = now

    def _save_snapshot(self) -> None:
        if self.graph.save_snapshot():
            log.debug("graph snapshot written: %d packages", len(self.graph))

    async def _invalidate(self, paths: set[Path]) -> None:
        # made before the change (one made meanwhile has a stale key)
        self._plan_text = self._dep = None
        dropped = await trio.to_thread.run_sync(self.graph.invalidate_files, paths)
        self.index.invalidate()
        self.names.invalidate(paths)
        self.changes += 1  # after the drop: a plan made before it is stale
        log.info("recipes changed: %d files, %d cached packages dropped", len(paths), dropped)
