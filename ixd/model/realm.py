"""Realms as pure data: a realm's state, the patches that change it, and their wire form.

A realm (docs/recipes.md, "Realms") is an ordered list of entries plus realm-wide flags. An entry is
a selector, whose flags are part of its identity (`bin/foo(k=v)` and `bin/foo` are two
entries), plus the flags set on it with `--k=v`. The front of the list is the most recently
added entry and wins when two entries provide the same file.

`ixd/model/words.py` turns command-line words into `RealmPatch`es (in the daemon: `ixc mut`
sends its words as typed); patches may also travel as plain dicts (`patch_to_wire`), which
the daemon rebuilds and re-validates (`patch_from_wire`) before `apply_patch` computes the
new state. `ixd.model.selector`, `ixd.wire.record` and
`ixd.wire.errors` only (no dataclasses or typing at run time: `ixc mut` imports this on its
way to the socket).
"""

from __future__ import annotations

from ixd.model.selector import (
    Flags,
    Selector,
    check_client_flags,
    flags_text,
    merge_flags,
    normalize_flags,
    parse_selector,
    validate_flag_key,
    validate_flag_value,
    validate_realm_name,
)
from ixd.wire.errors import BadRequest, IxError, NotInRealm, RealmError
from ixd.wire.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def login_or_uid(uid: int, login: str | None) -> str:
    """`login`, or `uidN` for a uid without an account: how ix names an account everywhere
    (never a realm name: such an account has no realm of its own)."""
    return f"uid{uid}" if login is None else login


def own_login() -> str:
    """This process's login (`uidN` without an account): the realm `ixc` changes by
    default (a uid without an account has none: the daemon refuses `uidN`)."""
    import os
    import pwd  # here: only the commands that need a login pay for it

    uid = os.getuid()
    try:
        return login_or_uid(uid, pwd.getpwuid(uid).pw_name)
    except KeyError:
        return login_or_uid(uid, None)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "AddPackage",
    "Op",
    "RealmEntry",
    "RealmPatch",
    "RealmState",
    "RemovePackage",
    "RemovePackageFlag",
    "RemoveRealmFlag",
    "SetPackageFlag",
    "SetRealmFlag",
    "apply_patch",
    "effective_selectors",
    "op_from_wire",
    "op_to_wire",
    "patch_from_wire",
    "patch_to_wire",
]


def _check_selector(selector: object) -> None:
    if not isinstance(selector, Selector):
        raise TypeError(f"expected a Selector, got {selector!r}")


# --- patch operations ----------------------------------------------------------------------


class AddPackage(Record):
    """Add `selector` at the front of the realm, with `flags` merged into the entry's flags.
    An entry already there moves to the front only when the flags change it; as it is, it
    stays where it is (no change, no new generation)."""

    selector: Selector
    flags: Flags = ()

    def __post_init__(self) -> None:
        _check_selector(self.selector)
        object.__setattr__(self, "flags", normalize_flags(self.flags))


class RemovePackage(Record):
    selector: Selector

    def __post_init__(self) -> None:
        _check_selector(self.selector)


class SetPackageFlag(Record):
    selector: Selector
    key: str
    value: str

    def __post_init__(self) -> None:
        _check_selector(self.selector)
        validate_flag_key(self.key)
        validate_flag_value(self.value, self.key)


class RemovePackageFlag(Record):
    selector: Selector
    key: str

    def __post_init__(self) -> None:
        _check_selector(self.selector)
        validate_flag_key(self.key)


class SetRealmFlag(Record):
    key: str
    value: str

    def __post_init__(self) -> None:
        validate_flag_key(self.key)
        validate_flag_value(self.value, self.key)


class RemoveRealmFlag(Record):
    key: str

    def __post_init__(self) -> None:
        validate_flag_key(self.key)


Op = (
    AddPackage | RemovePackage | SetPackageFlag | RemovePackageFlag | SetRealmFlag | RemoveRealmFlag
)
_OP_TYPES = (
    AddPackage,
    RemovePackage,
    SetPackageFlag,
    RemovePackageFlag,
    SetRealmFlag,
    RemoveRealmFlag,
)


class RealmPatch(Record):
    """The changes to one realm, applied in order."""

    realm: str
    ops: tuple[Op, ...] = ()

    def __post_init__(self) -> None:
        validate_realm_name(self.realm)
        object.__setattr__(self, "ops", tuple(self.ops))
        for op in self.ops:
            if not isinstance(op, _OP_TYPES):
                raise TypeError(f"expected a realm operation, got {op!r}")


# --- realm state ---------------------------------------------------------------------------


class RealmEntry(Record):
    """One package of a realm: its selector (its identity) and the flags set on it."""

    selector: Selector
    flags: Flags = ()

    def __post_init__(self) -> None:
        _check_selector(self.selector)
        object.__setattr__(self, "flags", normalize_flags(self.flags))

    def __str__(self) -> str:
        """The entry as command-line words: `bin/foo(k=v) --opt=1`."""
        return " ".join([str(self.selector), *(f"--{k}={v}" for k, v in self.flags)])


class RealmState(Record):
    """A realm's package list (front = most recently added = wins) and realm-wide flags."""

    name: str
    entries: tuple[RealmEntry, ...] = ()
    flags: Flags = ()

    def __post_init__(self) -> None:
        validate_realm_name(self.name)
        object.__setattr__(self, "entries", tuple(self.entries))
        seen: set[Selector] = set()
        for entry in self.entries:
            if not isinstance(entry, RealmEntry):
                raise TypeError(f"expected a RealmEntry, got {entry!r}")
            if entry.selector in seen:
                raise RealmError(f"realm {self.name} lists {entry.selector} twice")
            seen.add(entry.selector)
        object.__setattr__(self, "flags", normalize_flags(self.flags))

    def find(self, selector: Selector) -> RealmEntry | None:
        """The entry for `selector` (flags included in the comparison), if there is one."""
        return next((e for e in self.entries if e.selector == selector), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "entries": [
                {"selector": str(e.selector), "flags": dict(e.flags)} for e in self.entries
            ],
            "flags": dict(self.flags),
        }

    @staticmethod
    def from_json(data: object) -> RealmState:
        """Rebuild a state from `to_json()`'s form, validating everything (`RealmError` for a
        malformed document, `BadName`/`BadRealmName` for bad names)."""
        reader = _Reader("realm state", RealmError)
        doc = reader.mapping(data, "", {"name", "entries", "flags"})
        name = reader.string(doc["name"], "name")
        entries: list[RealmEntry] = []
        for index, item in enumerate(reader.array(doc["entries"], "entries")):
            where = f"entries[{index}]"
            entry = reader.mapping(item, where, {"selector", "flags"})
            entries.append(
                RealmEntry(
                    parse_selector(reader.string(entry["selector"], f"{where}.selector")),
                    reader.flags(entry["flags"], f"{where}.flags"),
                )
            )
        return RealmState(name, tuple(entries), reader.flags(doc["flags"], "flags"))


# --- applying a patch ----------------------------------------------------------------------


class _Working:
    """A realm state while a patch applies: entries kept back to front in a dict, so that
    moving one to the front, finding and removing one each cost O(1), not O(entries)."""

    def __init__(self, state: RealmState) -> None:
        self.name = state.name
        self.entries: dict[Selector, RealmEntry] = {e.selector: e for e in reversed(state.entries)}
        self.flags = dict(state.flags)

    def state(self) -> RealmState:
        return RealmState(self.name, tuple(reversed(self.entries.values())),
                          tuple(self.flags.items()))

    def contents(self) -> str:
        if not self.entries:
            return "it is empty"
        return "it has: " + ", ".join(str(s) for s in reversed(self.entries))

    def entry(self, selector: Selector, doing: str) -> RealmEntry:
        entry = self.entries.get(selector)
        if entry is None:
            raise NotInRealm(f"{selector} is not in realm {self.name}{doing} "
                             f"({self.contents()})")
        return entry

    def set_entry_flags(self, entry: RealmEntry, flags: dict[str, str]) -> None:
        """Replace `entry`'s flags, keeping its place."""
        self.entries[entry.selector] = RealmEntry(entry.selector, tuple(flags.items()))


def _flag_list(flags: Flags) -> str:
    return f"its flags: {flags_text(flags)}" if flags else "it has no flags"


def _apply_op(realm: _Working, op: Op) -> None:
    if isinstance(op, AddPackage):
        old = realm.entries.get(op.selector)
        if old is None:
            realm.entries[op.selector] = RealmEntry(op.selector, op.flags)
            return
        flags = merge_flags(old.flags, op.flags)
        if flags == dict(old.flags):  # already there as asked: nothing changes
            return
        del realm.entries[op.selector]  # and back in last: at the front
        realm.entries[op.selector] = RealmEntry(op.selector, tuple(flags.items()))
    elif isinstance(op, RemovePackage):
        realm.entry(op.selector, ", so it cannot be removed")
        del realm.entries[op.selector]
    elif isinstance(op, SetPackageFlag):
        entry = realm.entry(
            op.selector,
            f", so flag {op.key} cannot be set on it; add it with"
            f" +{op.selector} --{op.key}={op.value}",
        )
        realm.set_entry_flags(entry, merge_flags(entry.flags, {op.key: op.value}))
    elif isinstance(op, RemovePackageFlag):
        entry = realm.entry(op.selector, f", so flag {op.key} cannot be removed from it")
        flags = dict(entry.flags)
        if flags.pop(op.key, None) is None:
            raise NotInRealm(
                f"flag {op.key} is not set on {op.selector} in realm {realm.name}"
                f" ({_flag_list(entry.flags)})"
            )
        realm.set_entry_flags(entry, flags)
    elif isinstance(op, SetRealmFlag):
        realm.flags[op.key] = op.value
    elif isinstance(op, RemoveRealmFlag):
        if realm.flags.pop(op.key, None) is None:
            raise NotInRealm(f"realm {realm.name} has no flag {op.key} "
                             f"({_flag_list(tuple(sorted(realm.flags.items())))})")
    else:
        raise TypeError(f"expected a realm operation, got {op!r}")


def apply_patch(state: RealmState, patch: RealmPatch) -> RealmState:
    """The state after applying `patch`'s operations in order.

    - `AddPackage` puts the entry at the front; an entry with the same selector (flags
      included) moves there and keeps its flags, with the new ones merged on top, unless
      they change nothing: then it stays where it is (to raise it, remove and add it).
    - `RemovePackage`, `SetPackageFlag` and `RemovePackageFlag` need the entry to be in the
      realm at that point (added by an earlier operation of the same patch counts);
      `RemovePackageFlag` and `RemoveRealmFlag` need the flag to be set. Otherwise they raise
      `NotInRealm` naming what is missing. The states are immutable, so an error leaves the
      caller's state as it was.

    Linear in the entries and operations: a realm re-installed whole costs one pass.
    """
    if patch.realm != state.name:
        raise RealmError(f"a patch for realm {patch.realm} cannot apply to realm {state.name}")
    if not patch.ops:
        return state
    realm = _Working(state)
    for op in patch.ops:
        _apply_op(realm, op)
    return realm.state()


def effective_selectors(state: RealmState) -> list[Selector]:
    """The selectors a realm's closure is built from, front first: each entry's name with the
    realm flags, then the entry's flags, then the selector's own flags merged on top (a later
    layer wins)."""
    selectors = []
    for entry in state.entries:
        flags = merge_flags(state.flags, entry.flags, entry.selector.flags)
        selectors.append(Selector(entry.selector.name, tuple(flags.items())))
    return selectors


# --- the wire form -------------------------------------------------------------------------
#
#   {"realm": "alice", "ops": [
#       {"op": "add", "selector": "bin/foo(k=v)", "flags": {"opt": "1"}},
#       {"op": "remove", "selector": "bin/bar"},
#       {"op": "set_flag", "selector": "bin/foo(k=v)", "key": "opt", "value": "2"},
#       {"op": "remove_flag", "selector": "bin/foo(k=v)", "key": "opt"},
#       {"op": "set_realm_flag", "key": "opt", "value": "1"},
#       {"op": "remove_realm_flag", "key": "opt"}]}


class _Reader:
    """Checks the shape of decoded plain data, raising `error` with the path of a bad part."""

    def __init__(self, what: str, error: Callable[[str], IxError]) -> None:
        self.what = what
        self.error = error

    def fail(self, where: str, problem: str) -> IxError:
        place = f" at {where}" if where else ""
        return self.error(f"malformed {self.what}{place}: {problem}")

    def mapping(self, data: object, where: str, keys: set[str]) -> dict[str, object]:
        if not isinstance(data, dict):
            raise self.fail(where, f"expected a map, got {type(data).__name__}")
        missing = keys - data.keys()
        if missing:
            raise self.fail(where, f"missing {', '.join(sorted(missing))}")
        extra = data.keys() - keys
        if extra:
            raise self.fail(where, f"unexpected {', '.join(sorted(map(repr, extra)))}")
        return data

    def string(self, data: object, where: str) -> str:
        if not isinstance(data, str):
            raise self.fail(where, f"expected a string, got {type(data).__name__}")
        return data

    def array(self, data: object, where: str) -> list[object]:
        if not isinstance(data, list | tuple):
            raise self.fail(where, f"expected a list, got {type(data).__name__}")
        return list(data)

    def flags(self, data: object, where: str) -> Flags:
        if not isinstance(data, dict):
            raise self.fail(where, f"expected a map of flags, got {type(data).__name__}")
        for key, value in data.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise self.fail(where, f"flags map strings to strings, got {key!r}: {value!r}")
        return normalize_flags(data)


_OP_KEYS: Mapping[str, set[str]] = {
    "add": {"op", "selector", "flags"},
    "remove": {"op", "selector"},
    "set_flag": {"op", "selector", "key", "value"},
    "remove_flag": {"op", "selector", "key"},
    "set_realm_flag": {"op", "key", "value"},
    "remove_realm_flag": {"op", "key"},
}


def op_to_wire(op: Op) -> dict[str, Any]:
    """One operation as a plain dict (see the wire form above)."""
    if isinstance(op, AddPackage):
        return {"op": "add", "selector": str(op.selector), "flags": dict(op.flags)}
    if isinstance(op, RemovePackage):
        return {"op": "remove", "selector": str(op.selector)}
    if isinstance(op, SetPackageFlag):
        return {"op": "set_flag", "selector": str(op.selector), "key": op.key, "value": op.value}
    if isinstance(op, RemovePackageFlag):
        return {"op": "remove_flag", "selector": str(op.selector), "key": op.key}
    if isinstance(op, SetRealmFlag):
        return {"op": "set_realm_flag", "key": op.key, "value": op.value}
    if isinstance(op, RemoveRealmFlag):
        return {"op": "remove_realm_flag", "key": op.key}
    raise TypeError(f"expected a realm operation, got {op!r}")


def _op_from_wire(reader: _Reader, data: object, where: str) -> Op:
    if not isinstance(data, dict):
        raise reader.fail(where, f"expected a map, got {type(data).__name__}")
    kind = data.get("op")
    if not isinstance(kind, str) or kind not in _OP_KEYS:
        raise reader.fail(
            where, f"unknown op {kind!r}; expected one of {', '.join(sorted(_OP_KEYS))}"
        )
    item = reader.mapping(data, where, _OP_KEYS[kind])

    def text(key: str) -> str:
        return reader.string(item[key], f"{where}.{key}")

    def selector() -> Selector:
        return parse_selector(text("selector"))

    # What a client adds or sets may not name what ix sets itself (check_client_flags);
    # removals and the selectors naming existing entries may, so older entries stay editable.
    if kind == "add":
        op = AddPackage(selector(), reader.flags(item["flags"], f"{where}.flags"))
        check_client_flags(op.selector.flags)
        check_client_flags(op.flags)
        return op
    if kind == "remove":
        return RemovePackage(selector())
    if kind == "set_flag":
        set_flag = SetPackageFlag(selector(), text("key"), text("value"))
        check_client_flags([(set_flag.key, set_flag.value)])
        return set_flag
    if kind == "remove_flag":
        return RemovePackageFlag(selector(), text("key"))
    if kind == "set_realm_flag":
        realm_flag = SetRealmFlag(text("key"), text("value"))
        check_client_flags([(realm_flag.key, realm_flag.value)])
        return realm_flag
    return RemoveRealmFlag(text("key"))


def op_from_wire(data: object) -> Op:
    """Rebuild one operation from `op_to_wire`'s form; `BadRequest` if malformed, `BadName` for
    a bad selector or flag name, `BadFlag` for a bad flag value or a flag ix sets itself."""
    return _op_from_wire(_Reader("realm operation", BadRequest), data, "")


def patch_to_wire(patch: RealmPatch) -> dict[str, Any]:
    """A patch as plain dicts, lists and strings (msgpack- and JSON-ready)."""
    return {"realm": patch.realm, "ops": [op_to_wire(op) for op in patch.ops]}


def patch_from_wire(data: object) -> RealmPatch:
    """Rebuild a patch from `patch_to_wire`'s form, checking every type and name, so the
    daemon can trust the result: `BadRequest` for a malformed document, `BadName` /
    `BadRealmName` for bad names or flag names, `BadFlag` for a flag value outside the flag
    charset or a flag a client may not set (`check_client_flags`)."""
    reader = _Reader("realm patch", BadRequest)
    doc = reader.mapping(data, "", {"realm", "ops"})
    realm = validate_realm_name(reader.string(doc["realm"], "realm"))
    ops = tuple(
        _op_from_wire(reader, item, f"ops[{index}]")
        for index, item in enumerate(reader.array(doc["ops"], "ops"))
    )
    return RealmPatch(realm, ops)
