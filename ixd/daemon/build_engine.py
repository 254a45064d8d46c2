"""What builds for the daemon, made from its Config: build users, binary caches, the cache
pusher, the Dask cluster, the store runner and the scheduler in front of it."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

import trio

from ixd.build.cluster import Cluster
from ixd.build.runner import StoreRunner
from ixd.build.scheduler import Scheduler, ready_ahead
from ixd.cache.extras import require
from ixd.cache.settings import CacheSettings
from ixd.daemon.config import Config
from ixd.store.buildusers import BuildUserPool, load_pool
from ixd.store.cgroup import probe as probe_cgroups
from ixd.store.db import BuildDatabase
from ixd.wire.errors import IxError

if TYPE_CHECKING:  # a daemon without a cache never loads the cache's modules
    from ixd.cache.substitute import Pusher, Substituter

log = logging.getLogger("ixd")


class BuildEngine:
    def __init__(self, config: Config, db: BuildDatabase) -> None:
        layout = config.layout
        jobs = config.job_count
        pool = None
        cgroups = None
        if config.confine:
            pool = BuildUserPool(load_pool(config.build_users))
            pool.clear_all()  # nothing left over from an earlier run may touch new builds
            cgroups, how = probe_cgroups(layout.root)
            if cgroups is not None:
                cgroups.clean()  # what a crash left, now that no build runs
                log.info("build memory (--max-memory %d bytes) %s: %s",
                         config.limits.max_memory, how, cgroups.describe())
            else:
                log.warning("build memory (--max-memory %d bytes): per process only "
                            "(RLIMIT_DATA), as %s", config.limits.max_memory, how)
            if len(pool) < jobs:
                log.warning("%d build users in group %s for --jobs %d: at most %d builds run "
                            "at once (add build users with runit/build-users.sh)", len(pool),
                            config.build_users, jobs, len(pool))
                jobs = len(pool)
        self.substituter: Substituter | None = None
        self.pusher: Pusher | None = None
        if config.cache.caches or config.cache.push:
            s3 = any(u.startswith("s3://") for u in (*config.cache.caches, config.cache.push or ""))
            require(["cryptography", "zstandard", *(["boto3"] if s3 else [])], "cache",
                    "--cache and --push")
        if config.cluster.enabled:
            require(["distributed"], "cluster", "--dask")
        if config.cache != CacheSettings():  # the cache's modules load only for a cache option
            from ixd.cache import substitute as caching

            caches, push_to = caching.open_caches(config.cache, str(layout.store))
            self.substituter = (caching.Substituter(caches, layout, config.limits.max_output_size)
                                if caches else None)
            self.pusher = caching.Pusher(push_to, db, layout) if push_to else None
        substituter = self.substituter
        self.cluster: Cluster | None = None
        if config.cluster.enabled:
            if substituter is None or self.pusher is None:
                # the one check of this rule: the runner relies on it
                raise IxError("--dask needs --cache (and --trusted-key) and --push "
                              "(with --signing-key) naming the cache its workers push to: "
                              "results come back through it")
            self.cluster = Cluster(config.cluster, on_started=self._remote_started,
                                   on_log=self._remote_log)
        self.runner = StoreRunner(
            layout, db, confine=config.confine, mirrors=config.mirrors,
            make_thrs=os.cpu_count() or 1, build_users=pool, cgroups=cgroups,
            limits=config.limits,
            substituter=substituter, on_built=self.pusher.submit if self.pusher else None,
            cluster=self.cluster, push_inputs=self.pusher.push if self.pusher else None,
        )
        self.scheduler = Scheduler(self.runner, jobs, substituter,
                                   config.max_jobs_per_user or None, owner=os.getuid(),
                                   lookahead=ready_ahead(jobs, None if pool is None
                                                         else len(pool)))
        #: the event loop's token, for the Dask client's thread (set when serving)
        self.trio_token: trio.lowlevel.TrioToken | None = None

    def _remote_started(self, uid: str, worker: str) -> None:
        """A worker says it builds `uid` (from the Dask client's thread)."""
        if self.trio_token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.trio_token.run_sync_soon(self.runner.note_remote_worker, uid, worker)

    def _remote_log(self, uid: str, lines: list[str]) -> None:
        """Log lines of a remote build (from the Dask client's thread)."""
        if self.trio_token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.trio_token.run_sync_soon(self.runner.remote_log, uid, lines)
