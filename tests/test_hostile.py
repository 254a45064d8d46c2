"""Hostile input: broken frames, silent and trickling clients, fuzzed requests.

Each gets an error reply or a closed connection; the daemon never crashes and other clients
are not delayed.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ixd.daemon.core import Config, Daemon
from ixd.daemon.emit import Relay, discard
from ixd.daemon.identity import Caller
from ixd.model.realm import patch_from_wire
from ixd.wire import protocol
from ixd.wire.errors import IxError, ProtocolError
from ixd.wire.ops import OPS, check_request
from ixd.wire.transport import Client
from tests.daemon_harness import HOST_TOOLS_SETTINGS, PROJECT, RunningDaemon, public_daemon

FRAME_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    with public_daemon("ix-hostile-", ["--frame-timeout", str(FRAME_TIMEOUT),
                                       "--max-connections-per-user", "3"]) as running:
        yield running


def raw(daemon: RunningDaemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(daemon.socket))
    return sock


def frame(body: dict[str, Any] | bytes) -> bytes:
    data = body if isinstance(body, bytes) else msgpack.packb(body)
    return struct.pack(">I", len(data)) + data


HELLO = frame({"t": "hello", "version": protocol.PROTOCOL_VERSION, "agent": "hostile"})


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def replies(sock: socket.socket) -> list[protocol.Message]:
    """Every message the daemon sends until it closes the connection."""
    conn = protocol.Connection("client")
    conn.hello_sent = True  # we speak raw bytes; only decode what comes back
    received = []
    while True:
        data = sock.recv(65536)
        conn.receive_data(data)
        while True:
            msg = conn.next_event()
            if msg is protocol.NEED_DATA:
                break
            if msg is protocol.CLOSED:
                return received
            received.append(msg)


def error_codes(messages: list[protocol.Message]) -> list[str]:
    return [m.code for m in messages if isinstance(m, protocol.Error)]


def ping_seconds(daemon: RunningDaemon) -> float:
    start = time.monotonic()
    with Client.connect(daemon.socket) as client:
        client.request("ping", {})
    return time.monotonic() - start


@pytest.mark.parametrize(("payload", "code"), [
    (struct.pack(">I", 1 << 30), "E_FRAME_TOO_LARGE"),
    (frame(b"\x93\x01\x02\x03"), "E_PROTOCOL"),  # a list, not a map
    (frame({"t": "nonsense"}), "E_PROTOCOL"),
    (frame({"t": "req", "id": "one", "op": "ping", "args": {}}), "E_PROTOCOL"),
    (frame(b"\x81\xa1t\xa3\xff\xfe\xfd"), "E_PROTOCOL"),  # invalid UTF-8
    (frame({"t": "req", "id": 1, "op": "ping", "args": {"a": _nested(40)}}), "E_PROTOCOL"),
    (frame({"t": "result", "id": 1, "value": 1}), "E_PROTOCOL"),  # not a server's to get
])
def test_broken_frames_get_an_error_and_a_closed_connection(
        daemon: RunningDaemon, payload: bytes, code: str) -> None:
    with raw(daemon) as sock:
        sock.sendall(HELLO + payload)
        # all sent: the daemon, which reads on after an error until the client is done
        # (so the error is not lost in a reset), sees at once that we are
        sock.shutdown(socket.SHUT_WR)
        assert error_codes(replies(sock)) == [code]
    assert ping_seconds(daemon) < 5 and daemon.process.poll() is None


def test_bad_requests_get_errors_on_a_connection_that_stays_usable(
        daemon: RunningDaemon) -> None:
    huge = "bin/" + "x" * (8 << 20)
    with Client.connect(daemon.socket) as client:
        for op, args, code in [
            ("frobnicate", {}, "E_UNKNOWN_OP"),
            ("mut", {"patches": "bin/x"}, "E_BAD_REQUEST"),
            ("mut", {"patches": [{"realm": "x", "ops": [{"op": "explode"}]}]},
             "E_BAD_REQUEST"),
            ("dep", {"packages": [5]}, "E_BAD_REQUEST"),
            ("dep", {"packages": [huge]}, "E_BAD_NAME"),
            ("rollback", {"realm": "nope", "to": "three"}, "E_BAD_REQUEST"),
            ("builds", {"limit": -1}, "E_BAD_REQUEST"),
            ("log", {"target": 7}, "E_BAD_REQUEST"),
        ]:
            with pytest.raises(IxError) as caught:
                client.request(op, args)
            assert caught.value.code == code, (op, args, caught.value)
        assert client.request("ping", {})["version"]


def test_silent_and_trickling_clients_are_cut_off_without_delaying_others(
        daemon: RunningDaemon) -> None:
    silent = [raw(daemon) for _ in range(20)]  # root's connections have no per-user limit
    trickler = raw(daemon)
    try:
        start = time.monotonic()
        latencies = []
        sent = 0
        for byte in HELLO[:8]:  # one byte at a time: 8 bytes take longer than the deadline
            try:
                trickler.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break  # the daemon hung up on us, as it should
            sent += 1
            latencies.append(ping_seconds(daemon))
            time.sleep(0.3)  # the trickle itself: this client is slow on purpose
        assert sent < 8, "a trickling hello was never cut off"
        assert max(latencies) < 1.0, latencies
        assert error_codes(replies(trickler)) == ["E_PROTOCOL"]
        for sock in silent:
            messages = replies(sock)
            assert isinstance(messages[0], protocol.Hello)
            assert error_codes(messages) == ["E_PROTOCOL"]
        assert time.monotonic() - start < 10 * FRAME_TIMEOUT
    finally:
        for sock in [*silent, trickler]:
            sock.close()
    log = daemon.log.read_text()
    assert "no hello within" in log


def test_connections_per_user_are_limited(daemon: RunningDaemon,
                                          accounts: dict[str, int]) -> None:
    script = daemon.root.parent / "conns.py"
    script.write_text(
        "import sys\nfrom ixd.wire.transport import Client\n"
        "held = []\n"
        "for i in range(4):\n"
        "    try:\n"
        "        c = Client.connect(sys.argv[1]); c.request('ping', {}); held.append(c)\n"
        "        print('ok')\n"
        "    except Exception as e:\n"
        "        print(getattr(e, 'code', type(e).__name__))\n")
    script.chmod(0o644)
    argv, env = daemon.ixc_argv(user="ixtbob")
    runner = argv[:argv.index("-m")]  # runuser -u ixtbob -- /usr/bin/python3
    result = subprocess.run([*runner, str(script), str(daemon.socket)], env=env,
                            capture_output=True, text=True, cwd="/", check=True)
    assert result.stdout.split() == ["ok", "ok", "ok", "E_TOO_MANY_CONNECTIONS"]


# --- fuzzing -------------------------------------------------------------------------------

_leaves = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20))
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64) | _values.map(lambda v: msgpack.packb(v)))
def test_frame_decoder_fuzz(body: bytes) -> None:
    conn = protocol.Connection("server")
    try:
        conn.receive_data(HELLO + frame(body))
        while conn.next_event() is not protocol.NEED_DATA:
            pass
    except ProtocolError:
        pass


#: every op the daemon serves (`ixd.wire.ops`), and one it does not
_ops = st.sampled_from([*sorted(OPS), "nonsense"])
_arg_values = _values | st.lists(st.text(max_size=12), max_size=3) | st.builds(
    lambda realm, ops: [{"realm": realm, "ops": ops}],
    st.text(max_size=8), st.lists(st.dictionaries(
        st.sampled_from(["op", "selector", "key", "value", "flags"]), _values, max_size=4),
        max_size=3))
#: every argument name some op takes, and one none does
_args = st.dictionaries(
    st.sampled_from([*sorted({a.name for op in OPS.values() for a in op.args}), "nonsense"]),
    _arg_values, max_size=3)


@pytest.fixture(scope="module")
def empty_daemon(tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    root = tmp_path_factory.mktemp("fuzz")
    overlay = root / "overlay"
    overlay.mkdir()
    return Daemon(Config(root=root / "root", overlays=(overlay, PROJECT / "pkgs" / "die"),
                         confine=False, settings=HOST_TOOLS_SETTINGS))


# Each case is a whole request through the daemon's handlers (realms created, plans made).
# How many cases: the Hypothesis profile (tests/conftest.py; bench/fuzz.py runs thousands).
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(op=_ops, args=_args)
def test_request_validation_fuzz(empty_daemon: Daemon, op: str, args: dict[str, Any]) -> None:
    """Any request either answers or fails with an IxError: never another exception."""
    caller = Caller(uid=12345, gid=12345, pid=1)

    async def one() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(empty_daemon.scheduler.serve)
            try:
                # as the server does: the contract's check, then the op
                await empty_daemon.handle(op, check_request(op, args), caller, Relay(discard))
            except IxError:
                pass
            nursery.cancel_scope.cancel()

    trio.run(one)


@given(_values)
def test_patch_validation_fuzz(data: Any) -> None:
    try:
        patch_from_wire(data)
    except IxError:
        pass
