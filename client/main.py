"""`ixc`: the user's command line. The entry point: global options, the help generated from
the command table (`client.commands`), and the command run with its `client.context`.

Light on purpose, because every `ixc` process pays for its imports before it sends a byte:
at run time this module imports only `os`, `sys`, the command table and `client.context`
(the wire transport) (no argparse, json, typing or dataclasses); whatever one command alone
needs, that command imports itself. `tests/test_client_imports.py` holds `ixc ping` to a
fixed list of modules.
"""

from __future__ import annotations

import os
import sys

from client.commands import COMMANDS
from client.context import READ_ONLY_DEADLINE, Command, Context, Options
from ixd.wire.errors import IxError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TextIO

OPTIONS_HELP = """Options: --socket PATH, --json, -v (build logs), --no-retry (do not retry a
request once a restarted daemon is back). `ixc COMMAND --help` (or `ixc help COMMAND`) shows
one command."""


def usage() -> str:
    """The whole help, generated from the command table."""
    lines = ["ixc [--socket PATH] COMMAND ..."]
    for cmd in COMMANDS.values():
        first, *more = cmd.summary.splitlines()
        if len(cmd.synopsis) > 34:  # a long synopsis gets a line of its own
            lines.append(f"  {cmd.synopsis}")
            lines.extend(f"  {'':<35}{line}" for line in cmd.summary.splitlines())
            continue
        lines.append(f"  {cmd.synopsis:<35}{first}")
        lines.extend(f"  {'':<35}{line}" for line in more)
    return "\n".join([*lines, "", OPTIONS_HELP])


def command_usage(cmd: Command) -> str:
    """One command's help, generated from its entry in the table."""
    summary = " ".join(line.strip() for line in cmd.summary.splitlines())
    detail = f"\n\n{cmd.detail}" if cmd.detail else ""
    return f"usage: ixc [--socket PATH] {cmd.synopsis}\n\n{summary}.{detail}\n\n{OPTIONS_HELP}"


def split_options(argv: Sequence[str]) -> tuple[Options, list[str]]:
    """Global options before the command: --socket PATH, --json, -v, --no-retry, --help."""
    options = Options()
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        word = rest.pop(0)
        if word == "--socket":
            if not rest or rest[0].startswith("-"):
                raise UsageError("--socket needs a path: --socket PATH (ixd's socket, "
                                 "usually ROOT/var/ixd.sock)")
            options.socket = rest.pop(0)
        elif word.startswith("--socket="):
            options.socket = word.split("=", 1)[1]
        elif word == "--json":
            options.json = True
        elif word == "--no-retry":
            options.no_retry = True
        elif word in ("-v", "--verbose"):
            options.verbose = True
        elif word in ("-h", "--help"):
            rest = ["help"]
            break
        elif word in ("-V", "--version"):
            rest = ["version"]
            break
        else:
            raise UsageError(f"unknown option {word!r}; see `ixc help`")
    return options, rest


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None, execute: Callable[[list[str]], None] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), out, err, execute)
    except IxError as exc:
        print(f"ixc: error: {exc.message} [{exc.code}]", file=err)
        return exc.exit_status
    except KeyboardInterrupt:
        print("ixc: interrupted", file=err)  # before a command ran: nothing to tell
        return 130
    except BrokenPipeError:
        # the reader went away (`ixc plan ... | head`); keep Python quiet at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: list[str], out: TextIO, err: TextIO,
          execute: Callable[[list[str]], None] | None) -> int:
    options, rest = split_options(argv)
    if not rest or rest[0] == "help":
        topic = COMMANDS.get(rest[1]) if len(rest) > 1 else None
        print(command_usage(topic) if topic else usage(), file=out)
        return 0 if rest else 2
    name, words = rest[0], rest[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise UsageError(f"unknown command {name!r}; see `ixc help`")
    if words[:1] in (["-h"], ["--help"]) and not cmd.own_help:
        print(command_usage(cmd), file=out)
        return 0
    # `--json` and `-v` may follow the command too (not after `--`: that is run's CMD)
    mine = words.index("--") if "--" in words else len(words)
    if "--json" in words[:mine]:
        words.remove("--json")
        options.json = True
        mine -= 1
    if "-v" in words[:mine]:
        words.remove("-v")
        options.verbose = True
    ctx = Context(name, options, out, err, execute)
    if cmd.read_only:
        ctx.deadline = READ_ONLY_DEADLINE
    try:
        return cmd.run(ctx, words)
    except KeyboardInterrupt:
        from client.interrupt import tell_interrupted

        tell_interrupted(ctx)
        return 130


def run() -> None:
    """`ixc` as a program (client/ixc and the launcher runit/install.sh writes): `main()`,
    then out without the interpreter's teardown, which frees every module and object one by
    one: about 2 ms of a 15 ms `ixc status`. Nothing of ixc's needs it: the output is flushed
    here, every file a command writes is closed by its `with`, and ixc starts no thread and
    registers no exit handler. The launcher turns the cyclic collector off while ixc's modules
    load (walking their objects again and again finds no garbage); it is back on for the
    command, with what loaded set aside (`gc.freeze`)."""
    import gc

    gc.freeze()
    gc.enable()
    status = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = 141  # as main() answers a reader that went away
    except OSError as exc:
        print(f"ixc: error: cannot write the output: {exc.strerror}", file=sys.stderr)
        status = status or 1
    try:
        sys.stderr.flush()
    except OSError:
        pass  # nowhere left to say so
    os._exit(status)


if __name__ == "__main__":
    run()
