"""The ops about packages and builds: `dep` and `plan` show what a build would be, `build`
and `run` build (`run` an ephemeral realm), `status`, `builds` and `log` show builds queued,
running and done. None of them touches a realm's records."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Protocol

import trio

from ixd.build.cluster import Cluster
from ixd.build.scheduler import Scheduler
from ixd.daemon import identity, logstream, paging, realm_checks, request_args
from ixd.daemon.catalog import EPHEMERAL_REALM, Catalog
from ixd.daemon.emit import Emit
from ixd.daemon.identity import Caller
from ixd.model.layout import Layout
from ixd.model.nodes import Node
from ixd.model.selector import Selector, parse_selector
from ixd.recipes import plan as planning
from ixd.recipes.package import Package
from ixd.store.buildlog import DEFAULT_MAX_LOG, head_bytes
from ixd.store.db import BuildDatabase
from ixd.wire import events
from ixd.wire.ops import BuildArgs, LogArgs, PackagesArgs, PageArgs, PlanArgs, RunArgs

log = logging.getLogger("ixd")

_UID = re.compile(r"^[0-9a-f]{32}$")


class BuildsSeen(Protocol):
    """What `status` asks the runner (`ixd.build.runner.StoreRunner`) of a build under way."""

    def expected_duration(self, node: Node) -> float | None: ...

    def remote_worker(self, uid: str) -> str | None: ...


class BuildOps:
    def __init__(self, db: BuildDatabase, layout: Layout, catalog: Catalog,
                 scheduler: Scheduler, runner: BuildsSeen, cluster: Cluster | None,
                 max_log_size: int = DEFAULT_MAX_LOG) -> None:
        self.db = db
        #: the head of a running build's log, which a follower reads from the file
        self.log_head = head_bytes(max_log_size)
        self.layout = layout
        self.catalog = catalog
        self.scheduler = scheduler
        self.runner = runner
        self.cluster = cluster

    async def op_dep(self, args: PackagesArgs, caller: Caller, emit: Emit) -> Any:
        """Every package of the closure, hubs included, by name and flags, in the order
        stal/IX's `ix build` loads them."""
        packages = await self.catalog.dep(request_args.selectors(args.packages), caller.uid)

        def entries() -> list[dict[str, Any]]:  # stal/IX's CI set: 27,399 of them
            return [{"name": p.name, "selector": str(p.selector), "flags": p.flags,
                     "uid": p.uid, "kind": p.kind, "out": p.out_dir} for p in packages]

        return {"packages": await trio.to_thread.run_sync(entries)}

    async def op_plan(self, args: PlanArgs, caller: Caller, emit: Emit) -> Any:
        """The plan as one reply; `summary`: only what it holds; `stream`: its nodes in
        `plan-nodes` events (a big plan outgrows one frame), the reply without them; `text`:
        the plan as one JSON document, in pieces of it in `plan-text` events, each
        compressed (zlib) on its own."""
        selectors = request_args.selectors(args.packages)
        if args.text:
            text = await self.catalog.plan_text(selectors, caller.uid)
            for piece in text.pieces:
                await emit.send(events.PLAN_TEXT, {"zlib": piece})
            return {"targets": list(text.targets), "nodes": text.nodes, "bytes": text.size}
        packages = await self.catalog.load(selectors, caller.uid)
        plan = await trio.to_thread.run_sync(planning.build_plan, packages, self.layout)
        if args.summary:
            return planning.plan_summary(plan)
        if not args.stream:
            return plan.to_json()
        for batch in planning.node_batches(plan):
            await emit.send(events.PLAN_NODES, {"nodes": batch})
        return {"targets": list(plan.targets), "streamed": len(plan.nodes)}

    async def op_build(self, args: BuildArgs, caller: Caller, emit: Emit) -> Any:
        selectors = request_args.selectors(args.packages)
        packages = await self.catalog.load(selectors, caller.uid)
        await self._tell_unread(selectors, packages, args.strict, emit)
        await self.scheduler.run(planning.build_plan(packages, self.layout), emit, caller.uid)
        return {"packages": [{"selector": str(p.selector), "uid": p.uid,
                              "out": p.out_dir,
                              "closure": [q.out_dir for q in p.run_closure if q.out_dir]}
                             for p in packages]}

    async def op_run(self, args: RunArgs, caller: Caller, emit: Emit) -> Any:
        """Build an ephemeral realm. With `hold`, the realm and everything it links stay
        garbage-collection roots until the client hangs up (its command exited): the path
        goes out in a `ready` event and the request never answers."""
        selectors = request_args.selectors(args.packages)
        loaded = await trio.to_thread.run_sync(self.catalog.load_realm, EPHEMERAL_REALM,
                                               selectors, caller.uid)
        await self._tell_unread(selectors, loaded.packages, args.strict, emit)
        realm_plan = await trio.to_thread.run_sync(self.catalog.plan_loaded, EPHEMERAL_REALM,
                                                   loaded)
        path = realm_plan.nodes[-1].outputs[0]
        # kept from before the build: no collection between the build and the hold
        with self.scheduler.keep(realm_plan):
            await self.scheduler.run(realm_plan, emit, caller.uid)
            if not args.hold:
                return {"path": path}
            await emit.send(events.READY, {"path": path})  # never dropped
            log.info("run: uid %d holds %s", caller.uid, path)
            await trio.sleep_forever()  # cancelled when the client hangs up
        raise AssertionError("unreachable")

    async def _tell_unread(self, selectors: list[Selector], packages: list[Package],
                           strict: bool, emit: Emit) -> None:
        """Warn of each flag in `selectors` no package it reaches reads; refuse with
        `strict` (UnreadFlag)."""
        if not any(s.flags for s in selectors):
            return
        for text in await trio.to_thread.run_sync(
                realm_checks.unread_selector_flags, selectors, packages,
                self.catalog.flags_read, strict):
            emit(events.NOTICE, {"text": text})

    async def op_status(self, args: PageArgs, caller: Caller, emit: Emit) -> Any:
        """The flights queued and running, running first: a page of at most `limit` from
        `offset`, with the total count."""
        limit, offset = args.limit, args.offset
        now = time.time()
        flights = sorted(self.scheduler.flights(),
                         key=lambda f: (not f.started, f.started or f.queued))
        page = []
        for flight in flights[offset:offset + limit]:
            node = flight.node
            waiting = sorted(identity.login_of_uid(u) for u in flight.waiting_uids)
            page.append({
                # as the caller spelt it if they wait for it, else as its requester did
                "uid": node.uid, "name": flight.name_for(caller.uid), "kind": node.kind,
                "state": "running" if flight.started else "queued",
                "since": flight.started or flight.queued,
                "elapsed": now - (flight.started or flight.queued),
                "expected": self.runner.expected_duration(node),
                "waiting": waiting[:paging.MAX_WAITING_NAMES],
                "waiting_count": len(waiting),
                "requested_by": identity.login_of_uid(flight.requested_by),
            })
            worker = self.runner.remote_worker(node.uid)
            if worker is not None:
                page[-1]["worker"] = worker or "(submitted)"
        running = sum(1 for f in flights if f.started)
        reply = {"builds": page, "total": len(flights), "running": running,
                 "queued": len(flights) - running, "offset": offset, "limit": limit,
                 "jobs": self.scheduler.jobs, "slots_free": self.scheduler.free_slots,
                 "jobs_per_user": self.scheduler.build_slots.per_user}
        if self.cluster is not None:
            reply["cluster"] = self.cluster.state()
        reply["caches"] = await self.catalog.cache_usage(caller.uid)
        return reply

    async def op_builds(self, args: PageArgs, caller: Caller, emit: Emit) -> Any:
        """Build history, newest first: a page of at most `limit` rows from `offset`, cut
        short (`cut`) if the rows would make too large a reply; `next_offset` if there is
        more."""
        limit, offset = args.limit, args.offset
        rows = await trio.to_thread.run_sync(self.db.builds, offset + limit + 1)
        builds, cut = paging.fit(
            {**r, "flags": json.loads(r["flags"] or "{}"),
             "requested_by": identity.login_of_uid(r["requested_by"])}
            for r in rows[offset:offset + limit])
        more = cut or len(rows) > offset + limit
        return {"builds": builds, "offset": offset, "limit": limit, "cut": cut,
                "next_offset": offset + len(builds) if more else None}

    async def op_log(self, args: LogArgs, caller: Caller, emit: Emit) -> Any:
        """A build's log, streamed in `log-text` events (see `ixd.daemon.logstream`); with `follow`,
        a running build's log so far and then its lines as it prints them."""
        target = args.target
        if _UID.match(target):
            uid = target
        else:
            package = (await self.catalog.load([parse_selector(target)], caller.uid))[0]
            uid = package.uid
        return await logstream.serve_log(
            uid, self.layout.log_path(uid), target, args.follow,
            lambda: self.scheduler.flight_of(uid), emit.send,
            self.log_head)
