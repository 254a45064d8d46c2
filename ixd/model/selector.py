"""Package names, selectors and flags (docs/recipes.md, "Selectors and flags").

A selector is `name` or `name(k=v,k2=v2)`: a package name plus string flags. Everything here is
pure and imports only `ixd.model.platforms`, `ixd.wire.record` and `ixd.wire.errors` (no re,
dataclasses, typing or collections at run time: character sets instead of patterns), because
`ixc` imports it to lex its command line before it reaches the socket.

The canonical text of a selector has its flags sorted by key and every flag written `k=v`, so
`parse_selector(str(s)) == s` for every `Selector`.
"""

from __future__ import annotations

from ixd.model import platforms
from ixd.wire.errors import BadFlag, BadName, BadRealmName
from ixd.wire.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Literal

__all__ = [
    "ENGINE_NAMES",
    "FLAG_VALUE_CHARS",
    "FLAG_VALUE_MAX",
    "KINDS",
    "ONE_LEVEL_FLAGS",
    "PLATFORM_FLAGS",
    "EdgeKind",
    "Flags",
    "Selector",
    "check_client_flags",
    "child_flags",
    "flags_text",
    "kind_of",
    "merge_flags",
    "normalize_flags",
    "parse_selector",
    "validate_flag_key",
    "validate_flag_value",
    "validate_package_name",
    "validate_realm_name",
]

#: flags as stored in frozen records: (key, value) pairs sorted by key, keys unique
Flags = tuple[tuple[str, str], ...]

PACKAGE_NAME_MAX = 200
REALM_NAME_MAX = 64

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
#: a package name's characters ([A-Za-z0-9_.+/-], ASCII), and its first one's
_PACKAGE_CHARS = frozenset(_LETTERS + _DIGITS + "_.+/-")
_PACKAGE_FIRST = frozenset(_LETTERS + _DIGITS + "_")
#: a realm name: [A-Za-z0-9_][A-Za-z0-9_.-]*
_REALM_FIRST = _PACKAGE_FIRST
_REALM_CHARS = frozenset(_LETTERS + _DIGITS + "_.-")
#: a flag name: [A-Za-z_][A-Za-z0-9_]*
_FLAG_KEY_FIRST = frozenset(_LETTERS + "_")
_FLAG_KEY_CHARS = frozenset(_LETTERS + _DIGITS + "_")
#: what a flag value may hold: recipes paste values into build scripts as they are (`echo
#: {{ style }}`), so none of these means anything to a shell, quoted or not
FLAG_VALUE_CHARS = frozenset(_LETTERS + _DIGITS + "_.+-:/@%")
#: what a flag value written by a recipe (not a client) may hold besides: stal/IX's recipes
#: pass lists as `bins=a;b` and commands as `srv_command=exec x -f`. A recipe's text is as
#: trusted as the tree, and the client values it may paste into a selector are held to
#: FLAG_VALUE_CHARS, so a `;` here is the recipe's own
RECIPE_FLAG_VALUE_EXTRA = "; !\"#$&'*<=>?[\\]^`{|}~"
#: all of a recipe's flag value characters: printable ASCII but `(`, `)` and `,`
RECIPE_FLAG_VALUE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7f)) - frozenset("(),")
#: the longest flag value, in bytes (the characters above are one byte each)
FLAG_VALUE_MAX = 256
#: the longest flag value a recipe may write (stal/IX's pass base64 scripts as flags)
RECIPE_FLAG_VALUE_MAX = 16384

#: flags that apply to one level of the dependency graph only and are never passed on
ONE_LEVEL_FLAGS = frozenset(
    {"setx", "help", "verbose", "stage", "rebuild", "nostrip", "show_script", "simulate_failure",
     "molot", "skipsrc_one"}
)

#: the package kinds, by the first path component of a name; any other first component
#: (`pip`) is a kind of its own name, as in stal/IX
KINDS: Mapping[str, str] = {
    "bin": "bin",
    "bld": "bin",
    "etc": "bin",
    "lib": "lib",
    "aux": "aux",
    "set": "set",
    "pip": "pip",
}

#: names every render context holds, set by the engine (`PackageGraph._context`, the `ix`
#: helper of the recipe tree): a client flag named like one would change what recipes see
#: (`kind=lib` makes `{% if lib %}` true in a program) while ix decides them
ENGINE_NAMES = frozenset(
    {"host", "target", "name", "basename", "uniq_id", "native", "tool", "kind",
     "host_versions", "host_capture", "host_program", "ix", "boot", "ix_boot_tool",
     "ix_boot_path", "ix_extract", "ix_dir", "ix_trash_dir", "ix_tools", "isfile", "intro",
     "stalix"}
    | set(KINDS.values()) | platforms.OS_NAMES | platforms.ARCH_NAMES
)
#: the engine names a client may still set, to a platform name: what to build for
PLATFORM_FLAGS = frozenset({"target", "host"})


# --- names ---------------------------------------------------------------------------------


#: names and recipe selector texts already found good: rendering a tree checks the same few
#: thousand over and over (each is emptied when it grows past MEMO_MAX); flag values are
#: not kept (clients send any number of them)
MEMO_MAX = 1 << 16
_good_names: set[str] = set()
_recipe_selectors: dict[str, Selector] = {}
#: client selector texts already found good, for the daemon: `ixc mut` re-sends a realm's
#: selectors (a re-install of 200 parsed them all again: most of its request's cost). Kept
#: smaller, and only short texts, as clients may send any number of any selectors: at most
#: CLIENT_MEMO_MAX of at most CLIENT_MEMO_TEXT characters (about 1 MiB at worst)
CLIENT_MEMO_MAX = 2048
CLIENT_MEMO_TEXT = 160
_client_selectors: dict[str, Selector] = {}


def _remember(memo: set[str], text: str) -> None:
    if len(memo) >= MEMO_MAX:
        memo.clear()
    memo.add(text)


def validate_package_name(name: str) -> str:
    """Return `name` if it is a safe package name, else raise `BadName` saying why.

    A package name is a relative path inside an overlay (`bin/hello`, `bin/foo/t.sh`): at most
    200 characters of `[A-Za-z0-9_.+/-]`, starting with a letter, digit or `_`, without empty,
    `.` or `..` components (so no leading, trailing or doubled `/`).
    """
    if isinstance(name, str) and name in _good_names:
        return name
    _check_package_name(name)
    _remember(_good_names, name)
    return name


def _check_package_name(name: str) -> None:
    if not isinstance(name, str):
        raise BadName(f"package name {name!r} is not a string")
    if not name:
        raise BadName("package name is empty")
    if len(name) > PACKAGE_NAME_MAX:
        raise BadName(
            f"package name {name[:40]!r}... is {len(name)} characters long;"
            f" the limit is {PACKAGE_NAME_MAX}"
        )
    if not _PACKAGE_CHARS.issuperset(name):
        bad = next(c for c in name if c not in _PACKAGE_CHARS)
        raise BadName(
            f"package name {name!r} contains {bad!r}; only letters, digits and _ . + / - are"
            " allowed"
        )
    if name.startswith("/"):
        raise BadName(f"package name {name!r} starts with '/'; names are relative paths")
    if name.endswith("/"):
        raise BadName(f"package name {name!r} ends with '/'")
    if "//" in name:
        raise BadName(f"package name {name!r} contains '//'")
    for part in name.split("/"):
        if part in (".", ".."):
            raise BadName(f"package name {name!r} has a {part!r} path component")
    if name[0] not in _PACKAGE_FIRST:
        raise BadName(f"package name {name!r} must start with a letter, a digit or '_'")


def validate_realm_name(name: str) -> str:
    """Return `name` if it is a realm name (`[A-Za-z0-9_][A-Za-z0-9_.-]*`, at most 64
    characters, not `uid` and digits), else raise `BadRealmName`."""
    if not isinstance(name, str):
        raise BadRealmName(f"realm name {name!r} is not a string")
    if len(name) > REALM_NAME_MAX:
        raise BadRealmName(
            f"realm name {name[:40]!r}... is {len(name)} characters long;"
            f" the limit is {REALM_NAME_MAX}"
        )
    if not name or name[0] not in _REALM_FIRST or not _REALM_CHARS.issuperset(name):
        raise BadRealmName(
            f"realm name {name!r} is not valid: a realm name is a letter, digit or _ followed by"
            " letters, digits, _ . or -"
        )
    if name.startswith("uid") and name[3:].isdigit():
        raise BadRealmName(
            f"realm name {name!r} is refused: a name uidN would stand for the account of uid"
            f" N, but a realm is an account's only through its login (a uid without a login"
            f" has no realm of its own); choose another name"
        )
    return name


def validate_flag_key(key: str) -> str:
    """Return `key` if it is a flag name (`[A-Za-z_][A-Za-z0-9_]*`), else raise `BadName`."""
    if (not isinstance(key, str) or not key or key[0] not in _FLAG_KEY_FIRST
            or not _FLAG_KEY_CHARS.issuperset(key)):
        raise BadName(
            f"flag name {key!r} is not valid: a flag name is a letter or _ followed by letters,"
            " digits or _"
        )
    return key


def validate_flag_value(value: str, key: str = "", *, from_recipe: bool = False) -> str:
    """Return `value` if it can be a flag value, else raise `BadFlag` naming the flag and the
    first character it may not hold.

    Flags are data that recipes paste into build scripts, so a value holds only letters,
    digits and `_ . + - : / @ %` (ASCII; none of them is special to a shell, inside double
    quotes or outside), at most 256 of them; the empty value is fine. This covers flags from
    clients and from recipes alike, except that a recipe may also write the rest of printable
    ASCII but `( ) ,` (`from_recipe`, RECIPE_FLAG_VALUE_CHARS), up to RECIPE_FLAG_VALUE_MAX.
    `key` only makes the message better.
    """
    what = f"value of flag {key!r}" if key else "flag value"
    if not isinstance(value, str):
        raise BadFlag(f"{what} {value!r} is not a string")
    limit = RECIPE_FLAG_VALUE_MAX if from_recipe else FLAG_VALUE_MAX
    if len(value) > limit:
        raise BadFlag(f"{what} {value[:40]!r}... is {len(value)} characters long; the limit "
                      f"is {limit}")
    allowed = RECIPE_FLAG_VALUE_CHARS if from_recipe else FLAG_VALUE_CHARS
    if not allowed.issuperset(value):
        bad = next(c for c in value if c not in allowed)
        raise BadFlag(f"{what} {value!r} contains {bad!r}; a flag value may hold only "
                      "letters, digits and _ . + - : / @ % (recipes paste flags into build "
                      "scripts as they are)")
    return value


def check_client_flags(flags: Iterable[tuple[str, str]]) -> None:
    """Refuse (`BadFlag`) flags a client may not set: the names the engine sets in every
    render (`ENGINE_NAMES`: `kind`, `name`, `lib`, `linux`, ...), except `target` and
    `host`, which may name a known platform (or `host`).

    Only the client boundary applies this (selectors and realm patches coming over the wire,
    and `ixc` itself for an early error): recipes and the engine set `kind` and `target` on
    dependencies, and realm states recorded before keep loading.
    """
    for key, value in flags:
        if key in PLATFORM_FLAGS:
            if value != "host" and value not in platforms.KNOWN:
                raise BadFlag(f"flag {key}={value!r} names no known platform; known platforms: "
                              f"host (the daemon's own), {', '.join(platforms.KNOWN)}")
        elif key in ENGINE_NAMES:
            kept = ", ".join(sorted(ENGINE_NAMES - PLATFORM_FLAGS))
            raise BadFlag(f"flag {key!r} cannot be set: ix sets it itself in every recipe; the "
                          f"names ix keeps are {kept} (and target and host, which may name a "
                          f"platform)")


def kind_of(name: str) -> str:
    """The kind of a package from its first path component: `bld` and `etc` are `bin`; any
    other (`lib`, `aux`, `set`, `bin`, `pip`, ...) is itself, as in stal/IX. A name without a
    folder is its own kind (`bin`); the empty name raises `BadName`."""
    first = name.partition("/")[0]
    if not first:
        raise BadName(f"package name {name!r} has no kind: a package name is KIND/NAME, "
                      f"e.g. bin/{name}")
    return KINDS.get(first, first)


# --- flags ---------------------------------------------------------------------------------


def normalize_flags(flags: Mapping[str, str] | Iterable[tuple[str, str]], *,
                    from_recipe: bool = False) -> Flags:
    """Validate flags and return them as sorted (key, value) pairs.

    A mapping is taken as it is; pairs must have unique keys (`BadName` otherwise).
    """
    # a mapping is what has `keys`, as `dict.update` tells (collections.abc costs ixc ~1 ms)
    pairs = list(flags.items()) if hasattr(flags, "keys") else list(flags)  # type: ignore[union-attr]
    seen: set[str] = set()
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise BadName(f"flag {pair!r} is not a (key, value) pair")
        key, value = pair
        validate_flag_key(key)
        validate_flag_value(value, key, from_recipe=from_recipe)
        if key in seen:
            raise BadName(f"flag {key!r} is given twice")
        seen.add(key)
    return tuple(sorted(pairs))


def merge_flags(*layers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Merge flag layers into one dict; a later layer wins on a shared key."""
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(layer)  # a mapping or (key, value) pairs, as dict.update reads them
    return merged


def flags_text(flags: Iterable[tuple[str, str]]) -> str:
    """`k=v,k2=v2` for flags (in the order given)."""
    return ",".join(f"{key}={value}" for key, value in flags)


# --- selectors -----------------------------------------------------------------------------


class Selector(Record):
    """A package name with its flags. Construction validates and sorts the flags, so every
    `Selector` holds a valid name and flags in canonical order."""

    name: str
    flags: Flags = ()

    def __post_init__(self) -> None:
        validate_package_name(self.name)
        object.__setattr__(self, "flags", normalize_flags(self.flags))

    @property
    def flags_dict(self) -> dict[str, str]:
        return dict(self.flags)

    def with_flags(self, flags: Mapping[str, str] | None = None, /, **more: str) -> Selector:
        """This selector with `flags`, then `more`, merged on top of its own flags."""
        return Selector(self.name, tuple(merge_flags(self.flags, flags or {}, more).items()))

    def __str__(self) -> str:
        if not self.flags:
            return self.name
        return f"{self.name}({flags_text(self.flags)})"


def parse_selector(text: str, *, from_recipe: bool = False) -> Selector:
    """Parse `name` or `name(k=v,k2=v2)` into a `Selector`.

    Inside the parentheses a bare `k` means `k=1`, spaces and tabs around items, keys and values
    are ignored, and a key given twice takes its later value. Anything else (unbalanced or nested
    parentheses, text after `)`, an empty item, a bad name, key or value) raises `BadName`
    naming the text. `from_recipe`: the text is a recipe's (its flag values may also hold
    RECIPE_FLAG_VALUE_CHARS); never for what a client sends.
    """
    memo = _recipe_selectors if from_recipe else _client_selectors
    known = memo.get(text) if isinstance(text, str) else None
    if known is not None:  # selectors are immutable: the same text, the same one
        return known
    if not isinstance(text, str):
        raise BadName(f"selector {text!r} is not a string")
    name, body = _split_selector(text)
    if from_recipe:
        name = _recipe_path(name)
    try:
        validate_package_name(name)
        flags: dict[str, str] = {}
        if body is not None and body.strip():
            for item in body.split(","):
                key, sep, value = item.partition("=")
                key, value = key.strip(" \t"), value.strip(" \t")
                if not key and not sep:
                    raise BadName("an empty flag item")
                flags[validate_flag_key(key)] = (
                    validate_flag_value(value, key, from_recipe=from_recipe) if sep else "1")
    except BadName as err:  # BadFlag stays BadFlag
        raise type(err)(f"selector {text!r}: {err.message}") from None
    if from_recipe:
        selector = recipe_selector(name, flags)
        if len(_recipe_selectors) >= MEMO_MAX:
            _recipe_selectors.clear()
        _recipe_selectors[text] = selector
        return selector
    # name, keys and values checked above, keys unique (a dict): what Selector() would check
    # again, but the order
    selector = object.__new__(Selector)
    object.__setattr__(selector, "name", name)
    object.__setattr__(selector, "flags", tuple(sorted(flags.items())))
    if len(text) <= CLIENT_MEMO_TEXT:
        if len(_client_selectors) >= CLIENT_MEMO_MAX:
            _client_selectors.clear()
        _client_selectors[text] = selector
    return selector


def _recipe_path(name: str) -> str:
    """A name as a recipe may write it: `lib/{{ x }}/trim` with `x` undefined is `lib//trim`,
    which stal/IX opens as the path `lib/trim` (and `bld/python/` as `bld/python`)."""
    while "//" in name:
        name = name.replace("//", "/")
    return name.rstrip("/") if name != "/" else name


def recipe_selector(name: str, flags: Mapping[str, str] | Iterable[tuple[str, str]]) -> Selector:
    """A selector a recipe wrote (or the engine made from one): its flag values are checked
    against the recipe charset (`validate_flag_value(from_recipe=True)`), not the client's.
    Never for what a client sends."""
    selector = object.__new__(Selector)
    object.__setattr__(selector, "name", validate_package_name(name))
    object.__setattr__(selector, "flags", normalize_flags(flags, from_recipe=True))
    return selector


def _split_selector(text: str) -> tuple[str, str | None]:
    """`name` → (name, None); `name(body)` → (name, body): neither part may hold a
    parenthesis, and nothing may follow the `)`."""
    name, paren, rest = text.partition("(")
    body = rest[:-1] if paren and rest.endswith(")") else None
    if ")" in name or (paren and (body is None or "(" in body or ")" in body)):
        raise BadName(
            f"selector {text!r} is not of the form name or name(k=v,...): unbalanced or"
            " misplaced parentheses"
        )
    return name, body


# --- flag propagation ----------------------------------------------------------------------

if TYPE_CHECKING:
    EdgeKind = Literal["target_lib", "lib_dep", "bld_tool", "host_lib", "data", "run_dep"]
else:
    EdgeKind = str


def _passed_on(flags: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in flags.items() if key not in ONE_LEVEL_FLAGS}


def child_flags(
    edge: EdgeKind,
    parent: Mapping[str, str],
    parent_is_hub: bool,
    written: Mapping[str, str],
    host_target: str,
) -> dict[str, str]:
    """The flags a dependency is loaded with, along one edge from its parent.

    `parent` is the parent's full flags (its `target` included, if it has one); `written` is
    the flags the recipe wrote in the dependency's selector; `host_target` is the host's
    `target` value. Following docs/recipes.md:

    | edge                                  | the dependency is loaded with                   |
    |---------------------------------------|-------------------------------------------------|
    | `target_lib` (bld.target_libs),       | all the parent's flags, `kind=lib`              |
    | `lib_dep` (lib.deps)                  |                                                 |
    | `bld_tool` (bld.deps)                 | only `target=host`, `kind=bin`; a hub passes    |
    |                                       | all its flags too (host/bin still on top)       |
    | `host_lib` (bld.host_libs)            | only `target=host`, `kind=lib`                  |
    | `data` (bld.data, run.data)           | only `target=host`, `kind=aux`                  |
    | `run_dep` (run.deps), buildable parent| only the parent's `target`, `kind=bin`          |
    | `run_dep`, hub parent                 | all the hub's flags, `kind=bin`                 |

    "All the parent's flags" never includes the one-level flags (`ONE_LEVEL_FLAGS`). The
    parent's `target` is passed on only if the parent has one (no `target` means the host's,
    for parent and child alike). The `written` flags go on top of the row and win.
    """
    row: dict[str, str]
    if edge in ("target_lib", "lib_dep"):
        row = {**_passed_on(parent), "kind": "lib"}
    elif edge == "bld_tool":
        row = _passed_on(parent) if parent_is_hub else {}
        row.update(target=host_target, kind="bin")
    elif edge == "host_lib":
        row = {"target": host_target, "kind": "lib"}
    elif edge == "data":
        row = {"target": host_target, "kind": "aux"}
    elif edge == "run_dep":
        if parent_is_hub:
            row = {**_passed_on(parent), "kind": "bin"}
        else:
            row = {"target": parent["target"]} if "target" in parent else {}
            row["kind"] = "bin"
    else:
        raise ValueError(f"unknown edge kind {edge!r}")
    row.update(written)
    return row
