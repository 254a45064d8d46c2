"""A build's log (ixd/store/buildlog.py): never larger than its bound, its head and tail kept
in order, its lines relayed within a budget, read off the event loop."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ixd.store.buildlog import (
    MARKER_BYTES,
    MAX_LINE,
    MIN_MAX_LOG,
    BoundedLog,
    LineSplitter,
    LiveBudget,
    LogPump,
    head_bytes,
)
from tests.daemon_harness import wait_for

LIMIT = 4096


def expected_log(output: bytes, limit: int) -> tuple[bytes, bytes]:
    """What a log of bound `limit` keeps of `output`: its head and its tail (the whole output
    as the head if it fits)."""
    if len(output) <= limit:
        return output, b""
    head = head_bytes(limit)
    return output[:head], output[-(limit - head - MARKER_BYTES):]


def check_log(path: Path, output: bytes, limit: int) -> None:
    data = path.read_bytes()
    assert len(data) <= limit
    head, tail = expected_log(output, limit)
    if not tail:
        assert data == output
        return
    assert data.startswith(head) and data.endswith(tail)
    marker = data[len(head):len(data) - len(tail)]
    assert len(marker) == MARKER_BYTES
    dropped = len(output) - len(head) - len(tail)
    assert f"[ix: {dropped} bytes of output left out here".encode() in marker
    assert b"--max-log-size 4096" in marker and marker.endswith(b"\n")


@given(st.lists(st.binary(max_size=3 * LIMIT), max_size=12))
def test_a_log_never_grows_past_its_bound_and_keeps_head_and_tail(
        tmp_path_factory: pytest.TempPathFactory, writes: list[bytes]) -> None:
    path = tmp_path_factory.mktemp("log") / "x.log"
    log = BoundedLog(path, LIMIT)
    output = b""
    for data in writes:
        log.write(data)
        output += data
        assert path.stat().st_size <= LIMIT  # while the build runs, too
        assert log.tail(100) == output[-100:]
    log.finish()
    check_log(path, output, LIMIT)
    log.finish()  # twice: nothing more happens


def test_appending_counts_what_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"a worker's log\n")
    log = BoundedLog(path, LIMIT, append=True)
    log.write(b"x" * 10_000)
    log.finish()
    check_log(path, b"a worker's log\n" + b"x" * 10_000, LIMIT)


def test_a_new_line_only_where_the_output_left_one_open(tmp_path: Path) -> None:
    log = BoundedLog(tmp_path / "x.log", LIMIT)
    log.end_line()  # nothing yet: no empty first line
    log.write(b"no newline")
    log.end_line()
    log.end_line()
    log.finish()
    assert (tmp_path / "x.log").read_bytes() == b"no newline\n"


def test_a_bound_too_small_for_head_and_tail_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no room"):
        BoundedLog(tmp_path / "x.log", MIN_MAX_LOG - 1)


@given(st.lists(st.tuples(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"")),
                          st.booleans()), max_size=20))
def test_lines_fed_or_dropped_come_out_in_order_once(parts: list[tuple[bytes, bool]]) -> None:
    """Every line of the output is handed on whole or counted as left out, never both,
    never cut (but for one longer than MAX_LINE)."""
    splitter = LineSplitter()
    items: list[str | int] = []
    output = b""
    touched = set()  # lines any byte of which was dropped
    for data, fed in parts:
        start = output.count(b"\n")
        output += data
        if fed:
            items += splitter.feed(data)
        else:
            skipped = splitter.drop(data)
            if skipped:
                items.append(skipped)
            ends_line = data.endswith(b"\n")
            if data:
                touched.update(range(start, start + data.count(b"\n") + (not ends_line)))
    items += splitter.flush()
    lines = output.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    shown = [line.decode(errors="replace") for n, line in enumerate(lines)
             if n not in touched]
    assert [i for i in items if isinstance(i, str)] == shown
    assert sum(i for i in items if isinstance(i, int)) == len(lines) - len(shown)


def test_a_long_line_comes_in_pieces() -> None:
    splitter = LineSplitter()
    pieces = splitter.feed(b"x" * (2 * MAX_LINE + 5))
    assert pieces == ["x" * MAX_LINE] * 2
    assert splitter.feed(b"y\n") == ["xxxxxy"]


def test_the_live_budget_is_a_rate_with_a_burst() -> None:
    now = [0.0]
    budget = LiveBudget(rate=100, burst=300, clock=lambda: now[0])
    assert budget.take(300) and not budget.take(1)
    now[0] += 1.0
    assert budget.take(100) and not budget.take(1)
    now[0] += 100.0  # no more than the burst, however long the pause
    assert budget.take(300) and not budget.take(1)


class Loop:
    """The event loop as the pump sees it: posted functions, run when the test says."""

    def __init__(self) -> None:
        self.posted: list[Callable[[], None]] = []
        self.lock = threading.Lock()
        self.done = threading.Event()

    def post(self, function: Callable[[], None]) -> None:
        with self.lock:
            self.posted.append(function)

    def run(self) -> None:
        with self.lock:
            functions, self.posted = self.posted, []
        for function in functions:
            function()


def test_the_pump_logs_everything_and_relays_within_the_budget(tmp_path: Path) -> None:
    read, write = os.pipe()
    log = BoundedLog(tmp_path / "x.log", 1 << 20)
    loop = Loop()
    relayed: list[str | int] = []
    ends: list[int] = []

    def relay(items: list[str | int], end: int) -> None:
        relayed.extend(items)
        ends.append(end)

    budget = LiveBudget(rate=0, burst=1000)  # 1000 bytes live, and no more
    pump = LogPump(read, log, relay, loop.post, budget)
    pump.start(loop.done.set)
    lines = [f"line {n}".encode() for n in range(1000)]
    os.write(write, b"\n".join(lines[:10]) + b"\n")
    wait_for(lambda: loop.posted, "the first lines to be posted", 10)
    middle = b"\n".join(lines[10:500]) + b"\n"
    os.write(write, middle)
    first = len(b"\n".join(lines[:10])) + 1
    wait_for(lambda: log.written == first + len(middle), "the middle to be read", 10)
    os.write(write, b"\n".join(lines[500:]) + b"\nlast, unfinished")
    os.close(write)
    wait_for(lambda: any(f == loop.done.set for f in list(loop.posted)), "the pump's end", 10)
    assert not loop.done.is_set()  # posted to the loop, not called from the thread
    loop.run()
    log.finish()
    output = b"\n".join(lines) + b"\nlast, unfinished"
    assert (tmp_path / "x.log").read_bytes() == output  # the file has all of it
    assert relayed[:10] == [f"line {n}" for n in range(10)]
    # the middle was past the budget: counted where it was left out, never half shown; the
    # output's last piece is relayed all the same, its unfinished last line too
    assert relayed[10] == 490
    assert relayed[11:] == [f"line {n}" for n in range(500, 1000)] + ["last, unfinished"]
    assert ends[-1] == len(output)
    assert loop.done.is_set()


def test_a_stopped_pump_ends_though_the_pipe_stays_open(tmp_path: Path) -> None:
    read, write = os.pipe()
    loop = Loop()
    pump = LogPump(read, BoundedLog(tmp_path / "x.log", LIMIT), None, loop.post)
    pump.start(loop.done.set)
    os.write(write, b"a background process keeps the pipe open\n")
    pump.stop()
    wait_for(lambda: loop.posted, "the stopped pump to end", 10)
    loop.run()
    assert loop.done.is_set()
    os.close(write)
