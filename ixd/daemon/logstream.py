"""Build logs to clients: whole files streamed in bounded pieces, running builds followed.

Nothing here holds a whole log. A file is read `LOG_CHUNK` bytes at a time in a worker thread
and each piece goes out as a `log-text` event (`{"uid", "text"}`) through the request's
`send`, which returns only once the client has taken the previous piece (see
`ixd.daemon.server.Emitter.send`): a slow reader slows the reading down, the daemon's memory stays
at a few pieces, and other clients are served in between.

Following a running build (`ixc log -f`) is the log so far, then every line the build's
output is relayed live with after, each exactly once. The builder writes the output to the
file first (in its log pump's thread: `ixd.store.buildlog`) and then hands the event loop
its lines together with where in the file they end (`Flight.log_end`). Subscribing to the
build and taking `log_end` happen in one step with no await in between, so the file up to
`log_end` is exactly what came before the first line the follower is handed. Only the log's
head is read from the file (past it, a log over its bound is a rolling ring): a follower
that joins a build after more output than that is told how much it does not see. Lines the
builder left out live (a build printing faster than the live budget) reach the follower as
a marker saying so. Live lines wait for a slow follower in a bounded backlog; one that falls
`FOLLOW_BACKLOG` behind gets `TooSlow`, never a silent gap.
"""

from __future__ import annotations

import codecs
import collections
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

import trio

from ixd.build.scheduler import Flight
from ixd.wire import events
from ixd.wire.errors import NoSuchBuild, TooSlow

#: bytes of a log file read and sent as one event; at most 3 bytes of UTF-8 per byte read
#: (invalid bytes become U+FFFD), so one event stays far below the frame limit
LOG_CHUNK = 256 * 1024
#: characters of live lines one follower may fall behind before it is cut off with TooSlow
FOLLOW_BACKLOG = 16 * 1024 * 1024
Send = Callable[[str, dict[str, Any]], Awaitable[None]]


async def serve_log(uid: str, path: Path, target: str, follow: bool,
                    find_flight: Callable[[], Flight | None], send: Send,
                    head: int = 1 << 62) -> dict[str, Any]:
    """`ixc log`: stream build `uid`'s log file through `send` (the request's
    `ixd.daemon.emit.Emit.send`), or follow the build while it runs (`head`: the bytes at the
    start of a running build's log that stay as written)."""
    if follow:
        flight = find_flight()
        if flight is not None:
            return await _follow(flight, uid, path, send, head)
    file = await trio.to_thread.run_sync(_open, path)
    if file is None:
        raise NoSuchBuild(f"no build log for {target} (uid {uid}): it was never built here"
                          + (" yet; it is queued" if find_flight() else ""))
    with file:
        size = await trio.to_thread.run_sync(lambda: os.fstat(file.fileno()).st_size)
        sent = await _stream(file, size, uid, send, whole_lines=False)
    return {"uid": uid, "size": sent}


def _open(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


async def _stream(file: BinaryIO, size: int, uid: str, send: Send, *,
                  whole_lines: bool) -> int:
    """Send the first `size` bytes of `file` in pieces of at most LOG_CHUNK bytes; with
    `whole_lines`, only up to the last newline (the rest of that line comes live). Returns
    the bytes read."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    read = 0
    carry = ""  # the start of a line whose end has not been read yet
    while read < size:
        chunk = await trio.to_thread.run_sync(file.read, min(LOG_CHUNK, size - read))
        if not chunk:
            break  # the file shrank: a new build of the same uid truncated it
        read += len(chunk)
        text = carry + decoder.decode(chunk)
        carry = ""
        if whole_lines:
            cut = text.rfind("\n") + 1
            if not cut and len(text) < LOG_CHUNK:
                carry = text
                continue
            # a "line" longer than a chunk goes in pieces, as the builder hands it on
            cut = cut or len(text)
            text, carry = text[:cut], text[cut:]
        if text:
            await send(events.LOG_TEXT, {"uid": uid, "text": text})
    if not whole_lines:
        tail = decoder.decode(b"", final=True)
        if tail:
            await send(events.LOG_TEXT, {"uid": uid, "text": tail})
    return read


class _Backlog:
    """A follower's listener on the build: live lines waiting to be sent, bounded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: collections.deque[str] = collections.deque()
        self.size = 0
        self.overflowed = False
        self.finished = False
        self._wake = trio.Event()

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if self.overflowed:
            return
        line = data.get("line")
        if kind == events.LOG_SKIPPED:
            line = (f"[ix: {data.get('count')} lines left out here: the build printed them "
                    f"faster than ixd relays output live; `ixc log` shows the log]")
        elif kind != events.LOG or not isinstance(line, str):
            return
        self.size += len(line) + 1
        if self.size > self.limit:
            self.overflowed = True
            self.lines.clear()
        else:
            self.lines.append(line)
        self._wake.set()

    def finish(self) -> None:
        self.finished = True
        self._wake.set()

    async def wait(self) -> None:
        await self._wake.wait()
        self._wake = trio.Event()

    def take(self, limit: int) -> str:
        """Waiting lines, oldest first, up to `limit` characters (at least one line)."""
        if self.overflowed:
            raise TooSlow(f"the followed log ran more than {self.limit} characters ahead of "
                          f"this client, so the daemon stopped sending it rather than leave a "
                          f"gap; read the whole log with `ixc log UID` once the build is done")
        parts: list[str] = []
        taken = 0
        while self.lines and (not parts or taken + len(self.lines[0]) + 1 <= limit):
            line = self.lines.popleft()
            parts.append(line)
            taken += len(line) + 1
        self.size -= taken
        return "".join(f"{line}\n" for line in parts)


def _subscribe(flight: Flight, path: Path, backlog: _Backlog, head: int
               ) -> tuple[BinaryIO | None, int, int]:
    """Listen to `flight` and take where its log is, in one step (no await): the file, the
    bytes to send from it, and the bytes after those that the follower does not get (past
    the log's head)."""
    file = None
    size = cut = 0
    if flight.started is not None and flight.log_end:
        file = _open(path)
        if file is not None:
            size = min(flight.log_end, head)
            cut = flight.log_end - size
    flight.listeners.append(backlog)
    return file, size, cut


async def _follow(flight: Flight, uid: str, path: Path, send: Send, head: int
                  ) -> dict[str, Any]:
    backlog = _Backlog(FOLLOW_BACKLOG)
    file, size, cut = _subscribe(flight, path, backlog, head)
    try:
        if file is not None:
            with file:
                await _stream(file, size, uid, send, whole_lines=not cut)
        if cut:
            await send(events.LOG_TEXT, {"uid": uid, "text": (
                f"\n[ix: {cut} bytes of output not shown here: a follower reads the first "
                f"{head} bytes of a log, then what the build prints from now on; `ixc log` "
                f"shows the whole log once the build is done]\n")})
        failed: TooSlow | None = None  # raised outside the nursery, not in a group
        async with trio.open_nursery() as nursery:

            async def finish_when_done() -> None:
                await flight.done.wait()
                backlog.finish()

            nursery.start_soon(finish_when_done)
            try:
                while True:
                    text = backlog.take(LOG_CHUNK)
                    if text:
                        await send(events.LOG_TEXT, {"uid": uid, "text": text})
                    elif backlog.finished:
                        break
                    else:
                        await backlog.wait()
            except TooSlow as exc:
                failed = exc
            nursery.cancel_scope.cancel()
        if failed is not None:
            raise failed
    finally:
        flight.listeners.remove(backlog)
    return {"uid": uid, "followed": True,
            "error": flight.error.message if flight.error else None}
