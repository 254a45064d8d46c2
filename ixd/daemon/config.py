"""The daemon's settings, as `ixd` was started with them (`ixd.daemon.main.config_from_args`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ixd.build.cluster import ClusterSettings
from ixd.cache.settings import CacheSettings
from ixd.model.layout import Layout
from ixd.recipes.packages import DEFAULT_CACHE_BYTES
from ixd.recipes.rendercache import DEFAULT_STORE_BYTES
from ixd.store.builder import BuildLimits
from ixd.store.buildusers import DEFAULT_GROUP as DEFAULT_BUILD_GROUP


@dataclass(frozen=True)
class Config:
    root: Path
    overlays: tuple[Path, ...]
    mirrors: tuple[str, ...] = ()
    jobs: int = 0
    #: build slots one user may hold at once (0: `jobs` less one, see ixd.build.fairness)
    max_jobs_per_user: int = 0
    confine: bool = True
    socket: Path | None = None
    admin_group: str | None = None
    #: generations of each realm kept by garbage collection, besides the current one
    keep_generations: int = 3
    #: seconds gc keeps the logs of failed builds (logs of collected entries go at once)
    keep_logs: float = 30 * 86400.0
    #: collect garbage automatically when free space under the root falls below this
    min_free: int = 0
    #: gc keeps what every kept entry was built from (`--keep-build-inputs`)
    keep_build_inputs: bool = False
    frame_timeout: float = 10.0
    max_connections_per_user: int = 64
    db_busy_timeout: float = 30.0
    #: the group whose members run confined builds, one build per uid at a time
    build_users: str = DEFAULT_BUILD_GROUP
    limits: BuildLimits = field(default_factory=BuildLimits)
    #: binary caches to substitute from and to push to (`ixd.cache.substitute`)
    cache: CacheSettings = field(default_factory=CacheSettings)
    #: a Dask cluster to build on (`ixd.build.cluster`)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    #: bytes of the package cache (memory) and of var/renders.jsonl (`ixd.recipes`)
    package_cache_bytes: int = DEFAULT_CACHE_BYTES
    render_store_bytes: int = DEFAULT_STORE_BYTES
    #: the account `ix-worker` runs as here: it may hand this ixd builds for the cluster
    cluster_worker_account: str | None = None
    #: render-context names set by `ixd --set NAME=VALUE` (rendercontext.DEFAULT_SETTINGS)
    settings: tuple[tuple[str, str], ...] = ()
    #: the machine's folder of compiled templates (`ixd.recipes.templatecache`); None: none
    template_cache: Path | None = None

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def job_count(self) -> int:
        return self.jobs or os.cpu_count() or 1
