"""Who may change which realm (ARCHITECTURE.md, "Who may do what").

Identity is the socket's peer credentials. The realm named after a login belongs to that
user — even when someone else created it before the account existed: once the login exists,
a realm recorded as another uid's is void (`Claim.squatted`), the login's first request
finds it new and the squatter may no longer change it. `system` belongs to root; any other
realm belongs to whoever created it. Root and the members of the admin group may change
realms owned by root, except root's personal realm (named after a login of uid 0), which
only root may change. Root may change any realm. Reading is open to everyone.

The decisions here are pure: account lookups come in as functions (by default
`ixd.daemon.identity`'s), so tests need no accounts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ixd.daemon.identity import login_of_uid, uid_of_login
from ixd.wire.errors import PermissionDenied

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
