"""Waiters on a shared build are released the moment it ends, its result pushed to each, not
polled (issue 13, item 4): on a clock that never moves, every waiter is done as soon as the
build is, so nothing on the way sleeps or polls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from ixd.build.scheduler import Listener, Scheduler
from ixd.model.nodes import Node, Plan
from ixd.wire.errors import BuildFailed


class GatedRunner:
    """Builds that end when the test opens their gate (and fail if told to)."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.fail = False
        self.valid: set[str] = set()
        self.runs = 0

    def is_valid(self, node: Node) -> bool:
        return node.uid in self.valid

    def expected_duration(self, node: Node) -> float | None:
        return None

    async def run_node(self, node: Node, emit: Listener, requested_by: int,
                       slot_done: Callable[[], None] = lambda: None) -> None:
        self.runs += 1
        await self.gate.wait()
        if self.fail:
            raise BuildFailed(f"{node.name} failed")
        self.valid.add(node.uid)


@pytest.mark.parametrize("fail", [False, True], ids=["built", "failed"])
async def test_every_waiter_gets_the_result_when_the_build_ends(
        mock_clock: trio.testing.MockClock, fail: bool) -> None:
    # the mock clock's rate is 0: time stands still unless the test moves it, so a waiter
    # that polled or slept would still be waiting when the assertions run
    runner = GatedRunner()
    runner.fail = fail
    scheduler = Scheduler(runner, jobs=1)
    shared = Node(uid="s", kind="build", name="pkg/shared", deps=(), inputs=(),
                  outputs=("/store/s",))
    outcomes: dict[int, str] = {}
    events: dict[int, list[str]] = {1: [], 2: [], 3: []}

    async def request(uid: int) -> None:
        def listen(kind: str, data: dict[str, Any]) -> None:
            events[uid].append(kind)

        try:
            await scheduler.run(Plan((shared,), ("s",)), listen, uid)
            outcomes[uid] = "built"
        except BuildFailed:
            outcomes[uid] = "failed"

    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        for uid in events:
            nursery.start_soon(request, uid)
        await trio.testing.wait_all_tasks_blocked()
        (flight,) = scheduler.flights()
        assert flight.waiters == 3 and runner.runs == 1  # one build, three waiting
        assert outcomes == {}
        before = trio.current_time()
        runner.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == before  # released in the same instant
        assert outcomes == {uid: "failed" if fail else "built" for uid in events}
        assert scheduler.flights() == []
        nursery.cancel_scope.cancel()
    if not fail:  # each waiter heard the build end, not only the one that started it
        assert all(kinds[-1] == "finished" for kinds in events.values())
