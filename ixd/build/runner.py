"""The node runner of a real store: each node kind's runner from a table, the valid set,
the trash.

This is the only place that turns a plan node into effects on the store and the build
database; the scheduler decides what runs and when. The runners themselves are small and
apart (`ixd.build.noderunners`: fetch, local build, realm, substitute; `ixd.build.remote`:
builds on a cluster); what they write goes through `ixd.build.records`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ixd.build.cluster import Cluster
from ixd.build.noderunners import (
    BuildHost,
    Fetches,
    Installs,
    LocalBuilds,
    NodeRunner,
    Realms,
)
from ixd.build.records import BuildRecords
from ixd.build.remote import RemoteBuilds
from ixd.build.scheduler import BuildSlot, Listener
from ixd.build.trash import Trash
from ixd.build.valid import ValidSet
from ixd.model.layout import Layout
from ixd.model.nodes import Node
from ixd.store.builder import BuildLimits
from ixd.store.buildusers import BuildUserPool
from ixd.store.cgroup import Cgroups
from ixd.store.db import BuildDatabase

if TYPE_CHECKING:  # a daemon without a cache never loads the cache's modules
    from ixd.cache.substitute import Substituter


class StoreRunner:
    """Runs plan nodes on this store, each by its kind's runner (`runners`)."""

    def __init__(self, layout: Layout, db: BuildDatabase, *, confine: bool,
                 mirrors: Sequence[str], make_thrs: int,
                 build_users: BuildUserPool | None = None,
                 cgroups: Cgroups | None = None,
                 limits: BuildLimits | None = None,
                 substituter: Substituter | None = None,
                 on_built: Callable[[str], None] | None = None,
                 cluster: Cluster | None = None,
                 push_inputs: Callable[[list[str]], object] | None = None) -> None:
        if confine and not build_users:
            raise ValueError("confined builds need a pool of build users")
        self.layout = layout
        self.cgroups = cgroups
        #: mirror of the database's valid uids, so validity checks cost no query (only
        #: `collecting` takes uids out)
        self.valid = ValidSet(db.valid_uids())
        self.records = BuildRecords(layout, db, self.valid)
        #: finished builds' scratch folders, deleted by `collect_trash`
        self.trash = Trash()
        host = BuildHost(layout, confine, make_thrs, limits or BuildLimits(), build_users,
                         cgroups)
        self.local = LocalBuilds(host, self.records, self.trash, on_built)
        installs = (Installs(host, self.records, self.trash, substituter)
                    if substituter is not None else None)
        self.remote = (RemoteBuilds(cluster, installs, self.records, host, push_inputs)
                       if cluster is not None else None)
        self.runners: dict[str, NodeRunner] = {
            "fetch": Fetches(layout, mirrors),
            "build": self.local if self.remote is None else _ClusterFirst(self.remote,
                                                                          self.local),
            "realm": Realms(self.local, self.records),
        }
        if installs is not None:
            self.runners["substitute"] = installs

    async def run_node(self, node: Node, emit: Listener, requested_by: int,
                       slot_done: BuildSlot | None = None) -> None:
        await self.valid.collected(node.uid)
        runner = self.runners.get(node.kind)
        if runner is None:
            raise ValueError(f"no runner of {node.kind} nodes here ({node.name})")
        await runner.run(node, emit, requested_by, slot_done or BuildSlot())

    async def collect_trash(self) -> None:
        """Delete finished builds' scratch folders, for as long as the daemon runs."""
        await self.trash.collect()

    def is_valid(self, node: Node) -> bool:
        if node.kind == "fetch":
            return self.layout.source_path(node.uid).is_file()
        return node.uid in self.valid

    def is_valid_uid(self, uid: str) -> bool:
        """Whether the store holds a valid entry of `uid` (not a source: those have no uid
        in the store table)."""
        return uid in self.valid

    def collecting(self, uids: Sequence[str]) -> contextlib.AbstractContextManager[None]:
        """Garbage collection of `uids` (`ValidSet.collecting`): a build of one waits until
        the block has ended."""
        return self.valid.collecting(uids)

    def building_here(self, uid: str) -> contextlib.AbstractContextManager[None]:
        """While the block runs, `uid` is built on this machine even if this ixd has a
        cluster: a build it does for the cluster (`cluster-build`) does not go back to it."""
        if self.remote is None:
            return contextlib.nullcontext()
        return self.remote.building_here(uid)

    def note_remote_worker(self, uid: str, worker: str) -> None:
        """A cluster worker says it builds `uid` (`RemoteBuilds.note_worker`)."""
        if self.remote is not None:
            self.remote.note_worker(uid, worker)

    def remote_worker(self, uid: str) -> str | None:
        """The worker building `uid` on the cluster; "" while none has said so yet; None if
        `uid` is not a remote build of this ixd."""
        return None if self.remote is None else self.remote.worker(uid)

    def remote_log(self, uid: str, lines: list[str]) -> None:
        """Log lines a worker sent for a remote build (on the event loop)."""
        if self.remote is not None:
            self.remote.log(uid, lines)

    def expected_duration(self, node: Node) -> float | None:
        return self.records.durations.get(node.name) if node.kind == "build" else None


class _ClusterFirst:
    """A build node on the cluster, unless it is built here anyway or must be after all."""

    def __init__(self, remote: RemoteBuilds, local: LocalBuilds) -> None:
        self.remote = remote
        self.local = local

    async def run(self, node: Node, emit: Listener, requested_by: int,
                  slot: BuildSlot) -> None:
        if not self.remote.wanted_here(node) and \
                await self.remote.build(node, emit, requested_by, slot):
            return
        await self.local.run(node, emit, requested_by, slot)

