"""The socket side of ixd in-process: `Server.serve_stream` on trio's in-memory streams (as
trio's own tests do), with a made-up caller and request handler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from ixd.daemon.identity import Caller
from ixd.daemon.server import Server
from ixd.wire import protocol
from ixd.wire.errors import BadRequest

ALICE = Caller(uid=1001, gid=1001, pid=4242)
ROOT = Caller(uid=0, gid=0, pid=1)

Emit = Callable[[str, dict[str, Any]], None]


class Client:
    """The client's end of an in-memory connection, speaking the real protocol."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = protocol.Connection("client")

    async def hello(self) -> protocol.Message:
        """The server's hello, then ours (in this order, for a lockstep stream: the server
        sends its hello before reading)."""
        theirs = await self.receive()
        await self.stream.send_all(self.conn.send(protocol.Hello(protocol.PROTOCOL_VERSION,
                                                                 "test")))
        return theirs

    async def request(self, id: int, op: str, args: dict[str, Any] | None = None) -> None:
        await self.stream.send_all(self.conn.send(protocol.Request(id, op, args or {})))

    async def receive(self) -> protocol.Message:
        """The next message; AssertionError if the server closed the connection instead."""
        while True:
            msg = self.conn.next_event()
            if isinstance(msg, protocol.Sentinel):
                assert msg is protocol.NEED_DATA, "the server closed the connection"
                # (b"" at the end: the next message is CLOSED)
                self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
                continue
            return msg

    async def until_closed(self) -> list[protocol.Message]:
        """Every message up to the server's end of the stream."""
        received: list[protocol.Message] = []
        while True:
            msg = self.conn.next_event()
            if msg is protocol.CLOSED:
                return received
            if msg is protocol.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
                continue
            assert isinstance(msg, protocol.Message)
            received.append(msg)


def unchecked(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """These tests' ops are made up: their arguments reach them as sent."""
    return args


async def handle(op: str, args: dict[str, Any], caller: Caller, emit: Emit) -> Any:
    """The daemon's side for these tests: a few ops that show what the server does."""
    if op == "whoami":
        return {"uid": caller.uid, "pid": caller.pid}
    if op == "progress":
        for i in range(args["events"]):
            emit("line", {"n": i})
        return "done"
    if op == "sleep":
        await trio.sleep(args["seconds"])
        return "slept"
    if op == "wait":
        await args_events[args["name"]].wait()
        return "waited"
    if op == "refuse":
        raise BadRequest("not like this")
    raise RuntimeError("a bug in the handler")


#: events a `wait` request waits for, by name
args_events: dict[str, trio.Event] = {}


async def connect(nursery: trio.Nursery, server: Server, caller: Caller = ALICE,
                  stream_pair: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]
                  = trio.testing.memory_stream_pair) -> Client:
    client_end, server_end = stream_pair()
    nursery.start_soon(server.serve_stream, server_end, caller)
    client = Client(client_end)
    hello = await client.hello()
    assert isinstance(hello, protocol.Hello) and hello.agent.startswith("ixd ")
    return client


async def test_a_request_is_answered_with_its_id_and_the_callers_identity() -> None:
    async with trio.open_nursery() as nursery:
        client = await connect(nursery, Server(handle, check=unchecked))
        await client.request(7, "whoami")
        assert await client.receive() == protocol.Result(7, {"uid": 1001, "pid": 4242})
        await client.stream.aclose()


async def test_errors_are_replies_and_the_connection_stays_usable() -> None:
    async with trio.open_nursery() as nursery:
        client = await connect(nursery, Server(handle, check=unchecked))
        await client.request(1, "refuse")
        refused = await client.receive()
        assert isinstance(refused, protocol.Error) and refused.id == 1
        assert (refused.code, refused.message) == ("E_BAD_REQUEST", "not like this")
        await client.request(2, "explode")
        internal = await client.receive()
        assert isinstance(internal, protocol.Error) and internal.id == 2
        assert internal.code == "E_INTERNAL"
        assert "RuntimeError: a bug in the handler" in internal.message
        await client.request(3, "whoami")
        assert await client.receive() == protocol.Result(3, {"uid": 1001, "pid": 4242})
        await client.stream.aclose()


async def test_requests_on_one_connection_are_answered_as_each_finishes(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        client = await connect(nursery, Server(handle, check=unchecked))
        await client.request(1, "sleep", {"seconds": 60})
        await client.request(2, "whoami")
        assert await client.receive() == protocol.Result(2, {"uid": 1001, "pid": 4242})
        assert await client.receive() == protocol.Result(1, "slept")
        await client.stream.aclose()


async def test_events_come_before_their_reply_in_order() -> None:
    async with trio.open_nursery() as nursery:
        client = await connect(nursery, Server(handle, check=unchecked))
        await client.request(5, "progress", {"events": 3})
        received = [await client.receive() for _ in range(4)]
        assert received == [protocol.Event(5, "line", {"n": 0}),
                            protocol.Event(5, "line", {"n": 1}),
                            protocol.Event(5, "line", {"n": 2}),
                            protocol.Result(5, "done")]
        await client.stream.aclose()


async def test_events_a_client_does_not_read_are_dropped_and_counted() -> None:
    # a lockstep stream: nothing is buffered, so the server's queue fills while we do not read
    async with trio.open_nursery() as nursery:
        client = await connect(nursery, Server(handle, check=unchecked),
                               stream_pair=trio.testing.lockstep_stream_pair)
        await client.request(1, "progress", {"events": 5000})
        lines, dropped = 0, 0
        while True:
            msg = await client.receive()
            if isinstance(msg, protocol.Result):
                break
            assert isinstance(msg, protocol.Event)
            if msg.kind == "dropped":
                dropped += msg.data["count"]
            else:
                assert msg.data["n"] >= lines  # in order, with gaps
                lines += 1
        assert msg == protocol.Result(1, "done")
        assert dropped > 0 and lines + dropped == 5000
        await client.stream.aclose()


async def test_a_client_that_leaves_cancels_its_requests() -> None:
    args_events["never"] = trio.Event()
    cancelled = trio.Event()

    async def handle_tracking(op: str, args: dict[str, Any], caller: Caller,
                              emit: Emit) -> Any:
        try:
            return await handle(op, args, caller, emit)
        except trio.Cancelled:
            cancelled.set()
            raise

    async with trio.open_nursery() as nursery:
        client = await connect(nursery, Server(handle_tracking, check=unchecked))
        await client.request(1, "wait", {"name": "never"})
        await trio.testing.wait_all_tasks_blocked()
        await client.stream.aclose()
        with trio.fail_after(5):
            await cancelled.wait()


async def test_a_client_that_never_finishes_its_frame_is_cut_off(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        client = await connect(nursery, Server(handle, check=unchecked, frame_timeout=10))
        frame = client.conn.send(protocol.Request(1, "whoami", {}))
        start = trio.current_time()
        await client.stream.send_all(frame[:5])
        messages = await client.until_closed()
        assert trio.current_time() - start == pytest.approx(10, abs=1.5)
        assert len(messages) == 1 and isinstance(messages[0], protocol.Error)
        assert messages[0].code == "E_PROTOCOL"
        assert "waiting for the rest of a frame" in messages[0].message


async def test_an_idle_client_between_requests_is_not_cut_off(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        client = await connect(nursery, Server(handle, check=unchecked, frame_timeout=10))
        await trio.sleep(3600)
        await client.request(1, "whoami")
        assert await client.receive() == protocol.Result(1, {"uid": 1001, "pid": 4242})
        await client.stream.aclose()


async def test_connections_per_user_are_limited_but_not_roots(
        autojump_clock: trio.testing.MockClock) -> None:
    server = Server(handle, check=unchecked, max_per_user=2)
    async with trio.open_nursery() as nursery:
        held = [await connect(nursery, server) for _ in range(2)]
        client_end, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(server.serve_stream, server_end, ALICE)
        refused = Client(client_end)
        await client_end.send_all(refused.conn.send(
            protocol.Hello(protocol.PROTOCOL_VERSION, "test")))
        messages = await refused.until_closed()
        assert isinstance(messages[0], protocol.Hello)
        assert [m.code for m in messages[1:] if isinstance(m, protocol.Error)] == [
            "E_TOO_MANY_CONNECTIONS"]
        assert server.per_user == {1001: 2}
        roots = [await connect(nursery, server, ROOT) for _ in range(3)]
        assert server.per_user == {1001: 2, 0: 3}
        for client in [*held, *roots]:
            await client.stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert server.per_user == {}  # every connection's slot is given back


async def test_a_protocol_error_is_answered_then_the_connection_closed(
        autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        client = await connect(nursery, Server(handle, check=unchecked))
        await client.stream.send_all(b"\x00\x00\x00\x04\x93\x01\x02\x03")  # a list, no map
        messages = await client.until_closed()
        assert [type(m) for m in messages] == [protocol.Error]
        assert isinstance(messages[0], protocol.Error) and messages[0].code == "E_PROTOCOL"
