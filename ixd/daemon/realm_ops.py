"""The realm ops besides changes (`ixd.daemon.realm_change`): `list` and `generations` read a
realm's records; `rollback` and `purge` change them under the realm's lock."""

from __future__ import annotations

import logging
import os
from collections.abc import Container
from pathlib import Path
from typing import Any

import trio

from ixd.daemon import identity, request_args
from ixd.daemon.emit import Emit
from ixd.daemon.identity import Caller
from ixd.daemon.realm_access import RealmAccess
from ixd.daemon.realm_cache import RealmCache
from ixd.model.layout import Layout
from ixd.store.assemble import switch_realm_link
from ixd.store.db import BuildDatabase, Generation
from ixd.store.gc import realm_store_dirs
from ixd.wire.errors import ExportError, NoSuchRealm, RealmError
from ixd.wire.ops import RealmArgs, RollbackArgs

log = logging.getLogger("ixd")


class RealmOps:
    def __init__(self, db: BuildDatabase, layout: Layout, access: RealmAccess,
                 cache: RealmCache) -> None:
        self.db = db
        self.layout = layout
        self.access = access
        self.cache = cache

    async def op_list(self, args: RealmArgs, caller: Caller, emit: Emit) -> Any:
        if args.realm is None:
            await self.access.evict_all_squatters()
            rows = await trio.to_thread.run_sync(self.db.realms)
            return {"realms": [{"name": r["name"], "owner": r["owner"],
                                "generation": r["current"]} for r in rows]}
        name = request_args.realm_name(args.realm, caller)
        row, generation = await self._current(name, "")
        # `owner_uid`: what `ixc session` checks before it runs a realm's services
        return {"realm": name, "generation": generation.number, "path": generation.path,
                "state": generation.state, "owner": identity.login_of_uid(int(row["owner"])),
                "owner_uid": int(row["owner"])}

    async def _current(self, name: str, purpose: str) -> tuple[Any, Generation]:
        """The realm's row and current generation; NoSuchRealm ("no realm NAME{purpose}")."""
        row = await trio.to_thread.run_sync(self.db.realm, name)
        if await self.access.void(name, row):
            row = None
        generation = await trio.to_thread.run_sync(self.db.current_generation, name)
        if row is None or generation is None:
            raise NoSuchRealm(f"there is no realm {name!r}{purpose}; create it with "
                              f"`ixc mut {name} +bin/...`")
        return row, generation

    async def op_generations(self, args: RealmArgs, caller: Caller, emit: Emit) -> Any:
        name = request_args.realm_name(args.realm, caller)
        row = await trio.to_thread.run_sync(self.db.realm, name)
        if await self.access.void(name, row):
            row = None
        generations = await trio.to_thread.run_sync(self.db.generations, name)
        if row is None or not generations:
            raise NoSuchRealm(f"realm {name!r} has no generations")
        # gc forgets the generations it collects; one whose entry went another way shows so
        present = await trio.to_thread.run_sync(
            lambda: {g.number for g in generations if os.path.isdir(g.path)})
        return {"realm": name, "current": row["current"] if row else None,
                "generations": [{**g.to_json(), "by": identity.login_of_uid(g.created_by),
                                 "collected": g.number not in present}
                                for g in generations]}

    async def op_rollback(self, args: RollbackArgs, caller: Caller, emit: Emit) -> Any:
        name = request_args.realm_name(args.realm, caller)
        to = args.to
        await trio.to_thread.run_sync(self.access.authorize, name, caller, "roll back")
        async with self.access.lock(name):  # authorized before: nobody queues in vain
            claim = await trio.to_thread.run_sync(self.access.authorize, name, caller,
                                                  "roll back")
            if claim.squatted:  # never back to a squatter's generations
                await trio.to_thread.run_sync(self.access.evict_squatter, name)
            row = await trio.to_thread.run_sync(self.db.realm, name)
            if row is None or not claim.exists:
                raise NoSuchRealm(f"there is no realm {name!r} to roll back")
            generations = await trio.to_thread.run_sync(self.db.generations, name)
            current = int(row["current"])
            present = await trio.to_thread.run_sync(
                lambda: {g.number for g in generations if os.path.isdir(g.path)})
            target = rollback_target(name, generations, current, to, present)
            path = Path(target.path)
            self.cache.forget(name)
            await trio.to_thread.run_sync(self.db.set_current, name, target.number)
            await trio.to_thread.run_sync(switch_realm_link, self.layout.realm_link(name), path)
        log.info("realm %s rolled back from %d to %d by uid %d", name, current, target.number,
                 caller.uid)
        return {"realm": name, "generation": target.number, "previous": current,
                "path": str(path)}

    async def op_export(self, args: RealmArgs, caller: Caller, emit: Emit) -> Any:
        """What `ixc export` packs: the realm's current entry and every store dir it links
        (its run-time closure, as gc marks it), and where the realm's link is. Anyone may
        read a realm, so anyone may export one; the client reads the store itself."""
        name = request_args.realm_name(args.realm, caller)
        _row, generation = await self._current(name, " to export")
        try:
            linked = await trio.to_thread.run_sync(realm_store_dirs, generation.path)
        except (OSError, ValueError) as exc:
            raise ExportError(f"realm {name!r}: its entry {generation.path} cannot be read "
                              f"({exc}); `ixd verify` checks the store") from None
        store = str(self.layout.store)
        strays = [d for d in linked if os.path.dirname(d) != store]
        if strays:
            raise ExportError(f"realm {name!r} links {strays[0]}, which is not a store entry "
                              f"of {store}; nothing to export")
        return {"realm": name, "generation": generation.number, "root": str(self.layout.root),
                "link": str(self.layout.realm_link(name)),
                "store_dirs": [generation.path, *dict.fromkeys(linked)]}

    async def op_purge(self, args: RealmArgs, caller: Caller, emit: Emit) -> Any:
        name = request_args.realm_name(args.realm, caller)
        await trio.to_thread.run_sync(self.access.authorize, name, caller, "purge")
        async with self.access.lock(name):  # authorized before: nobody queues in vain
            claim = await trio.to_thread.run_sync(self.access.authorize, name, caller, "purge")
            if claim.squatted:
                await trio.to_thread.run_sync(self.access.evict_squatter, name)
            if not claim.exists:
                raise NoSuchRealm(f"there is no realm {name!r} to purge")
            await trio.to_thread.run_sync(self.access.drop, name)
        log.info("realm %s purged by uid %d", name, caller.uid)
        return {"realm": name, "purged": True}


def rollback_target(realm: str, generations: list[Generation], current: int,
                    to: int | None, present: Container[int] | None = None) -> Generation:
    """The generation a rollback of `realm` from `current` goes to: `to`, or else the newest
    one before `current` whose entry is `present`. RealmError, before anything changed, if
    there is none such or it was collected."""
    by_number = {g.number: g for g in generations}
    there = [n for n in by_number if present is None or n in present]
    if to is None:
        earlier = [n for n in there if n < current]
        gone = sorted(n for n in by_number if n < current and n not in there)
        if not earlier and not gone:
            raise RealmError(f"realm {realm!r} is at its first generation "
                             f"({current}); there is nothing to roll back to")
        if not earlier:
            raise RealmError(f"realm {realm!r} has no generation before {current} to roll "
                             f"back to: {', '.join(map(str, gone))} collected (gone from the "
                             f"store); nothing was changed")
        to = max(earlier)
    if to not in by_number:
        raise RealmError(f"realm {realm!r} has no generation {to}; it has "
                         f"{', '.join(map(str, sorted(by_number)))} (gc forgets the "
                         f"generations it collects)")
    if to not in there:
        raise RealmError(f"generation {to} of realm {realm!r} was collected: its entry "
                         f"{by_number[to].path} is gone from the store; nothing was changed; "
                         f"choose one of {', '.join(map(str, sorted(there)))} with --to")
    return by_number[to]
