"""Who is asking: a request's caller, from the socket's peer credentials, and the daemon's
one cache of account look-ups (login by uid, uid by login, group membership).

`auth` decides with these; `server` makes a Caller per connection; `daemon` names users in
replies. Imports only the standard library.
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ixd.model.realm import login_or_uid

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Caller:
    """Who sent a request: from the socket's peer credentials, never from the client."""

    uid: int
    gid: int
    pid: int

    @property
    def login(self) -> str:
        """The caller's login; `uidN` for a uid without an account (not a realm name: such
        a caller has no realm of its own)."""
        return login_or_uid(self.uid, ACCOUNTS.login_of(self.uid))


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
                 max_age: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 source: AccountSource | None = None) -> None:
        self._source = NSS if source is None else source
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
        return _remembered(self._uids, login, self._source.uid_of)

    def login_of(self, uid: int) -> str | None:
        self._check_fresh()
        return _remembered(self._logins, uid, self._source.login_of)

    def in_group(self, login: str, primary_gid: int, group: str) -> bool:
        self._check_fresh()
        return _remembered(self._groups, (login, primary_gid, group),
                           lambda key: self._source.in_group(*key))

    def _check_fresh(self) -> None:
        now = self._clock()
        # `status` asks once per build listed: the files are looked at once per burst
        if now - self._checked < CHECK_INTERVAL:
            return
        self._checked = now
        signature = files_signature(self._files)
        if signature != self._signature or now - self._since > self._max_age:
            self._uids, self._logins, self._groups = {}, {}, {}
            self._signature, self._since = signature, now


def _remembered(table: dict[K, V], key: K, look: Callable[[K], V]) -> V:
    """`table[key]`, looked up with `look` and kept the first time."""
    try:
        return table[key]
    except KeyError:
        value = table[key] = look(key)
        return value


@dataclass(frozen=True)
class AccountSource:
    """Where account answers come from: the system's (NSS) for the daemon; tests give
    made-up accounts."""

    uid_of: Callable[[str], int | None]
    login_of: Callable[[int], str | None]
    #: whether (login, primary gid) is in the named group
    in_group: Callable[[str, int, str], bool]


def _uid_of_uncached(login: str) -> int | None:
    try:
        return pwd.getpwnam(login).pw_uid
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        return None


def _login_of_uncached(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def files_signature(paths: tuple[str, ...]) -> tuple[tuple[int, int, int] | None, ...]:
    """What tells a change of the account files: each one's inode, size and mtime."""
    return tuple(_file_signature(p) for p in paths)


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


#: the system's accounts, through NSS
NSS = AccountSource(_uid_of_uncached, _login_of_uncached, _in_group_uncached)

#: the daemon's one cache of account look-ups
ACCOUNTS = AccountCache()


def uid_of_login(login: str) -> int | None:
    return ACCOUNTS.uid_of(login)


def login_of_uid(uid: int) -> str:
    """The login of `uid`, or `uidN` for a uid without an account."""
    return login_or_uid(uid, ACCOUNTS.login_of(uid))


def in_group(login: str, primary_gid: int, group: str | None) -> bool:
    return group is not None and ACCOUNTS.in_group(login, primary_gid, group)
