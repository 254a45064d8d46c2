"""`mut` and `let`: realm changes, decided and planned, built, then switched.

A change takes the locks of the realms it names (in sorted order: two multi-realm changes
never deadlock), then either answers from the realms as their last change left them (a
change that changes nothing: no rendering, planning or database) or prepares every realm's
new state and plan, builds them all, and only then switches: a failure switches nothing.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ixd.build.scheduler import Listener, NodeRunner, Scheduler
from ixd.daemon import auth
from ixd.daemon import realm_checks as checks
from ixd.daemon.catalog import Catalog
from ixd.daemon.identity import Caller
from ixd.daemon.realm_access import RealmAccess
from ixd.daemon.realm_cache import RealmCache, Settled
from ixd.model.layout import Layout
from ixd.model.nodes import Plan, needed_plan
from ixd.model.realm import (
    RealmPatch,
    RealmState,
    apply_patch,
    effective_selectors,
    patch_from_wire,
)
from ixd.model.words import lex_mutation
from ixd.store.assemble import switch_realm_link
from ixd.store.db import BuildDatabase, Generation
from ixd.wire import events
from ixd.wire.errors import BadFlag
from ixd.wire.ops import ChangeArgs

log = logging.getLogger("ixd")


@dataclass(frozen=True)
class RealmChange:
    """One realm's change, decided and planned, waiting to be built and switched."""

    realm: str
    owner: int
    current: Generation | None
    state: RealmState
    plan: Plan
    #: `Catalog.changes` before the plan was made
    recipes: int = -1
    #: what the caller is told before the build (unread flags, a new realm)
    notices: tuple[str, ...] = ()


class RealmChanges:
    def __init__(self, db: BuildDatabase, layout: Layout, catalog: Catalog,
                 access: RealmAccess, cache: RealmCache, scheduler: Scheduler,
                 runner: NodeRunner) -> None:
        self.db = db
        self.layout = layout
        self.catalog = catalog
        self.access = access
        self.cache = cache
        self.scheduler = scheduler
        self.runner = runner

    async def op_mut(self, args: ChangeArgs, caller: Caller, emit: Listener) -> Any:
        return await self._change(args, caller, emit, fresh=False)

    async def op_let(self, args: ChangeArgs, caller: Caller, emit: Listener) -> Any:
        return await self._change(args, caller, emit, fresh=True)

    async def _change(self, args: ChangeArgs, caller: Caller, emit: Listener,
                      fresh: bool) -> Any:
        strict = args.strict
        patches, names = await trio.to_thread.run_sync(self._read, args, caller)
        locks = [self.access.lock(n) for n in names]
        for lock in locks:  # sorted order: no deadlock between two multi-realm requests
            await lock.acquire()
        try:
            unchanged = await trio.to_thread.run_sync(self.unchanged, patches, caller, fresh,
                                                      args.state)
            if unchanged is not None:
                return unchanged
            return await self._change_locked(patches, caller, emit, fresh, strict, args.state)
        finally:
            for lock in locks:
                lock.release()

    def _read(self, args: ChangeArgs, caller: Caller) -> tuple[list[RealmPatch], list[str]]:
        """The patches (lexed from the words, the caller's login the default realm, or
        rebuilt from their wire form) and the realms they name, sorted, once the caller is
        known to be allowed to change each (blocking: account look-ups, the database).
        Before any lock; `prepare` checks again under the locks."""
        if args.words is not None:
            patches = lex_mutation(args.words, caller.login)
        else:
            patches = [patch_from_wire(p) for p in args.patches or ()]
        names = sorted({p.realm for p in patches})
        for name in names:
            self.access.authorize(name, caller, "change")
        return patches, names

    def unchanged(self, patches: list[RealmPatch], caller: Caller, fresh: bool,
                  with_state: bool = True) -> dict[str, Any] | None:
        """The answer to a change that changes nothing, from the realms as they are (no
        rendering, planning or database), or None if it may change something: a realm not
        settled here, a recipe changed since its plan, a state the patches change, an entry
        the realm needs no longer valid (its build-only inputs may be gone: `needed_plan`)
        (blocking: under the realms' locks)."""
        who = self.access.identity(caller)
        answers = []
        for realm, realm_patches in _by_realm(patches).items():
            settled = self.cache.settled.get(realm)
            if settled is None or settled.recipes != self.catalog.changes:
                return None
            claim = auth.claim(realm, settled.owner, who)
            if not claim.exists:
                return None  # a squatter's: the full change drops it
            auth.check_may_change(realm, claim.owner, who, "change")
            state = RealmState(realm) if fresh else settled.state
            for patch in realm_patches:
                state = apply_patch(state, patch)
            if state != settled.state or not all(
                    self.runner.is_valid(n)
                    for n in needed_plan(settled.plan, self.runner.is_valid).nodes):
                return None
            path = settled.generation.path
            switch_realm_link(self.layout.realm_link(realm), Path(path))  # as it was: no write
            answers.append(_realm_answer(realm, path, settled.generation.number, False,
                                         state if with_state else None))
        return {"realms": answers}

    async def _change_locked(self, patches: list[RealmPatch], caller: Caller,
                             emit: Listener, fresh: bool, strict: bool = False,
                             with_state: bool = True) -> Any:
        # Decide everything, build everything, then switch: a failure switches nothing.
        prepared = [await trio.to_thread.run_sync(self.prepare, realm, realm_patches, caller,
                                                  fresh, strict)
                    for realm, realm_patches in _by_realm(patches).items()]
        for change in prepared:
            for notice in change.notices:
                emit(events.NOTICE, {"text": notice})
        with contextlib.ExitStack() as kept:  # nothing of these plans is collected meanwhile
            for change in prepared:
                kept.enter_context(self.scheduler.keep(change.plan))
            for change in prepared:
                await self.scheduler.run(change.plan, emit, caller.uid)
            return {"realms": [await trio.to_thread.run_sync(self._switch, change, caller,
                                                             with_state)
                               for change in prepared]}

    def prepare(self, realm: str, patches: list[RealmPatch], caller: Caller,
                fresh: bool, strict: bool = False) -> RealmChange:
        """Who owns it, what it holds now and after the patches, the plan, what to tell the
        caller first (blocking). EmptyRealm for a new realm left empty; UnreadFlag for a
        flag nothing reads, with `strict`."""
        recipes = self.catalog.changes  # before anything is loaded: a change after it counts
        claim = self.access.authorize(realm, caller, "change")
        if claim.squatted:  # the login's first change: nothing of the squatter's is kept
            self.access.evict_squatter(realm)
        current = self.db.current_generation(realm) if claim.exists else None
        state = RealmState(realm)
        if current is not None and not fresh:
            try:
                state = self.cache.state_of(current)
            except BadFlag as exc:  # recorded before flag values were held to their charset
                raise BadFlag(f"realm {realm!r} (generation {current.number}) holds a flag "
                              f"ix no longer accepts: {exc.message}; make it again with "
                              f"`ixc let {realm} ...` or remove it with `ixc purge {realm}`"
                              ) from None
        for patch in patches:
            state = apply_patch(state, patch)
        checks.refuse_empty(realm, state, not claim.exists, self.catalog.index.with_basename)
        loaded = self.catalog.load_realm(realm, effective_selectors(state), caller.uid)
        given = checks.flags_set(patches)
        notices = checks.unread_flags(realm, state, loaded.packages, given,
                                      self.catalog.flags_read, strict)
        if not claim.exists:
            mine = [r["name"] for r in self.db.realms() if int(r["owner"]) == caller.uid]
            created = checks.new_realm_notice(realm, caller.login, mine)
            if created is not None:
                notices.append(created)
        plan = self.catalog.plan_loaded(realm, loaded, state=state.to_json())
        return RealmChange(realm, claim.owner, current, state, plan, recipes, tuple(notices))

    def _switch(self, change: RealmChange, caller: Caller,
                with_state: bool = True) -> dict[str, Any]:
        """Record the new generation (if anything changed) and switch the link (blocking)."""
        path = change.plan.nodes[-1].outputs[0]
        current = change.current
        if (current is None or current.path != path
                or self.cache.recorded_state(current) != change.state):
            generation = self.db.add_generation(change.realm, path, change.state.to_json(),
                                                caller.uid, change.owner)
            self.cache.remember(generation, change.state)
            number, changed = generation.number, True
            log.info("realm %s -> generation %d %s by uid %d", change.realm, number, path,
                     caller.uid)
        else:
            generation, number, changed = current, current.number, False
        switch_realm_link(self.layout.realm_link(change.realm), Path(path))
        self.cache.settle(change.realm, Settled(generation, change.owner, change.state,
                                                change.plan, change.recipes))
        return _realm_answer(change.realm, path, number, changed,
                             change.state if with_state else None)


def _realm_answer(realm: str, path: str, generation: int, changed: bool,
                  state: RealmState | None) -> dict[str, Any]:
    """One realm's part of a change's answer; its state only if asked for."""
    answer: dict[str, Any] = {"realm": realm, "path": path, "generation": generation,
                              "changed": changed}
    if state is not None:
        answer["state"] = state.to_json()
    return answer


def _by_realm(patches: list[RealmPatch]) -> dict[str, list[RealmPatch]]:
    """The patches of each realm, realms in the order first named."""
    grouped: dict[str, list[RealmPatch]] = {}
    for patch in patches:
        grouped.setdefault(patch.realm, []).append(patch)
    return grouped
