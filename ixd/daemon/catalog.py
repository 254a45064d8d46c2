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
from ixd.recipes.loadorder import load_order
from ixd.recipes.packages import Package, PackageGraph
from ixd.recipes.tree import REALM_FLAG, RecipeTree

log = logging.getLogger("ixd")

#: a plan as text is kept for the next request if it compresses to at most this many bytes
MAX_KEPT_PLAN = 64 << 20

#: the realm stal/IX's `ix build` and `ix run` put their packages in: `dep`, `plan`, `build`
#: and `run` load theirs in it too
EPHEMERAL_REALM = "ephemeral"


def in_realm(realm: str, selectors: Sequence[Selector]) -> list[Selector]:
    """As stal/IX's, every package of a realm has the flag target_realm=REALM (unless it sets
    it itself): recipes add what only a realm needs (lib/glib/ix: its fix-up)."""
    return [s if REALM_FLAG in s.flags_dict else s.with_flags({REALM_FLAG: realm})
            for s in selectors]


class Catalog:
    def __init__(self, overlays: Sequence[Path], layout: Layout,
                 settings: Mapping[str, str], template_cache: Path | None = None) -> None:
        self.overlays = tuple(overlays)
        self.layout = layout
        tree = RecipeTree(self.overlays, bytecode_dir=layout.var / "jinja",
                          shared_templates=template_cache)
        self.graph = PackageGraph(
            tree, layout.store,
            settings=dict(settings), host_tools_cache=layout.var / "host-tools.json",
            render_store=layout.var / "renders.jsonl")
        #: batches of recipe changes seen (and dropped from the package cache) so far
        self.changes = 0
        #: the last plan asked for as text (`plan_text`): its request, the changes it saw
        self._plan_text: tuple[tuple[tuple[str, ...], int], planning.PlanText] | None = None
        #: the last `dep` answered, the same way
        self._dep: tuple[tuple[tuple[str, ...], int], list[Package]] | None = None

    async def load(self, selectors: Sequence[Selector]) -> list[Package]:
        """The packages of `selectors` as stal/IX's `ix build` loads them, in its realm
        `ephemeral` (in a worker thread: rendering is CPU work)."""
        packages: list[Package] = await trio.to_thread.run_sync(
            self.graph.load_all, in_realm(EPHEMERAL_REALM, selectors))
        return packages

    async def dep(self, selectors: Sequence[Selector]) -> list[Package]:
        """Every package of the closure of `selectors`, in the order stal/IX's `ix build`
        loads them (`ixd.recipes.loadorder`); the last one asked for is kept until a recipe
        changes."""

        key = (tuple(str(s) for s in selectors), self.changes)
        kept = self._dep
        if kept is not None and kept[0] == key:
            return kept[1]

        def ordered() -> list[Package]:
            with self.graph.lock:  # no package of the closure dropped meanwhile
                return load_order(self.graph.load_all(in_realm(EPHEMERAL_REALM, selectors)))

        packages: list[Package] = await trio.to_thread.run_sync(ordered)
        self._dep = (key, packages)
        return packages

    async def plan_text(self, selectors: Sequence[Selector]) -> planning.PlanText:
        """The plan of `selectors` as `ixc plan` prints it, compressed; the last one asked
        for is kept until a recipe changes (a warm `ixc plan` sends it again as it is)."""
        key = (tuple(str(s) for s in selectors), self.changes)
        kept = self._plan_text
        if kept is not None and kept[0] == key:
            return kept[1]
        packages = await self.load(selectors)
        layout = self.layout

        def make() -> planning.PlanText:
            return planning.compressed_plan_text(planning.build_plan(packages, layout))

        text: planning.PlanText = await trio.to_thread.run_sync(make)
        if sum(len(p) for p in text.pieces) <= MAX_KEPT_PLAN:
            self._plan_text = (key, text)
        return text

    def plan_realm(self, realm: str, selectors: Sequence[Selector], **meta: Any) -> Plan:
        """Load the packages and plan the realm's assembly (blocking: rendering is CPU)."""
        packages = self.graph.load_all(in_realm(realm, selectors))
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
        # made before the change (one made meanwhile has a stale key)
        self._plan_text = self._dep = None
        dropped = await trio.to_thread.run_sync(self.graph.invalidate_files, paths)
        self.changes += 1  # after the drop: a plan made before it is stale
        log.info("recipes changed: %d files, %d cached packages dropped", len(paths), dropped)
