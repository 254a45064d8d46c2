"""What several ops make of their checked arguments (`ixd.wire.ops`): package selectors
parsed, a realm's name (the caller's realm by default)."""

from __future__ import annotations

from collections.abc import Sequence

from ixd.daemon import identity
from ixd.daemon.identity import Caller
from ixd.model.selector import Selector, check_client_flags, parse_selector, validate_realm_name
from ixd.wire.errors import BadRealmName


def selectors(texts: Sequence[str]) -> list[Selector]:
    """The selectors parsed, with no flag only ix may set."""
    parsed = [parse_selector(s) for s in texts]
    for selector in parsed:  # no `kind=lib`, `linux=`, ...: ix sets those itself
        check_client_flags(selector.flags)
    return parsed


def realm_name(name: str | None, caller: Caller) -> str:
    """`name` checked, or (None or "") the caller's login's realm (a uid without a login has
    none)."""
    if not name:
        if identity.ACCOUNTS.login_of(caller.uid) is None:
            raise BadRealmName(f"uid {caller.uid} has no login, so it has no realm of its "
                               f"own: name the realm (e.g. `ixc list work`)")
        name = caller.login
    return validate_realm_name(name)
