"""Bounds on the daemon's wire side.

Frames are bounded by what they hold, not only by bytes; requests by how many selectors and
how much text; `status` and `builds` replies by pages; logs go out in pieces with
backpressure, followed without gaps; and running out of file descriptors only slows the
accept loop down.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from client.commands import print_status
from ixd.build.scheduler import JOIN_REPLAY_CHARS, JOIN_REPLAY_LINES, Flight
from ixd.daemon import logstream, paging
from ixd.daemon.core import Config, Daemon
from ixd.daemon.emit import Relay, discard
from ixd.daemon.identity import Caller
from ixd.daemon.server import Server
from ixd.model.nodes import Node
from ixd.wire import protocol
from ixd.wire.errors import BadName, BadRequest, FrameLimit, IxError, ProtocolError, TooSlow
from ixd.wire.ops import check_request
from ixd.wire.transport import Client
from tests.daemon_harness import PROJECT, RunningDaemon, public_daemon, wait_for

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    with public_daemon("ix-bounds-", ["--jobs", "4"]) as running:
        yield running



def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak since the last reset) of a process, in bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines())
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


def reset_peak(pid: int) -> int:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0); the RSS now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return memory(pid)["VmRSS"]


def status_seconds(daemon: RunningDaemon) -> float:
    start = time.monotonic()
    with Client.connect(daemon.socket) as client:
        client.request("status", {})
    return time.monotonic() - start


def latencies_while(daemon: RunningDaemon, process: subprocess.Popen[Any],
                    deadline: float = 120.0) -> list[float]:
    """`status` round trips, one after another, for as long as `process` runs."""
    end = time.monotonic() + deadline
    seen = []
    while process.poll() is None:
        assert time.monotonic() < end, "the other client did not finish"
        seen.append(status_seconds(daemon))
    return seen


def flight_of(daemon: RunningDaemon, name: str) -> dict[str, Any] | None:
    value = json.loads(daemon.ixc("status", "--json").stdout)
    return next((b for b in value["builds"] if b["name"] == name), None)


def spawn_ixc(daemon: RunningDaemon, *words: str, user: str | None = None
              ) -> subprocess.Popen[str]:
    argv, env = daemon.ixc_argv(*words, user=user)
    return subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# --- frames: element counts ----------------------------------------------------------------

#: {"t": "req", "id": 1, "op": "ping", "args": {"a": <what follows>}}
HEAD = b"\x84\xa1t\xa3req\xa2id\x01\xa2op\xa4ping\xa4args\x81\xa1a"
ROOM = protocol.MAX_FRAME - len(HEAD) - 5


def array(count: int) -> bytes:
    return b"\xdd" + struct.pack(">I", count)


def one_list_of_empty_maps() -> bytes:
    return HEAD + array(ROOM) + b"\x80" * ROOM


def lists_of_empty_maps(size: int = 8192) -> bytes:
    count = ROOM // (size + 5)
    return HEAD + array(count) + (array(size) + b"\x80" * size) * count


def maps_of_many_keys() -> bytes:
    keys = b"".join(b"\xa2%c%c\xc0" % (65 + i // 26, 65 + i % 26) for i in range(512))
    one = b"\xde" + struct.pack(">H", 512) + keys
    count = ROOM // len(one)
    return HEAD + array(count) + one * count


def deep_lists_of_strings() -> bytes:
    """Lists inside lists, each full of short strings before the next one starts: all of it
    is in memory before any list is complete."""
    level = b"\xdc" + struct.pack(">H", 8192) + b"\xa2ab" * 8191
    return HEAD + level * (ROOM // len(level)) + b"\x90"


#: 16 MiB frames of tiny values, and the error each gets
ATTACKS = {
    "one list of 16M empty maps": (one_list_of_empty_maps, "E_FRAME_LIMIT"),
    "lists of 8192 empty maps": (lists_of_empty_maps, "E_FRAME_LIMIT"),
    "maps of 512 keys": (maps_of_many_keys, "E_FRAME_LIMIT"),
    "deep lists of strings": (deep_lists_of_strings, "E_PROTOCOL"),  # too deep, first
}


@pytest.mark.parametrize(("make", "code"), ATTACKS.values(), ids=ATTACKS.keys())
def test_the_decoder_refuses_frames_of_too_many_values_before_building_them(
        make: Callable[[], bytes], code: str) -> None:
    body = make()
    assert len(body) <= protocol.MAX_FRAME
    conn = protocol.Connection("server")
    conn.receive_data(protocol.Connection("client").send(
        protocol.Hello(protocol.PROTOCOL_VERSION, "test")))
    assert isinstance(conn.next_event(), protocol.Hello)
    conn.receive_data(struct.pack(">I", len(body)) + body)
    start = time.monotonic()
    with pytest.raises(ProtocolError) as caught:
        conn.next_event()
    assert time.monotonic() - start < 0.5
    assert caught.value.code == code, caught.value
    assert "limit" in caught.value.message or "deeper than" in caught.value.message


@pytest.mark.parametrize(("value", "match"), [
    ([None] * 8193, "a list of 8193 items exceeds the limit of 8192"),
    ({f"k{i}": 1 for i in range(513)}, "a map of 513 entries exceeds the limit of 512"),
    (b"x" * (MiB + 1), "a binary of 1048577 bytes exceeds"),
    (msgpack.ExtType(1, b"x" * 17), "an extension value of 17 bytes exceeds"),
    ([[0] * 8000 for _ in range(33)], "more than 262144 values"),
])
def test_each_request_limit_has_its_own_message(value: Any, match: str) -> None:
    body = msgpack.packb({"t": "req", "id": 1, "op": "x", "args": {"v": value}},
                         use_bin_type=True)
    with pytest.raises(FrameLimit, match=match):
        protocol.decode_body(body, protocol.REQUEST_LIMITS)


def test_real_requests_and_replies_fit_the_limits() -> None:
    selectors = [f"bin/pkg{i}(flag=value{i})" for i in range(protocol.MAX_SELECTORS)]
    ops = [{"op": "add", "selector": s, "flags": {"a": "1", "b": "2"}} for s in selectors]
    for args in ({"packages": selectors}, {"patches": [{"realm": "r", "ops": ops}]}):
        body = msgpack.packb({"t": "req", "id": 1, "op": "mut", "args": args})
        request = protocol.decode_body(body, protocol.REQUEST_LIMITS)
        assert isinstance(request, protocol.Request) and request.args == args
        protocol.check_request_size(args)
    # a client takes much larger replies: a page of 10,000 builds
    rows: list[dict[str, Any]] = [
        {"id": i, "uid": "0" * 32, "name": "bin/x", "flags": {}, "state": "valid",
         "started": 1.0, "ended": 2.0, "duration": 1.0, "log": "/ix/var/log/x.log",
         "requested_by": "root", "exit_status": None, "error": ""} for i in range(10_000)]
    body = msgpack.packb({"t": "result", "id": 1, "value": {"builds": rows}})
    result = protocol.decode_body(body, protocol.REPLY_LIMITS)
    assert isinstance(result, protocol.Result) and result.value["builds"] == rows
    with pytest.raises(FrameLimit):
        protocol.decode_body(body, protocol.REQUEST_LIMITS)


_leaves = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False)
           | st.text(max_size=300) | st.binary(max_size=300)
           | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16)))
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=20) | st.dictionaries(
    st.text(max_size=8), inner, max_size=20), max_leaves=60)


@given(_values, st.integers(0, 3))
@example("x" * 70_000, 0)  # str32
@example(b"x" * 70_000, 2)  # bin32, truncated
@example([msgpack.ExtType(1, b"x" * n) for n in (1, 2, 4, 8, 12, 16)], 0)  # fixext, ext8
def test_the_limit_scan_agrees_with_msgpack_on_every_type(value: Any, cut: int) -> None:
    """Every msgpack type (fixed and 8/16/32-bit lengths, extensions) is measured right: a
    frame within the limits decodes exactly as without them; a truncated one fails the same
    way."""
    body = msgpack.packb({"t": "req", "id": 1, "op": "x", "args": {"v": value}},
                         use_bin_type=True)
    if cut:
        body = body[:-cut]

    def outcome(limits: protocol.DecodeLimits | None) -> Any:
        try:
            return protocol.decode_body(body, limits)
        except ProtocolError as exc:
            return type(exc)

    assert outcome(protocol.REQUEST_LIMITS) == outcome(None)


def attacker_script() -> str:
    """A client that sends hello and one frame from a file, then reports the error codes it
    gets until the daemon hangs up (a separate process: the test's own loop is not slowed)."""
    return (
        "import json, socket, struct, sys\n"
        "from ixd.wire import protocol\n"
        "body = open(sys.argv[2], 'rb').read()\n"
        "hello = protocol.Connection('client').send(\n"
        "    protocol.Hello(protocol.PROTOCOL_VERSION, 'attacker'))\n"
        "sock = socket.socket(socket.AF_UNIX); sock.settimeout(60); sock.connect(sys.argv[1])\n"
        "sock.sendall(hello + struct.pack('>I', len(body)) + body)\n"
        "conn = protocol.Connection('client'); conn.hello_sent = True\n"
        "got = []\n"
        "try:\n"
        "    while True:\n"
        "        data = sock.recv(65536); conn.receive_data(data)\n"
        "        while (msg := conn.next_event()) not in (protocol.NEED_DATA, protocol.CLOSED):\n"
        "            got.append(getattr(msg, 'code', msg.TYPE))\n"
        "        if not data: break\n"
        "except OSError as exc:\n"
        "    got.append(type(exc).__name__)\n"
        "print(json.dumps(got))\n")


@pytest.mark.parametrize(("make", "code"), ATTACKS.values(), ids=ATTACKS.keys())
def test_a_16_mib_frame_of_tiny_values_neither_stalls_nor_bloats_the_daemon(
        daemon: RunningDaemon, make: Callable[[], bytes], code: str, tmp_path: Path) -> None:
    frame_file = tmp_path / "frame"
    frame_file.write_bytes(make())
    pid = daemon.process.pid
    before = reset_peak(pid)
    started = time.monotonic()
    attacker = subprocess.Popen(
        [sys.executable, "-c", attacker_script(), str(daemon.socket), str(frame_file)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(PROJECT)})
    latencies = latencies_while(daemon, attacker)
    out, _ = attacker.communicate()
    elapsed = time.monotonic() - started
    grown = memory(pid)["VmHWM"] - before
    print(f"\n{make.__name__}: attack answered in {elapsed:.2f}s, {len(latencies)} status "
          f"calls meanwhile, slowest {max(latencies):.3f}s, daemon peak +{grown / MiB:.1f} MiB")
    assert attacker.returncode == 0
    assert json.loads(out) == ["hello", code]
    assert latencies and max(latencies) < 1.0, latencies
    assert grown < 200 * MiB
    assert daemon.process.poll() is None
    assert status_seconds(daemon) < 1.0


# --- requests: selectors -------------------------------------------------------------------


def test_request_size_limits_name_the_limit() -> None:
    many = ["bin/x"] * (protocol.MAX_SELECTORS + 1)
    with pytest.raises(BadRequest, match="at most 4096"):
        protocol.check_request_size({"packages": many})
    protocol.check_request_size({"packages": many[:-1]})
    wordy = ["bin/" + "x" * 300] * 3600  # 1.1 M characters
    with pytest.raises(BadRequest, match="the limit is 1048576"):
        protocol.check_request_size({"packages": wordy})
    with pytest.raises(BadName, match="the limit is 65536"):
        protocol.check_request_size({"packages": ["bin/" + "x" * 70_000]})
    ops = [{"op": "remove", "selector": "bin/x"}] * 3000
    with pytest.raises(BadRequest, match="more than 4096 operations"):
        protocol.check_request_size({"patches": [{"realm": "a", "ops": ops}] * 2})
    flagged = [{"op": "add", "selector": "bin/x", "flags": {f"f{i}": "1" for i in range(500)}}]
    with pytest.raises(BadRequest, match="more than 16384 flags"):
        protocol.check_request_size({"patches": [{"realm": "a", "ops": flagged * 33}]})
    words = ["+bin/x"] * (protocol.MAX_WORDS + 1)
    with pytest.raises(BadRequest, match=f"at most {protocol.MAX_WORDS}"):
        protocol.check_request_size({"words": words})
    protocol.check_request_size({"words": words[:-1]})
    with pytest.raises(BadRequest, match="the limit is 1048576"):
        protocol.check_request_size({"words": wordy})
    with pytest.raises(BadName, match="the limit is 65536"):
        protocol.check_request_size({"words": ["--k=" + "x" * 70_000]})
    # malformed shapes are the op's own business
    protocol.check_request_size({"packages": "bin/x", "patches": [7, {"ops": "x"}]})


def test_the_daemon_refuses_oversized_requests_and_keeps_the_connection(
        daemon: RunningDaemon) -> None:
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        ("build", {"packages": ["bin/slow"] * 4097}, "E_BAD_REQUEST", "4096"),
        ("dep", {"packages": ["bin/" + "x" * 290] * 4000}, "E_BAD_REQUEST", "1048576"),
        ("mut", {"patches": [{"realm": "big", "ops": [
            {"op": "remove", "selector": "bin/x"}] * 4097}]}, "E_BAD_REQUEST", "4096"),
        ("mut", {"words": ["big", "-bin/x"] * 3073}, "E_BAD_REQUEST", "6144"),
    ]
    with Client.connect(daemon.socket) as client:
        for op, args, code, text in cases:
            with pytest.raises(IxError) as caught:
                client.request(op, args)
            assert caught.value.code == code and text in caught.value.message
        assert client.request("ping", {})["uid"] == 0


# --- status and builds: pages --------------------------------------------------------------


def fake_flights(daemon: Daemon, count: int) -> None:
    for i in range(count):
        node = Node(uid=f"{i:032x}", kind="build", name=f"bin/fake{i}", deps=(), inputs=(),
                    outputs=(f"/store/{i}",))
        flight = Flight(node, requested_by=0, request_key=i)
        flight.waiting_uids.update(range(100_000, 100_000 + (100 if i == 0 else 1)))
        if i % 2:
            flight.started = time.time()
        daemon.scheduler._flights[node.uid] = flight


def test_status_replies_are_pages_with_a_total(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    ixd = Daemon(Config(root=tmp_path / "root", overlays=(overlay,), confine=False))
    fake_flights(ixd, 5000)
    caller = Caller(0, 0, 1)

    def status(args: dict[str, Any]) -> Any:
        return trio.run(ixd.builds.op_status, check_request("status", args), caller,
                        Relay(discard))

    first = status({})
    assert len(first["builds"]) == paging.STATUS_PAGE
    assert (first["total"], first["running"], first["queued"]) == (5000, 2500, 2500)
    assert all(b["state"] == "running" for b in first["builds"])
    biggest = status({"limit": paging.MAX_STATUS_PAGE, "offset": 2000})
    assert [b["state"] for b in biggest["builds"]] == ["running"] * 500 + ["queued"] * 500
    assert len(msgpack.packb(biggest)) < MiB
    # the one flight with 100 waiting users names a few and counts them all
    flight = status({"limit": 1, "offset": 2500})["builds"][0]
    assert flight["name"] == "bin/fake0"
    assert len(flight["waiting"]) == paging.MAX_WAITING_NAMES
    assert flight["waiting_count"] == 100
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": True}):
        with pytest.raises(BadRequest):
            status(bad)
    assert status({"offset": 6000})["builds"] == []


def test_status_output_says_what_is_left_out() -> None:
    build = {"state": "running", "name": "bin/a", "elapsed": 3.0, "expected": None,
             "waiting": ["alice", "bob"], "waiting_count": 5}
    out = io.StringIO()
    print_status({"builds": [build], "total": 7, "running": 4, "offset": 2, "jobs": 2}, out)
    assert out.getvalue().splitlines() == [
        "running  bin/a  for 3s; waiting: alice, bob and 3 more",
        "... 4 more of 7 (4 running); the next: ixc status --offset 3",
    ]


def test_builds_pages_are_cut_to_stay_far_below_the_frame_limit() -> None:
    error = "e" * 1_300_000  # 20 lines of 64 KiB: the longest error a build records
    rows = [{"id": i, "error": error, "name": "bin/x"} for i in range(5000)]
    kept, cut = paging.fit(rows)
    assert cut and 1000 < len(kept) < 5000
    assert [r["id"] for r in kept] == list(range(len(kept)))
    assert all(len(r["error"]) < paging.ERROR_CHARS + 100 for r in kept)
    assert len(msgpack.packb(kept)) <= paging.REPLY_BUDGET
    kept, cut = paging.fit(rows[:3])
    assert not cut and len(kept) == 3


def test_status_and_builds_page_through_a_real_daemon(daemon: RunningDaemon) -> None:
    names = [f"bin/slow(secs=120,tag=page{i})" for i in range(6)]
    builder = spawn_ixc(daemon, "build", *names)
    try:
        wait_for(lambda: all(flight_of(daemon, n) for n in names), "six builds under way")
        whole = daemon.ixc("status").stdout.splitlines()
        assert len(whole) == 6 and not any(line.startswith("...") for line in whole)
        first = daemon.ixc("status", "--limit", "2").stdout.splitlines()
        assert len(first) == 3 and all(line.startswith("running ") for line in first[:2])
        assert first[2] == "... 4 more of 6 (4 running); the next: ixc status --offset 2"
        page = json.loads(daemon.ixc("status", "--json", "--limit", "2", "--offset", "4").stdout)
        assert page["total"] == 6 and page["offset"] == 4
        assert {b["name"] for b in page["builds"]} <= set(names)
        assert [b["state"] for b in page["builds"]] == ["queued", "queued"]
    finally:
        builder.kill()
        builder.communicate()
    wait_for(lambda: not any(flight_of(daemon, n) for n in names), "the builds to be dropped")
    history = json.loads(daemon.ixc("builds", "--json").stdout)
    assert len(history["builds"]) >= 4 and history["cut"] is False
    page = json.loads(daemon.ixc("builds", "--json", "--limit", "2", "--offset", "1").stdout)
    assert [b["id"] for b in page["builds"]] == [b["id"] for b in history["builds"][1:3]]
    assert page["next_offset"] == 3
    refused = daemon.ixc("builds", "--offset", "19999", "--limit", "2", check=False)
    assert "[E_BAD_REQUEST]" in refused.stderr and "20000" in refused.stderr


# --- logs: streamed, followed --------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_a_200_mib_log_is_streamed_whole_in_little_memory(
        daemon: RunningDaemon, tmp_path: Path) -> None:
    name = "bin/slow(secs=0,tag=biglog)"
    daemon.ixc("build", name)
    row = next(b for b in json.loads(daemon.ixc("builds", "--json").stdout)["builds"]
               if b["name"] == name)
    log = daemon.root / "var" / "log" / f"{row['uid']}.log"
    with log.open("wb") as file:  # the daemon's log, fabricated: 200 MiB of numbered lines
        line = 0
        while file.tell() < 200 * MiB:
            file.write(b"".join(b"%09d some build output \xc3\xa9 and a broken byte \xff\n"
                                % (line + i) for i in range(10_000)))
            line += 10_000
    pid = daemon.process.pid
    before = reset_peak(pid)
    received = tmp_path / "received.log"
    with received.open("wb") as out:
        argv, env = daemon.ixc_argv("log", row["uid"])
        start = time.monotonic()
        reader = subprocess.Popen(argv, env=env, cwd="/", stdout=out, stderr=subprocess.PIPE)
        latencies = latencies_while(daemon, reader)
        _, err = reader.communicate()
        elapsed = time.monotonic() - start
    grown = memory(pid)["VmHWM"] - before
    print(f"\n200 MiB log: {elapsed:.2f}s, {len(latencies)} status calls meanwhile, slowest "
          f"{max(latencies, default=0):.3f}s, daemon peak +{grown / MiB:.2f} MiB")
    assert reader.returncode == 0, err
    expected = log.read_bytes().decode(errors="replace").encode()
    assert received.stat().st_size == len(expected)
    assert sha256_of(received) == hashlib.sha256(expected).hexdigest()
    del expected
    assert grown < 8 * MiB
    assert max(latencies, default=0) < 1.0


def chatty(**flags: str | int) -> str:
    return "bin/chatty(" + ",".join(f"{k}={v}" for k, v in sorted(flags.items())) + ")"


def numbered(text: str, count: int) -> None:
    assert text.splitlines() == [f"chatty line {i}" for i in range(1, count + 1)]


@pytest.mark.parametrize(("flags", "joined_after"), [
    # the pauses are the follower's window to join (an `ixc` start is ~50 ms)
    ({"after": 4, "tag": "fend"}, 5000),  # all printed: the whole log is the replay
    ({"at": 2500, "secs": 2, "after": 1, "tag": "fmid"}, 2500),  # half replayed, half live
    ({"at": 0, "secs": 2, "tag": "fstart"}, 0),  # nothing printed yet: all of it live
], ids=["after", "between", "before"])
def test_log_follow_gets_every_line_once_in_order(
        daemon: RunningDaemon, flags: dict[str, Any], joined_after: int) -> None:
    name = chatty(**flags)
    builder = spawn_ixc(daemon, "build", name)
    flight = wait_for(lambda: flight_of(daemon, name), "the build to be under way")
    log = daemon.root / "var" / "log" / f"{flight['uid']}.log"
    if joined_after:
        wait_for(lambda: log.is_file() and f"chatty line {joined_after}\n" in log.read_text(),
                 f"line {joined_after} in the log")
    followed = daemon.ixc("log", name, "-f")
    _, err = builder.communicate(timeout=120)
    assert builder.returncode == 0, err
    numbered(followed.stdout, 5000)


def test_a_follower_that_joins_a_shared_build_gets_the_log_so_far_then_live(
        daemon: RunningDaemon, accounts: dict[str, int]) -> None:
    name = chatty(lines=600, at=300, secs=3, tag="joiner")
    first = spawn_ixc(daemon, "build", name)
    flight = wait_for(lambda: flight_of(daemon, name), "the build to be under way")
    log = daemon.root / "var" / "log" / f"{flight['uid']}.log"
    wait_for(lambda: log.is_file() and "chatty line 300\n" in log.read_text(), "line 300")
    joined = daemon.ixc("-v", "mut", "joiners", f"+{name}", user="ixtbob")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert f"waiting for (shared) {name}" in joined.stderr
    lines = [line[4:] for line in joined.stderr.splitlines() if line.startswith("  | ")]
    numbered("\n".join(lines), 600)


class Collector:
    """An emitter: `send` waits while `gate` is closed; everything sent is kept."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.gate: trio.Event | None = None
        self._sent = trio.Event()

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        raise AssertionError("logs go through send, with backpressure")

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        assert kind == "log-text"
        self.texts.append(data["text"])
        self._sent.set()
        if self.gate is not None:
            await self.gate.wait()

    async def until(self, text: str) -> None:
        """Wait (at most 10 s) until what was sent adds up to `text`: the file is read in a
        worker thread, which wait_all_tasks_blocked does not wait for."""
        with trio.fail_after(10):
            while "".join(self.texts) != text:
                await self._sent.wait()
                self._sent = trio.Event()


def fake_flight(uid: str = "f" * 32) -> Flight:
    return Flight(Node(uid=uid, kind="build", name="bin/x", deps=(), inputs=(),
                       outputs=("/store/x",)), requested_by=0, request_key=1)


async def test_follow_replays_whole_lines_then_live_ones_without_gap_or_repeat(
        tmp_path: Path) -> None:
    flight = fake_flight()
    flight.started = time.time() - 1
    log = tmp_path / "x.log"
    log.write_bytes(b"line 1\nline 2\npart")  # the builder holds "part" until its line ends
    flight.emit("log", {"line": "line 1"})
    flight.emit("log", {"line": "line 2"})
    flight.emit("log-mark", {"end": len("line 1\nline 2\n")})  # where the lines it relayed end
    sink = Collector()
    result: dict[str, Any] = {}

    async def follow() -> None:
        result.update(await logstream.serve_log(flight.node.uid, log, "bin/x", True,
                                                lambda: flight, sink.send))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await sink.until("line 1\nline 2\n")
        await trio.testing.wait_all_tasks_blocked()  # nothing more comes for now
        assert "".join(sink.texts) == "line 1\nline 2\n"
        with log.open("ab") as file:  # what the builder's pump does: the file first,
            file.write(b"ial\nline 4\nline 5 under way")  # then the lines (and more)
        flight.emit("log", {"line": "partial"})
        flight.emit("log", {"line": "line 4"})
        flight.emit("log-mark", {"end": len("line 1\nline 2\npartial\nline 4\n")})
        await trio.testing.wait_all_tasks_blocked()
        flight.done.set()
    assert "".join(sink.texts) == "line 1\nline 2\npartial\nline 4\n"
    assert result == {"uid": flight.node.uid, "followed": True, "error": None}
    assert flight.listeners == []


async def test_follow_skips_an_earlier_builds_log(tmp_path: Path) -> None:
    flight = fake_flight()
    log = tmp_path / "x.log"
    log.write_text("an earlier build's line\n")
    flight.started = time.time() + 60  # started after the file was last written
    sink = Collector()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(logstream.serve_log, flight.node.uid, log, "x", True,
                           lambda: flight, sink.send)
        await trio.testing.wait_all_tasks_blocked()
        flight.emit("log", {"line": "this build's line"})
        flight.done.set()
    assert "".join(sink.texts) == "this build's line\n"


async def test_a_follower_too_far_behind_gets_an_error_not_a_gap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logstream, "FOLLOW_BACKLOG", 1000)
    flight = fake_flight()
    sink = Collector()
    sink.gate = trio.Event()  # the client reads nothing for now
    caught: list[TooSlow] = []

    async def follow() -> None:
        try:
            await logstream.serve_log(flight.node.uid, Path("/nonexistent"), "x", True,
                                      lambda: flight, sink.send)
        except TooSlow as exc:
            caught.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()  # no file: nothing read in a thread
        flight.emit("log", {"line": "first"})
        await trio.testing.wait_all_tasks_blocked()
        for i in range(200):  # 1,400 characters while the first is not taken
            flight.emit("log", {"line": f"line {i}"})
        sink.gate.set()
    assert len(caught) == 1 and "more than 1000 characters" in caught[0].message
    assert caught[0].code == "E_TOO_SLOW"
    assert sink.texts == ["first\n"]
    assert flight.listeners == []


def test_a_joiner_is_handed_the_latest_lines_and_told_how_many_are_left_out() -> None:
    flight = fake_flight()
    for i in range(JOIN_REPLAY_LINES + 500):
        flight.emit("log", {"line": f"line {i}"})
    seen: list[tuple[str, Any]] = []
    flight.replay_log(lambda kind, data: seen.append((kind, data.get("line",
                                                                     data.get("count")))))
    assert seen[0] == ("log-skipped", 500)
    assert seen[1:] == [("log", f"line {i}") for i in range(500, JOIN_REPLAY_LINES + 500)]
    wide = fake_flight()
    for i in range(100):
        wide.emit("log", {"line": f"{i:04d}" + "x" * 9996})
    assert wide.recent_chars <= JOIN_REPLAY_CHARS
    assert wide.log_lines == 100 and len(wide.recent_log) == JOIN_REPLAY_CHARS // 10_000


# --- the server: progress dropped and counted, streams with backpressure --------------------


class Peer:
    """The client's side of an in-process connection to a `Server`."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = protocol.Connection("client")

    async def send(self, msg: protocol.Message) -> None:
        await self.stream.send_all(self.conn.send(msg))

    async def receive(self) -> protocol.Message:
        while (msg := self.conn.next_event()) is protocol.NEED_DATA:
            self.conn.receive_data(await self.stream.receive_some(65536))
        assert msg is not protocol.CLOSED
        return msg

    async def until_reply(self) -> tuple[list[protocol.Event], protocol.Message]:
        events = []
        while isinstance(msg := await self.receive(), protocol.Event | protocol.Hello):
            if isinstance(msg, protocol.Event):
                events.append(msg)
        return events, msg


async def serve_pair(nursery: trio.Nursery, handle: Any) -> Peer:
    server_side, client_side = trio.socket.socketpair()
    nursery.start_soon(Server(handle, check=lambda op, args: args)._serve_connection,
                       trio.SocketStream(server_side))
    peer = Peer(trio.SocketStream(client_side))
    await peer.send(protocol.Hello(protocol.PROTOCOL_VERSION, "test"))
    return peer


async def test_progress_a_client_cannot_take_is_dropped_and_counted() -> None:
    async def handle(op: str, args: dict[str, Any], caller: Caller, emit: Any) -> Any:
        for i in range(5000):  # no await: the client reads none of it meanwhile
            emit("log", {"line": f"line {i}"})
        return "done"

    async with trio.open_nursery() as nursery:
        peer = await serve_pair(nursery, handle)
        await peer.send(protocol.Request(1, "x", {}))
        events, reply = await peer.until_reply()
        await peer.stream.aclose()
        nursery.cancel_scope.cancel()
    lines = [e.data["line"] for e in events if e.kind == "log"]
    dropped = [e.data["count"] for e in events if e.kind == "dropped"]
    assert reply == protocol.Result(1, "done")
    assert lines == [f"line {i}" for i in range(len(lines))]  # the first ones, in order
    assert len(dropped) == 1 and len(lines) + dropped[0] == 5000
    assert events[-1].kind == "dropped"


async def test_a_streamed_reply_waits_for_the_client_and_loses_nothing() -> None:
    count = 20_000
    sent = 0

    async def handle(op: str, args: dict[str, Any], caller: Caller, emit: Any) -> Any:
        nonlocal sent
        for i in range(count):
            await emit.send("log-text", {"text": f"{i:05d}" + "x" * 1000})
            sent = i + 1
        return "done"

    async with trio.open_nursery() as nursery:
        peer = await serve_pair(nursery, handle)
        await peer.send(protocol.Request(1, "x", {}))
        await trio.testing.wait_all_tasks_blocked()
        # the socket's buffers hold a few hundred events; the rest waits for the client
        assert 0 < sent < count // 10
        events, reply = await peer.until_reply()
        await peer.stream.aclose()
        nursery.cancel_scope.cancel()
    assert reply == protocol.Result(1, "done")
    assert [e.data["text"][:5] for e in events] == [f"{i:05d}" for i in range(count)]


# --- file descriptors ----------------------------------------------------------------------


def test_running_out_of_file_descriptors_does_not_kill_the_daemon() -> None:
    with public_daemon("ix-emfile-") as limited:
        pid = limited.process.pid
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (64, 64))
        held = []
        try:
            for _ in range(100):  # more than it can open: the rest wait in the backlog
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(limited.socket))
                held.append(sock)
            wait_for(lambda: "cannot accept a connection: Too many open files"
                     in limited.log.read_text(), "the daemon to run out of descriptors")
            assert limited.process.poll() is None
        finally:
            for sock in held:
                sock.close()

        def pings() -> bool:
            try:
                with Client.connect(limited.socket) as client:
                    return bool(client.request("ping", {})["version"])
            except IxError:
                return False

        wait_for(pings, "a ping once the connections are closed", deadline=30)
        assert limited.process.poll() is None
        wait_for(lambda: len(os.listdir(f"/proc/{pid}/fd")) < 32, "the connections to close")
