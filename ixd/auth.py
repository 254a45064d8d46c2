"""Who may change which realm (ARCHITECTURE.md, "Who may do what").

Identity is the socket's peer credentials. The realm named after a login belongs to that
user; `system` belongs to root; any other realm belongs to whoever created it. Root and the
members of the admin group may change realms owned by root; root may change any realm.
Reading is open to everyone. The decisions here are pure: account lookups come in as
functions, so tests need no accounts.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass

from ixd.errors import PermissionDenied

ROOT = 0
#: realms that belong to root from the start, whoever creates them
ADMIN_REALMS = frozenset({"system"})


@dataclass(frozen=True)
class Identity:
    uid: int
    login: str
    #: member of the admin group (or root)
    admin: bool


def uid_of_login(login: str) -> int | None:
    try:
        return pwd.getpwnam(login).pw_uid
    except KeyError:
        return None


def login_of_uid(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def in_group(login: str, primary_gid: int, group: str | None) -> bool:
    if group is None:
        return False
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    try:
        return gid in os.getgrouplist(login, primary_gid)
    except OSError:
        return gid == primary_gid


def owner_of_new_realm(realm: str, creator: Identity,
                       uid_of: Callable[[str], int | None] = uid_of_login) -> int:
    """Who owns a realm that does not exist yet, once `creator` creates it."""
    if realm in ADMIN_REALMS:
        return ROOT
    login_uid = uid_of(realm)
    if login_uid is not None:
        return login_uid
    return creator.uid


def may_change(owner: int, who: Identity) -> bool:
    return who.uid == ROOT or who.uid == owner or (owner == ROOT and who.admin)


def check_may_change(realm: str, owner: int, who: Identity, doing: str,
                     login_of: Callable[[int], str] = login_of_uid) -> None:
    if not may_change(owner, who):
        whose = "root and the admin group" if owner == ROOT else login_of(owner)
        raise PermissionDenied(
            f"{who.login} may not {doing} realm {realm!r}: it belongs to {whose}; "
            f"change your own realm (ixc mut {who.login} ...) or one you create")
