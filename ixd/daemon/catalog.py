"""The daemon's packages: the recipe graph loaded off the event loop, realm plans made from
it, and the watcher that drops the renders a changed recipe file made.

`changes` counts the batches of recipe changes seen so far: a plan made while it was lower
is stale (the realm ops compare it before answering a change from what they remember).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from ixd.daemon.watch import watch_tree
from ixd.model.layout import Layout
from ixd.model.nodes import Plan
from ixd.model.selector import Selector
from ixd.recipes import plan as planning
from ixd.recipes.fixup import fixer_selectors
from ixd.recipes.packages import Package, PackageGraph
from ixd.recipes.tree import REALM_FLAG, RecipeTree

log = logging.getLogger("ixd")


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

    async def load(self, selectors: Sequence[Selector]) -> list[Package]:
        """The packages of `selectors` (in a worker thread: rendering is CPU work)."""
        packages: list[Package] = await trio.to_thread.run_sync(
            self.graph.load_all, list(selectors))
        return packages

    def plan_realm(self, realm: str, selectors: Sequence[Selector], **meta: Any) -> Plan:
        """Load the packages and plan the realm's assembly (blocking: rendering is CPU)."""
        # as stal/IX's, every package of a realm has the flag target_realm=REALM (unless it
        # sets it itself): recipes add what only a realm needs (lib/glib/ix: its fix-up)
        packages = self.graph.load_all([s if REALM_FLAG in dict(s.flags)
                                        else s.with_flags({REALM_FLAG: realm})
                                        for s in selectors])
        fixers = self.graph.load_tools(fixer_selectors(packages))
        meta.update(realm=realm, packages=[str(p.selector) for p in packages])
        return planning.realm_plan(realm, packages, meta, self.layout, fixers)

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
        self.changes += 1  # after the drop: a plan made before it is stale
        log.info("recipes changed: %d files, %d cached packages dropped", len(paths), dropped)
