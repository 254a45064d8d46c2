"""The ops a request may name, each with its arguments: the one table of what a client may
ask of ixd (in the manner of h11's `_events.py`: every message a small checked type).

`check_request(op, args)` is the server's one check of a request's arguments, before any op
runs: an unknown op is `UnknownOp`; a missing, unknown or ill-typed argument is
`BadRequest` naming it, the value given and what it must be. The op then receives its
arguments as a frozen record (`BuildArgs`, `SearchArgs`, ...), typed, with the defaults
filled in: no op looks into the request's map itself. What only the daemon knows (whether a
selector parses, whether a realm exists) the op still decides.

Only the daemon imports this module (`ixc` sends plain maps): it may use `typing`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from ixd.wire.errors import BadRequest, UnknownOp
from ixd.wire.record import Record

# --- limits the checks apply -----------------------------------------------------------------

#: flights in one `status` reply unless the client asks for another number; at most
STATUS_PAGE: Final = 100
MAX_STATUS_PAGE: Final = 1000
#: history rows in one `builds` reply unless the client asks; at most; and how far back
#: `offset` + `limit` may reach (each page reads the rows before it: the database has no
#: offset of its own for them yet)
BUILDS_PAGE: Final = 50
MAX_BUILDS_PAGE: Final = 10_000
MAX_BUILDS_REACH: Final = 20_000
#: results of one search at most, unless the client asks for fewer; at most
SEARCH_LIMIT: Final = 50
MAX_SEARCH_LIMIT: Final = 1000
#: words of one search, and characters of one word (or of a completion's prefix)
MAX_TERMS: Final = 16
MAX_TERM: Final = 200


# --- the checks of one argument ------------------------------------------------------------

#: checks one argument's value (named by its wire name) and returns it as the op gets it
Check = Callable[[str, object], Any]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false, not {value!r:.60}")
    return value


def anything(name: str, value: object) -> object:
    return value


def number(low: int, high: int | None, what: str) -> Check:
    """An integer from `low` to `high` (None: no upper bound); `what` completes "'NAME' must
    be ..." in the error."""
    def check(name: str, value: object) -> int:
        if not _is_int(value) or value < low or (high is not None and value > high):  # type: ignore[operator]
            raise BadRequest(f"'{name}' must be {what}, not {value!r:.60}")
        return value  # type: ignore[return-value]
    return check


def generation(name: str, value: object) -> int:
    if not _is_int(value):
        raise BadRequest(f"'{name}' must be a generation number, not {value!r:.60}")
    return value  # type: ignore[return-value]


def text(what: str, *, empty: bool = False, longest: int | None = None) -> Check:
    """A string (non-empty unless `empty`, at most `longest` characters)."""
    def check(name: str, value: object) -> str:
        if (not isinstance(value, str) or (not value and not empty)
                or (longest is not None and len(value) > longest)):
            raise BadRequest(f"'{name}' must be {what}, not {value!r:.60}")
        return value
    return check


def realm(name: str, value: object) -> str:
    """A realm's name ("": the caller's login's realm); the daemon checks the name itself."""
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string (a realm's name), not {value!r:.60}")
    return value


def selectors(name: str, value: object) -> list[str]:
    """A non-empty list of package selectors (as text: the daemon parses them)."""
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise BadRequest(f"this op needs '{name}': a non-empty list of selectors, "
                         "e.g. ['bin/greet', 'lib/greet(shout=1)']")
    return value


def strings(name: str, value: object) -> list[str]:
    """A list of strings, maybe empty."""
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise BadRequest(f"'{name}' must be a list of package selectors, not {value!r:.60}")
    return value


def patches(name: str, value: object) -> list[Any]:
    """A non-empty list of realm patches (each parsed by the realm model)."""
    if not isinstance(value, list) or not value:
        raise BadRequest(f"'{name}' must be a non-empty list of realm patches")
    return value


def change_words(name: str, value: object) -> list[str]:
    """The words of `ixc mut` (a non-empty list of strings; the lexer says what is wrong
    with a word, the request's size limits bound them)."""
    if not isinstance(value, list) or not value or not all(isinstance(w, str) for w in value):
        raise BadRequest(f"'{name}' must be a non-empty list of the words of `ixc mut`, e.g. "
                         "['work', '+bin/greet', '--shout']")
    return value


def _patches_or_words(args: ChangeArgs) -> None:
    if (args.patches is None) == (args.words is None):
        raise BadRequest("this op needs either 'patches' (realm patches) or 'words' (the "
                         "words of `ixc mut`), not both or neither")


def terms(name: str, value: object) -> list[str]:
    if (not isinstance(value, list) or not value or len(value) > MAX_TERMS
            or not all(isinstance(t, str) and 0 < len(t) <= MAX_TERM for t in value)):
        raise BadRequest(f"'{name}' must be a list of 1 to {MAX_TERMS} words, e.g. ['lua']")
    return value


# --- arguments and ops -----------------------------------------------------------------------

#: an argument without a default: the request must give it
REQUIRED: Final = object()


class Arg:
    """One argument of an op: its name on the wire, its check, its default (REQUIRED: none),
    and the field of the op's record it fills (its wire name unless that is a keyword)."""

    __slots__ = ("check", "default", "field", "name")

    def __init__(self, name: str, check: Check, default: object = REQUIRED,
                 field: str | None = None) -> None:
        self.name = name
        self.check = check
        self.default = default
        self.field = field or name


class Op:
    """One op: its name, its arguments, the record the op receives them in, and a check of
    them together (run after each one's own)."""

    __slots__ = ("args", "by_name", "name", "record", "together")

    def __init__(self, name: str, record: type[Record], *args: Arg,
                 together: Callable[[Any], None] | None = None) -> None:
        self.name = name
        self.record = record
        self.args = args
        self.by_name = {a.name: a for a in args}
        self.together = together
        fields = {a.field for a in args}
        if fields != set(record._fields):
            raise TypeError(f"op {name}: arguments {sorted(fields)} do not fill "
                            f"{record.__name__}'s fields {list(record._fields)}")

    def check(self, args: Mapping[str, object]) -> Any:
        unknown = sorted(set(args) - self.by_name.keys())
        if unknown:
            takes = ", ".join(a.name for a in self.args) or "none"
            raise BadRequest(f"op {self.name!r} takes no argument {unknown[0]!r:.60}; its "
                             f"arguments: {takes}")
        values = {}
        for arg in self.args:
            if arg.name in args and args[arg.name] is not None:
                values[arg.field] = arg.check(arg.name, args[arg.name])
            elif arg.default is REQUIRED:
                arg.check(arg.name, None)  # says what it must be
                raise BadRequest(f"op {self.name!r} needs '{arg.name}'")
            else:
                values[arg.field] = arg.default
        record = self.record(**values)
        if self.together is not None:
            self.together(record)
        return record


# --- each op's record ----------------------------------------------------------------------


class NoArgs(Record):
    """`ping`, `gc`: no arguments."""


class ChangeArgs(Record):
    """`mut`, `let`: the change as realm patches (wire form) or as the words of `ixc mut`
    (exactly one of them: the daemon lexes words as `ixd.model.words` does, the caller's
    login the default realm; `ixc` sends its words and so loads no realm model), whether an
    unread flag is refused, and whether each realm's answer carries its state (`ixc` asks for
    it with --json only: a realm of 200 packages is most of a re-add's answer)."""

    patches: list[Any] | None = None
    words: list[str] | None = None
    strict: bool = False
    state: bool = True


class PackagesArgs(Record):
    """`dep`: the packages."""

    packages: list[str]


class PlanArgs(Record):
    """`plan`: the packages; the plan as counts only, or in `plan-nodes` events, or as JSON
    text in `plan-text` events."""

    packages: list[str]
    summary: bool = False
    stream: bool = False
    text: bool = False


class BuildArgs(Record):
    """`build`: the packages; `strict`: refuse a flag no package reads."""

    packages: list[str]
    strict: bool = False


class RunArgs(BuildArgs):
    """`run`: as `build`; `hold`: keep the realm until the client hangs up."""

    hold: bool = False


class RealmArgs(Record):
    """`list`, `generations`, `purge`, `export`: the realm (None: `list` lists them all, the
    others take the caller's; "": the caller's)."""

    realm: str | None = None


class RollbackArgs(Record):
    """`rollback`: the realm and the generation to go to (None: the one before)."""

    realm: str | None = None
    to: int | None = None


class DiffArgs(Record):
    """`diff`: the realm and the two generations (None: the one before `to`; the current)."""

    realm: str | None = None
    start: int | None = None
    to: int | None = None


class PageArgs(Record):
    """`status`, `builds`: a page of at most `limit` from `offset`."""

    limit: int
    offset: int = 0


class LogArgs(Record):
    """`log`: a package selector or a build uid; `follow` a running build."""

    target: str
    follow: bool = False


class SearchArgs(Record):
    """`search`: the words every result holds, at most `limit` results; or a `prefix` of the
    names to list (completion)."""

    terms: list[str] | None = None
    prefix: str | None = None
    limit: int = SEARCH_LIMIT


class ShowArgs(Record):
    """`show`: one package."""

    package: str


class WhyArgs(ShowArgs):
    """`why`: one package, and the realm it is looked for in."""

    realm: str | None = None


class PushArgs(Record):
    """`push`: the packages, or else the realm, whose closure to upload."""

    packages: list[str] | None = None
    realm: str | None = None


class NodeArgs(Record):
    """`cluster-build`: a build node in its wire form (`ixd.build.cluster_node` checks it,
    after the caller: only the cluster's worker account may send one)."""

    node: object = None


def _terms_or_prefix(args: SearchArgs) -> None:
    if args.prefix is None and args.terms is None:
        terms("terms", None)


def _within_reach(args: PageArgs) -> None:
    if args.offset + args.limit > MAX_BUILDS_REACH:
        raise BadRequest(f"'offset' + 'limit' may reach at most {MAX_BUILDS_REACH} entries "
                         f"back, not {args.offset + args.limit}")


def _realm_arg() -> Arg:
    return Arg("realm", realm, None)


_PACKAGES = Arg("packages", selectors)
_STRICT = Arg("strict", boolean, False)
_CHANGE = (Arg("patches", patches, None), Arg("words", change_words, None), _STRICT,
           Arg("state", boolean, True))
_PAGE_OFFSET = Arg("offset", number(0, None, "a number from 0 up"), 0)

#: every op, by name
OPS: Final[dict[str, Op]] = {op.name: op for op in (
    Op("ping", NoArgs),
    Op("mut", ChangeArgs, *_CHANGE, together=_patches_or_words),
    Op("let", ChangeArgs, *_CHANGE, together=_patches_or_words),
    Op("build", BuildArgs, _PACKAGES, _STRICT),
    Op("run", RunArgs, _PACKAGES, _STRICT, Arg("hold", boolean, False)),
    Op("list", RealmArgs, _realm_arg()),
    Op("purge", RealmArgs, _realm_arg()),
    Op("export", RealmArgs, _realm_arg()),
    Op("dep", PackagesArgs, _PACKAGES),
    Op("plan", PlanArgs, _PACKAGES, Arg("summary", boolean, False),
       Arg("stream", boolean, False), Arg("text", boolean, False)),
    Op("generations", RealmArgs, _realm_arg()),
    Op("rollback", RollbackArgs, _realm_arg(), Arg("to", generation, None)),
    Op("status", PageArgs,
       Arg("limit", number(1, MAX_STATUS_PAGE, f"a number from 1 to {MAX_STATUS_PAGE}"),
           STATUS_PAGE), _PAGE_OFFSET),
    Op("builds", PageArgs,
       Arg("limit", number(1, MAX_BUILDS_PAGE, f"a number from 1 to {MAX_BUILDS_PAGE}"),
           BUILDS_PAGE), _PAGE_OFFSET, together=_within_reach),
    Op("log", LogArgs, Arg("target", text("a package selector or a build uid")),
       Arg("follow", boolean, False)),
    Op("search", SearchArgs, Arg("terms", terms, None),
       Arg("prefix", text(f"a string of at most {MAX_TERM} characters", empty=True,
                          longest=MAX_TERM), None),
       Arg("limit", number(1, MAX_SEARCH_LIMIT, f"a number from 1 to {MAX_SEARCH_LIMIT}"),
           SEARCH_LIMIT),
       together=_terms_or_prefix),
    Op("show", ShowArgs, Arg("package", text("a package selector, e.g. lib/c"))),
    Op("why", WhyArgs, Arg("package", text("a package name, e.g. lib/c")), _realm_arg()),
    Op("diff", DiffArgs, _realm_arg(), Arg("from", generation, None, field="start"),
       Arg("to", generation, None)),
    Op("gc", NoArgs),
    Op("push", PushArgs, Arg("packages", strings, None), _realm_arg()),
    Op("cluster-build", NodeArgs, Arg("node", anything, None)),
)}


def check_request(op: str, args: Mapping[str, object]) -> Any:
    """The arguments of a request for `op`, checked, as the op's record: `UnknownOp` for an
    op not in OPS, `BadRequest` naming what is wrong with an argument."""
    spec = OPS.get(op)
    if spec is None:
        raise UnknownOp(f"unknown op {op!r:.60}; this daemon knows: {', '.join(sorted(OPS))}")
    return spec.check(args)
