"""One node run through a real `Scheduler` over a `StoreRunner`, for tests of how a build's
failure is reported: the events it emitted and the error it raised, if any."""

from __future__ import annotations

from typing import Any

import trio

from ixd.build.runner import StoreRunner
from ixd.build.scheduler import Scheduler
from ixd.model.nodes import Node, Plan
from ixd.wire.errors import IxError


def run_one_node(runner: StoreRunner, node: Node
                 ) -> tuple[list[tuple[str, dict[str, Any]]], list[IxError]]:
    """Run `node` alone (one job) and stop the scheduler afterwards."""
    events: list[tuple[str, dict[str, Any]]] = []
    raised: list[IxError] = []

    async def main() -> None:
        scheduler = Scheduler(runner, jobs=1)
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)
            try:
                await scheduler.run(Plan((node,), (node.uid,)),
                                    lambda kind, data: events.append((kind, data)), 0)
            except IxError as exc:
                raised.append(exc)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return events, raised
