"""The node runner of a real store: fetch, build or assemble, then register the result.

This is the only place that turns a plan node into effects on the store and the build
database; the scheduler decides what runs and when.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ixd.build.cluster import Cluster
from ixd.build.scheduler import BuildSlot, Listener
from ixd.cache.substitute import Substituter
from ixd.cache.unpack import unpack_limits, unpack_node
from ixd.model.layout import Layout
from ixd.model.nodes import Node
from ixd.store import builder, fetch
from ixd.store.assemble import (
    assemble_realm,
    check_static_policy,
    finish_realm,
    hooks_build,
    link_farm,
    realm_hooks,
)
from ixd.store.buildlog import BoundedLog
from ixd.store.buildusers import BuildUser, BuildUserPool
from ixd.store.cgroup import Cgroups
from ixd.store.db import BuildDatabase
from ixd.store.dbwriter import PendingWrite, WriteQueue
from ixd.store.debsrc import DebianArchive
from ixd.store.fstree import remove_tree
from ixd.store.scratch import ContentMismatch
from ixd.store.treehash import tree_hash
from ixd.wire.errors import (
    BuildCancelled,
    BuildFailed,
    CacheHashMismatch,
    CacheUnsafeArchive,
    ClusterLost,
    ClusterRefused,
    ClusterUnavailable,
    DaemonFault,
    DependencyFailed,
    FetchError,
    InternalError,
    IxError,
    NoSpace,
    error_from_wire,
)

log = logging.getLogger("ixd.build.runner")

#: seconds finished builds' scratch folders gather in the trash before one `rm -rf` deletes
#: them, and how many at most
TRASH_GATHER = 0.5
TRASH_BATCH = 256
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
    row: PendingWrite[int]
    emit: Listener
    worker: str = ""
    log_file: BoundedLog | None = None
    #: rows of workers that went away, to end as `lost` once their ids are known
    lost: list[tuple[PendingWrite[int], str]] = field(default_factory=list)


class StoreRunner:
    def __init__(self, layout: Layout, db: BuildDatabase, *, confine: bool,
                 mirrors: Sequence[str], make_thrs: int,
                 build_users: BuildUserPool | None = None,
                 cgroups: Cgroups | None = None,
                 limits: builder.BuildLimits | None = None,
                 substituter: Substituter | None = None,
                 on_built: Callable[[str], None] | None = None,
                 cluster: Cluster | None = None,
                 push_inputs: Callable[[list[str]], object] | None = None) -> None:
        if confine and not build_users:
            raise ValueError("confined builds need a pool of build users")
        self.layout = layout
        self.db = db
        #: every write of the runner goes through here: one thread, batched commits
        self.writes = WriteQueue(db)
        self.confine = confine
        self.build_users = build_users
        #: where each confined build gets a cgroup of its own (its memory bound), if here
        self.cgroups = cgroups
        self.limits = limits or builder.BuildLimits()
        self.mirrors = tuple(mirrors)
        #: where `deb-src://` sources are looked up: apt, with ix's own state under var/
        self.debian = DebianArchive(layout.var / "apt")
        #: installs `substitute` nodes from binary caches
        self.substituter = substituter
        #: told each uid this daemon built, once registered (the cache pusher)
        self.on_built = on_built
        #: builds go to this Dask cluster (`ixd.build.cluster`), their inputs to the push cache
        #: first (`push_inputs`, blocking), their results come back through the caches
        self.cluster = cluster
        self.push_inputs = push_inputs
        if cluster is not None and (substituter is None or push_inputs is None):
            raise ValueError("a cluster needs --cache and --push: its results come back "
                             "through the cache")
        #: remote builds under way, by uid
        self._remote: dict[str, RemoteAttempt] = {}
        #: builds this machine does for the cluster (`building_here`): never sent back to it
        self._build_here: Counter[str] = Counter()
        self.make_thrs = make_thrs
        #: mirror of the database's valid uids, so validity checks cost no query (read it
        #: through `is_valid` and `is_valid_uid`; only `collecting` takes uids out)
        self.valid: set[str] = db.valid_uids()
        #: uids being garbage collected: building one waits until its old entry is gone
        self._collecting: dict[str, trio.Event] = {}
        #: the latest successful build time of each package, for ETAs
        self.durations: dict[str, float] = db.last_durations()
        #: finished builds' scratch folders, moved into the trash, for collect_trash
        self._trash: trio.MemorySendChannel[Path]
        self._trash, self._trashed = trio.open_memory_channel[Path](math.inf)

    async def collect_trash(self) -> None:
        """Delete finished builds' scratch folders from the trash, off the builds' way (what
        is left at a stop, recovery deletes).

        Root deletes what has gathered with one `rm -rf` process per batch: per entry,
        Python's rmtree would hold the interpreter lock the event loop needs, one worker
        thread call per build. A batch gathers for up to TRASH_GATHER seconds (builds end
        one at a time: without the wait, each one's scratch cost a process of its own).
        GNU rm never follows a link, and stays on one file system."""
        async for first in self._trashed:
            batch = [first]
            with trio.move_on_after(TRASH_GATHER):
                while len(batch) < TRASH_BATCH:
                    try:
                        batch.append(await self._trashed.receive())
                    except trio.EndOfChannel:
                        break
            if os.geteuid() == 0 and await _rm_rf(batch):
                continue
            for path in batch:  # unprivileged, or rm failed: read-only folders and all
                try:
                    await trio.to_thread.run_sync(remove_tree, path)
                except OSError:
                    log.exception("could not delete %s", path)

    def is_valid(self, node: Node) -> bool:
        if node.kind == "fetch":
            return self.layout.source_path(node.uid).is_file()
        return node.uid in self.valid

    def is_valid_uid(self, uid: str) -> bool:
        """Whether the store holds a valid entry of `uid` (not a source: those have no uid
        in the store table)."""
        return uid in self.valid

    @contextlib.contextmanager
    def collecting(self, uids: Sequence[str]) -> Iterator[None]:
        """Garbage collection of `uids`: they are invalid from the start of the block (no
        new request counts on them), and a build of one of them waits until the block has
        ended (its old entry is gone) before it starts."""
        for uid in uids:
            self.valid.discard(uid)
            self._collecting[uid] = trio.Event()
        try:
            yield
        finally:
            for uid in uids:
                self._collecting.pop(uid).set()

    @contextlib.contextmanager
    def building_here(self, uid: str) -> Iterator[None]:
        """While the block runs, `uid` is built on this machine even if this ixd has a
        cluster: a build it does for the cluster (`cluster-build`) does not go back to it."""
        self._build_here[uid] += 1
        try:
            yield
        finally:
            self._build_here[uid] -= 1
            if not self._build_here[uid]:
                del self._build_here[uid]

    def note_remote_worker(self, uid: str, worker: str) -> None:
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
            attempt.emit("notice", {"text": f"{uid}: {why}"})
            attempt.lost.append((attempt.row, why))
            self._end_lost_rows(attempt)
            attempt.row = self._build_started(attempt.node, attempt.requested_by)
        attempt.worker = worker

    def _end_lost_rows(self, attempt: RemoteAttempt) -> None:
        """End the rows of `attempt`'s lost workers whose ids are known by now."""
        waiting = []
        for row, why in attempt.lost:
            build_id = row.value_if_done()
            if build_id is None:
                waiting.append((row, why))
                continue
            self.writes.submit(functools.partial(self.db.build_ended, build_id, "lost", why))
        attempt.lost = waiting

    def remote_worker(self, uid: str) -> str | None:
        """The worker building `uid` on the cluster; "" while none has said so yet; None if
        `uid` is not a remote build of this ixd."""
        attempt = self._remote.get(uid)
        return None if attempt is None else attempt.worker

    def expected_duration(self, node: Node) -> float | None:
        return self.durations.get(node.name) if node.kind == "build" else None

    async def run_node(self, node: Node, emit: Listener, requested_by: int,
                       slot_done: BuildSlot | None = None) -> None:
        collected = self._collecting.get(node.uid)
        if collected is not None:
            await collected.wait()
        if node.kind == "fetch":
            await self._fetch(node)
        elif node.kind == "build":
            await self._build(node, emit, requested_by, slot_done or BuildSlot())
        elif node.kind == "substitute":
            await self._substitute(node, requested_by)
        else:
            await self._realm(node, emit, requested_by, slot_done or BuildSlot())

    async def _realm(self, node: Node, emit: Listener, requested_by: int,
                     slot_done: BuildSlot) -> None:
        """Assemble a realm; if its packages ship fix-up hooks (decided from what they built),
        as a confined build that runs them in it (`ixd.store.assemble.hooks_build`)."""
        if not await trio.to_thread.run_sync(realm_hooks, node.inputs):
            await trio.to_thread.run_sync(assemble_realm, node)
            await self._register(node)
            return
        await trio.to_thread.run_sync(check_static_policy, node)
        await self._build_local(
            hooks_build(node), emit, requested_by, slot_done,
            seed=functools.partial(link_farm, package_dirs=node.inputs, hooks=True),
            finish=functools.partial(finish_realm, node=node))

    async def _fetch(self, node: Node) -> None:
        source = node.sources[0]
        try:
            await trio.to_thread.run_sync(
                lambda: fetch.fetch_source(source.url, source.sha256, self.layout.sources,
                                           self.mirrors, debian=self.debian)
            )
        except FetchError as exc:
            if self.mirrors or type(exc) is not FetchError:  # a checksum is not a mirror's
                raise
            raise FetchError(f"{exc.message}; this ixd has no source mirror: where upstream "
                             f"hosts are out of reach, the administrator gives one (ixd "
                             f"--mirror TEMPLATE, or IX_MIRRORS under runit: docs/admin.md, "
                             f"\"Sources\")") from exc

    async def _build(self, node: Node, emit: Listener, requested_by: int,
                     slot: BuildSlot) -> None:
        # realm fix-ups are built where their realm is (they are not recipe builds a worker
        # could check); a build this machine does for the cluster is built here
        if self.cluster is not None and node.entry_kind != "fix" \
                and node.uid not in self._build_here:
            if await self._build_remote(node, emit, requested_by, slot):
                return
        await self._build_local(node, emit, requested_by, slot)

    async def _build_remote(self, node: Node, emit: Listener, requested_by: int,
                            slot: BuildSlot) -> bool:
        """Build on the cluster: True once the entry is installed from the cache. False if
        it must be built here after all (the cluster refused it, cannot be reached, or lost
        it REMOTE_ATTEMPTS times), with a build slot of this machine taken again."""
        cluster = self.cluster
        assert cluster is not None
        if not await cluster.ready():  # no attempt to record: build here at once
            unavailable = cluster.unavailable()
            if cluster.required:
                raise unavailable
            log.info("building %s uid=%s here: %s", node.name, node.uid, unavailable.message)
            emit("notice", {"text": f"{node.name}: {unavailable.message}; building it here"})
            return False
        if node.uid in self._build_here:  # asked of this machine by the cluster meanwhile
            return False
        slot()  # the cluster's slots bound remote builds, not ours
        why: IxError | None = None
        for attempt in range(1, REMOTE_ATTEMPTS + 1):
            try:
                await self._remote_attempt(node, emit, requested_by)
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
            emit("notice", {"text": f"{node.name}: {why.message}; submitting it again"})
        assert why is not None
        if cluster.required and not isinstance(why, ClusterRefused):
            raise ClusterUnavailable(f"{node.name} ({node.uid}) was not built on the cluster "
                                     f"{cluster.settings.where} (--dask-required): "
                                     f"{why.message}")
        emit("notice", {"text": f"{node.name}: {why.message}; building it here"})
        await slot.take_again()
        return False

    async def _remote_attempt(self, node: Node, emit: Listener, requested_by: int) -> None:
        """One submission of `node` to the cluster, its result installed from the cache.
        Its builds-table row ends `remote` (built there), `lost` (ClusterLost or
        ClusterUnavailable: the cluster, a worker or the scheduler went away), `refused`
        (ClusterRefused), failed (the build failed there) or cancelled."""
        attempt = RemoteAttempt(node, requested_by, self._build_started(node, requested_by),
                                emit)
        self._remote[node.uid] = attempt
        log.info("remote build started: %s uid=%s by=%d", node.name, node.uid, requested_by)
        worker = "(already in the cache)"
        try:
            async with self._recording(lambda: attempt.row, node, "remote build"):
                # bounded like a local build's (a local file: no wait worth a thread)
                attempt.log_file = BoundedLog(self.layout.log_path(node.uid),
                                              self.limits.max_log_size, append=True)
                try:
                    worker = await self._submit(node)
                finally:
                    attempt.log_file.finish()
                    attempt.log_file = None
                # the worker's log stays: the unpack's output goes after it
                await self._install(node, attempt.row, "remote", keep_log=True)
        finally:
            self._remote.pop(node.uid, None)
            if attempt.lost:  # rows of lost workers whose ids were not known yet
                with trio.CancelScope(shield=True):
                    for row, why in attempt.lost:
                        await self._ended(row, "lost", ClusterLost(why))
        log.info("remote build finished: %s uid=%s on %s", node.name, node.uid, worker)

    async def _submit(self, node: Node) -> str:
        """Have the cluster build `node` unless a cache already holds it (built and pushed
        since this plan was made); which worker built it. Afterwards the entry is a hit of
        this ixd's caches; else ClusterUnavailable, ClusterLost or ClusterRefused (build it
        here), or the build's own failure on the worker."""
        assert self.cluster is not None and self.push_inputs is not None
        assert self.substituter is not None
        inputs = [Path(p).name[:32] for p in node.inputs if Path(p).parent == self.layout.store]
        await trio.to_thread.run_sync(self.push_inputs, [u for u in inputs if u in self.valid])
        if node.uid in await trio.to_thread.run_sync(self.substituter.lookup_fresh, [node.uid]):
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
        if node.uid not in await trio.to_thread.run_sync(self.substituter.lookup_fresh,
                                                         [node.uid]):
            raise ClusterRefused(f"{node.name} ({node.uid}) was built on {worker} but no "
                                 f"trusted cache of this ixd holds it (is --cache the "
                                 f"workers' push cache, --trusted-key their key?)")
        return worker

    def remote_log(self, uid: str, lines: list[str]) -> None:
        """Log lines a worker sent for a remote build (on the event loop)."""
        attempt = self._remote.get(uid)
        if attempt is None or attempt.log_file is None:
            return
        log_file = attempt.log_file
        log_file.write(b"".join(line.encode(errors="replace") + b"\n" for line in lines))
        relay_log(attempt.emit, uid, list(lines), log_file.written)

    async def _build_local(self, node: Node, emit: Listener, requested_by: int,
                           slot_done: BuildSlot,
                           seed: Callable[[Path], None] | None = None,
                           finish: Callable[[Path], None] | None = None) -> None:
        # the build's row is written while it runs: nothing of the build waits for it
        started = self._build_started(node, requested_by)
        began = trio.current_time()
        log.info("build started: %s uid=%s by=%d", node.name, node.uid, requested_by)
        async with self._recording(lambda: started, node, "build"), \
                self._build_user() as user:
            built = await builder.run_build(
                node, self.layout, confine=self.confine, make_thrs=self.make_thrs,
                on_log=lambda items, end: relay_log(emit, node.uid, items, end),
                user=user, limits=self.limits, on_exit=slot_done, cgroups=self.cgroups,
                seed=seed, finish=finish,
            )
        self._trash.send_nowait(built.trashed)
        await self._record_valid(node, started, built.content_hash, "valid")
        if self.on_built is not None and node.entry_kind != "rlm":  # realms are not cached
            self.on_built(node.uid)
        duration = trio.current_time() - began
        self.durations[node.name] = duration
        log.info("build finished: %s uid=%s duration=%.2fs result=valid", node.name, node.uid,
                 duration)

    def _build_started(self, node: Node, requested_by: int) -> PendingWrite[int]:
        """Queue the builds-table row of `node`'s build; its id once written."""
        log_path = str(self.layout.log_path(node.uid))
        flags = node.meta.get("flags", {})
        return self.writes.submit(lambda: self.db.build_started(
            node.uid, node.name, flags, log_path, requested_by))

    async def _record_valid(self, node: Node, started: PendingWrite[int], content_hash: str,
                            state: str) -> None:
        """Register the node's entry (in place in the store) and end its build's row, in one
        transaction; valid once committed."""
        kind = node.entry_kind
        build_id = await started.result()

        inputs = self._store_inputs(node)

        def register_and_end() -> None:
            self.db.register_valid(node.uid, node.outputs[0], node.name, kind, content_hash,
                                   inputs)
            self.db.build_ended(build_id, state, "")

        await self.writes.write(register_and_end)
        self.valid.add(node.uid)

    def _store_inputs(self, node: Node) -> list[str]:
        """The store dirs `node` reads (not its sources): what the collector keeps with it
        under `--keep-build-inputs`."""
        store = str(self.layout.store)
        return [p for p in node.inputs if os.path.dirname(p) == store]

    async def _substitute(self, node: Node, requested_by: int) -> None:
        """Install the node's entry from a binary cache. Recorded in the builds table as
        `substituted` (or failed, with the reason)."""
        started = self._build_started(node, requested_by)
        log.info("substitute started: %s uid=%s by=%d", node.name, node.uid, requested_by)
        async with self._recording(lambda: started, node, "substitute"):
            await self._install(node, started, "substituted")
        log.info("substitute finished: %s uid=%s", node.name, node.uid)

    async def _install(self, node: Node, started: PendingWrite[int], state: str, *,
                       keep_log: bool = False) -> None:
        """The node's entry from the cache that holds it: its archive fetched and checked,
        then unpacked like a build (`ixd.cache.unpack`: as a build user, in the sandbox, only the
        signed content reaches the store), and recorded valid with `state`."""
        substituter = self.substituter
        assert substituter is not None, "a substitute node without caches"
        archive: Path | None = None
        try:
            with trio.CancelScope(shield=True):  # a bounded download nobody can stop
                hit = await trio.to_thread.run_sync(substituter.fetch, node)
            archive = self.layout.source_path(hit.entry.file_hash)
            limits = unpack_limits(self.limits, hit.entry.content_size)
            unpack = unpack_node(node.uid, node.name, Path(node.outputs[0]),
                                 hit.entry.file_hash, hit.entry.url, limits.max_output_size)
            try:
                async with self._build_user() as user:
                    built = await builder.run_build(
                        unpack, self.layout, confine=self.confine, make_thrs=1, user=user,
                        limits=limits, expect_hash=hit.entry.content_hash, keep_log=keep_log,
                        cgroups=self.cgroups)
            except BuildFailed as exc:
                refusal = (CacheHashMismatch if isinstance(exc.__cause__, ContentMismatch)
                           else CacheUnsafeArchive)
                raise substituter.refuse(node, hit, refusal(
                    f"cache {hit.cache.url}: {node.name} ({node.uid}) was refused: "
                    f"{exc.message}")) from exc
        finally:
            if archive is not None:  # unpacked or refused: the archive is not kept
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_unlink, archive)
        self._trash.send_nowait(built.trashed)
        with trio.CancelScope(shield=True):  # an entry in the store is recorded valid
            await self._record_valid(node, started, built.content_hash, state)

    @contextlib.asynccontextmanager
    async def _recording(self, row: Callable[[], PendingWrite[int]], node: Node, what: str
                         ) -> AsyncIterator[None]:
        """The builds-table row `row()` (written when the work started) ends failed (with
        the error), cancelled, or for a remote attempt lost or refused, if the work it wraps
        does; success is the work's own to record."""
        try:
            yield
        except BaseException as exc:
            state, error = _ending(exc)
            with trio.CancelScope(shield=True):
                await self._ended(row(), state, error)
            # why, in the daemon's log too (a full disk or the daemon's own files are the
            # admin's to fix: an error)
            log.log(logging.ERROR if isinstance(error, (NoSpace, DaemonFault)) else logging.INFO,
                    "%s finished: %s uid=%s result=%s%s", what, node.name, node.uid, state,
                    f" [{error.code}] {error.message.splitlines()[0]}" if error else "")
            raise

    def _build_user(self) -> AbstractAsyncContextManager[BuildUser | None]:
        if self.build_users is None:
            return contextlib.nullcontext(None)
        return self.build_users.take()

    async def _ended(self, started: PendingWrite[int], state: str, error: IxError | None
                     ) -> None:
        try:
            build_id = await started.result()
        except IxError as exc:  # the row was never written: there is nothing to end
            log.warning("%s: the build's row could not be written: %s", state, exc)
            return
        message = error.message if error else ""
        await self.writes.write(lambda: self.db.build_ended(build_id, state, message))

    async def _register(self, node: Node) -> None:
        out = node.outputs[0]
        content = await trio.to_thread.run_sync(tree_hash, Path(out))
        await self.writes.write(
            lambda: self.db.register_valid(node.uid, out, node.name, node.entry_kind, content))
        self.valid.add(node.uid)


def relay_log(emit: Listener, uid: str, items: list[str | int], end: int) -> None:
    """A build's output to its waiters: a `log` event per line, a `log-skipped` event with
    the count where lines were left out (printed faster than the live budget); then where
    its log file is up to (`log-mark`, kept by the flight for followers, not sent on)."""
    for item in items:
        if isinstance(item, str):
            emit("log", {"uid": uid, "line": item})
        else:
            emit("log-skipped", {"uid": uid, "count": item, "live": True})
    emit("log-mark", {"uid": uid, "end": end})


def _ending(exc: BaseException) -> tuple[str, IxError | None]:
    """The state a build's row ends in when its work raised `exc`, and the error it records."""
    if isinstance(exc, ClusterRefused):
        return "refused", exc
    if isinstance(exc, ClusterUnavailable):  # the cluster, a worker or the scheduler went away
        return "lost", exc
    if isinstance(exc, IxError):
        return "failed", exc
    if isinstance(exc, Exception):  # a bug: the scheduler logs it, says E_INTERNAL
        return "failed", InternalError(f"internal error: {exc!r}")
    return "cancelled", None


async def _rm_rf(paths: list[Path]) -> bool:
    """`rm -rf` the daemon's own `paths` in one process; False (logged) if it failed."""
    done = await trio.run_process(
        ["rm", "-rf", "--one-file-system", "--", *map(os.fspath, paths)],
        check=False, stdin=subprocess.DEVNULL, capture_stderr=True)
    if done.returncode != 0:
        log.warning("rm -rf of %d trash entries failed (%s); deleting them one by one",
                    len(paths), done.stderr.decode(errors="replace").strip()[:500])
    return done.returncode == 0


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
