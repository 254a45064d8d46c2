"""The blocking client against a real AF_UNIX socket served by a thread in the test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ixd.wire.errors import (
    ConnectionLost,
    DaemonUnavailable,
    IxError,
    NoSuchRealm,
    ProtocolError,
    UnknownOp,
    VersionMismatch,
)
from ixd.wire.protocol import (
    CLOSED,
    NEED_DATA,
    PROTOCOL_VERSION,
    Connection,
    Error,
    Event,
    Hello,
    Message,
    Request,
    Result,
    error_message,
)
from ixd.wire.transport import Client


class Peer:
    """The daemon's side of one accepted connection, driven step by step by a test."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = Connection("server")

    def send(self, msg: Message) -> None:
        self.sock.sendall(self.conn.send(msg))

    def receive(self) -> Message | None:
        """The next message, or None once the client closed the stream."""
        while (msg := self.conn.next_event()) is NEED_DATA:
            self.conn.receive_data(self.sock.recv(4096))
        return None if msg is CLOSED else msg

    def request(self) -> Request:
        msg = self.receive()
        assert isinstance(msg, Request)
        return msg


Script = Callable[[Peer], None]


@contextmanager
def serve(path: Path, script: Script, hello: Hello | None = None) -> Iterator[None]:
    """Serve one connection on `path`: exchange hellos, then run `script` on it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    # Bounds a test whose client never connects; not used to synchronise anything.
    listener.settimeout(10)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            sock, _ = listener.accept()
            with sock:
                peer = Peer(sock)
                peer.send(hello or Hello(version=PROTOCOL_VERSION, agent="test ixd"))
                assert isinstance(peer.receive(), Hello)
                script(peer)
        except BaseException as exc:  # reported in the test's thread below
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=10)
        listener.close()
    assert not thread.is_alive(), "the test server did not finish"
    if failures:
        raise failures[0]


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "ixd.sock"


def test_request_returns_the_result(sock_path: Path) -> None:
    def script(peer: Peer) -> None:
        req = peer.request()
        assert (req.id, req.op, req.args) == (1, "ping", {"n": 1})
        peer.send(Result(id=req.id, value={"pong": 1}))
        req = peer.request()
        assert req.id == 2
        peer.send(Result(id=req.id, value=[b"\x00", None]))

    with serve(sock_path, script), Client.connect(sock_path) as client:
        assert client.request("ping", {"n": 1}) == {"pong": 1}
        assert client.request("ping", {}) == [b"\x00", None]


def test_events_arrive_before_the_result(sock_path: Path) -> None:
    def script(peer: Peer) -> None:
        req = peer.request()
        for done in range(3):
            peer.send(Event(id=req.id, kind="progress", data={"done": done}))
        peer.send(Event(id=req.id, kind="log", data={"line": "ok"}))
        peer.send(Result(id=req.id, value="built"))

    seen: list[Event] = []
    with serve(sock_path, script), Client.connect(sock_path) as client:
        assert client.request("build", {"pkg": "bin/hello"}, on_event=seen.append) == "built"
    assert [(e.kind, e.data) for e in seen] == [
        ("progress", {"done": 0}),
        ("progress", {"done": 1}),
        ("progress", {"done": 2}),
        ("log", {"line": "ok"}),
    ]


def test_events_without_a_callback_are_dropped(sock_path: Path) -> None:
    def script(peer: Peer) -> None:
        req = peer.request()
        peer.send(Event(id=req.id, kind="log", data={}))
        peer.send(Result(id=req.id, value=1))

    with serve(sock_path, script), Client.connect(sock_path) as client:
        assert client.request("x", {}) == 1


@pytest.mark.parametrize(
    ("exc", "request_id"),
    [
        (UnknownOp("no op 'frob'"), 1),
        (NoSuchRealm("no realm 'bob'"), 1),
        (ProtocolError("bad frame"), None),
    ],
)
def test_an_error_reply_raises_its_ix_error(
    sock_path: Path, exc: IxError, request_id: int | None
) -> None:
    def script(peer: Peer) -> None:
        peer.request()
        peer.send(error_message(exc, request_id))

    with serve(sock_path, script), Client.connect(sock_path) as client:
        with pytest.raises(type(exc)) as caught:
            client.request("frob", {})
    assert type(caught.value) is type(exc)
    assert caught.value.message == exc.message


def test_an_unknown_error_code_still_raises_an_ix_error(sock_path: Path) -> None:
    def script(peer: Peer) -> None:
        req = peer.request()
        peer.send(Error(id=req.id, code="E_FROM_THE_FUTURE", message="new"))

    with serve(sock_path, script), Client.connect(sock_path) as client:
        with pytest.raises(IxError, match="new") as caught:
            client.request("x", {})
    assert caught.value.code == "E_FROM_THE_FUTURE"


def test_replies_to_an_abandoned_request_are_skipped(sock_path: Path) -> None:
    def script(peer: Peer) -> None:
        first = peer.request()
        peer.send(Event(id=first.id, kind="log", data={}))
        peer.send(Result(id=first.id, value="late"))
        second = peer.request()
        peer.send(Result(id=second.id, value="second"))

    class Abandon(Exception):
        pass

    def interrupt(event: Event) -> None:
        raise Abandon

    with serve(sock_path, script), Client.connect(sock_path) as client:
        with pytest.raises(Abandon):
            client.request("slow", {}, on_event=interrupt)
        assert client.request("fast", {}) == "second"


def test_a_reply_to_a_future_request_is_a_protocol_error(sock_path: Path) -> None:
    def script(peer: Peer) -> None:
        req = peer.request()
        peer.send(Result(id=req.id + 1, value=None))

    with serve(sock_path, script), Client.connect(sock_path) as client:
        with pytest.raises(ProtocolError, match="unexpected result"):
            client.request("x", {})


def test_server_closing_before_the_reply_is_connection_lost(sock_path: Path) -> None:
    def script(peer: Peer) -> None:
        req = peer.request()
        peer.send(Event(id=req.id, kind="log", data={}))
        # leaving the script closes the socket

    with serve(sock_path, script), Client.connect(sock_path) as client:
        with pytest.raises(ConnectionLost, match="before answering 'build'"):
            client.request("build", {})


def test_server_closing_during_the_handshake_is_connection_lost(sock_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen()
    with listener:

        def accept_and_close() -> None:
            sock, _ = listener.accept()
            with sock:
                # Read the client's hello first, so that its write cannot fail instead.
                assert isinstance(Peer(sock).receive(), Hello)

        thread = threading.Thread(target=accept_and_close)
        thread.start()
        with pytest.raises(ConnectionLost, match="during the handshake"):
            Client.connect(sock_path)
        thread.join()


def test_a_server_of_another_version_is_refused(sock_path: Path) -> None:
    other = Hello(version=PROTOCOL_VERSION + 1, agent="ixd 9")

    def wait_for_hang_up(peer: Peer) -> None:
        assert peer.receive() is None

    with serve(sock_path, wait_for_hang_up, hello=other):
        with pytest.raises(VersionMismatch, match=f"version {PROTOCOL_VERSION + 1}"):
            Client.connect(sock_path)


def test_the_client_sends_its_hello_first(sock_path: Path) -> None:
    hellos: list[Any] = []

    def script(peer: Peer) -> None:
        hellos.append(peer.conn.peer_hello)
        peer.send(Result(id=peer.request().id, value=None))

    with serve(sock_path, script), Client.connect(sock_path, agent="ixc test") as client:
        client.request("x", {})
    assert hellos == [Hello(version=PROTOCOL_VERSION, agent="ixc test")]


def test_a_missing_socket_is_daemon_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "var" / "ixd.sock"
    with pytest.raises(DaemonUnavailable) as caught:
        Client.connect(path)
    message = caught.value.message
    assert str(path) in message
    assert f"is ixd running? start it with `ixd --root {tmp_path}`" in message


def test_a_refused_socket_is_daemon_unavailable(sock_path: Path) -> None:
    # A socket file nobody listens on, as a crashed daemon leaves behind.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(sock_path))
    with pytest.raises(DaemonUnavailable, match="is ixd running") as caught:
        Client.connect(sock_path)
    assert str(sock_path) in caught.value.message
    assert "`ixd --root ROOT`" in caught.value.message


def test_a_closed_client_refuses_requests(sock_path: Path) -> None:
    with serve(sock_path, lambda peer: None):
        client = Client.connect(sock_path)
        client.close()
        client.close()
    with pytest.raises(ConnectionLost, match="is closed"):
        client.request("x", {})
