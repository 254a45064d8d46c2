"""The socket side of ixd: frames in, requests dispatched, events and replies out.

A thin trio wrapper around the sans-IO `ixd.protocol.Connection`. Each connection is served
in its own task; each request in its own task, so one client may wait for a build while
asking for status on the same connection. Identity comes from SO_PEERCRED. A client that goes
away cancels its requests, which drops its interest in any build it waited for.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ixd import protocol
from ixd.daemon import VERSION, Caller
from ixd.errors import InternalError, IxError, ProtocolError, TooManyConnections

log = logging.getLogger("ixd.server")

RequestHandler = Callable[[str, dict[str, Any], Caller, Callable[[str, dict[str, Any]], None]],
                          Awaitable[Any]]

_RECV_SIZE = 64 * 1024
#: events waiting to be sent to one slow client before further ones are dropped
_EVENT_BACKLOG = 1024


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
                 max_per_user: int = 64) -> None:
        self.handle = handle
        self.frame_timeout = frame_timeout
        self.max_per_user = max_per_user
        self.per_user: dict[int, int] = {}

    async def serve(self, listener: trio.SocketListener, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._serve_connection, stream)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        caller = peer_credentials(stream.socket)
        held = self.per_user.get(caller.uid, 0)
        self.per_user[caller.uid] = held + 1
        try:
            if held >= self.max_per_user and caller.uid != 0:
                await _refuse(stream, TooManyConnections(
                    f"uid {caller.uid} already holds {held} connections to ixd (the limit is "
                    f"{self.max_per_user}); close some and try again"))
                return
            await _Connection(stream, caller, self.handle, self.frame_timeout).run()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("connection handler failed")
        finally:
            self.per_user[caller.uid] -= 1
            if not self.per_user[caller.uid]:
                del self.per_user[caller.uid]
            await trio.aclose_forcefully(stream)


async def _refuse(stream: trio.SocketStream, error: IxError) -> None:
    conn = protocol.Connection("server")
    hello = protocol.Hello(protocol.PROTOCOL_VERSION, f"ixd {VERSION}")
    with trio.move_on_after(1):
        await stream.send_all(conn.send(hello) + conn.send(protocol.error_message(error, None)))
    await _drain(stream)


async def _drain(stream: trio.SocketStream) -> None:
    """Read what the client still sends, briefly, until it hangs up: closing a Unix socket
    with unread bytes resets it, and the client would lose the error just sent."""
    with trio.move_on_after(1):
        while await stream.receive_some(_RECV_SIZE):
            pass


class _Connection:
    def __init__(self, stream: trio.SocketStream, caller: Caller,
                 handle: RequestHandler, frame_timeout: float) -> None:
        self.stream = stream
        self.frame_timeout = frame_timeout
        self.caller = caller
        self.handle = handle
        self.conn = protocol.Connection("server")
        # events and replies leave in one queue, so a reply never overtakes its events
        self.out_send, self.out_receive = trio.open_memory_channel[protocol.Message](
            _EVENT_BACKLOG)

    async def run(self) -> None:
        hello = protocol.Hello(protocol.PROTOCOL_VERSION, f"ixd {VERSION}")
        await self.stream.send_all(self.conn.send(hello))
        async with trio.open_nursery() as outer:
            outer.start_soon(self._pump_out)
            async with trio.open_nursery() as requests:
                final = await self._read_requests(requests)
                # the client left or broke the protocol: its requests are cancelled,
                # which drops its interest in the builds they waited for
                requests.cancel_scope.cancel()
            if final is not None:
                await self.out_send.send(final)
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
                    self.conn.receive_data(data)
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
        async for msg in self.out_receive:
            try:
                frame = self.conn.send(msg)
            except IxError as exc:  # e.g. a result too large for one frame
                if not isinstance(msg, protocol.Result):
                    continue
                frame = self.conn.send(protocol.error_message(exc, msg.id))
            await self.stream.send_all(frame)

    async def _answer(self, request: protocol.Request) -> None:
        def emit(kind: str, data: dict[str, Any]) -> None:
            try:
                self.out_send.send_nowait(protocol.Event(request.id, kind, data))
            except trio.WouldBlock:
                pass  # a client too slow to read progress loses some, never blocks builds

        log.info("request accepted: user=%s uid=%d op=%s id=%d", self.caller.login,
                 self.caller.uid, request.op, request.id)
        reply: protocol.Message
        try:
            value = await self.handle(request.op, request.args, self.caller, emit)
            reply = protocol.Result(request.id, value)
        except IxError as exc:
            reply = protocol.error_message(exc, request.id)
        except Exception as exc:
            log.exception("internal error in op %s", request.op)
            reply = protocol.error_message(
                InternalError(f"internal error in {request.op}: {type(exc).__name__}: {exc}"),
                request.id)
        await self.out_send.send(reply)
