"""The daemon's packages: the recipe graph loaded off the event loop, realm plans made from
it, the index of the overlays' packages (search, suggestions for a misspelt name), the flags
recipes read, and the watcher that drops what a changed recipe file made.

`changes` counts the batches of recipe changes seen so far: a plan made while it was lower
is stale (the realm ops compare it before answering a change from what they remember).
"""

from __future__ import annotations

import functools
import logging
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from ixd.recipes.packages import Package, PackageGraph, walk_closure
from ixd.recipes.tree import REALM_FLAG, RecipeTree
from ixd.wire.errors import RecipeNotFound

log = logging.getLogger("ixd")

T = TypeVar("T")


@dataclass(frozen=True)
class RealmPackages:
    """A realm's packages as loaded for it (front first) and its fix-up tools."""

    packages: list[Package]
    fixers: list[Package]


class Catalog:
    def __init__(self, overlays: Sequence[Path], layout: Layout,
                 settings: Mapping[str, str]) -> None:
        self.overlays = tuple(overlays)
        self.layout = layout
        self.graph = PackageGraph(
            RecipeTree(self.overlays, bytecode_dir=layout.var / "jinja"), layout.store,
            settings=dict(settings), host_tools_cache=layout.var / "host-tools.json",
            render_store=layout.var / "renders.jsonl",
            host_capture_cache=layout.var / "host-capture.json")
        #: batches of recipe changes seen (and dropped from the package cache) so far
        self.changes = 0
        #: the overlays' packages by name and description
        self.index = RecipeIndex(self.overlays)
        #: the names (flags) each recipe file reads
        self.names = TemplateNames()

    async def load(self, selectors: Sequence[Selector]) -> list[Package]:
        """The packages of `selectors` (in a worker thread: rendering is CPU work)."""
        packages: list[Package] = await trio.to_thread.run_sync(
            self.explained, lambda: self.graph.load_all(list(selectors)), selectors)
        return packages

    def load_realm(self, realm: str, selectors: Sequence[Selector]) -> RealmPackages:
        """A realm's packages and fix-up tools (blocking: rendering is CPU)."""
        # as stal/IX's, every package of a realm has the flag target_realm=REALM (unless it
        # sets it itself): recipes add what only a realm needs (lib/glib/ix: its fix-up)
        def load() -> RealmPackages:
            packages = self.graph.load_all([s if REALM_FLAG in dict(s.flags)
                                            else s.with_flags({REALM_FLAG: realm})
                                            for s in selectors])
            return RealmPackages(packages, self.graph.load_tools(fixer_selectors(packages)))
        return self.explained(load, selectors)

    def plan_realm(self, realm: str, selectors: Sequence[Selector], **meta: Any) -> Plan:
        """Load the packages and plan the realm's assembly (blocking: rendering is CPU)."""
        return self.plan_loaded(realm, self.load_realm(realm, selectors), **meta)

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

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Drop the cached renders that read a changed recipe file; no restart needed."""
        async with trio.open_nursery() as nursery:

            def on_change(paths: set[Path]) -> None:
                # invalidation waits for the graph's lock, which a render may hold: off-loop
                nursery.start_soon(self._invalidate, paths)

            await nursery.start(functools.partial(watch_tree, self.overlays, on_change))
            task_status.started()

    async def _invalidate(self, paths: set[Path]) -> None:
        dropped = await trio.to_thread.run_sync(self.graph.invalidate_files, paths)
        self.index.invalidate()
        self.names.invalidate(paths)
        self.changes += 1  # after the drop: a plan made before it is stale
        log.info("recipes changed: %d files, %d cached packages dropped", len(paths), dropped)
