"""The daemon's operations: what each request op does, given who asks.

`Daemon.handle(op, args, caller, emit)` validates the arguments, loads packages (in a worker
thread: rendering is CPU work), runs plans through the scheduler, and switches realms. The
socket server around it only moves frames.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ixd import __version__, auth, gc, identity, logstream, paging
from ixd import plan as planning
from ixd.assemble import remove_realm_link, switch_realm_link
from ixd.builder import BuildLimits
from ixd.buildusers import DEFAULT_GROUP as DEFAULT_BUILD_GROUP
from ixd.buildusers import BuildUserPool, load_pool
from ixd.cluster import Cluster, ClusterSettings
from ixd.db import BuildDatabase, Generation
from ixd.errors import (
    BadFlag,
    BadRequest,
    CacheError,
    IxError,
    NoSuchRealm,
    PermissionDenied,
    RealmError,
    UnknownOp,
)
from ixd.fixup import fixer_selectors
from ixd.gc import GcResult
from ixd.identity import Caller
from ixd.layout import Layout
from ixd.nodes import Plan
from ixd.packages import Package, PackageGraph, walk_closure
from ixd.realm_model import (
    RealmPatch,
    RealmState,
    apply_patch,
    effective_selectors,
    patch_from_wire,
)
from ixd.recipes import REALM_FLAG, RecipeTree
from ixd.recovery import empty_trash, move_to_trash, recover
from ixd.runner import StoreRunner
from ixd.scheduler import Listener, Scheduler
from ixd.selector import Selector, check_client_flags, parse_selector, validate_realm_name
from ixd.substitute import CacheSettings, Pusher, Substituter, open_caches
from ixd.treehash import tree_size
from ixd.watch import watch_tree

log = logging.getLogger("ixd")

@dataclass(frozen=True)
class Config:
    root: Path
    overlays: tuple[Path, ...]
    mirrors: tuple[str, ...] = ()
    jobs: int = 0
    confine: bool = True
    socket: Path | None = None
    admin_group: str | None = None
    #: generations of each realm kept by garbage collection, besides the current one
    keep_generations: int = 3
    #: collect garbage automatically when free space under the root falls below this
    min_free: int = 0
    frame_timeout: float = 10.0
    max_connections_per_user: int = 64
    db_busy_timeout: float = 30.0
    #: the group whose members run confined builds, one build per uid at a time
    build_users: str = DEFAULT_BUILD_GROUP
    limits: BuildLimits = field(default_factory=BuildLimits)
    #: binary caches to substitute from and to push to (`ixd.substitute`)
    cache: CacheSettings = field(default_factory=CacheSettings)
    #: a Dask cluster to build on (`ixd.cluster`)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    #: render-context names set by `ixd --set NAME=VALUE` (packages.DEFAULT_SETTINGS)
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def job_count(self) -> int:
        return self.jobs or os.cpu_count() or 1


@dataclass(frozen=True)
class RealmChange:
    """One realm's change, decided and planned, waiting to be built and switched."""

    realm: str
    owner: int
    current: Generation | None
    state: RealmState
    plan: Plan
    #: `Daemon.recipe_changes` before the plan was made
    recipes: int = -1


@dataclass(frozen=True)
class Settled:
    """A realm as its last change (under its lock) left it: what a change that changes
    nothing is answered from, without planning or the database. Dropped whenever anything
    else changes the realm (purge, rollback, eviction); stale once a recipe changed."""

    generation: Generation
    owner: int
    state: RealmState
    plan: Plan
    recipes: int


Handler = Callable[[dict[str, Any], Caller, Listener], Awaitable[Any]]


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.layout = config.layout
        self.layout.ensure()
        self.db = BuildDatabase(self.layout.database, config.db_busy_timeout)
        log.info(recover(self.layout, self.db).summary())
        self._evict_squatters()
        self.graph = PackageGraph(
            RecipeTree(config.overlays, bytecode_dir=self.layout.var / "jinja"),
            self.layout.store, settings=dict(config.settings),
            host_tools_cache=self.layout.var / "host-tools.json",
            render_store=self.layout.var / "renders.jsonl")
        jobs = config.job_count
        pool = None
        if config.confine:
            pool = BuildUserPool(load_pool(config.build_users))
            pool.clear_all()  # nothing left over from an earlier run may touch new builds
            if len(pool) < jobs:
                log.warning("%d build users in group %s for --jobs %d: at most %d builds run "
                            "at once (add build users with runit/build-users.sh)", len(pool),
                            config.build_users, jobs, len(pool))
                jobs = len(pool)
        caches, push_to = open_caches(config.cache, str(self.layout.store))
        substituter = (Substituter(caches, self.layout, config.limits.max_output_size)
                       if caches else None)
        self.pusher = Pusher(push_to, self.db, self.layout) if push_to else None
        self.cluster: Cluster | None = None
        if config.cluster.enabled:
            if substituter is None or self.pusher is None:
                raise BadRequest("--dask needs --cache (and --trusted-key) and --push "
                                 "(with --signing-key) naming the cache its workers push to: "
                                 "results come back through it")
            self.cluster = Cluster(config.cluster, on_started=self._remote_started,
                                   on_log=self._remote_log)
        self.runner = StoreRunner(
            self.layout, self.db, confine=config.confine, mirrors=config.mirrors,
            make_thrs=os.cpu_count() or 1, build_users=pool, limits=config.limits,
            substituter=substituter, on_built=self.pusher.submit if self.pusher else None,
            cluster=self.cluster, push_inputs=self.pusher.push if self.pusher else None,
        )
        #: the event loop's token, for the Dask client's thread (set when serving)
        self.trio_token: trio.lowlevel.TrioToken | None = None
        self.scheduler = Scheduler(self.runner, jobs, substituter)
        # realm changes of one realm are serialised; different realms go in parallel
        self._realm_locks: dict[str, trio.Lock] = {}
        self._gc_lock = trio.Lock()
        # (realm, generation number, created) -> its parsed state
        self._states: dict[tuple[str, int, float], RealmState] = {}
        self._settled: dict[str, Settled] = {}
        #: batches of recipe changes seen (and dropped from the package cache) so far
        self.recipe_changes = 0
        self.handlers: dict[str, Handler] = {
            "ping": self.op_ping,
            "mut": self.op_mut,
            "let": self.op_let,
            "build": self.op_build,
            "run": self.op_run,
            "list": self.op_list,
            "purge": self.op_purge,
            "dep": self.op_dep,
            "plan": self.op_plan,
            "generations": self.op_generations,
            "rollback": self.op_rollback,
            "status": self.op_status,
            "builds": self.op_builds,
            "log": self.op_log,
            "gc": self.op_gc,
            "push": self.op_push,
        }

    async def handle(self, op: str, args: dict[str, Any], caller: Caller,
                     emit: Listener) -> Any:
        handler = self.handlers.get(op)
        if handler is None:
            raise UnknownOp(f"unknown op {op!r}; this daemon knows: "
                            f"{', '.join(sorted(self.handlers))}")
        return await handler(args, caller, emit)

    # --- helpers ---------------------------------------------------------------------------

    async def _load(self, selectors: Sequence[Selector]) -> list[Package]:
        packages: list[Package] = await trio.to_thread.run_sync(
            self.graph.load_all, list(selectors))
        return packages

    def _selectors(self, args: dict[str, Any]) -> list[Selector]:
        raw = args.get("packages")
        if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
            raise BadRequest("this op needs 'packages': a non-empty list of selectors, "
                             "e.g. ['bin/greet', 'lib/greet(shout=1)']")
        selectors = [parse_selector(s) for s in raw]
        for selector in selectors:  # no `kind=lib`, `linux=`, ...: ix sets those itself
            check_client_flags(selector.flags)
        return selectors

    def _realm_name(self, args: dict[str, Any], caller: Caller) -> str:
        name = args.get("realm") or caller.login
        if not isinstance(name, str):
            raise BadRequest("'realm' must be a string")
        return validate_realm_name(name)

    def identity(self, caller: Caller) -> auth.Identity:
        login = caller.login
        admin = caller.uid == auth.ROOT or identity.in_group(login, caller.gid,
                                                         self.config.admin_group)
        return auth.Identity(caller.uid, login, admin)

    def authorize(self, realm: str, caller: Caller, doing: str) -> auth.Claim:
        """The realm's owner as `caller` finds it, once `caller` is known to be allowed to
        `doing` it (blocking). Called before the realm's lock is taken, so nobody queues on
        a lock of a realm they may not change, and again under it."""
        settled = self._settled.get(realm)  # recorded owner, without the database
        if settled is not None:
            owner: int | None = settled.owner
        else:
            row = self.db.realm(realm)
            owner = None if row is None else int(row["owner"])
        who = self.identity(caller)
        claim = auth.claim(realm, owner, who)
        auth.check_may_change(realm, claim.owner, who, doing)
        return claim

    def _realm_lock(self, realm: str) -> trio.Lock:
        return self._realm_locks.setdefault(realm, trio.Lock())

    def _evict_squatter(self, realm: str) -> bool:
        """If `realm` is recorded as another uid's than the login of its name, drop its
        record, generations and link: the login gets it new (blocking; under the realm's
        lock). True if it was dropped."""
        row = self.db.realm(realm)
        if row is None or not auth.is_squatted(realm, int(row["owner"])):
            return False
        log.warning("realm %s: recorded as uid %d's, but %s is a login now: its generations "
                    "are dropped, the login gets the realm new", realm, row["owner"], realm)
        # the database first: a crash in between leaves a link that recovery removes
        self._settled.pop(realm, None)
        self.db.drop_realm(realm)
        remove_realm_link(self.layout.realm_link(realm))
        return True

    async def _void(self, realm: str, row: dict[str, Any] | None) -> bool:
        """Whether the record `row` a read found is a squatter's; if so it is dropped, under
        the realm's lock (taken only then: reads do not wait for a realm's change)."""
        if row is None or not await trio.to_thread.run_sync(
                auth.is_squatted, realm, int(row["owner"])):
            return False
        async with self._realm_lock(realm):
            await trio.to_thread.run_sync(self._evict_squatter, realm)
        return True

    def _evict_squatters(self) -> None:
        """Every squatted realm's record dropped, at start (blocking, before serving)."""
        for row in self.db.realms():
            self._evict_squatter(row["name"])

    # --- ops -------------------------------------------------------------------------------

    async def op_ping(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        return {"version": __version__, "uid": caller.uid, "login": caller.login,
                "root": str(self.config.root)}

    async def op_mut(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        return await self._change(args, caller, emit, fresh=False)

    async def op_let(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        return await self._change(args, caller, emit, fresh=True)

    async def _change(self, args: dict[str, Any], caller: Caller, emit: Listener,
                      fresh: bool) -> Any:
        raw = args.get("patches")
        if not isinstance(raw, list) or not raw:
            raise BadRequest("'patches' must be a non-empty list of realm patches")
        patches = [patch_from_wire(p) for p in raw]
        names = sorted({p.realm for p in patches})
        for name in names:  # before any lock; _prepare checks again under the locks
            await trio.to_thread.run_sync(self.authorize, name, caller, "change")
        locks = [self._realm_lock(n) for n in names]
        for lock in locks:  # sorted order: no deadlock between two multi-realm requests
            await lock.acquire()
        try:
            unchanged = await trio.to_thread.run_sync(self._unchanged, patches, caller, fresh)
            if unchanged is not None:
                return unchanged
            return await self._change_locked(patches, caller, emit, fresh)
        finally:
            for lock in locks:
                lock.release()

    def _unchanged(self, patches: list[RealmPatch], caller: Caller,
                   fresh: bool) -> dict[str, Any] | None:
        """The answer to a change that changes nothing, from the realms as they are (no
        rendering, planning or database), or None if it may change something: a realm not
        settled here, a recipe changed since its plan, a state the patches change, an entry
        of its plan no longer valid (blocking: under the realms' locks)."""
        who = self.identity(caller)
        answers = []
        for realm, realm_patches in _by_realm(patches).items():
            settled = self._settled.get(realm)
            if settled is None or settled.recipes != self.recipe_changes:
                return None
            claim = auth.claim(realm, settled.owner, who)
            if not claim.exists:
                return None  # a squatter's: the full change drops it
            auth.check_may_change(realm, claim.owner, who, "change")
            state = RealmState(realm) if fresh else settled.state
            for patch in realm_patches:
                state = apply_patch(state, patch)
            if state != settled.state or not all(
                    self.runner.is_valid(n) for n in settled.plan.nodes if n.kind != "fetch"):
                return None
            path = settled.generation.path
            switch_realm_link(self.layout.realm_link(realm), Path(path))  # as it was: no write
            answers.append({"realm": realm, "path": path,
                            "generation": settled.generation.number, "changed": False,
                            "state": state.to_json()})
        return {"realms": answers}

    async def _change_locked(self, patches: list[RealmPatch], caller: Caller,
                             emit: Listener, fresh: bool) -> Any:
        # Decide everything, build everything, then switch: a failure switches nothing.
        prepared = [await trio.to_thread.run_sync(self._prepare, realm, realm_patches, caller,
                                                  fresh)
                    for realm, realm_patches in _by_realm(patches).items()]
        with contextlib.ExitStack() as kept:  # nothing of these plans is collected meanwhile
            for change in prepared:
                kept.enter_context(self.scheduler.keep(change.plan))
            for change in prepared:
                await self.scheduler.run(change.plan, emit, caller.uid)
            return {"realms": [await trio.to_thread.run_sync(self._switch, change, caller)
                               for change in prepared]}

    def _prepare(self, realm: str, patches: list[RealmPatch], caller: Caller,
                 fresh: bool) -> RealmChange:
        """Who owns it, what it holds now and after the patches, the plan (blocking)."""
        recipes = self.recipe_changes  # before anything is loaded: a change after it counts
        claim = self.authorize(realm, caller, "change")
        if claim.squatted:  # the login's first change: nothing of the squatter's is kept
            self._evict_squatter(realm)
        current = self.db.current_generation(realm) if claim.exists else None
        state = RealmState(realm)
        if current is not None and not fresh:
            try:
                state = self._state_of(current)
            except BadFlag as exc:  # recorded before flag values were held to their charset
                raise BadFlag(f"realm {realm!r} (generation {current.number}) holds a flag "
                              f"ix no longer accepts: {exc.message}; make it again with "
                              f"`ixc let {realm} ...` or remove it with `ixc purge {realm}`"
                              ) from None
        for patch in patches:
            state = apply_patch(state, patch)
        plan = self._plan_realm(realm, effective_selectors(state), state=state.to_json())
        return RealmChange(realm, claim.owner, current, state, plan, recipes)

    def _plan_realm(self, realm: str, selectors: Sequence[Selector], **meta: Any) -> Plan:
        """Load the packages and plan the realm's assembly (blocking: rendering is CPU)."""
        # as stal/IX's, every package of a realm has the flag target_realm=REALM (unless it
        # sets it itself): recipes add what only a realm needs (lib/glib/ix: its fix-up)
        packages = self.graph.load_all([s if REALM_FLAG in dict(s.flags)
                                        else s.with_flags({REALM_FLAG: realm})
                                        for s in selectors])
        fixers = self.graph.load_tools(fixer_selectors(packages))
        meta.update(realm=realm, packages=[str(p.selector) for p in packages])
        return planning.realm_plan(realm, packages, meta, self.layout, fixers)

    def _state_of(self, generation: Generation) -> RealmState:
        """A generation's realm state, parsed once (generations never change; a purged
        realm's numbers come again, hence the time in the key)."""
        key = _state_key(generation)
        state = self._states.get(key)
        if state is None:
            if len(self._states) > 10_000:  # a cache, not a record: start again
                self._states.clear()
            state = self._states[key] = RealmState.from_json(generation.state)
        return state

    def _recorded_state(self, generation: Generation) -> RealmState | None:
        """A generation's state; None if it holds a flag refused since it was recorded."""
        try:
            return self._state_of(generation)
        except BadFlag:
            return None

    def _switch(self, change: RealmChange, caller: Caller) -> dict[str, Any]:
        """Record the new generation (if anything changed) and switch the link (blocking)."""
        path = change.plan.nodes[-1].outputs[0]
        current = change.current
        if current is None or current.path != path or self._recorded_state(current) != change.state:
            generation = self.db.add_generation(change.realm, path, change.state.to_json(),
                                                caller.uid, change.owner)
            self._states[_state_key(generation)] = change.state
            number, changed = generation.number, True
            log.info("realm %s -> generation %d %s by uid %d", change.realm, number, path,
                     caller.uid)
        else:
            generation, number, changed = current, current.number, False
        switch_realm_link(self.layout.realm_link(change.realm), Path(path))
        self._settled[change.realm] = Settled(generation, change.owner, change.state,
                                              change.plan, change.recipes)
        return {"realm": change.realm, "path": path, "generation": number,
                "changed": changed, "state": change.state.to_json()}

    async def op_build(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        packages = await self._load(self._selectors(args))
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
        realm_plan = await trio.to_thread.run_sync(self._plan_realm, "run",
                                                   self._selectors(args))
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

    async def op_list(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        realm = args.get("realm")
        if realm is None:
            rows = await trio.to_thread.run_sync(self.db.realms)
            squatted = await trio.to_thread.run_sync(lambda: {
                r["name"] for r in rows if auth.is_squatted(r["name"], int(r["owner"]))})
            for name in sorted(squatted):
                async with self._realm_lock(name):
                    await trio.to_thread.run_sync(self._evict_squatter, name)
            return {"realms": [{"name": r["name"], "owner": r["owner"],
                                "generation": r["current"]}
                               for r in rows if r["name"] not in squatted]}
        name = self._realm_name(args, caller)
        row = await trio.to_thread.run_sync(self.db.realm, name)
        if await self._void(name, row):
            row = None
        generation = await trio.to_thread.run_sync(self.db.current_generation, name)
        if row is None or generation is None:
            raise NoSuchRealm(f"there is no realm {name!r}; create it with "
                              f"`ixc mut {name} +bin/...`")
        return {"realm": name, "generation": generation.number, "path": generation.path,
                "state": generation.state, "owner": identity.login_of_uid(int(row["owner"]))}

    async def op_purge(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        name = self._realm_name(args, caller)
        await trio.to_thread.run_sync(self.authorize, name, caller, "purge")  # before the lock
        async with self._realm_lock(name):
            claim = await trio.to_thread.run_sync(self.authorize, name, caller, "purge")
            if claim.squatted:
                await trio.to_thread.run_sync(self._evict_squatter, name)
            if not claim.exists:
                raise NoSuchRealm(f"there is no realm {name!r} to purge")
            # the database first: a crash in between leaves a link that recovery removes
            self._settled.pop(name, None)
            await trio.to_thread.run_sync(self.db.drop_realm, name)
            await trio.to_thread.run_sync(remove_realm_link, self.layout.realm_link(name))
        log.info("realm %s purged by uid %d", name, caller.uid)
        return {"realm": name, "purged": True}

    async def op_dep(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        packages = await self._load(self._selectors(args))
        return {"packages": [{"name": p.name, "selector": str(p.selector), "uid": p.uid,
                              "kind": p.kind, "out": p.out_dir}
                             for p in walk_closure(packages)]}

    async def op_plan(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        """The plan as one reply; `summary`: only what it holds; `stream`: its nodes in
        `plan-nodes` events (a big plan outgrows one frame), the reply without them."""
        packages = await self._load(self._selectors(args))
        plan = await trio.to_thread.run_sync(planning.build_plan, packages, self.layout)
        if args.get("summary"):
            return planning.plan_summary(plan)
        if not args.get("stream"):
            return plan.to_json()
        send = logstream.sender(emit)
        for batch in planning.node_batches(plan):
            await send("plan-nodes", {"nodes": batch})
        return {"targets": list(plan.targets), "streamed": len(plan.nodes)}

    async def op_generations(self, args: dict[str, Any], caller: Caller, emit: Listener
                             ) -> Any:
        name = self._realm_name(args, caller)
        row = await trio.to_thread.run_sync(self.db.realm, name)
        if await self._void(name, row):
            row = None
        generations = await trio.to_thread.run_sync(self.db.generations, name)
        if row is None or not generations:
            raise NoSuchRealm(f"realm {name!r} has no generations")
        return {"realm": name, "current": row["current"] if row else None,
                "generations": [{**g.to_json(), "by": identity.login_of_uid(g.created_by)}
                                for g in generations]}

    async def op_rollback(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        name = self._realm_name(args, caller)
        to = args.get("to")
        if to is not None and (not isinstance(to, int) or isinstance(to, bool)):
            raise BadRequest(f"'to' must be a generation number, not {to!r}")
        await trio.to_thread.run_sync(self.authorize, name, caller, "roll back")  # unlocked
        async with self._realm_lock(name):
            claim = await trio.to_thread.run_sync(self.authorize, name, caller, "roll back")
            if claim.squatted:  # never back to a squatter's generations
                await trio.to_thread.run_sync(self._evict_squatter, name)
            row = await trio.to_thread.run_sync(self.db.realm, name)
            if row is None or not claim.exists:
                raise NoSuchRealm(f"there is no realm {name!r} to roll back")
            generations = {g.number: g for g in
                           await trio.to_thread.run_sync(self.db.generations, name)}
            current = int(row["current"])
            if to is None:
                earlier = [n for n in generations if n < current]
                if not earlier:
                    raise RealmError(f"realm {name!r} is at its first generation "
                                     f"({current}); there is nothing to roll back to")
                to = max(earlier)
            if to not in generations:
                raise RealmError(f"realm {name!r} has no generation {to}; it has "
                                 f"{', '.join(map(str, sorted(generations)))}")
            path = Path(generations[to].path)
            if not await trio.to_thread.run_sync(path.is_dir):
                raise RealmError(f"generation {to} of realm {name!r} is gone from the store "
                                 f"({path}); choose another with --to")
            self._settled.pop(name, None)
            await trio.to_thread.run_sync(self.db.set_current, name, to)
            await trio.to_thread.run_sync(switch_realm_link, self.layout.realm_link(name), path)
        log.info("realm %s rolled back from %d to %d by uid %d", name, current, to, caller.uid)
        return {"realm": name, "generation": to, "previous": current, "path": str(path)}

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
                "uid": node.uid, "name": node.name, "kind": node.kind,
                "state": "running" if flight.started else "queued",
                "since": flight.started or flight.queued,
                "elapsed": now - (flight.started or flight.queued),
                "expected": self.runner.expected_duration(node),
                "waiting": waiting[:paging.MAX_WAITING_NAMES],
                "waiting_count": len(waiting),
                "requested_by": identity.login_of_uid(flight.requested_by),
            })
            if node.uid in self.runner.remote:
                page[-1]["worker"] = self.runner.remote[node.uid] or "(submitted)"
        running = sum(1 for f in flights if f.started)
        reply = {"builds": page, "total": len(flights), "running": running,
                 "queued": len(flights) - running, "offset": offset, "limit": limit,
                 "jobs": self.scheduler.jobs, "slots_free": self.scheduler.build_slots.free}
        if self.cluster is not None:
            reply["cluster"] = self.cluster.state()
        return reply

    def _remote_started(self, uid: str, worker: str) -> None:
        """A worker says it builds `uid` (from the Dask client's thread)."""
        if uid in self.runner.remote:
            self.runner.remote[uid] = worker

    def _remote_log(self, uid: str, lines: list[str]) -> None:
        """Log lines of a remote build (from the Dask client's thread)."""
        if self.trio_token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.trio_token.run_sync_soon(self.runner.remote_log, uid, lines)

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
        """A build's log, streamed in `log-text` events (see `ixd.logstream`); with `follow`,
        a running build's log so far and then its lines as it prints them."""
        target = args.get("target")
        if not isinstance(target, str) or not target:
            raise BadRequest("'target' must be a package selector or a build uid")
        if _UID.match(target):
            uid = target
        else:
            package = (await self._load([parse_selector(target)]))[0]
            uid = package.uid
        return await logstream.serve_log(
            uid, self.layout.log_path(uid), target, bool(args.get("follow")),
            lambda: next((f for f in self.scheduler.flights() if f.node.uid == uid), None),
            emit)

    async def op_gc(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        if not self.identity(caller).admin:
            raise PermissionDenied(f"{caller.login} may not collect garbage: that needs root "
                                   f"or the admin group ({self.config.admin_group or 'none set'})")
        result = await self.collect_garbage()
        return result.to_json()

    async def op_push(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        """Upload a realm's (or packages') closure to the push cache (admins only: what
        goes into a cache others trust is the administrator's call)."""
        if not self.identity(caller).admin:
            raise PermissionDenied(f"{caller.login} may not push to the cache: that needs root "
                                   f"or the admin group ({self.config.admin_group or 'none set'})")
        if self.pusher is None:
            raise CacheError("this ixd has no push cache: start it with --push URL "
                             "--signing-key FILE")
        if args.get("packages"):
            plan = planning.build_plan(await self._load(self._selectors(args)), self.layout)
        else:
            name = self._realm_name(args, caller)
            generation = await trio.to_thread.run_sync(self.db.current_generation, name)
            if generation is None:
                raise NoSuchRealm(f"there is no realm {name!r} to push")
            plan = await trio.to_thread.run_sync(
                self._plan_realm, name,
                effective_selectors(self._state_of(generation)))
        uids = [n.uid for n in plan.nodes if n.kind == "build" and self.runner.is_valid(n)]
        report = await trio.to_thread.run_sync(self.pusher.push, uids)
        log.info("push by uid %d: %d uploaded, %d already there", caller.uid,
                 len(report.pushed), report.present)
        return {"pushed": report.pushed, "present": report.present,
                "cache": self.pusher.cache.url}

    async def collect_garbage(self) -> GcResult:
        """Delete every valid entry not reachable from a root; safe while builds run."""
        async with self._gc_lock:
            generations = await trio.to_thread.run_sync(self.db.all_generations)
            realms = await trio.to_thread.run_sync(self.db.realms)
            entries = await trio.to_thread.run_sync(self.db.store_entries)
            current = {r["name"]: r["current"] for r in realms}
            realm_paths = [e["path"] for e in entries if e["kind"] == "rlm"]
            links = await trio.to_thread.run_sync(
                lambda: {p: gc.realm_links(p) for p in realm_paths})
            # From here to the invalidation, no await: a request that plans after this
            # sees the garbage as invalid, one that planned before is among the roots.
            roots = gc.root_paths(generations, current, self.config.keep_generations,
                                  self.scheduler.kept_paths())
            marked = gc.mark(roots, links)
            garbage = [e for e in entries if e["path"] not in marked]
            for entry in garbage:
                self.runner.valid.discard(entry["uid"])
                self.runner.collecting[entry["uid"]] = trio.Event()
            try:
                freed = await trio.to_thread.run_sync(self._sweep, garbage)
            finally:
                for entry in garbage:
                    self.runner.collecting.pop(entry["uid"]).set()
        result = GcResult(len(garbage), freed, len(entries) - len(garbage))
        log.info("gc: %d entries deleted, %d bytes freed, %d kept", result.entries,
                 result.bytes, result.kept)
        return result

    def _sweep(self, garbage: list[dict[str, Any]]) -> int:
        self.db.unregister([e["uid"] for e in garbage])
        freed = 0
        for entry in garbage:
            path = Path(entry["path"])
            if path.exists():
                freed += tree_size(path)
                move_to_trash(path, self.layout)
        empty_trash(self.layout)
        return freed

    async def watch_recipes(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                            ) -> None:
        """Drop the cached renders that read a changed recipe file; no restart needed."""
        async with trio.open_nursery() as nursery:

            def on_change(paths: set[Path]) -> None:
                # invalidation waits for the graph's lock, which a render may hold: off-loop
                nursery.start_soon(self._invalidate, paths)

            await nursery.start(functools.partial(watch_tree, self.config.overlays, on_change))
            task_status.started()

    async def _invalidate(self, paths: set[Path]) -> None:
        dropped = await trio.to_thread.run_sync(self.graph.invalidate_files, paths)
        self.recipe_changes += 1  # after the drop: a plan made before it is stale
        log.info("recipes changed: %d files, %d cached packages dropped", len(paths), dropped)

    async def watch_free_space(self, interval: float = 30.0) -> None:
        """Collect garbage when free space under the root falls below --min-free."""
        if not self.config.min_free:
            return
        while True:
            stat = await trio.to_thread.run_sync(os.statvfs, self.layout.root)
            free = stat.f_bavail * stat.f_frsize
            if free < self.config.min_free:
                log.info("gc: %d bytes free, below --min-free %d", free, self.config.min_free)
                try:
                    await self.collect_garbage()
                except IxError as exc:  # logged; the daemon serves on and tries again later
                    log.error("automatic gc failed: %s", exc)
            await trio.sleep(interval)


_UID = re.compile(r"^[0-9a-f]{32}$")


def _by_realm(patches: list[RealmPatch]) -> dict[str, list[RealmPatch]]:
    """The patches of each realm, realms in the order first named."""
    by_realm: dict[str, list[RealmPatch]] = {}
    for patch in patches:
        by_realm.setdefault(patch.realm, []).append(patch)
    return by_realm


def _state_key(generation: Generation) -> tuple[str, int, float]:
    return (generation.realm, generation.number, generation.created)
