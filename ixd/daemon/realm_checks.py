"""What a realm change is told before it builds: a flag that no package it reaches reads (a
typo, or a flag of another package: warned, refused with `--strict`), a new realm that would
hold nothing (`ixc mut hello`, the `+` forgotten: refused), a new realm besides the login's
(said, with the caller's realms of a similar name). Pure: the caller loads and reads.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ixd.model.realm import (
    AddPackage,
    RealmEntry,
    RealmPatch,
    RealmState,
    SetPackageFlag,
    SetRealmFlag,
)
from ixd.model.selector import Selector
from ixd.recipes.flagnames import unread
from ixd.recipes.package import Package
from ixd.wire.errors import EmptyRealm, UnreadFlag


@dataclass
class FlagsSet:
    """The flags a change sets: on the realm, and on each entry (by its selector)."""

    realm: set[str] = field(default_factory=set)
    entries: dict[Selector, set[str]] = field(default_factory=dict)


def flags_set(patches: Iterable[RealmPatch]) -> FlagsSet:
    found = FlagsSet()
    for patch in patches:
        for op in patch.ops:
            if isinstance(op, SetRealmFlag):
                found.realm.add(op.key)
            elif isinstance(op, AddPackage):
                keys = {k for k, _ in op.flags} | {k for k, _ in op.selector.flags}
                if keys:
                    found.entries.setdefault(op.selector, set()).update(keys)
            elif isinstance(op, SetPackageFlag):
                found.entries.setdefault(op.selector, set()).add(op.key)
    return found


def unread_flags(realm: str, state: RealmState, packages: Sequence[Package], given: FlagsSet,
                 read_by: Callable[[Sequence[Package]], set[str]], strict: bool) -> list[str]:
    """Warnings, one per flag that no package of what it reaches reads (UnreadFlag instead
    with `strict`): a realm flag reaches the whole realm, an entry's flag that entry's
    closure. `packages` are the state's entries, loaded, in its order."""
    warnings: list[str] = []
    if given.realm:
        for flag in unread(given.realm, read_by(packages)):
            warnings.append(f"flag --{flag} on realm {realm} is read by no package of it: it "
                            f"changes nothing (a typo? `ixc show PKG` lists the flags a "
                            f"package reads)")
    by_selector = {e.selector: p for e, p in zip(state.entries, packages, strict=True)}
    for selector, keys in given.entries.items():
        package = by_selector.get(selector)
        if package is None:  # removed again later in the same change
            continue
        for flag in unread(keys, read_by([package])):
            warnings.append(f"flag --{flag} on {selector} is read by no package it needs: it "
                            f"changes nothing (a typo? `ixc show {selector.name}` lists the "
                            f"flags it reads)")
    if strict and warnings:
        raise UnreadFlag(f"{'; '.join(warnings)}; refused (--strict)")
    return warnings


def unread_selector_flags(selectors: Sequence[Selector], packages: Sequence[Package],
                          read_by: Callable[[Sequence[Package]], set[str]],
                          strict: bool) -> list[str]:
    """`unread_flags` for the packages `ixc build` and `ixc run` name (flags in selectors)."""
    given = FlagsSet(entries={s: {k for k, _ in s.flags} for s in selectors if s.flags})
    state = RealmState("packages", tuple(RealmEntry(s) for s in selectors))
    return unread_flags("packages", state, packages, given, read_by, strict)


def refuse_empty(realm: str, state: RealmState, is_new: bool,
                 packages_named: Callable[[str], list[str]]) -> None:
    """A change may empty a realm, never make a new one that holds nothing."""
    if not is_new or state.entries:
        return
    meant = packages_named(realm)
    hint = (f"did you mean `ixc mut +{meant[0]}`?" if meant else
            "add a package, e.g. `ixc mut " + realm + " +bin/hello`")
    raise EmptyRealm(f"realm {realm!r} does not exist and this change would create it "
                     f"empty: a bare word names a realm; a package is written +PKG. {hint}")


def new_realm_notice(realm: str, login: str, others: Sequence[str]) -> str | None:
    """What to say when a change creates `realm`: nothing for the caller's own login realm;
    otherwise that it is new and the caller's, with their realms of a similar name."""
    if realm == login:
        return None
    close = difflib.get_close_matches(realm, [o for o in others if o != realm], 3, 0.6)
    text = f"realm {realm} is new: created, owned by {login}"
    if close:
        text += f" (did you mean {' or '.join(close)}? `ixc purge {realm}` removes it)"
    return text
