"""The commands of `ixc`: one small function per command, registered in `COMMANDS` by the
`@command(synopsis, summary)` line above it, which is also what the help says about it.

Adding a command is adding one such function. A command gets the `Context` (options, output
streams, `ctx.call(op, args)` to ask the daemon, `ctx.show(value, printer)` to print the
answer) and the words after its name; it returns the exit status. Whatever only one command
needs (the lexer, json, subprocess, ...) it imports itself, so that the others stay light.
Long because it is the table of every command: its length is their number (the longest is
36 lines), not the depth of any one.
"""

from __future__ import annotations

import os
import time

from client.context import Command
from ixd.wire import events
from ixd.wire.errors import ProtocolError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO

    from client.context import Context, Run
    from ixd.wire.frames import Event


#: every command, in the order the help lists them
COMMANDS: dict[str, Command] = {}


def command(synopsis: str, summary: str, detail: str = "",
            own_help: bool = False, read_only: bool = False) -> Callable[[Run], Run]:
    """Register the function below as the command `synopsis` starts with."""

    def register(run: Run) -> Run:
        cmd = Command(synopsis, summary, run, detail, own_help, read_only)
        COMMANDS[cmd.name] = cmd
        return run

    return register


# --- word helpers ---------------------------------------------------------------------------


def take_flag(words: list[str], flag: str) -> bool:
    if flag in words:
        words.remove(flag)
        return True
    return False


def take_number(words: list[str], option: str, usage: str) -> int | None:
    """Remove `OPTION N` from words and return N (None when the option is absent)."""
    if option not in words:
        return None
    at = words.index(option)
    try:
        number = int(words[at + 1])
    except (IndexError, ValueError):
        raise UsageError(f"{option} needs a number; {usage}") from None
    del words[at:at + 2]
    return number


def at_most_one(words: list[str], usage: str) -> str | None:
    if len(words) > 1 or any(w.startswith("-") for w in words):
        raise UsageError(usage)
    return words[0] if words else None


def packages(words: list[str], command: str) -> list[str]:
    """The selectors of the words, read as stal/IX reads `ix build`'s (`ixd.model.words`:
    `bin/bash --target=linux-aarch64`, realm-wide flags before the first package, ...)."""
    if not words:
        raise UsageError(f"`ixc {command}` needs at least one package, e.g. bin/greet")
    from ixd.model.words import expand_embeds, lex_packages

    return lex_packages(expand_embeds(words, read_file))


def read_file(path: str) -> bytes:
    """A file `--embed:k=FILE` names, read as the user running ixc."""
    with open(os.path.expanduser(path), "rb") as handle:
        return handle.read()


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


# --- realms ---------------------------------------------------------------------------------


def change_realms(ctx: Context, words: list[str]) -> int:
    # ixd lexes the words (ixd.model.words, the caller's login the default realm): ixc
    # loads no realm model for them. A file `--embed:k=FILE` names is read here, as the user.
    strict = take_strict(words)
    if not words:
        raise UsageError(f"`ixc {ctx.name}` needs a realm or a package, e.g. "
                         f"`ixc {ctx.name} +bin/greet`")
    if any(word.startswith(EMBED) for word in words):
        from ixd.model.words import expand_embeds

        words = expand_embeds(words, read_file)
    args: dict[str, Any] = {"words": words}
    if strict:
        args["strict"] = True
    if not ctx.as_json:  # the lines printed name no entry of the realms' states
        args["state"] = False
    return ctx.show(ctx.call(ctx.name, args, only_adds_and_sets(words)), print_realms)


#: `--embed:k=FILE` (ixd.model.words.EMBED_PREFIX; a test holds them equal)
EMBED = "--embed:"


def only_adds_and_sets(words: list[str]) -> bool:
    """Whether the words only add packages and set flags, which sent twice leave what sent
    once leaves (so a change whose connection was lost before the answer may be sent
    again); a removal (`-PKG`, `--k=-`) sent twice fails the second time."""
    for word in words:
        if word.startswith("--"):
            if word.partition("=")[2] == "-":
                return False
        elif word.startswith("-"):
            return False
    return True


def take_strict(words: list[str]) -> bool:
    """`--strict` (before a `--` that starts a command): refuse flags no package reads."""
    end = words.index("--") if "--" in words else len(words)
    if "--strict" in words[:end]:
        words.remove("--strict")
        return True
    return False


PATCH_WORDS = """A bare word names a realm (before any: your login's; a new realm must get a
package); +PKG or PKG adds a package
(to the front: it wins when two provide the same file; one already there as asked stays put,
no new generation), -PKG removes one; --k=v sets flag k
on the package named last, or on the realm if none was named since the realm word; --k means
--k=1, --k=- removes the flag. A flag no package reads is warned of; --strict refuses it.
Example: ixc mut +bin/greet --greeting=Hello"""

command("mut [--strict] [REALM] [+|-]PKG [--k=v] ...",
        "change realms (default realm: your login)", PATCH_WORDS)(change_realms)
command("let [--strict] [REALM] PKG [--k=v] ...", "set a realm to exactly these packages",
        PATCH_WORDS)(change_realms)


def print_realms(value: dict[str, Any], out: TextIO) -> None:
    for realm in value["realms"]:
        what = f"generation {realm['generation']}" if realm["changed"] else "unchanged"
        print(f"realm {realm['realm']}: {what} -> {realm['path']}", file=out)


# --- building -------------------------------------------------------------------------------


@command("build [--strict] PKG...", "build packages, print their store dirs")
def build(ctx: Context, words: list[str]) -> int:
    args: dict[str, Any] = {"strict": True} if take_strict(words) else {}
    args["packages"] = packages(words, "build")
    return ctx.show(ctx.call("build", args), print_built)


def print_built(value: dict[str, Any], out: TextIO) -> None:
    for package in value["packages"]:
        print(package["out"] or package["selector"], file=out)


class _CommandExited(Exception):
    """`ixc run`'s command ran while the daemon held its realm; `status` is its exit status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@command("run PKG... -- CMD [ARGS]", "run CMD in an ephemeral realm of PKG...\n"
         "(kept from gc until CMD exits)")
def run(ctx: Context, words: list[str]) -> int:
    if "--" not in words:
        raise UsageError("usage: ixc run PKG... -- CMD [ARGS...]")
    strict = take_strict(words)
    cut = words.index("--")
    selectors, cmd = packages(words[:cut], "run"), words[cut + 1:]
    if not cmd:
        raise UsageError("`ixc run`: no command after --")

    def command_argv(path: str) -> list[str]:
        return ["/bin/sh", "-c", '. "$0/env" && exec "$@"', path, *cmd]

    def run_held(event: Event) -> None:
        # the daemon built the realm and keeps it from gc while this connection is open:
        # run the command now, then hang up (the request never answers)
        if event.kind != events.READY:
            ctx.progress(event)
            return
        argv = command_argv(str(event.data["path"]))
        ctx.out.flush()
        ctx.err.flush()
        if ctx.execute is not None:
            ctx.execute(argv)
            raise _CommandExited(0)
        raise _CommandExited(_run_command(argv))

    try:
        # a retry after the command ran would run it twice: not idempotent
        request: dict[str, Any] = {"packages": selectors, "hold": True}
        if strict:
            request["strict"] = True
        value = ctx.call("run", request, False, run_held)
    except _CommandExited as exited:
        return exited.status
    # a held realm is never answered: the request ends when the command has run
    raise ProtocolError(f"ixd answered a held `run` without holding the realm: {value!r:.80}")


def _run_command(argv: list[str]) -> int:
    """Run `argv` as a child with our stdio; its exit status, 128+N if signal N killed it.
    While it runs, the terminal's ^C and ^\\ are the child's to act on: ixc waits on (a
    handler, unlike SIG_IGN, is not inherited: the child gets the default action)."""
    import signal
    import subprocess

    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        status = subprocess.Popen(argv).wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - status if status < 0 else status


def _ignore(signum: int, frame: object) -> None:
    """Signals the command acts on; ixc waits for it to exit."""


# --- realms, read and managed ---------------------------------------------------------------


@command("list [REALM]", "realms, or the packages of one realm", read_only=True)
def list_realms(ctx: Context, words: list[str]) -> int:
    if len(words) > 1:
        raise UsageError("usage: ixc list [REALM]")
    return ctx.show(ctx.call("list", {"realm": words[0]} if words else {}), print_list)


def print_list(value: dict[str, Any], out: TextIO) -> None:
    if "realms" in value:
        for realm in value["realms"]:
            print(realm["name"], file=out)
        return
    state = value["state"]
    for key, flag in sorted(state["flags"].items()):
        print(f"--{key}={flag}", file=out)
    for entry in state["entries"]:
        flags = "".join(f" --{k}={v}" for k, v in sorted(entry["flags"].items()))
        print(f"{entry['selector']}{flags}", file=out)


@command("purge REALM", "remove a realm")
def purge(ctx: Context, words: list[str]) -> int:
    if len(words) != 1:
        raise UsageError("usage: ixc purge REALM")
    value = ctx.call("purge", {"realm": words[0]}, idempotent=False)
    return ctx.show(value, lambda v, out: print(f"purged realm {v['realm']}", file=out))


@command("export [REALM] -o FILE", "a realm's closure as a tarball for another machine",
         detail="FILE (.tar, .tar.gz, .tgz, .tar.xz; - for standard output) holds the realm's\n"
                "store entries and its link, at this daemon's root path: unpack it with\n"
                "`tar -xf FILE -C /` on the target machine (a cross-built realm's, say).\n"
                "The same realm gives the same bytes.", read_only=True)
def export(ctx: Context, words: list[str]) -> int:
    import sys

    from client.export import compression_of, write_export

    usage = "usage: ixc export [REALM] -o FILE"
    if "-o" not in words or words.index("-o") + 1 >= len(words):
        raise UsageError(f"`ixc export` needs -o FILE (the tarball to write); {usage}")
    at = words.index("-o")
    output = words[at + 1]
    del words[at:at + 2]
    compression_of(output)  # a bad name is said before the daemon is asked
    realm = at_most_one(words, usage)
    answer = ctx.call("export", {"realm": realm} if realm else {})
    written = write_export(answer, output, sys.stdout.buffer)
    if output == "-":  # the tarball is on standard output: what was written goes elsewhere
        print_export(written, ctx.err)
        return 0
    return ctx.show(written, print_export)


def print_export(value: dict[str, Any], out: TextIO) -> None:
    where = "standard output" if value["file"] == "-" else value["file"]
    print(f"exported realm {value['realm']}: {value['entries']} store entries, "
          f"{value['files']} files, {value['bytes']} bytes, to {where}; unpack it at / "
          f"on the target: tar -xf FILE -C /", file=out)


@command("dep PKG...", "the package names of the whole closure", read_only=True)
def dep(ctx: Context, words: list[str]) -> int:
    return ctx.show(ctx.call("dep", {"packages": packages(words, "dep")}), print_unique_names)


def print_unique_names(value: dict[str, Any], out: TextIO) -> None:
    seen: set[str] = set()
    for package in value["packages"]:
        if package["name"] not in seen:
            seen.add(package["name"])
            print(package["name"], file=out)


@command("plan [--summary] PKG...", "the build plan as JSON (--summary: counts, names)",
         read_only=True)
def plan(ctx: Context, words: list[str]) -> int:
    from client.context import print_json

    summary = "--summary" in words
    request = {"packages": packages([w for w in words if w != "--summary"], "plan")}
    if summary:
        print_json(ctx.call("plan", {**request, "summary": True}), ctx.out)
        return 0
    # the daemon sends the plan as JSON text, in compressed pieces (stal/IX's CI set: 80 MB of
    # text, 8 MB sent), printed as they come: nothing to decode and encode again
    import zlib

    def write(event: Event) -> None:
        if event.kind == events.PLAN_TEXT:
            ctx.out.write(zlib.decompress(event.data["zlib"]).decode())
        else:
            ctx.progress(event)

    ctx.call("plan", {**request, "text": True}, on_event=write)
    ctx.out.flush()
    return 0


@command("generations [REALM]", "a realm's generations (* = current), with their flags",
         read_only=True)
def generations(ctx: Context, words: list[str]) -> int:
    realm = at_most_one(words, "usage: ixc generations [REALM]")
    value = ctx.call("generations", {"realm": realm} if realm else {})
    return ctx.show(value, print_generations)


def print_generations(value: dict[str, Any], out: TextIO) -> None:
    for g in value["generations"]:
        mark = "*" if g["number"] == value["current"] else " "
        print(f"{mark}{g['number']:>4}  {when(g['created'])}  {g['by']:<12} "
              f"{realm_words(g['state'])}{'  (collected)' if g.get('collected') else ''}",
              file=out)


def realm_words(state: dict[str, Any]) -> str:
    """A realm state as the words that make it: `--shout=1 bin/greet --greeting=Hi, ...`."""
    def flags(given: dict[str, str]) -> str:
        return "".join(f" --{k}={v}" for k, v in sorted(given.items()))

    entries = ", ".join(f"{e['selector']}{flags(e['flags'])}" for e in state["entries"])
    realm = flags(state.get("flags", {})).strip()
    return " ".join(w for w in (realm, entries or "(empty)") if w)


@command("rollback [REALM] [--to N]", "switch back to the previous (or given) generation")
def rollback(ctx: Context, words: list[str]) -> int:
    usage = "usage: ixc rollback [REALM] [--to N]"
    to = take_number(words, "--to", usage)
    realm = at_most_one(words, usage)
    args: dict[str, Any] = {"realm": realm} if realm else {}
    if to is not None:
        args["to"] = to
    value = ctx.call("rollback", args, idempotent="to" in args)
    return ctx.show(value, lambda v, out: print(
        f"realm {v['realm']}: generation {v['previous']} -> {v['generation']}", file=out))


# --- finding packages -----------------------------------------------------------------------


@command("search TERM... [--limit N]", "packages whose name or description holds every\n"
         "TERM, best first (--names PREFIX: names starting so)", read_only=True)
def search(ctx: Context, words: list[str]) -> int:
    if words[:1] == ["--names"]:  # what shell completion asks for
        if len(words) > 2:
            raise UsageError("usage: ixc search --names [PREFIX]")
        names = ctx.call("search", {"prefix": words[1] if len(words) == 2 else ""})
        return ctx.show(names, lambda v, out: print("\n".join(v["names"]), file=out))
    limit = take_number(words, "--limit", "usage: ixc search TERM... [--limit N]")
    if not words or any(w.startswith("-") for w in words):
        raise UsageError("usage: ixc search TERM... [--limit N], e.g. ixc search lua")
    args: dict[str, Any] = {"terms": words}
    if limit is not None:
        args["limit"] = limit
    return ctx.show(ctx.call("search", args), print_search)


def print_search(value: dict[str, Any], out: TextIO) -> None:
    results = value["results"]
    width = max((len(r["name"]) for r in results), default=0)
    for r in results:
        print(f"{r['name']:<{width}}  {r['description']}".rstrip(), file=out)
    if value["total"] > len(results):
        print(f"... {value['total'] - len(results)} more (--limit N shows more)", file=out)
    elif not results:
        print(f"no package matches {' '.join(value['terms'])}", file=out)


@command("show PKG", "what a package is: description, version, sources,\n"
         "the flags it reads (with defaults), its direct dependencies", read_only=True)
def show(ctx: Context, words: list[str]) -> int:
    if len(words) != 1 or words[0].startswith("-"):
        raise UsageError("usage: ixc show PKG, e.g. ixc show bin/hello")
    return ctx.show(ctx.call("show", {"package": words[0]}), print_show)


def print_show(value: dict[str, Any], out: TextIO) -> None:
    lines = [value["selector"] + (f"  {value['version']}" if value["version"] else "")]
    if value["description"]:
        lines.append(f"  {value['description']}")
    lines.extend(f"  source: {url}" for url in value["sources"])
    if value["flags"]:
        lines.append("  flags it reads: " + ", ".join(
            f"{f['name']} (default {f['default']})" if f["default"] is not None else f["name"]
            for f in value["flags"]))
    if value.get("dependencies_read"):
        lines.append("  flags its dependencies read: " + ", ".join(value["dependencies_read"]))
    for kind, names in value["deps"].items():
        lines.append(f"  {kind}: {', '.join(names)}")
    if value["hub"]:
        lines.append("  a hub: nothing to build, it brings its run-time dependencies")
    else:
        state = "built" if value["built"] else "not built"
        lines.append(f"  store: {value['out']} ({state})")
    if value["recipe"]:
        lines.append(f"  recipe: {value['recipe']}")
    print("\n".join(lines), file=out)


@command("why PKG [REALM]", "the chain of packages that pulls PKG into a realm", read_only=True)
def why(ctx: Context, words: list[str]) -> int:
    if not 1 <= len(words) <= 2 or any(w.startswith("-") for w in words):
        raise UsageError("usage: ixc why PKG [REALM], e.g. ixc why lib/c")
    args = {"package": words[0], **({"realm": words[1]} if len(words) == 2 else {})}
    return ctx.show(ctx.call("why", args), print_why)


def print_why(value: dict[str, Any], out: TextIO) -> None:
    chain = value["chain"]
    print(f"realm {value['realm']}: {chain[0]['name']}", file=out)
    for depth, link in enumerate(chain[1:], 1):
        print(f"{'  ' * depth}-> {link['name']}  ({link['edge']})", file=out)


@command("diff [REALM] [GEN1 [GEN2]]", "what changed between two generations of a realm\n"
         "(default: the one before the current, and the current)", read_only=True)
def diff(ctx: Context, words: list[str]) -> int:
    usage = "usage: ixc diff [REALM] [GEN1 [GEN2]], e.g. ixc diff or ixc diff work 1 3"
    realm = words.pop(0) if words and not words[0].isdigit() else None
    if len(words) > 2 or not all(w.isdigit() for w in words):
        raise UsageError(usage)
    args: dict[str, Any] = {"realm": realm} if realm else {}
    if len(words) == 1:  # one number: from it to the current generation
        args["from"] = int(words[0])
    elif len(words) == 2:
        args["from"], args["to"] = int(words[0]), int(words[1])
    return ctx.show(ctx.call("diff", args), print_diff)


def print_diff(value: dict[str, Any], out: TextIO) -> None:
    def flags(given: dict[str, str]) -> str:
        return " ".join(f"--{k}={v}" for k, v in sorted(given.items())) or "(none)"

    lines = [f"realm {value['realm']}: generation {value['from']} -> {value['to']}"]
    if value["flags"]["from"] != value["flags"]["to"]:
        lines.append(f"  realm flags: {flags(value['flags']['from'])} -> "
                     f"{flags(value['flags']['to'])}")
    lines.extend(f"  + {s}" for s in value["added"])
    lines.extend(f"  - {s}" for s in value["removed"])
    lines.extend(f"  {c['selector']}: {flags(c['from'])} -> {flags(c['to'])}"
                 for c in value["reflagged"])
    packages = value["packages"]
    if any(packages.values()):
        lines.append("  store entries linked:")
        lines.extend(f"    + {n}" for n in packages["added"])
        lines.extend(f"    - {n}" for n in packages["removed"])
        lines.extend(f"    ~ {n} (another build)" for n in packages["changed"])
    if len(lines) == 1:
        lines.append("  no change")
    print("\n".join(lines), file=out)


# --- builds ---------------------------------------------------------------------------------


def page_args(ctx: Context, words: list[str]) -> dict[str, int]:
    """`--limit N` and `--offset N`, the only words `status` and `builds` take."""
    usage = f"usage: ixc {ctx.name} [--limit N] [--offset N]"
    page = {name: number for name in ("limit", "offset")
            if (number := take_number(words, f"--{name}", usage)) is not None}
    if words:
        raise UsageError(usage)
    return page


@command("status [--limit N] [--offset N]", "the builds queued and running, for all users",
         read_only=True)
def status(ctx: Context, words: list[str]) -> int:
    return ctx.show(ctx.call("status", page_args(ctx, words)), print_status)


def print_status(value: dict[str, Any], out: TextIO) -> None:
    builds = value["builds"]
    total = value.get("total", len(builds))
    if not total:
        print(f"idle ({value['jobs']} build slots)", file=out)
    cluster = value.get("cluster")
    if cluster:
        print(f"cluster {cluster['address']}: {cluster['state']}", file=out)
    for b in builds:
        expected = f", expected {b['expected']:.0f}s" if b["expected"] else ""
        others = b.get("waiting_count", len(b["waiting"])) - len(b["waiting"])
        waiting = ", ".join(b["waiting"]) + (f" and {others} more" if others > 0 else "")
        state = b["state"]
        if b.get("kind") == "substitute":  # fetched from a binary cache, not built
            state = "substituting" if state == "running" else "queued (substitute)"
        where = f" on {b['worker']}" if b.get("worker") else ""
        print(f"{state:<8} {b['name']}{where}  for {b['elapsed']:.0f}s{expected}; "
              f"waiting: {waiting}", file=out)
    after = value.get("offset", 0) + len(builds)
    if after < total:
        print(f"... {total - after} more of {total} ({value.get('running', 0)} running); "
              f"the next: ixc status --offset {after}", file=out)


@command("builds [--limit N] [--offset N]", "build history, newest first", read_only=True)
def builds(ctx: Context, words: list[str]) -> int:
    page = page_args(ctx, words)
    page.setdefault("limit", 50)
    value = ctx.call("builds", page)
    if value.get("cut") and not ctx.as_json:
        print(f"ixc: the reply was cut at {len(value['builds'])} builds to stay small; "
              f"the next ones: ixc builds --offset {value['next_offset']}", file=ctx.err)
    return ctx.show(value, print_builds)


def print_builds(value: dict[str, Any], out: TextIO) -> None:
    for b in value["builds"]:
        duration = f"{b['duration']:.1f}s" if b["duration"] is not None else "-"
        print(f"{when(b['started'])}  {b['state']:<11} {duration:>8}  {b['name']}  "
              f"{b['uid']}  by {b['requested_by']}", file=out)


@command("log PKG|UID [-f]", "a build's log; -f follows a running build", read_only=True)
def log(ctx: Context, words: list[str]) -> int:
    follow = take_flag(words, "-f") or take_flag(words, "--follow")
    if len(words) != 1:
        raise UsageError("usage: ixc log PKG|UID [-f]")

    texts: list[str] = []  # --json: the log goes in the JSON document, whole

    def print_text(event: Event) -> None:
        # the log comes in pieces of whole lines
        if event.kind != events.LOG_TEXT:
            return
        text = event.data["text"]
        if ctx.as_json:
            texts.append(text)
        else:
            ctx.out.write(text)
            ctx.out.flush()

    # a followed log printed again after a retry would repeat lines: no retry then
    value = ctx.call("log", {"target": words[0], "follow": follow}, not follow, print_text)
    if ctx.as_json:
        from client.context import print_json

        print_json({**value, "log": "".join(texts)}, ctx.out)
    return 1 if value.get("error") else 0


# --- the daemon -----------------------------------------------------------------------------


@command("push [REALM | PKG...]", "upload a realm's or packages' closure to the daemon's\n"
         "--push cache (root or the admin group)")
def push(ctx: Context, words: list[str]) -> int:
    # one word without a slash is a realm; package selectors name a category (bin/...)
    args = ({"realm": words[0]} if len(words) == 1 and "/" not in words[0]
            else {"packages": words} if words else {})
    return ctx.show(ctx.call("push", args), lambda v, out: print(
        f"push: {len(v['pushed'])} entries uploaded to {v['cache']}, {v['present']} "
        f"already there", file=out))


@command("gc", "collect garbage (root or the admin group)")
def gc(ctx: Context, words: list[str]) -> int:
    if words:
        raise UsageError("usage: ixc gc")
    return ctx.show(ctx.call("gc", {}), lambda v, out: print(
        f"gc: {v['entries']} entries deleted, {v['bytes']} bytes freed, "
        f"{v['kept']} kept; {v.get('logs', 0)} build logs deleted "
        f"({v.get('log_bytes', 0)} bytes)", file=out))


@command("session --svdir DIR [--realm NAME]", "keep DIR's runit services in step with a realm",
         own_help=True)
def session(ctx: Context, words: list[str]) -> int:
    # imported here: the session's code and pyinotify only for this command
    from services.session import main as session_main

    return session_main(words, socket=ctx.socket)


@command("ping", "check that ixd answers, and who you are to it", read_only=True)
def ping(ctx: Context, words: list[str]) -> int:
    return ctx.show(ctx.call("ping", {}), lambda v, out: print(
        f"ixd {v['version']} answers {v['login']} (uid {v['uid']})", file=out))


@command("version", "the version of ixc (also `ixc --version`)", read_only=True)
def version(ctx: Context, words: list[str]) -> int:
    from ixd import __version__

    if words:
        raise UsageError("usage: ixc version")
    return ctx.show({"version": __version__}, lambda v, out: print(f"ixc {v['version']}",
                                                                      file=out))


@command("completion bash|zsh", "print the shell completion script (eval it, or let\n"
         "runit/install.sh install it)", read_only=True)
def completion(ctx: Context, words: list[str]) -> int:
    from client.completion import SCRIPTS

    if len(words) != 1 or words[0] not in SCRIPTS:
        raise UsageError(f"usage: ixc completion {'|'.join(SCRIPTS)}, e.g. "
                         f"eval \"$(ixc completion bash)\"")
    ctx.out.write(SCRIPTS[words[0]](COMMANDS))
    return 0
