"""What an `ixc` command is and what it runs with: `Command`, one entry of the command table
(`client.commands`), and `Context`, the options, output streams and `call`, the one way a
command talks to the daemon (retried once a restarting daemon is back).

On every command's path, so as light as `client.main` (see there): `os`, the wire transport
and the progress printer at run time, nothing more.
"""

from __future__ import annotations

import os

from client.progress import Progress
from ixd.wire.errors import ConnectionLost, DaemonUnavailable, ProtocolError
from ixd.wire.transport import DEFAULT_SOCKET, Client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TextIO

    from ixd.wire.frames import Event

    Run = Callable[["Context", list[str]], int]

#: how long `ixc` waits for a restarted daemon before giving up on a retry
RETRY_DEADLINE = 120.0
#: how long a command that only reads waits for it (a person is looking at the terminal)
READ_ONLY_DEADLINE = 5.0


class Command:
    """One entry of the table: its name, help and function."""

    __slots__ = ("detail", "name", "own_help", "read_only", "run", "summary", "synopsis")

    def __init__(self, synopsis: str, summary: str, run: Run, detail: str = "",
                 own_help: bool = False, read_only: bool = False) -> None:
        self.name = synopsis.split()[0]
        self.synopsis = synopsis
        #: one line in the help's list (a line break continues it, indented)
        self.summary = summary
        #: more, for `ixc COMMAND --help`
        self.detail = detail
        #: the command answers `--help` itself
        self.own_help = own_help
        #: it changes nothing: it waits at most a few seconds for a restarting daemon
        self.read_only = read_only
        self.run = run


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
