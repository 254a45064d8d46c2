"""`ixc`: the user's command line. The entry point: global options, the help generated from
the command table (`client.commands`), and the one way a command talks to the daemon.

Light on purpose, because every `ixc` process pays for its imports before it sends a byte:
at run time this module imports only `os`, `sys`, the wire transport and the command table
(no argparse, json, typing or dataclasses); whatever one command alone needs, that command
imports itself. `tests/test_client_imports.py` holds `ixc ping` to a fixed list of modules.
"""

from __future__ import annotations

import os
import sys

from client.commands import COMMANDS, Command, print_status
from client.progress import Progress
from ixd.wire.errors import ConnectionLost, DaemonUnavailable, IxError, ProtocolError, UsageError
from ixd.wire.transport import DEFAULT_SOCKET, Client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, TextIO

    from ixd.wire.frames import Event

#: how long `ixc` waits for a restarted daemon before giving up on a retry
RETRY_DEADLINE = 120.0
#: how long a command that only reads waits for it (a person is looking at the terminal)
READ_ONLY_DEADLINE = 5.0
#: the human output of `status` (kept here for the callers that import it from here)
_print_status = print_status

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


def wait_for_daemon(path: str, deadline: float) -> Client:
    """Connect once the daemon answers again (it restarts under runit), or give up; a
    socket this account may not use, or a path that is no socket, fails at once."""
    import time

    end = time.monotonic() + deadline
    while True:
        try:
            return Client.connect(path)
        except (DaemonUnavailable, ConnectionLost, ProtocolError) as exc:
            # refused, or accepted by a daemon still dying: wait for the new one
            if time.monotonic() > end or (isinstance(exc, DaemonUnavailable)
                                          and not exc.may_come_back):
                raise
            time.sleep(0.2)


def socket_path(option: str | None, environ: Mapping[str, str]) -> str:
    """`--socket`, then `$IX_SOCKET`, then the system daemon's socket."""
    return option or environ.get("IX_SOCKET") or DEFAULT_SOCKET


class Options:
    """The global options, given before the command."""

    __slots__ = ("json", "no_retry", "socket", "verbose")

    def __init__(self) -> None:
        self.socket: str | None = None
        self.json = False
        self.verbose = False
        self.no_retry = False


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


class Context:
    """What a command is run with: its name, the options, the output streams, and `call`,
    the one way to send the daemon a request."""

    def __init__(self, name: str, options: Options, out: TextIO, err: TextIO,
                 execute: Callable[[list[str]], None] | None) -> None:
        self.name = name
        self.options = options
        self.out = out
        self.err = err
        #: tests run `ixc run`'s command through this instead of a child process
        self.execute = execute
        #: how long a request waits for a daemon that is restarting
        self.deadline = RETRY_DEADLINE
        self.as_json = options.json
        self.progress = Progress(err, options.verbose)

    @property
    def socket(self) -> str:
        return socket_path(self.options.socket, os.environ)

    def call(self, op: str, args: dict[str, Any], idempotent: bool = True,
             on_event: Callable[[Event], None] | None = None) -> Any:
        """Send one request and return its result; a request that lost its connection
        before the reply (or met a restarting daemon) is sent again once ixd is back, if
        `idempotent` and not `--no-retry`."""
        listener = self.progress if on_event is None else on_event
        path = self.socket
        try:
            with Client.connect(path) as client:
                return client.request(op, args, listener)
        except DaemonUnavailable as exc:
            # refused or missing: ixd may be restarting (runit brings it back); a socket we
            # may not use, or no socket at all, is said at once
            if self.options.no_retry or exc.from_wire or not exc.may_come_back:
                raise
            print(f"ixc: {exc.message.split(';')[0]}; waiting up to {self.deadline:.0f}s "
                  f"for ixd to come back (--no-retry fails at once)", file=self.err,
                  flush=True)
        except ConnectionLost as exc:
            # only a connection lost before the reply is retried: an error the daemon sent
            # (E_FRAME_TOO_LARGE, E_PROTOCOL, ...) would come back the same the second time
            if self.options.no_retry or not idempotent or exc.from_wire:
                raise
            print(f"ixc: {exc.message}; retrying once ixd is back", file=self.err, flush=True)
        with wait_for_daemon(path, self.deadline) as client:
            return client.request(op, args, listener)

    def show(self, value: Any, human: Callable[[Any, TextIO], None]) -> int:
        """Print a result: as JSON with --json, else as `human` prints it."""
        if self.as_json:
            print_json(value, self.out)
        else:
            human(value, self.out)
        return 0


def print_json(value: Any, out: TextIO) -> None:
    import json

    print(json.dumps(value, indent=1, sort_keys=True), file=out)


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

if __name__ == "__main__":
    sys.exit(main())
