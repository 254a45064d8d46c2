"""The ops only administrators (root or the admin group) may run: `gc`, and `push`, since
what goes into a cache others trust is the administrator's call."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from ixd.build.runner import StoreRunner
from ixd.daemon import request_args
from ixd.daemon.catalog import Catalog
from ixd.daemon.collection import Collector
from ixd.daemon.emit import Emit
from ixd.daemon.identity import Caller
from ixd.daemon.realm_access import RealmAccess
from ixd.daemon.realm_cache import RealmCache
from ixd.model.layout import Layout
from ixd.model.realm import effective_selectors
from ixd.recipes import plan as planning
from ixd.store.db import BuildDatabase
from ixd.wire.errors import CacheError, NoSuchRealm, PermissionDenied
from ixd.wire.ops import NoArgs, PushArgs

if TYPE_CHECKING:  # a daemon without a cache never loads the cache's modules
    from ixd.cache.substitute import Pusher

log = logging.getLogger("ixd")


class AdminOps:
    def __init__(self, db: BuildDatabase, layout: Layout, catalog: Catalog,
                 access: RealmAccess, cache: RealmCache, runner: StoreRunner,
                 collector: Collector, pusher: Pusher | None) -> None:
        self.db = db
        self.layout = layout
        self.catalog = catalog
        self.access = access
        self.cache = cache
        self.runner = runner
        self.collector = collector
        self.pusher = pusher

    def _check_admin(self, caller: Caller, may_not: str) -> None:
        if not self.access.identity(caller).admin:
            raise PermissionDenied(f"{caller.login} may not {may_not}: that needs root or the "
                                   f"admin group ({self.access.admin_group or 'none set'})")

    async def op_gc(self, args: NoArgs, caller: Caller, emit: Emit) -> Any:
        self._check_admin(caller, "collect garbage")
        result = await self.collector.collect_garbage()
        return result.to_json()

    async def op_push(self, args: PushArgs, caller: Caller, emit: Emit) -> Any:
        """Upload a realm's (or packages') closure to the push cache."""
        self._check_admin(caller, "push to the cache")
        if self.pusher is None:
            raise CacheError("this ixd has no push cache: start it with --push URL "
                             "--signing-key FILE")
        if args.packages:
            packages = await self.catalog.load(request_args.selectors(args.packages),
                                               caller.uid)
            plan = planning.build_plan(packages, self.layout)
        else:
            name = request_args.realm_name(args.realm, caller)
            generation = await trio.to_thread.run_sync(self.db.current_generation, name)
            if generation is None:
                raise NoSuchRealm(f"there is no realm {name!r} to push")
            plan = await trio.to_thread.run_sync(
                self.catalog.plan_realm, name,
                effective_selectors(self.cache.state_of(generation)), caller.uid)
        uids = [n.uid for n in plan.nodes if n.kind == "build" and self.runner.is_valid(n)]
        report = await trio.to_thread.run_sync(self.pusher.push, uids)
        log.info("push by uid %d: %d uploaded, %d already there", caller.uid,
                 len(report.pushed), report.present)
        return {"pushed": report.pushed, "present": report.present,
                "cache": self.pusher.cache.url}
