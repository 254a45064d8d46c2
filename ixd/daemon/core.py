"""The daemon: its state opened from a Config, and the table of the ops a request may name.

`Daemon.handle(op, args, caller, emit)` hands each request to the op of that name with its
arguments checked (`ixd.wire.ops`, by the server); the ops load packages (in a worker
thread: rendering is CPU work), run plans through the scheduler, and switch realms. The
socket server around it only moves frames. Who does what:

- `ixd.daemon.realm_change`: `mut` and `let`; `ixd.daemon.realm_ops`: `list`, `generations`,
  `rollback`, `purge`, `export`; both on `ixd.daemon.realm_access` (who may change a realm,
  its lock, squatters) and `ixd.daemon.realm_cache` (states parsed once, realms as their
  last change left them);
- `ixd.daemon.build_ops`: `dep`, `plan`, `build`, `run`, `status`, `builds`, `log`;
- `ixd.daemon.find_ops`: `search`, `show`, `why`, `diff`;
- `ixd.daemon.admin_ops`: `gc` (`ixd.daemon.collection`) and `push`;
- `ixd.daemon.cluster_ops`: `cluster-build`, for this machine's `ix-worker` only;
- `ixd.daemon.catalog`: the recipe graph and its watcher; `ixd.daemon.build_engine`: runner,
  scheduler, caches and cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ixd import __version__
from ixd.daemon.admin_ops import AdminOps
from ixd.daemon.build_engine import BuildEngine
from ixd.daemon.build_ops import BuildOps
from ixd.daemon.catalog import Catalog
from ixd.daemon.cluster_ops import ClusterOps, worker_account_uid
from ixd.daemon.collection import Collector
from ixd.daemon.config import Config
from ixd.daemon.emit import Emit
from ixd.daemon.find_ops import FindOps
from ixd.daemon.identity import Caller
from ixd.daemon.realm_access import RealmAccess
from ixd.daemon.realm_cache import RealmCache
from ixd.daemon.realm_change import RealmChanges
from ixd.daemon.realm_ops import RealmOps
from ixd.store.db import BuildDatabase
from ixd.store.recovery import recover
from ixd.wire.errors import UnknownOp
from ixd.wire.ops import OPS, NoArgs

__all__ = ["Config", "Daemon", "Handler"]

log = logging.getLogger("ixd")

#: an op: its arguments (the record `ixd.wire.ops` checked them into), the caller, and
#: where its events go
Handler = Callable[[Any, Caller, Emit], Awaitable[Any]]


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.layout = config.layout
        self.layout.ensure()
        self.db = BuildDatabase(self.layout.database, config.db_busy_timeout)
        log.info(recover(self.layout, self.db).summary())
        self.realm_cache = cache = RealmCache()
        self.access = access = RealmAccess(self.db, self.layout, cache, config.admin_group)
        access.evict_squatters()
        self.catalog = Catalog(config.overlays, self.layout, dict(config.settings),
                               config.template_cache,
                               cache_bytes=config.package_cache_bytes,
                               render_store_bytes=config.render_store_bytes)
        self.graph = self.catalog.graph
        self.engine = BuildEngine(config, self.db)
        self.runner, self.scheduler = self.engine.runner, self.engine.scheduler
        self.pusher, self.cluster = self.engine.pusher, self.engine.cluster
        collector = Collector(self.db, self.layout, self.runner, self.scheduler,
                              config.keep_generations, config.min_free,
                              config.keep_build_inputs, config.keep_logs)
        self.changes = changes = RealmChanges(self.db, self.layout, self.catalog, access,
                                              cache, self.scheduler, self.runner)
        realms = RealmOps(self.db, self.layout, access, cache)
        self.builds = builds = BuildOps(self.db, self.layout, self.catalog, self.scheduler,
                                        self.runner, self.cluster,
                                        config.limits.max_log_size)
        find = FindOps(self.db, self.catalog, cache, self.runner)
        admin = AdminOps(self.db, self.layout, self.catalog, access, cache, self.runner,
                         collector, self.pusher)
        account = config.cluster_worker_account
        cluster_builds = ClusterOps(
            self.layout, self.db, self.scheduler, self.runner, self.engine.substituter,
            self.pusher, account,
            worker_account_uid(account, config.build_users if config.confine else None)
            if account is not None else None)
        self.handlers: dict[str, Handler] = {
            "ping": self.op_ping,
            "mut": changes.op_mut,
            "let": changes.op_let,
            "build": builds.op_build,
            "run": builds.op_run,
            "list": realms.op_list,
            "purge": realms.op_purge,
            "export": realms.op_export,
            "dep": builds.op_dep,
            "plan": builds.op_plan,
            "generations": realms.op_generations,
            "rollback": realms.op_rollback,
            "status": builds.op_status,
            "builds": builds.op_builds,
            "log": builds.op_log,
            "search": find.op_search,
            "show": find.op_show,
            "why": find.op_why,
            "diff": find.op_diff,
            "gc": admin.op_gc,
            "push": admin.op_push,
            "cluster-build": cluster_builds.op_cluster_build,
        }
        if self.handlers.keys() != OPS.keys():  # the contract and the table are one list
            raise AssertionError(f"ops without a handler or a contract: "
                                 f"{sorted(self.handlers.keys() ^ OPS.keys())}")
        # the daemon's tasks besides the server (`ixd.daemon.main`)
        self.watch_recipes = self.catalog.watch
        self.collector = collector.serve  # deletes garbage; collects when space runs low
        self.watch_accounts = access.watch_accounts

    async def handle(self, op: str, args: Any, caller: Caller, emit: Emit) -> Any:
        """Run `op` with `args`, checked by `ixd.wire.ops.check_request` (the server's
        job)."""
        handler = self.handlers.get(op)
        if handler is None:
            raise UnknownOp(f"unknown op {op!r}; this daemon knows: "
                            f"{', '.join(sorted(self.handlers))}")
        await self.access.settle(caller)  # an account's first request: no squatter's realm
        return await handler(args, caller, emit)

    async def op_ping(self, args: NoArgs, caller: Caller, emit: Emit) -> Any:
        return {"version": __version__, "uid": caller.uid, "login": caller.login,
                "root": str(self.config.root)}
