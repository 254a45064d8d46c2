"""Arguments several ops take, checked: a list of package selectors, a realm name."""

from __future__ import annotations

from typing import Any

from ixd.daemon import identity
from ixd.daemon.identity import Caller
from ixd.model.selector import Selector, check_client_flags, parse_selector, validate_realm_name
from ixd.wire.errors import BadRealmName, BadRequest


def selectors(args: dict[str, Any]) -> list[Selector]:
    """`packages`: a non-empty list of selectors, with no flag only ix may set."""
    raw = args.get("packages")
    if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
        raise BadRequest("this op needs 'packages': a non-empty list of selectors, "
                         "e.g. ['bin/greet', 'lib/greet(shout=1)']")
    parsed = [parse_selector(s) for s in raw]
    for selector in parsed:  # no `kind=lib`, `linux=`, ...: ix sets those itself
        check_client_flags(selector.flags)
    return parsed


def realm_name(args: dict[str, Any], caller: Caller) -> str:
    """`realm`, or the caller's login's realm (a uid without a login has none)."""
    name = args.get("realm")
    if not name:
        if identity.ACCOUNTS.login_of(caller.uid) is None:
            raise BadRealmName(f"uid {caller.uid} has no login, so it has no realm of its "
                               f"own: name the realm (e.g. `ixc list work`)")
        name = caller.login
    if not isinstance(name, str):
        raise BadRequest("'realm' must be a string")
    return validate_realm_name(name)
