"""Who may change which realm, the lock each realm's changes take, and the eviction of a
squatter (a realm recorded as another uid's than the login it is named after).

Changes of one realm are serialised by its lock; different realms go in parallel. Reads do
not wait for a realm's lock, except to drop a squatter's record they found.

Ownership is by uid, as the daemon recorded it; a name never decides it alone. A realm
claimed under a name before an account of that name existed is dropped (generations, link
and all) as soon as the daemon sees the account: at its first request of any kind
(`settle`, before the op runs: a `ping` is enough), and within `ACCOUNTS_POLL` seconds of
the account files changing (`watch_accounts`), so nothing of the squatter's is ever the
account's realm. Names of the form `uidN` are refused altogether.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ixd.daemon import auth, identity
from ixd.daemon.identity import Caller
from ixd.daemon.realm_cache import RealmCache
from ixd.model.layout import Layout
from ixd.model.selector import validate_realm_name
from ixd.store.assemble import remove_realm_link
from ixd.store.db import BuildDatabase
from ixd.wire.errors import BadRealmName

log = logging.getLogger("ixd")

#: seconds between two looks at the account files (a stat each) for new logins
ACCOUNTS_POLL = 1.0
#: callers remembered as settled (uid -> login) before the memory starts again
_SETTLED_MAX = 65536


class RealmAccess:
    def __init__(self, db: BuildDatabase, layout: Layout, cache: RealmCache,
                 admin_group: str | None) -> None:
        self.db = db
        self.layout = layout
        self.cache = cache
        self.admin_group = admin_group
        self._locks: dict[str, trio.Lock] = {}
        #: callers whose login's realm was checked for a squatter: uid -> that login
        self._settled: dict[int, str] = {}

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
        """Every squatted realm's record dropped, at start (blocking, before serving); so
        is a realm whose name is no longer accepted (`uidN`, made by an older ixd)."""
        for row in self.db.realms():
            name = row["name"]
            try:
                validate_realm_name(name)
            except BadRealmName as exc:
                log.warning("realm %s dropped: %s", name, exc.message)
                self.drop(name)
                continue
            self.evict_squatter(name)

    def squatted(self) -> list[str]:
        """The names of the realms recorded as another uid's than their login's (blocking)."""
        return sorted(r["name"] for r in self.db.realms()
                      if auth.is_squatted(r["name"], int(r["owner"])))

    async def evict_all_squatters(self) -> list[str]:
        """Drop every squatted realm, each under its lock; their names."""
        names = await trio.to_thread.run_sync(self.squatted)
        for name in names:
            async with self.lock(name):
                await trio.to_thread.run_sync(self.evict_squatter, name)
        return names

    async def settle(self, caller: Caller) -> None:
        """Before any request of `caller`: if the realm named after its login is recorded as
        another uid's (claimed before the account existed), drop it, so that the account
        never finds, links to or runs anything of the squatter's. Once per caller and login:
        a dictionary look-up on every later request."""
        login = identity.ACCOUNTS.login_of(caller.uid)
        if login is None or self._settled.get(caller.uid) == login:
            return
        owner = self.cache.owner(login)
        if owner is None:
            row = await trio.to_thread.run_sync(self.db.realm, login)
            owner = None if row is None else int(row["owner"])
        if owner is not None and owner != caller.uid:
            async with self.lock(login):
                await trio.to_thread.run_sync(self.evict_squatter, login)
        if len(self._settled) >= _SETTLED_MAX:
            self._settled.clear()
        self._settled[caller.uid] = login

    async def watch_accounts(self, files: tuple[str, ...] = ("/etc/passwd", "/etc/group"),
                             interval: float = ACCOUNTS_POLL) -> None:
        """Drop squatted realms as soon as the account files change (a login was made):
        a login's realm link is then never the squatter's, even before its first request
        (a login script sourcing `/ix/realm/LOGIN/env`)."""
        signature = identity.files_signature(files)
        while True:
            await trio.sleep(interval)
            now = identity.files_signature(files)
            if now != signature:
                signature = now
                dropped = await self.evict_all_squatters()
                if dropped:
                    log.info("account files changed: squatted realms dropped: %s",
                             " ".join(dropped))
