"""`ixc` retries a request only when it lost the connection before the reply, never after an
error the daemon sent (a fake daemon on a real Unix socket)."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from client import main as ixc
from ixd.wire.protocol import PROTOCOL_VERSION, Error, Hello, Result
from tests.test_transport import Peer

Script = Callable[[Peer], None]


@contextmanager
def fake_daemon(path: Path, scripts: list[Script]) -> Iterator[list[int]]:
    """Serve one connection per script, in order; yields the list of connections served."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    served: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def run() -> None:
        try:
            for script in scripts:
                sock, _ = listener.accept()
                if stop.is_set():  # the connection that wakes the thread at the end
                    sock.close()
                    return
                with sock:
                    served.append(1)
                    peer = Peer(sock)
                    peer.send(Hello(version=PROTOCOL_VERSION, agent="fake ixd"))
                    assert isinstance(peer.receive(), Hello)
                    script(peer)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        stop.set()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wake:
            wake.connect(str(path))  # a thread still waiting in accept() sees `stop`
        thread.join(timeout=10)
        listener.close()
    assert not thread.is_alive()
    if failures:
        raise failures[0]


def _pong(peer: Peer) -> None:
    request = peer.request()
    peer.send(Result(id=request.id, value={"version": "x", "login": "root", "uid": 0}))


def _run(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = ixc.main(["--socket", str(path), "ping"], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("code", ["E_FRAME_TOO_LARGE", "E_PROTOCOL", "E_CONNECTION_LOST",
                                  "E_NO_DAEMON"])
def test_an_error_the_daemon_sent_is_not_retried(tmp_path: Path, code: str) -> None:
    path = tmp_path / "ixd.sock"

    def refuse(peer: Peer) -> None:
        peer.request()
        peer.send(Error(id=None, code=code, message=f"the daemon says {code}"))

    with fake_daemon(path, [refuse, _pong]) as served:
        status, out, err = _run(path)
    assert status != 0
    assert f"[{code}]" in err
    assert "retrying" not in err and "waiting for ixd" not in err
    assert out == ""
    assert len(served) == 1  # no second connection


def test_a_connection_lost_before_the_reply_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "ixd.sock"

    def hang_up(peer: Peer) -> None:
        peer.request()  # then the connection closes without a reply

    with fake_daemon(path, [hang_up, _pong]) as served:
        status, out, err = _run(path)
    assert status == 0, err
    assert "retrying once ixd is back" in err
    assert "answers root" in out
    assert len(served) == 2


def test_no_retry_fails_at_once_on_a_lost_connection(tmp_path: Path) -> None:
    path = tmp_path / "ixd.sock"

    def hang_up(peer: Peer) -> None:
        peer.request()

    with fake_daemon(path, [hang_up]) as served:
        out, err = io.StringIO(), io.StringIO()
        status = ixc.main(["--socket", str(path), "--no-retry", "ping"], out=out, err=err)
    assert status != 0 and "[E_CONNECTION_LOST]" in err.getvalue()
    assert len(served) == 1
