"""The ops about packages and builds: `dep` and `plan` show what a build would be, `build`
and `run` build (`run` an ephemeral realm), `status`, `builds` and `log` show builds queued,
running and done. None of them touches a realm's records."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from ixd.build.cluster import Cluster
from ixd.build.scheduler import Listener, Scheduler
from ixd.daemon import identity, logstream, paging, realm_checks, request_args
from ixd.daemon.catalog import Catalog
from ixd.daemon.identity import Caller
from ixd.model.layout import Layout
from ixd.model.nodes import Node
from ixd.model.selector import Selector, parse_selector
from ixd.recipes import plan as planning
from ixd.recipes.packages import Package, walk_closure
from ixd.store.db import BuildDatabase
from ixd.wire.errors import BadRequest

log = logging.getLogger("ixd")

_UID = re.compile(r"^[0-9a-f]{32}$")


class BuildsSeen(Protocol):
    """What `status` asks the runner (`ixd.build.runner.StoreRunner`) of a build under way."""

    def expected_duration(self, node: Node) -> float | None: ...

    def remote_worker(self, uid: str) -> str | None: ...


class BuildOps:
    def __init__(self, db: BuildDatabase, layout: Layout, catalog: Catalog,
                 scheduler: Scheduler, runner: BuildsSeen, cluster: Cluster | None) -> None:
        self.db = db
        self.layout = layout
        self.catalog = catalog
        self.scheduler = scheduler
        self.runner = runner
        self.cluster = cluster

    async def op_dep(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        packages = await self.catalog.load(request_args.selectors(args))
        return {"packages": [{"name": p.name, "selector": str(p.selector), "uid": p.uid,
                              "kind": p.kind, "out": p.out_dir}
                             for p in walk_closure(packages)]}

    async def op_plan(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        """The plan as one reply; `summary`: only what it holds; `stream`: its nodes in
        `plan-nodes` events (a big plan outgrows one frame), the reply without them."""
        packages = await self.catalog.load(request_args.selectors(args))
        plan = await trio.to_thread.run_sync(planning.build_plan, packages, self.layout)
        if args.get("summary"):
            return planning.plan_summary(plan)
        if not args.get("stream"):
            return plan.to_json()
        send = logstream.sender(emit)
        for batch in planning.node_batches(plan):
            await send("plan-nodes", {"nodes": batch})
        return {"targets": list(plan.targets), "streamed": len(plan.nodes)}

    async def op_build(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        selectors = request_args.selectors(args)
        packages = await self.catalog.load(selectors)
        await self._tell_unread(selectors, packages, args, emit)
        await self.scheduler.run(planning.build_plan(packages, self.layout), emit, caller.uid)
        return {"packages": [{"selector": str(p.selector), "uid": p.uid,
                              "out": p.out_dir,
                              "closure": [q.out_dir for q in p.run_closure if q.out_dir]}
                             for p in packages]}

    async def op_run(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        """Build an ephemeral realm. With `hold`, the realm and everything it links stay
        garbage-collection roots until the client hangs up (its command exited): the path
        goes out in a `ready` event and the request never answers."""
        hold = args.get("hold", False)
        if not isinstance(hold, bool):
            raise BadRequest(f"'hold' must be true or false, not {hold!r}")
        selectors = request_args.selectors(args)
        loaded = await trio.to_thread.run_sync(self.catalog.load_realm, "run", selectors)
        await self._tell_unread(selectors, loaded.packages, args, emit)
        realm_plan = await trio.to_thread.run_sync(self.catalog.plan_loaded, "run", loaded)
        path = realm_plan.nodes[-1].outputs[0]
        # kept from before the build: no collection between the build and the hold
        with self.scheduler.keep(realm_plan):
            await self.scheduler.run(realm_plan, emit, caller.uid)
            if not hold:
                return {"path": path}
            send: Callable[[str, dict[str, Any]], Awaitable[None]] | None = getattr(
                emit, "send", None)
            if send is not None:  # never dropped, even behind a full queue
                await send("ready", {"path": path})
            else:
                emit("ready", {"path": path})
            log.info("run: uid %d holds %s", caller.uid, path)
            await trio.sleep_forever()  # cancelled when the client hangs up
        raise AssertionError("unreachable")

    async def _tell_unread(self, selectors: list[Selector], packages: list[Package],
                           args: dict[str, Any], emit: Listener) -> None:
        """Warn of each flag in `selectors` no package it reaches reads; refuse with
        `strict` (UnreadFlag)."""
        strict = args.get("strict", False)
        if not isinstance(strict, bool):
            raise BadRequest(f"'strict' must be true or false, not {strict!r}")
        if not any(s.flags for s in selectors):
            return
        for text in await trio.to_thread.run_sync(
                realm_checks.unread_selector_flags, selectors, packages,
                self.catalog.flags_read, strict):
            emit("notice", {"text": text})

    async def op_status(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        """The flights queued and running, running first: a page of at most `limit` from
        `offset`, with the total count."""
        limit, offset = paging.page_args(args, paging.STATUS_PAGE, paging.MAX_STATUS_PAGE)
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
                 "jobs": self.scheduler.jobs, "slots_free": self.scheduler.free_slots}
        if self.cluster is not None:
            reply["cluster"] = self.cluster.state()
        return reply

    async def op_builds(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        """Build history, newest first: a page of at most `limit` rows from `offset`, cut
        short (`cut`) if the rows would make too large a reply; `next_offset` if there is
        more."""
        limit, offset = paging.page_args(args, paging.BUILDS_PAGE, paging.MAX_BUILDS_PAGE,
                                         paging.MAX_BUILDS_REACH)
        rows = await trio.to_thread.run_sync(self.db.builds, offset + limit + 1)
        builds, cut = paging.fit(
            {**r, "flags": json.loads(r["flags"] or "{}"),
             "requested_by": identity.login_of_uid(r["requested_by"])}
            for r in rows[offset:offset + limit])
        more = cut or len(rows) > offset + limit
        return {"builds": builds, "offset": offset, "limit": limit, "cut": cut,
                "next_offset": offset + len(builds) if more else None}

    async def op_log(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        """A build's log, streamed in `log-text` events (see `ixd.daemon.logstream`); with `follow`,
        a running build's log so far and then its lines as it prints them."""
        target = args.get("target")
        if not isinstance(target, str) or not target:
            raise BadRequest("'target' must be a package selector or a build uid")
        if _UID.match(target):
            uid = target
        else:
            package = (await self.catalog.load([parse_selector(target)]))[0]
            uid = package.uid
        return await logstream.serve_log(
            uid, self.layout.log_path(uid), target, bool(args.get("follow")),
            lambda: self.scheduler.flight_of(uid), emit)
