"""The words of `ixc mut` as realm patches (docs/recipes.md, "Realms"), and those of `ixc
dep`, `plan`, `build` and `run` as the packages of an ephemeral realm, both as stal/IX's `ix`
reads them. Pure: no I/O (`--embed:k=FILE` reads FILE through the function it is given).
`ixc mut` and `let` send their words as typed (embeds read) and ixd lexes them here, with
the caller's login as the default realm; `ixc dep`, `plan`, `build` and `run` lex theirs
in ixc.

    ixc mut [REALM] [+|-]PKG [--k=v|--k|--k=-|--embed:k=FILE]... [REALM ...] ...
    ixc build [--k=v...] PKG [--k=v...] ...     (the realm `ephemeral`, as stal/IX's)

- A bare word (no `/`, not starting with `-` or `+`) names a realm and makes it the current
  one; naming a realm again continues its patch. Before any realm is named the current realm is
  the default one (the user's login name).
- A word with a `/` is a package, possibly in selector form (`bin/foo(k=v)`, an entry distinct
  from `bin/foo`): `+PKG` or `PKG` adds it, `-PKG` removes it.
- `--k=v` sets flag `k` on the package named last in the current realm, or on the realm itself
  if no package has been named since the realm word; `--k` means `k=1`; `--k=-` removes the
  flag; `--embed:k=FILE` sets `k` to the base64 of FILE's bytes. A flag after a removed
  package is a usage error.

Flags right after an added package ride on its `AddPackage`; a flag that cannot (because a
removal came in between) becomes its own operation, so applying the patch in order always means
what the words said in order.
"""

from __future__ import annotations

from ixd.model.realm import (
    AddPackage,
    Op,
    RealmPatch,
    RealmState,
    RemovePackage,
    RemovePackageFlag,
    RemoveRealmFlag,
    SetPackageFlag,
    SetRealmFlag,
    apply_patch,
    effective_selectors,
)
from ixd.model.selector import (
    Selector,
    check_client_flags,
    merge_flags,
    parse_selector,
    validate_flag_key,
    validate_flag_value,
    validate_realm_name,
)
from ixd.wire.errors import BadFlag, BadName, UsageError

__all__ = ["EPHEMERAL_REALM", "expand_embeds", "lex_mutation", "lex_packages"]

#: the value of `--k=-`: remove flag k
REMOVE_VALUE = "-"
#: `--embed:k=FILE`: flag k is FILE's bytes in base64
EMBED_PREFIX = "--embed:"
#: the realm stal/IX's `ix build` and `ix run` put their packages in (`ixc dep`, `plan`,
#: `build` and `run` too)
EPHEMERAL_REALM = "ephemeral"
#: the flag a realm gives each of its packages (docs/recipes.md, "target_realm")
REALM_FLAG = "target_realm"


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class _Context:
    """Where flags go: the package named last in the current realm, and whether it was
    removed; `package is None` means the realm."""

    def __init__(self, realm: str) -> None:
        self.realm = realm
        self.package: Selector | None = None
        self.removed = False


def _flag(word: str) -> tuple[str, str | None]:
    """`--k=v` → (k, v); `--k` → (k, "1"); `--k=-` → (k, None).

    A value outside the flag charset, or a flag ix sets itself, is a `BadFlag` naming the
    word; any other malformed word a `UsageError`."""
    key, sep, value = word[2:].partition("=")
    try:
        validate_flag_key(key)
        if not sep:
            value = "1"
        elif value == REMOVE_VALUE:
            return key, None
        check_client_flags([(key, validate_flag_value(value, key))])
        return key, value
    except BadFlag as err:
        raise BadFlag(f"{word!r}: {err.message}") from None
    except BadName as err:
        raise UsageError(
            f"{word!r} is not a flag of the form --k=v, --k or --k=-: {err.message}"
        ) from None


def _package(word: str) -> tuple[Selector, bool]:
    """`[+|-]PKG` → (selector, removing)."""
    removing = word.startswith("-")
    body = word[1:] if word[0] in "+-" else word
    selector = parse_selector(body)
    if "/" not in selector.name:
        raise UsageError(f"{word!r} is not a package: a package name has a '/' (bin/foo)")
    if not removing:  # an entry recorded before may still be removed
        try:
            check_client_flags(selector.flags)
        except BadFlag as err:
            raise BadFlag(f"{word!r}: {err.message}") from None
    return selector, removing


def _add_flag(ops: list[Op], context: _Context, word: str) -> None:
    key, value = _flag(word)
    package = context.package
    if package is None:
        ops.append(SetRealmFlag(key, value) if value is not None else RemoveRealmFlag(key))
        return
    if context.removed:
        raise UsageError(f"{word!r} follows -{package}, which is being removed: it has no flags")
    if value is None:
        ops.append(RemovePackageFlag(package, key))
        return
    last = ops[-1] if ops else None
    if isinstance(last, AddPackage) and last.selector == package:
        ops[-1] = AddPackage(package, tuple(merge_flags(last.flags, {key: value}).items()))
    else:
        ops.append(SetPackageFlag(package, key, value))


def lex_mutation(words: Sequence[str], default_realm: str) -> list[RealmPatch]:
    """The patches the words of `ixc mut` ask for, one per realm in the order first named.

    Raises `UsageError` naming a word that is none of a realm, a package or a flag,
    `BadRealmName` for a bad realm name (`default_realm` included, when it is used),
    `BadFlag` for a flag value outside the flag charset or a flag ix sets itself (`kind`,
    `lib`, an unknown `target`, ...) and `BadName` for another bad package selector. No words
    give no patches.
    """
    patches: dict[str, list[Op]] = {}
    context: _Context | None = None
    for word in words:
        if not word:
            raise UsageError("an empty word is neither a realm, a package nor a flag")
        if word.startswith("--"):
            if context is None:
                context = _Context(validate_realm_name(default_realm))
            _add_flag(patches.setdefault(context.realm, []), context, word)
        elif "/" in word:
            if context is None:
                context = _Context(validate_realm_name(default_realm))
            selector, removing = _package(word)
            op = RemovePackage(selector) if removing else AddPackage(selector, ())
            patches.setdefault(context.realm, []).append(op)
            context.package, context.removed = selector, removing
        elif word[0] in "+-":
            raise UsageError(
                f"{word!r} is neither a package (no '/', as in +bin/foo) nor a flag (--k=v)"
            )
        else:
            context = _Context(validate_realm_name(word))
            patches.setdefault(context.realm, [])
    return [RealmPatch(realm, tuple(ops)) for realm, ops in patches.items()]


def expand_embeds(words: Sequence[str], read: Callable[[str], bytes]) -> list[str]:
    """The words with each `--embed:k=FILE` as `--k=BASE64`, FILE read by `read` (as stal/IX
    reads it; the value is then a flag like any other, held to the client's charset and
    length). Words after `--` (a command's own) stay as they are."""
    out: list[str] = []
    for at, word in enumerate(words):
        if word == "--":
            return [*out, *words[at:]]
        if word.startswith(EMBED_PREFIX):
            key, sep, path = word[len(EMBED_PREFIX):].partition("=")
            if not sep or not path:
                raise UsageError(f"{word!r} is not of the form --embed:k=FILE")
            try:
                data = read(path)
            except OSError as exc:
                raise UsageError(f"{word!r}: cannot read {path}: {exc.strerror or exc}"
                                 ) from None
            import base64  # only here: it imports re

            value = base64.b64encode(data).decode()
            try:
                validate_flag_value(value, key)
            except BadFlag as err:
                raise BadFlag(f"{word!r}: {path} in base64 cannot be a flag: {err.message}"
                              ) from None
            word = f"--{key}={value}"
        out.append(word)
    return out


def lex_packages(words: Sequence[str]) -> list[str]:
    """The selectors `ixc dep`, `plan`, `build` and `run` WORDS name, as stal/IX's `ix build
    WORDS` reads them: the words of `ixc mut` on the empty realm `ephemeral` (`+`/`-`PKG;
    `--k=v` on the package named last, or before any on the realm; a bare word for another
    realm). Each selector carries its realm's flags under its own; a package of a realm other
    than `ephemeral` carries `target_realm=REALM` unless it sets it. In the order named.

    Raises what `lex_mutation` raises, `NotInRealm` for a package or flag removed that the
    words did not add, and `UsageError` if they name no package."""
    selectors = []
    for patch in lex_mutation(words, EPHEMERAL_REALM):
        state = apply_patch(RealmState(patch.realm), patch)
        for selector in reversed(effective_selectors(state)):  # the front is the last named
            if patch.realm != EPHEMERAL_REALM and REALM_FLAG not in selector.flags_dict:
                selector = selector.with_flags({REALM_FLAG: patch.realm})
            selectors.append(str(selector))
    if not selectors:
        raise UsageError("no package named: name one or more, e.g. bin/greet "
                         "(flags as --k=v after it, or before it for all)")
    return selectors
