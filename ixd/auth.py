"""Who may change which realm (ARCHITECTURE.md, "Who may do what").

Identity is the socket's peer credentials. The realm named after a login belongs to that
user — even when someone else created it before the account existed: once the login exists,
a realm recorded as another uid's is void (`Claim.squatted`), the login's first request
finds it new and the squatter may no longer change it. `system` belongs to root; any other
realm belongs to whoever created it. Root and the members of the admin group may change
realms owned by root, except root's personal realm (named after a login of uid 0), which
only root may change. Root may change any realm. Reading is open to everyone.

The decisions here are pure: account lookups come in as functions, so tests need no accounts.
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass

from ixd.errors import PermissionDenied

ROOT = 0
#: realms that belong to root from the start, whoever creates them
ADMIN_REALMS = frozenset({"system"})

UidOf = Callable[[str], int | None]
LoginOf = Callable[[int], str]


@dataclass(frozen=True)
class Identity:
    uid: int
    login: str
    #: member of the admin group (or root)
    admin: bool


#: how long the account files are taken as unchanged once looked at (shorter than any
#: client takes from `useradd` to its first request)
CHECK_INTERVAL = 0.01


class AccountCache:
    """Account look-ups, remembered while `/etc/passwd` and `/etc/group` stay unchanged.

    Every request asks who its caller is and whether a realm's name is a login; `status`
    names the requester of each build. Through NSS each answer costs 5-50 µs (a miss reads
    every source), so they are kept, and all dropped when either file changes (its inode,
    size or mtime: `useradd` rewrites them) or after `max_age` seconds, for accounts from
    other NSS sources (systemd's dynamic users). Safe from several threads: entries are
    only added, and a change of the files swaps in fresh dicts.
    """

    def __init__(self, files: tuple[str, ...] = ("/etc/passwd", "/etc/group"),
                 max_age: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._files = files
        self._max_age = max_age
        self._clock = clock
        self._signature: tuple[tuple[int, int, int] | None, ...] = ()
        self._since = -math.inf
        self._checked = -math.inf
        self._uids: dict[str, int | None] = {}
        self._logins: dict[int, str | None] = {}
        self._groups: dict[tuple[str, int, str], bool] = {}

    def uid_of(self, login: str) -> int | None:
        self._check_fresh()
        try:
            return self._uids[login]
        except KeyError:
            pass
        try:
            uid: int | None = pwd.getpwnam(login).pw_uid
        except (KeyError, ValueError):  # ValueError: a NUL in the name
            uid = None
        self._uids[login] = uid
        return uid

    def login_of(self, uid: int) -> str | None:
        self._check_fresh()
        try:
            return self._logins[uid]
        except KeyError:
            pass
        try:
            login: str | None = pwd.getpwuid(uid).pw_name
        except (KeyError, OverflowError):
            login = None
        self._logins[uid] = login
        return login

    def in_group(self, login: str, primary_gid: int, group: str) -> bool:
        self._check_fresh()
        key = (login, primary_gid, group)
        try:
            return self._groups[key]
        except KeyError:
            pass
        member = _in_group_uncached(login, primary_gid, group)
        self._groups[key] = member
        return member

    def _check_fresh(self) -> None:
        now = self._clock()
        # `status` asks once per build listed: the files are looked at once per burst
        if now - self._checked < CHECK_INTERVAL:
            return
        self._checked = now
        signature = tuple(_file_signature(f) for f in self._files)
        if signature != self._signature or now - self._since > self._max_age:
            self._uids, self._logins, self._groups = {}, {}, {}
            self._signature, self._since = signature, now


def _file_signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _in_group_uncached(login: str, primary_gid: int, group: str) -> bool:
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    try:
        return gid in os.getgrouplist(login, primary_gid)
    except OSError:
        return gid == primary_gid


#: the daemon's one cache of account look-ups
ACCOUNTS = AccountCache()


def uid_of_login(login: str) -> int | None:
    return ACCOUNTS.uid_of(login)


def login_of_uid(uid: int) -> str:
    """The login of `uid`, or `uid N` for a uid without an account (for messages)."""
    login = ACCOUNTS.login_of(uid)
    return f"uid {uid}" if login is None else login


def in_group(login: str, primary_gid: int, group: str | None) -> bool:
    return group is not None and ACCOUNTS.in_group(login, primary_gid, group)


def owner_of_new_realm(realm: str, creator: Identity, uid_of: UidOf = uid_of_login) -> int:
    """Who owns a realm that does not exist yet, once `creator` creates it."""
    if realm in ADMIN_REALMS:
        return ROOT
    login_uid = uid_of(realm)
    if login_uid is not None:
        return login_uid
    return creator.uid


def is_squatted(realm: str, recorded_owner: int, uid_of: UidOf = uid_of_login) -> bool:
    """A realm recorded as one uid's while its name is the login of another: claimed before
    the account existed (or before the login's uid changed). The login wins."""
    if realm in ADMIN_REALMS:
        return False
    login_uid = uid_of(realm)
    return login_uid is not None and login_uid != recorded_owner


@dataclass(frozen=True)
class Claim:
    """A realm's owner as a request finds it."""

    owner: int
    #: the realm's record stands (False: the realm is new, whatever the database holds)
    exists: bool
    #: the database holds a void record of another uid's: drop it (generations and all)
    squatted: bool = False


def claim(realm: str, recorded_owner: int | None, who: Identity,
          uid_of: UidOf = uid_of_login) -> Claim:
    """The owner of `realm` for a request of `who`, from its recorded owner (None: no
    record). A squatted record counts as none: the realm is new, and its owner the login."""
    if recorded_owner is not None and not is_squatted(realm, recorded_owner, uid_of):
        return Claim(recorded_owner, exists=True)
    return Claim(owner_of_new_realm(realm, who, uid_of), exists=False,
                 squatted=recorded_owner is not None)


def is_personal_root_realm(realm: str, uid_of: UidOf = uid_of_login) -> bool:
    """A realm named after a login of uid 0 (`root`): root's own, not the admin group's."""
    return realm not in ADMIN_REALMS and uid_of(realm) == ROOT


def may_change(realm: str, owner: int, who: Identity, uid_of: UidOf = uid_of_login) -> bool:
    if who.uid == ROOT or who.uid == owner:
        return True
    return owner == ROOT and who.admin and not is_personal_root_realm(realm, uid_of)


def check_may_change(realm: str, owner: int, who: Identity, doing: str,
                     login_of: LoginOf = login_of_uid, uid_of: UidOf = uid_of_login) -> None:
    if not may_change(realm, owner, who, uid_of):
        if owner != ROOT:
            whose = login_of(owner)
        elif is_personal_root_realm(realm, uid_of):
            whose = "root alone (the admin group has the system realm)"
        else:
            whose = "root and the admin group"
        raise PermissionDenied(
            f"{who.login} may not {doing} realm {realm!r}: it belongs to {whose}; "
            f"change your own realm (ixc mut {who.login} ...) or one you create")
