"""The runners of the node kinds done on this machine: a fetch (`Fetches`), a build here
(`LocalBuilds`), a realm (`Realms`: assembled, or built when its packages ship fix-up
hooks) and a substitute (`Installs`: an entry from a binary cache, unpacked like a build).
`ixd.build.runner.StoreRunner` holds them in a table by kind; builds on a cluster are
`ixd.build.remote`'s.

Each runs one node and records it (`ixd.build.records`); none decides what runs when.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import trio

from ixd.build.records import BuildRecords, Row
from ixd.build.scheduler import BuildSlot, Listener
from ixd.build.trash import Trash
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
from ixd.store.buildusers import BuildUser, BuildUserPool
from ixd.store.cgroup import Cgroups
from ixd.store.debsrc import DebianArchive
from ixd.store.scratch import ContentMismatch
from ixd.wire import events
from ixd.wire.errors import BuildFailed, CacheHashMismatch, CacheUnsafeArchive, FetchError

if TYPE_CHECKING:  # a daemon without a cache never loads the cache's modules
    from ixd.cache.substitute import Substituter

log = logging.getLogger("ixd.build.runner")


class NodeRunner(Protocol):
    """Runs one kind of node."""

    async def run(self, node: Node, emit: Listener, requested_by: int,
                  slot: BuildSlot) -> None: ...


@dataclass(frozen=True)
class BuildHost:
    """What every build on this machine runs with."""

    layout: Layout
    confine: bool
    make_thrs: int
    limits: builder.BuildLimits
    build_users: BuildUserPool | None = None
    #: where each confined build gets a cgroup of its own (its memory bound), if here
    cgroups: Cgroups | None = None

    def user(self) -> AbstractAsyncContextManager[BuildUser | None]:
        """A build user for one build, held while the block runs (None: unconfined)."""
        if self.build_users is None:
            return contextlib.nullcontext(None)
        return self.build_users.take()


class Fetches:
    """A source fetched into the store's `src/`, from upstream or the mirrors."""

    def __init__(self, layout: Layout, mirrors: Sequence[str]) -> None:
        self.layout = layout
        self.mirrors = tuple(mirrors)
        #: where `deb-src://` sources are looked up: apt, with ix's own state under var/
        self.debian = DebianArchive(layout.var / "apt")

    async def run(self, node: Node, emit: Listener, requested_by: int,
                  slot: BuildSlot) -> None:
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


class LocalBuilds:
    """A build node built here (`ixd.store.builder`), recorded valid."""

    def __init__(self, host: BuildHost, records: BuildRecords, trash: Trash,
                 on_built: Callable[[str], None] | None = None) -> None:
        self.host = host
        self.records = records
        self.trash = trash
        #: told each uid this daemon built, once registered (the cache pusher)
        self.on_built = on_built

    async def run(self, node: Node, emit: Listener, requested_by: int,
                  slot: BuildSlot) -> None:
        await self.build(node, emit, requested_by, slot)

    async def build(self, node: Node, emit: Listener, requested_by: int, slot: BuildSlot,
                    seed: Callable[[Path], None] | None = None,
                    finish: Callable[[Path], None] | None = None) -> None:
        """Build `node` here (`seed`, `finish`: `builder.run_build`'s)."""
        host = self.host
        # the build's row is written while it runs: nothing of the build waits for it
        started = self.records.started(node, requested_by)
        began = trio.current_time()
        log.info("build started: %s uid=%s by=%d", node.name, node.uid, requested_by)

        async def gate() -> None:  # set up: its command waits for its build slot
            nonlocal began
            await slot.start()
            began = trio.current_time()  # its duration (the next ETA) is its command's

        async with self.records.recording(lambda: started, node, "build"), \
                host.user() as user:
            built = await builder.run_build(
                node, host.layout, confine=host.confine, make_thrs=host.make_thrs,
                on_log=lambda items, end: relay_log(emit, node.uid, items, end),
                user=user, limits=host.limits, gate=gate, on_exit=slot,
                cgroups=host.cgroups, seed=seed, finish=finish,
            )
        self.trash.put(built.trashed)
        await self.records.valid_built(node, started, built.content_hash, "valid")
        if self.on_built is not None and node.entry_kind != "rlm":  # realms are not cached
            self.on_built(node.uid)
        duration = trio.current_time() - began
        self.records.durations[node.name] = duration
        log.info("build finished: %s uid=%s duration=%.2fs result=valid", node.name, node.uid,
                 duration)


class Realms:
    """A realm assembled; if its packages ship fix-up hooks (decided from what they built),
    as a confined build that runs them in it (`ixd.store.assemble.hooks_build`)."""

    def __init__(self, local: LocalBuilds, records: BuildRecords) -> None:
        self.local = local
        self.records = records

    async def run(self, node: Node, emit: Listener, requested_by: int,
                  slot: BuildSlot) -> None:
        if not await trio.to_thread.run_sync(realm_hooks, node.inputs):
            await trio.to_thread.run_sync(assemble_realm, node)
            await self.records.register(node)
            return
        await trio.to_thread.run_sync(check_static_policy, node)
        await self.local.build(
            hooks_build(node), emit, requested_by, slot,
            seed=functools.partial(link_farm, package_dirs=node.inputs, hooks=True),
            finish=functools.partial(finish_realm, node=node))


class Installs:
    """A store entry from the binary cache that holds it: its archive fetched and checked,
    then unpacked like a build (`ixd.cache.unpack`: as a build user, in the sandbox, only
    the signed content reaches the store)."""

    def __init__(self, host: BuildHost, records: BuildRecords, trash: Trash,
                 substituter: Substituter) -> None:
        self.host = host
        self.records = records
        self.trash = trash
        self.substituter = substituter

    async def run(self, node: Node, emit: Listener, requested_by: int,
                  slot: BuildSlot) -> None:
        """A `substitute` node, recorded in the builds table as `substituted` (or failed,
        with the reason)."""
        started = self.records.started(node, requested_by)
        log.info("substitute started: %s uid=%s by=%d", node.name, node.uid, requested_by)
        async with self.records.recording(lambda: started, node, "substitute"):
            await self.install(node, started, "substituted")
        log.info("substitute finished: %s uid=%s", node.name, node.uid)

    async def install(self, node: Node, row: Row, state: str, *,
                      keep_log: bool = False) -> None:
        """The node's entry from its cache, recorded valid with `state` in `row`."""
        substituter, host = self.substituter, self.host
        archive: Path | None = None
        try:
            with trio.CancelScope(shield=True):  # a bounded download nobody can stop
                hit = await trio.to_thread.run_sync(substituter.fetch, node)
            archive = host.layout.source_path(hit.entry.file_hash)
            limits = unpack_limits(host.limits, hit.entry.content_size)
            unpack = unpack_node(node.uid, node.name, Path(node.outputs[0]),
                                 hit.entry.file_hash, hit.entry.url, limits.max_output_size)
            try:
                async with host.user() as user:
                    built = await builder.run_build(
                        unpack, host.layout, confine=host.confine, make_thrs=1, user=user,
                        limits=limits, expect_hash=hit.entry.content_hash, keep_log=keep_log,
                        cgroups=host.cgroups)
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
        self.trash.put(built.trashed)
        with trio.CancelScope(shield=True):  # an entry in the store is recorded valid
            await self.records.valid_built(node, row, built.content_hash, state)


def relay_log(emit: Listener, uid: str, items: list[str | int], end: int) -> None:
    """A build's output to its waiters: a `log` event per line, a `log-skipped` event with
    the count where lines were left out (printed faster than the live budget); then where
    its log file is up to (`log-mark`, kept by the flight for followers, not sent on)."""
    for item in items:
        if isinstance(item, str):
            emit(events.LOG, {"uid": uid, "line": item})
        else:
            emit(events.LOG_SKIPPED, {"uid": uid, "count": item, "live": True})
    emit(events.LOG_MARK, {"uid": uid, "end": end})


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
