"""Builds handed to a Dask cluster (`ixd.build.cluster`): their inputs pushed to the cache
first, their results installed from it (`ixd.build.noderunners.Installs`), each attempt a
row of the builds table, lost workers retried, a refusal or an unreachable cluster built
here instead."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ixd.build.cluster import Cluster
from ixd.build.noderunners import BuildHost, Installs, relay_log
from ixd.build.records import BuildRecords, Row
from ixd.build.scheduler import BuildSlot, Listener
from ixd.model.nodes import Node
from ixd.store.buildlog import BoundedLog
from ixd.wire import events
from ixd.wire.errors import (
    BuildCancelled,
    BuildFailed,
    ClusterLost,
    ClusterRefused,
    ClusterUnavailable,
    DependencyFailed,
    IxError,
    error_from_wire,
)

log = logging.getLogger("ixd.build.runner")

#: a remote build whose worker or scheduler went away under it is submitted this many times
#: in all before it is built here
REMOTE_ATTEMPTS = 3


@dataclass
class RemoteAttempt:
    """One attempt of a build on the cluster: its row in the builds table (a new one when
    Dask moves the build to another worker: the first went away), the worker running it,
    and where its log lines go."""

    node: Node
    requested_by: int
    row: Row
    emit: Listener
    worker: str = ""
    log_file: BoundedLog | None = None
    #: rows of workers that went away, to end as `lost` once their ids are known
    lost: list[tuple[Row, str]] = field(default_factory=list)


class RemoteBuilds:
    """Build nodes built on the cluster, each installed from the cache afterwards."""

    def __init__(self, cluster: Cluster, installs: Installs | None, records: BuildRecords,
                 host: BuildHost, push_inputs: Callable[[list[str]], object] | None) -> None:
        # the options are checked once, by ixd.daemon.build_engine (a cluster's results
        # come back through the cache): here, that check was passed
        assert installs is not None and push_inputs is not None, "a cluster without a cache"
        self.cluster = cluster
        self.installs = installs
        self.records = records
        self.host = host
        #: the cache the workers read inputs from gets them first (blocking)
        self.push_inputs = push_inputs
        #: remote builds under way, by uid
        self._remote: dict[str, RemoteAttempt] = {}
        #: builds this machine does for the cluster (`building_here`): never sent back to it
        self._build_here: Counter[str] = Counter()

    def wanted_here(self, node: Node) -> bool:
        """Whether `node` is built here anyway: a realm's fix-ups (they are not recipe
        builds a worker could check), or a build this machine does for the cluster."""
        return node.entry_kind == "fix" or node.uid in self._build_here

    @contextlib.contextmanager
    def building_here(self, uid: str) -> Iterator[None]:
        """While the block runs, `uid` is built on this machine: a build it does for the
        cluster (`cluster-build`) does not go back to it."""
        self._build_here[uid] += 1
        try:
            yield
        finally:
            self._build_here[uid] -= 1
            if not self._build_here[uid]:
                del self._build_here[uid]

    def note_worker(self, uid: str, worker: str) -> None:
        """A cluster worker says it builds `uid` (ignored unless this ixd submitted it; on
        the event loop). Another worker than the one that said so before means Dask moved
        the build: the first went away mid-build, and its attempt is recorded as lost."""
        attempt = self._remote.get(uid)
        if attempt is None or attempt.worker == worker:
            return
        if attempt.worker:
            why = (f"the worker {attempt.worker} went away while building it; Dask moved the "
                   f"build to {worker}")
            log.warning("remote build lost: uid=%s: %s", uid, why)
            attempt.emit(events.NOTICE, {"text": f"{uid}: {why}"})
            attempt.lost.append((attempt.row, why))
            attempt.lost = [(row, why) for row, why in attempt.lost
                            if not self.records.end_when_written(row, "lost", why)]
            attempt.row = self.records.started(attempt.node, attempt.requested_by)
        attempt.worker = worker

    def worker(self, uid: str) -> str | None:
        """The worker building `uid` on the cluster; "" while none has said so yet; None if
        `uid` is not a remote build of this ixd."""
        attempt = self._remote.get(uid)
        return None if attempt is None else attempt.worker

    def log(self, uid: str, lines: list[str]) -> None:
        """Log lines a worker sent for a remote build (on the event loop)."""
        attempt = self._remote.get(uid)
        if attempt is None or attempt.log_file is None:
            return
        log_file = attempt.log_file
        log_file.write(b"".join(line.encode(errors="replace") + b"\n" for line in lines))
        relay_log(attempt.emit, uid, list(lines), log_file.written)

    async def build(self, node: Node, emit: Listener, requested_by: int,
                    slot: BuildSlot) -> bool:
        """Build on the cluster: True once the entry is installed from the cache. False if
        it must be built here after all (the cluster refused it, cannot be reached, or lost
        it REMOTE_ATTEMPTS times), with a build slot of this machine taken again."""
        cluster = self.cluster
        if not await cluster.ready():  # no attempt to record: build here at once
            unavailable = cluster.unavailable()
            if cluster.required:
                raise unavailable
            log.info("building %s uid=%s here: %s", node.name, node.uid, unavailable.message)
            emit(events.NOTICE, {"text": f"{node.name}: {unavailable.message}; building it here"})
            return False
        if node.uid in self._build_here:  # asked of this machine by the cluster meanwhile
            return False
        slot()  # the cluster's slots bound remote builds, not ours
        why: IxError | None = None
        for attempt in range(1, REMOTE_ATTEMPTS + 1):
            try:
                await self._attempt(node, emit, requested_by)
                return True
            except ClusterLost as exc:  # recorded `lost`: try the cluster again
                why, again = exc, attempt < REMOTE_ATTEMPTS
            except (ClusterRefused, ClusterUnavailable) as exc:
                why, again = exc, False
            log.warning("remote build of %s uid=%s, attempt %d: %s [%s]; %s", node.name,
                        node.uid, attempt, why.message, why.code,
                        "submitting it again" if again else "building it here")
            if not again:
                break
            emit(events.NOTICE, {"text": f"{node.name}: {why.message}; submitting it again"})
        assert why is not None
        if cluster.required and not isinstance(why, ClusterRefused):
            raise ClusterUnavailable(f"{node.name} ({node.uid}) was not built on the cluster "
                                     f"{cluster.settings.where} (--dask-required): "
                                     f"{why.message}")
        emit(events.NOTICE, {"text": f"{node.name}: {why.message}; building it here"})
        await slot.take_again()
        return False

    async def _attempt(self, node: Node, emit: Listener, requested_by: int) -> None:
        """One submission of `node` to the cluster, its result installed from the cache.
        Its builds-table row ends `remote` (built there), `lost` (ClusterLost or
        ClusterUnavailable: the cluster, a worker or the scheduler went away), `refused`
        (ClusterRefused), failed (the build failed there) or cancelled."""
        attempt = RemoteAttempt(node, requested_by, self.records.started(node, requested_by),
                                emit)
        self._remote[node.uid] = attempt
        log.info("remote build started: %s uid=%s by=%d", node.name, node.uid, requested_by)
        worker = "(already in the cache)"
        try:
            async with self.records.recording(lambda: attempt.row, node, "remote build"):
                # bounded like a local build's; opened and closed off the loop
                attempt.log_file = await trio.to_thread.run_sync(functools.partial(
                    BoundedLog, self.host.layout.log_path(node.uid),
                    self.host.limits.max_log_size, append=True))
                try:
                    worker = await self._submit(node)
                finally:
                    log_file, attempt.log_file = attempt.log_file, None
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(log_file.finish)
                # the worker's log stays: the unpack's output goes after it
                await self.installs.install(node, attempt.row, "remote", keep_log=True)
        finally:
            self._remote.pop(node.uid, None)
            if attempt.lost:  # rows of lost workers whose ids were not known yet
                with trio.CancelScope(shield=True):
                    for row, why in attempt.lost:
                        await self.records.ended(row, "lost", ClusterLost(why))
        log.info("remote build finished: %s uid=%s on %s", node.name, node.uid, worker)

    async def _submit(self, node: Node) -> str:
        """Have the cluster build `node` unless a cache already holds it (built and pushed
        since this plan was made); which worker built it. Afterwards the entry is a hit of
        this ixd's caches; else ClusterUnavailable, ClusterLost or ClusterRefused (build it
        here), or the build's own failure on the worker."""
        substituter, store = self.installs.substituter, self.host.layout.store
        inputs = [Path(p).name[:32] for p in node.inputs if Path(p).parent == store]
        valid = self.records.valid
        await trio.to_thread.run_sync(self.push_inputs, [u for u in inputs if u in valid])
        if node.uid in await trio.to_thread.run_sync(substituter.lookup_fresh, [node.uid]):
            return "(already in the cache)"
        result = await self.cluster.build(node)
        worker = str(result.get("worker"))
        if "error" in result:
            error = error_from_wire(str(result["error"]), f"on {worker}: {result['message']}")
            if isinstance(error, BuildFailed) and not isinstance(
                    error, (DependencyFailed, BuildCancelled)):
                raise error  # the build itself failed there: it would here too
            if isinstance(error, ClusterLost):
                raise ClusterLost(error.message)
            raise ClusterRefused(error.message if isinstance(error, ClusterRefused)
                                 else f"{error.message} [{error.code}]")
        if node.uid not in await trio.to_thread.run_sync(substituter.lookup_fresh,
                                                         [node.uid]):
            raise ClusterRefused(f"{node.name} ({node.uid}) was built on {worker} but no "
                                 f"trusted cache of this ixd holds it (is --cache the "
                                 f"workers' push cache, --trusted-key their key?)")
        return worker
