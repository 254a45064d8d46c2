"""Garbage collection as the daemon runs it: one collection at a time, safe while builds
run (`ixd.store.gc` decides what is garbage), and automatically when free space runs low.

What a kept entry was only built from is garbage (a valid entry needs none of its build
inputs, and no later plan builds them again while it stays valid: `needed_plan`), unless the
administrator keeps build inputs (`ixd --keep-build-inputs`, as Nix's keep-outputs): then the
collector also follows each kept entry to the entries it was built from."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import time
from pathlib import Path

import trio

from ixd.build.runner import StoreRunner
from ixd.build.scheduler import Scheduler
from ixd.model.layout import Layout
from ixd.store import gc
from ixd.store.db import BuildDatabase, StoreRef
from ixd.store.fstree import remove_tree
from ixd.store.gc import GcResult
from ixd.store.recovery import empty_trash, move_to_trash
from ixd.store.treehash import tree_size
from ixd.wire.errors import IxError

log = logging.getLogger("ixd")


class Collector:
    def __init__(self, db: BuildDatabase, layout: Layout, runner: StoreRunner,
                 scheduler: Scheduler, keep_generations: int, min_free: int,
                 keep_build_inputs: bool = False, keep_logs: float = 30 * 86400.0) -> None:
        self.db = db
        self.layout = layout
        self.runner = runner
        self.scheduler = scheduler
        #: generations of each realm kept, besides the current one
        self.keep_generations = keep_generations
        #: collect automatically when free space under the root falls below this (0: never)
        self.min_free = min_free
        #: keep what every kept entry was built from, recursively
        self.keep_build_inputs = keep_build_inputs
        #: seconds the logs of builds that left no valid entry are kept
        self.keep_logs = keep_logs
        self._lock = trio.Lock()
        #: garbage renamed into the trash, for `serve` to delete
        self._trashed: trio.MemorySendChannel[list[Path]]
        self._trashed, self._to_delete = trio.open_memory_channel[list[Path]](math.inf)
        #: whether `serve` runs (else a collection deletes its garbage before it returns)
        self._serving = False

    async def serve(self) -> None:
        """The collector's background work: delete collected garbage from the trash, and
        collect automatically when free space runs low (`watch_free_space`)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watch_free_space)
            self._serving = True
            try:
                async for paths in self._to_delete:
                    await _delete(paths)
            finally:
                self._serving = False

    async def collect_garbage(self) -> GcResult:
        """Delete every valid entry not reachable from a root; safe while builds run."""
        async with self._lock:
            generations = await trio.to_thread.run_sync(self.db.generation_refs)
            realms = await trio.to_thread.run_sync(self.db.realms)
            entries = await trio.to_thread.run_sync(self.db.store_refs)
            current = {r["name"]: r["current"] for r in realms}
            realm_paths = [e.path for e in entries if e.kind == "rlm"]
            links = await trio.to_thread.run_sync(
                lambda: {p: gc.realm_links(p) for p in realm_paths})
            if self.keep_build_inputs:
                built_from = await trio.to_thread.run_sync(self.db.build_inputs)
                links = gc.with_build_inputs(links, built_from)
            # From here to the invalidation, no await: a request that plans after this
            # sees the garbage as invalid, one that planned before is among the roots.
            roots = gc.root_paths(generations, current, self.keep_generations,
                                  self.scheduler.kept_paths())
            marked = gc.mark(roots, links)
            garbage = [e for e in entries if e.path not in marked]
            with self.runner.collecting([e.uid for e in garbage]):
                freed, trashed = await trio.to_thread.run_sync(self._sweep, garbage)
            if trashed and self._serving:
                self._trashed.send_nowait(trashed)
            elif trashed:
                await trio.to_thread.run_sync(empty_trash, self.layout)
            # the logs: of what was collected, and old ones of builds that left nothing
            keep = {u for u in self.runner.valid} | {f.node.uid for f in
                                                      self.scheduler.flights()}
            logs, log_bytes = await trio.to_thread.run_sync(
                self._sweep_logs, keep, {e.uid for e in garbage})
        result = GcResult(len(garbage), freed, len(entries) - len(garbage), logs, log_bytes)
        log.info("gc: %d entries deleted, %d bytes freed, %d kept; %d logs deleted (%d "
                 "bytes)", result.entries, result.bytes, result.kept, logs, log_bytes)
        return result

    def _sweep_logs(self, keep: set[str], collected: set[str]) -> tuple[int, int]:
        """Delete the logs `gc.logs_to_delete` names (blocking); how many, and their bytes."""
        found = []
        with os.scandir(self.layout.logs) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                found.append(gc.LogFile(entry.name, st.st_size, st.st_mtime))
        doomed = gc.logs_to_delete(found, keep, collected, time.time(), self.keep_logs)
        for log_file in doomed:
            try:
                os.unlink(self.layout.logs / log_file.name)
            except FileNotFoundError:
                pass
        return len(doomed), sum(f.size for f in doomed)

    def _sweep(self, garbage: list[StoreRef]) -> tuple[int, list[Path]]:
        """Forget the garbage and move it into the trash (blocking); the bytes it holds,
        and where in the trash it is now."""
        # a generation whose entry goes is forgotten with it: `ixc generations` lists only
        # what `ixc rollback` can go back to
        dropped = self.db.drop_generations_at([e.path for e in garbage if e.kind == "rlm"])
        if dropped:
            log.info("gc: %d generations collected", dropped)
        self.db.unregister([e.uid for e in garbage])
        freed = 0
        trashed = []
        for entry in garbage:
            path = Path(entry.path)
            if path.exists():
                freed += tree_size(path)
                trashed.append(move_to_trash(path, self.layout))
        return freed, trashed

    async def watch_free_space(self, interval: float = 30.0) -> None:
        """Collect garbage when free space under the root falls below `min_free`."""
        if not self.min_free:
            return
        while True:
            stat = await trio.to_thread.run_sync(os.statvfs, self.layout.root)
            free = stat.f_bavail * stat.f_frsize
            if free < self.min_free:
                log.info("gc: %d bytes free, below --min-free %d", free, self.min_free)
                try:
                    await self.collect_garbage()
                except IxError as exc:  # logged; the daemon serves on and tries again later
                    log.error("automatic gc failed: %s", exc)
            await trio.sleep(interval)


async def _delete(paths: list[Path]) -> None:
    """Delete collected garbage from the trash: root with one `rm -rf` (no interpreter lock
    held that the event loop needs; GNU rm never follows a link, and stays on one file
    system), else, or if that failed, tree by tree in a thread."""
    if os.geteuid() == 0:
        try:
            done = await trio.run_process(["rm", "-rf", "--one-file-system", "--",
                                           *map(os.fspath, paths)], check=False,
                                          stdin=subprocess.DEVNULL, capture_stderr=True)
            if done.returncode == 0:
                return
            why = done.stderr.decode(errors="replace").strip()[:500]
        except OSError as exc:  # no rm to run: the daemon serves on
            why = str(exc)
        log.warning("gc: rm -rf of %d trash entries failed (%s); deleting them one by one",
                    len(paths), why)
    for path in paths:
        try:
            await trio.to_thread.run_sync(remove_tree, path)
        except OSError:
            log.exception("gc: could not delete %s", path)
