"""Who may change which realm, the lock each realm's changes take, and the eviction of a
squatter (a realm recorded as another uid's than the login it is named after).

Changes of one realm are serialised by its lock; different realms go in parallel. Reads do
not wait for a realm's lock, except to drop a squatter's record they found.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ixd.daemon import auth, identity
from ixd.daemon.identity import Caller
from ixd.daemon.realm_cache import RealmCache
from ixd.model.layout import Layout
from ixd.store.assemble import remove_realm_link
from ixd.store.db import BuildDatabase

log = logging.getLogger("ixd")


class RealmAccess:
    def __init__(self, db: BuildDatabase, layout: Layout, cache: RealmCache,
                 admin_group: str | None) -> None:
        self.db = db
        self.layout = layout
        self.cache = cache
        self.admin_group = admin_group
        self._locks: dict[str, trio.Lock] = {}

    def identity(self, caller: Caller) -> auth.Identity:
        login = caller.login
        admin = caller.uid == auth.ROOT or identity.in_group(login, caller.gid,
                                                         self.admin_group)
        return auth.Identity(caller.uid, login, admin)

    def authorize(self, realm: str, caller: Caller, doing: str) -> auth.Claim:
        """The realm's owner as `caller` finds it, once `caller` is known to be allowed to
        `doing` it (blocking). Called before the realm's lock is taken, so nobody queues on
        a lock of a realm they may not change, and again under it."""
        owner = self.cache.owner(realm)  # recorded owner, without the database
        if owner is None:
            row = self.db.realm(realm)
            owner = None if row is None else int(row["owner"])
        who = self.identity(caller)
        claim = auth.claim(realm, owner, who)
        auth.check_may_change(realm, claim.owner, who, doing)
        return claim

    def lock(self, realm: str) -> trio.Lock:
        return self._locks.setdefault(realm, trio.Lock())

    def evict_squatter(self, realm: str) -> bool:
        """If `realm` is recorded as another uid's than the login of its name, drop its
        record, generations and link: the login gets it new (blocking; under the realm's
        lock). True if it was dropped."""
        row = self.db.realm(realm)
        if row is None or not auth.is_squatted(realm, int(row["owner"])):
            return False
        log.warning("realm %s: recorded as uid %d's, but %s is a login now: its generations "
                    "are dropped, the login gets the realm new", realm, row["owner"], realm)
        self.drop(realm)
        return True

    def drop(self, realm: str) -> None:
        """The realm's record, generations and link gone (blocking; under its lock)."""
        # the database first: a crash in between leaves a link that recovery removes
        self.cache.forget(realm)
        self.db.drop_realm(realm)
        remove_realm_link(self.layout.realm_link(realm))

    async def void(self, realm: str, row: dict[str, Any] | None) -> bool:
        """Whether the record `row` a read found is a squatter's; if so it is dropped, under
        the realm's lock (taken only then: reads do not wait for a realm's change)."""
        if row is None or not await trio.to_thread.run_sync(
                auth.is_squatted, realm, int(row["owner"])):
            return False
        async with self.lock(realm):
            await trio.to_thread.run_sync(self.evict_squatter, realm)
        return True

    def evict_squatters(self) -> None:
        """Every squatted realm's record dropped, at start (blocking, before serving)."""
        for row in self.db.realms():
            self.evict_squatter(row["name"])
