"""How an op reports to its client while it runs: `Emit`, the request's side of the server's
`Emitter` (`ixd.daemon.server`), and `Relay`, the same over a plain listener for callers
without a connection (tests, in-process use)."""

from __future__ import annotations

from typing import Any, Protocol

import trio

from ixd.build.scheduler import Listener


class Emit(Listener, Protocol):
    """Calling it reports progress and never blocks (what a slow client cannot take is
    dropped and counted); `await send(kind, data)` is for what must not be lost (a log, a
    plan's pieces): it waits until the client took the previous one."""

    async def send(self, kind: str, data: dict[str, Any], /) -> None: ...


class Relay:
    """An `Emit` that hands every event to `listener` at once (`send` waits for nobody)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def __call__(self, kind: str, data: dict[str, Any], /) -> None:
        self.listener(kind, data)

    async def send(self, kind: str, data: dict[str, Any], /) -> None:
        self.listener(kind, data)
        await trio.lowlevel.checkpoint()


def discard(kind: str, data: dict[str, Any], /) -> None:
    """A listener that drops every event."""
