"""The daemon's operations: what each request op does, given who asks.

`Daemon.handle(op, args, caller, emit)` validates the arguments, loads packages (in a worker
thread: rendering is CPU work), runs plans through the scheduler, and switches realms. The
socket server around it only moves frames.
"""

from __future__ import annotations

import logging
import os
import pwd
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ixd import plan as planning
from ixd.assemble import remove_realm_link, switch_realm_link
from ixd.db import BuildDatabase
from ixd.errors import BadRequest, IxError, NoSuchRealm, UnknownOp
from ixd.layout import Layout
from ixd.packages import Package, PackageGraph, walk_closure
from ixd.realm_model import (
    RealmPatch,
    RealmState,
    apply_patch,
    effective_selectors,
    patch_from_wire,
)
from ixd.recipes import RecipeTree
from ixd.runner import StoreRunner
from ixd.scheduler import Listener, Scheduler
from ixd.selector import Selector, parse_selector, validate_realm_name

log = logging.getLogger("ixd")

VERSION = "0.1.0"


@dataclass(frozen=True)
class Caller:
    """Who sent a request: from the socket's peer credentials, never from the client."""

    uid: int
    gid: int
    pid: int

    @property
    def login(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid{self.uid}"


@dataclass(frozen=True)
class Config:
    root: Path
    overlays: tuple[Path, ...]
    mirrors: tuple[str, ...] = ()
    jobs: int = 0
    confine: bool = True
    socket: Path | None = None

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def job_count(self) -> int:
        return self.jobs or os.cpu_count() or 1


Handler = Callable[[dict[str, Any], Caller, Listener], Awaitable[Any]]


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.layout = config.layout
        self.layout.ensure()
        self.db = BuildDatabase(self.layout.database)
        self.graph = PackageGraph(RecipeTree(config.overlays), self.layout.store)
        self.runner = StoreRunner(
            self.layout, self.db, confine=config.confine, mirrors=config.mirrors,
            make_thrs=os.cpu_count() or 1,
        )
        self.scheduler = Scheduler(self.runner, config.job_count)
        # realm changes of one realm are serialised; different realms go in parallel
        self._realm_locks: dict[str, trio.Lock] = {}
        self._graph_lock = threading.Lock()
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
        return [parse_selector(s) for s in raw]

    def _realm_name(self, args: dict[str, Any], caller: Caller) -> str:
        name = args.get("realm") or caller.login
        if not isinstance(name, str):
            raise BadRequest("'realm' must be a string")
        return validate_realm_name(name)

    def current_state(self, realm: str) -> RealmState:
        generation = self.db.current_generation(realm)
        if generation is None:
            return RealmState(realm)
        return RealmState.from_json(generation.state)

    # --- ops -------------------------------------------------------------------------------

    async def op_ping(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        return {"version": VERSION, "uid": caller.uid, "login": caller.login,
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
        locks = [self._realm_locks.setdefault(n, trio.Lock()) for n in names]
        for lock in locks:  # sorted order: no deadlock between two multi-realm requests
            await lock.acquire()
        try:
            return await self._change_locked(patches, caller, emit, fresh)
        finally:
            for lock in locks:
                lock.release()

    async def _change_locked(self, patches: list[RealmPatch], caller: Caller,
                             emit: Listener, fresh: bool) -> Any:
        # Decide everything, build everything, then switch: a failure switches nothing.
        states: dict[str, RealmState] = {}
        for patch in patches:
            base = states.get(patch.realm)
            if base is None:
                base = RealmState(patch.realm) if fresh else await trio.to_thread.run_sync(
                    self.current_state, patch.realm)
            states[patch.realm] = apply_patch(base, patch)
        prepared = []
        for name, state in states.items():
            packages = await self._load(effective_selectors(state))
            meta = {"realm": name, "state": state.to_json(),
                    "packages": [str(p.selector) for p in packages]}
            realm_plan = planning.realm_plan(name, packages, meta, self.layout)
            prepared.append((name, state, realm_plan))
        for _name, _state, realm_plan in prepared:
            await self.scheduler.run(realm_plan, emit, caller.uid)
        results = []
        for name, state, realm_plan in prepared:
            path = realm_plan.nodes[-1].outputs[0]
            current = await trio.to_thread.run_sync(self.db.current_generation, name)
            changed = current is None or current.path != path or current.state != state.to_json()
            if changed:
                generation = await trio.to_thread.run_sync(
                    self.db.add_generation, name, path, state.to_json(), caller.uid, caller.uid)
                number = generation.number
                log.info("realm %s -> generation %d %s by uid %d", name, number, path,
                         caller.uid)
            else:
                number = current.number if current else 0
            await trio.to_thread.run_sync(switch_realm_link, self.layout.realm_link(name),
                                          Path(path))
            results.append({"realm": name, "path": path, "generation": number,
                            "changed": changed, "state": state.to_json()})
        return {"realms": results}

    async def op_build(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        packages = await self._load(self._selectors(args))
        await self.scheduler.run(planning.build_plan(packages, self.layout), emit, caller.uid)
        return {"packages": [{"selector": str(p.selector), "uid": p.uid,
                              "out": p.out_dir,
                              "closure": [q.out_dir for q in p.run_closure if q.out_dir]}
                             for p in packages]}

    async def op_run(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        selectors = self._selectors(args)
        packages = await self._load(selectors)
        meta = {"realm": "run", "packages": [str(p.selector) for p in packages]}
        realm_plan = planning.realm_plan("run", packages, meta, self.layout)
        await self.scheduler.run(realm_plan, emit, caller.uid)
        return {"path": realm_plan.nodes[-1].outputs[0]}

    async def op_list(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        realm = args.get("realm")
        if realm is None:
            rows = await trio.to_thread.run_sync(self.db.realms)
            return {"realms": [{"name": r["name"], "owner": r["owner"],
                                "generation": r["current"]} for r in rows]}
        name = self._realm_name(args, caller)
        generation = await trio.to_thread.run_sync(self.db.current_generation, name)
        if generation is None:
            raise NoSuchRealm(f"there is no realm {name!r}; create it with "
                              f"`ixc mut {name} +bin/...`")
        return {"realm": name, "generation": generation.number, "path": generation.path,
                "state": generation.state}

    async def op_purge(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        name = self._realm_name(args, caller)
        lock = self._realm_locks.setdefault(name, trio.Lock())
        async with lock:
            if await trio.to_thread.run_sync(self.db.realm, name) is None:
                raise NoSuchRealm(f"there is no realm {name!r} to purge")
            await trio.to_thread.run_sync(remove_realm_link, self.layout.realm_link(name))
            await trio.to_thread.run_sync(self.db.drop_realm, name)
        log.info("realm %s purged by uid %d", name, caller.uid)
        return {"realm": name, "purged": True}

    async def op_dep(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        packages = await self._load(self._selectors(args))
        return {"packages": [{"name": p.name, "selector": str(p.selector), "uid": p.uid,
                              "kind": p.kind, "out": p.out_dir}
                             for p in walk_closure(packages)]}

    async def op_plan(self, args: dict[str, Any], caller: Caller, emit: Listener) -> Any:
        packages = await self._load(self._selectors(args))
        return planning.build_plan(packages, self.layout).to_json()


def describe_error(exc: BaseException) -> IxError:
    from ixd.errors import InternalError

    if isinstance(exc, IxError):
        return exc
    return InternalError(f"internal error: {type(exc).__name__}: {exc}")
