"""The socket side of ixd: frames in, requests dispatched, events and replies out.

A thin trio wrapper around the sans-IO `ixd.wire.protocol.Connection`. Each connection is served
in its own task; each request in its own task, so one client may wait for a build while
asking for status on the same connection. Identity comes from SO_PEERCRED. A client that goes
away cancels its requests, which drops its interest in any build it waited for.

Events reach a client two ways (see `Emitter`): progress is never allowed to block a build,
so what does not fit a slow client's queue is dropped and counted, and the client is told;
a streamed log waits for the client instead, so nothing of it is lost or piled up.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ixd import __version__
from ixd.daemon.identity import Caller
from ixd.wire import events, protocol
from ixd.wire.errors import InternalError, IxError, ProtocolError, TooManyConnections
from ixd.wire.ops import check_request

log = logging.getLogger("ixd.daemon.server")

#: runs a request: its op, its arguments as `check` made them, the caller, and where its
#: events go (an `Emitter`)
RequestHandler = Callable[[str, Any, Caller, "Emitter"], Awaitable[Any]]
#: checks a request's arguments before it runs (`ixd.wire.ops.check_request`)
RequestCheck = Callable[[str, dict[str, Any]], Any]

_RECV_SIZE = 64 * 1024
#: bytes of queued frames written to a client's socket in one go (more wait for the next)
_SEND_SIZE = 256 * 1024
#: messages waiting to be sent to one client before further progress events are dropped
_EVENT_BACKLOG = 1024
#: bytes of progress events (mostly build log lines) waiting for one client, likewise
_EVENT_BACKLOG_BYTES = 4 * 1024 * 1024
#: accept() failures that mean "out of a resource for now" (file descriptors, memory): the
#: daemon waits and accepts again, as trio.serve_listeners does, instead of dying
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: how long to wait before accepting again after such a failure
ACCEPT_BACKOFF = 0.1
#: at most one log message about such failures per this many seconds
_ACCEPT_LOG_INTERVAL = 10.0


def peer_credentials(sock: trio.socket.SocketType) -> Caller:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Caller(uid=uid, gid=gid, pid=pid)


async def open_unix_listener(path: Path) -> trio.SocketListener:
    """A listening socket at `path`, usable by every local user (authorisation is by uid)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    await sock.bind(str(tmp))
    os.chmod(tmp, 0o666)
    os.replace(tmp, path)  # a restart takes the path over atomically
    sock.listen(128)
    return trio.SocketListener(sock)


class Server:
    """Accepts connections; bounds how many one user may hold and how long a peer may take
    to say hello or to finish a frame it started, so silent or trickling clients cost a
    connection slot of their own user and nothing else."""

    def __init__(self, handle: RequestHandler, *, frame_timeout: float = 10.0,
                 max_per_user: int = 64, check: RequestCheck = check_request) -> None:
        self.handle = handle
        #: every request's arguments pass here once, before `handle` sees them
        self.check = check
        self.frame_timeout = frame_timeout
        self.max_per_user = max_per_user
        self.per_user: dict[int, int] = {}
        #: accept() failures for lack of a resource since the daemon started
        self.accept_failures = 0

    async def serve(self, listener: trio.SocketListener, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await self._accept(listener)
                nursery.start_soon(self._serve_connection, stream)

    async def _accept(self, listener: trio.SocketListener) -> trio.SocketStream:
        """The next connection; out of file descriptors (or memory), wait and try again:
        connections already open go on, and the ones waiting are accepted once some close."""
        logged = -math.inf
        while True:
            try:
                return await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                self.accept_failures += 1
                if trio.current_time() - logged >= _ACCEPT_LOG_INTERVAL:
                    logged = trio.current_time()
                    log.error("cannot accept a connection: %s (%d open); retrying every %ss",
                              os.strerror(exc.errno or 0), sum(self.per_user.values()),
                              ACCEPT_BACKOFF)
                await trio.sleep(ACCEPT_BACKOFF)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        await self.serve_stream(stream, peer_credentials(stream.socket))

    async def serve_stream(self, stream: trio.abc.Stream, caller: Caller) -> None:
        """Serve one connection of `caller` until it ends (for a socket, the caller comes
        from its peer credentials; in-process tests give a memory stream and a caller)."""
        held = self.per_user.get(caller.uid, 0)
        self.per_user[caller.uid] = held + 1
        try:
            if held >= self.max_per_user and caller.uid != 0:
                await _refuse(stream, TooManyConnections(
                    f"uid {caller.uid} already holds {held} connections to ixd (the limit is "
                    f"{self.max_per_user}); close some and try again"))
                return
            try:
                await _Connection(stream, caller, self.handle, self.check,
                                  self.frame_timeout).run()
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away (reset, or closed mid-reply)
        except Exception:
            log.exception("connection handler failed")
        finally:
            self.per_user[caller.uid] -= 1
            if not self.per_user[caller.uid]:
                del self.per_user[caller.uid]
            await trio.aclose_forcefully(stream)


async def _refuse(stream: trio.abc.Stream, error: IxError) -> None:
    conn = protocol.Connection("server")
    hello = protocol.Hello(protocol.PROTOCOL_VERSION, f"ixd {__version__}")
    with trio.move_on_after(1):
        await stream.send_all(conn.send(hello) + conn.send(protocol.error_message(error, None)))
    await _drain(stream)


async def _drain(stream: trio.abc.Stream) -> None:
    """Read what the client still sends, briefly, until it hangs up: closing a Unix socket
    with unread bytes resets it, and the client would lose the error just sent."""
    with trio.move_on_after(1):
        while await stream.receive_some(_RECV_SIZE):
            pass


#: a message on its way out: the event to set once it is written (or given up), and the
#: bytes it counts for in `_Connection.queued_bytes`
_Outgoing = tuple[protocol.Message, trio.Event | None, int]


class Emitter:
    """How one request's events reach its client.

    Calling it is the scheduler's and the builders' progress path and never blocks: when the
    connection's queue is full (a client not reading), the event is dropped and counted, and
    a `dropped` event with the count goes out ahead of the next event there is room for, at
    the latest before the reply, so a gap is never silent.

    `await send(kind, data)` is the path of a streamed or followed log: it returns once the
    previous event it sent was written to the socket, so at most two of its events are in
    the daemon at a time and a slow reader slows the sender down; nothing is dropped.
    """

    def __init__(self, connection: _Connection, request_id: int) -> None:
        self._connection = connection
        self.request_id = request_id
        #: progress events dropped since the client was last told
        self.dropped = 0
        self._in_flight: trio.Event | None = None

    def __call__(self, kind: str, data: dict[str, Any], /) -> None:
        if self.dropped:
            if not self._connection.offer(self._dropped_event()):
                self.dropped += 1
                return
            self.dropped = 0
        if not self._connection.offer(protocol.Event(self.request_id, kind, data)):
            self.dropped += 1

    async def send(self, kind: str, data: dict[str, Any], /) -> None:
        if self._in_flight is not None:
            await self._in_flight.wait()
        written = trio.Event()
        await self._connection.out_send.send(
            (protocol.Event(self.request_id, kind, data), written, 0))
        self._in_flight = written

    async def flush(self) -> None:
        """Before the reply: tell the client about progress events it missed."""
        if self.dropped:
            await self._connection.out_send.send((self._dropped_event(), None, 0))
            self.dropped = 0

    def _dropped_event(self) -> protocol.Event:
        return protocol.Event(self.request_id, events.DROPPED, {"count": self.dropped})


def _weight(msg: protocol.Message) -> int:
    """Roughly the bytes a queued progress event holds (its log line, mostly)."""
    if not isinstance(msg, protocol.Event):
        return 0
    return 64 + sum(len(v) for v in msg.data.values() if isinstance(v, str | bytes))


class _Connection:
    def __init__(self, stream: trio.abc.Stream, caller: Caller,
                 handle: RequestHandler, check: RequestCheck, frame_timeout: float) -> None:
        self.stream = stream
        self.frame_timeout = frame_timeout
        self.caller = caller
        self.handle = handle
        self.check = check
        self.conn = protocol.Connection("server")
        # events and replies leave in one queue, so a reply never overtakes its events
        self.out_send, self.out_receive = trio.open_memory_channel[_Outgoing](_EVENT_BACKLOG)
        #: bytes of progress events queued (see `offer`)
        self.queued_bytes = 0

    def offer(self, msg: protocol.Message) -> bool:
        """Queue a progress event if the client keeps up; False (not queued) otherwise."""
        weight = _weight(msg)
        if self.queued_bytes + weight > _EVENT_BACKLOG_BYTES:
            return False
        try:
            self.out_send.send_nowait((msg, None, weight))
        except trio.WouldBlock:
            return False
        self.queued_bytes += weight
        return True

    async def run(self) -> None:
        hello = protocol.Hello(protocol.PROTOCOL_VERSION, f"ixd {__version__}")
        await self.stream.send_all(self.conn.send(hello))
        async with trio.open_nursery() as outer:
            outer.start_soon(self._pump_out)
            async with trio.open_nursery() as requests:
                final = await self._read_requests(requests)
                # the client left or broke the protocol: its requests are cancelled,
                # which drops its interest in the builds they waited for
                requests.cancel_scope.cancel()
            if final is not None:
                await self.out_send.send((final, None, 0))
            self.out_send.close()
        if final is not None:
            await _drain(self.stream)

    async def _read_requests(self, nursery: trio.Nursery) -> protocol.Error | None:
        """Dispatch requests until the stream ends (None) or breaks the protocol."""
        # Between requests a client may idle; a hello or a frame it started must arrive
        # whole within frame_timeout of its first byte, however the bytes trickle in.
        deadline = trio.current_time() + self.frame_timeout
        while True:
            try:
                msg = self.conn.next_event()
            except ProtocolError as exc:
                log.warning("uid %d broke the protocol: %s", self.caller.uid, exc.message)
                return protocol.error_message(exc, None)
            if msg is protocol.NEED_DATA:
                pending = self.conn.peer_hello is None or self.conn.buffered > 0
                with trio.move_on_at(deadline if pending else math.inf):
                    data = await self.stream.receive_some(_RECV_SIZE)
                    if not pending:  # a new frame starts with these bytes
                        deadline = trio.current_time() + self.frame_timeout
                    # (a socket gives bytes; other streams may give a bytearray)
                    self.conn.receive_data(data if isinstance(data, bytes) else bytes(data))
                    continue
                what = "hello" if self.conn.peer_hello is None else "the rest of a frame"
                log.warning("uid %d: no %s within %ss; closing", self.caller.uid, what,
                            self.frame_timeout)
                return protocol.error_message(ProtocolError(
                    f"timed out after {self.frame_timeout}s waiting for {what}"), None)
            elif msg is protocol.CLOSED:
                return None
            elif isinstance(msg, protocol.Request):
                nursery.start_soon(self._answer, msg)

    async def _pump_out(self) -> None:
        """Write what is queued, in order; what has gathered goes in one write (a build's
        end and the next one's start, say), up to _SEND_SIZE bytes."""
        async for first in self.out_receive:
            batch = [first]
            self.queued_bytes -= first[2]
            try:
                frames = [self._frame(first[0])]
                size = len(frames[0])
                while size < _SEND_SIZE:
                    try:
                        batch.append(self.out_receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    self.queued_bytes -= batch[-1][2]
                    frames.append(self._frame(batch[-1][0]))
                    size += len(frames[-1])
                if size:
                    await self.stream.send_all(b"".join(frames))
            finally:
                for _, written, _ in batch:
                    if written is not None:
                        written.set()

    def _frame(self, msg: protocol.Message) -> bytes:
        """The frame of `msg`; a result too large for one is replaced by the error, an event
        is left out (b"")."""
        try:
            return self.conn.send(msg)
        except IxError as exc:
            if not isinstance(msg, protocol.Result):
                log.warning("uid %d: %s event not sent: %s", self.caller.uid, msg.TYPE,
                            exc.message)
                return b""
            return self.conn.send(protocol.error_message(exc, msg.id))

    async def _answer(self, request: protocol.Request) -> None:
        emit = Emitter(self, request.id)
        log.info("request accepted: user=%s uid=%d op=%s id=%d", self.caller.login,
                 self.caller.uid, request.op, request.id)
        reply: protocol.Message
        try:
            protocol.check_request_size(request.args)
            args = self.check(request.op, request.args)
            value = await self.handle(request.op, args, self.caller, emit)
            reply = protocol.Result(request.id, value)
        except IxError as exc:
            reply = protocol.error_message(exc, request.id)
        except Exception as exc:
            log.exception("internal error in op %s", request.op)
            reply = protocol.error_message(
                InternalError(f"internal error in {request.op}: {type(exc).__name__}: {exc}"),
                request.id)
        await emit.flush()
        await self.out_send.send((reply, None, 0))
