"""The one queue of the daemon: runs plans, joining nodes already under way.

Every node goes through `Scheduler.run`. A node valid in the store is skipped; a node queued
or running for anybody is joined, not started again; a node nobody waits for any more is
cancelled. Flights (one per uid under way) live in the scheduler's own nursery, not in the
request that started them, so a second waiter keeps a build going after the first left.
Pools bound parallelism: builds share `jobs` slots, fetches and realm assembly have their own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from ixd.errors import BuildCancelled, DependencyFailed, InternalError, IxError
from ixd.nodes import Node, Plan

log = logging.getLogger("ixd.scheduler")

#: (event kind, data) for progress; the server forwards them to waiting clients
Listener = Callable[[str, dict[str, Any]], None]


class NodeRunner(Protocol):
    """Does the work of one node and records it valid; raises IxError on failure."""

    def is_valid(self, node: Node) -> bool: ...

    async def run_node(self, node: Node, emit: Listener, requested_by: int) -> None: ...


@dataclass(eq=False)
class Flight:
    node: Node
    requested_by: int
    done: trio.Event = field(default_factory=trio.Event)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    error: IxError | None = None
    waiters: int = 0
    listeners: list[Listener] = field(default_factory=list)
    started: float | None = None

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(kind, data)


class Scheduler:
    def __init__(self, runner: NodeRunner, jobs: int) -> None:
        self.runner = runner
        self.jobs = jobs
        self._flights: dict[str, Flight] = {}
        self._nursery: trio.Nursery | None = None
        self._limiters = {
            "build": trio.CapacityLimiter(jobs),
            "fetch": trio.CapacityLimiter(4),
            "realm": trio.CapacityLimiter(2),
        }
        self.started_count = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Own the nursery flights run in; returns only when cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def flights(self) -> list[Flight]:
        return list(self._flights.values())

    async def run(self, plan: Plan, listener: Listener, requested_by: int) -> None:
        """Make every node of the plan valid; raise the first failure (BuildFailed)."""
        finished: dict[str, trio.Event] = {n.uid: trio.Event() for n in plan.nodes}
        failures: dict[str, IxError] = {}
        todo = [n for n in plan.nodes if not self.runner.is_valid(n)]
        todo_uids = {n.uid for n in todo}
        listener("plan", {"total": len(plan.nodes), "todo": len(todo),
                          "nodes": [{"uid": n.uid, "name": n.name, "kind": n.kind}
                                    for n in todo]})
        for node in plan.nodes:
            if node.uid not in todo_uids:
                finished[node.uid].set()
        async with trio.open_nursery() as nursery:
            for node in todo:
                nursery.start_soon(self._want, node, finished, failures, listener,
                                   requested_by)
        if failures:
            own = [e for e in failures.values() if not isinstance(e, DependencyFailed)]
            raise (own or list(failures.values()))[0]

    async def _want(self, node: Node, finished: dict[str, trio.Event],
                    failures: dict[str, IxError], listener: Listener,
                    requested_by: int) -> None:
        try:
            for dep in node.deps:
                event = finished.get(dep)
                if event is not None:
                    await event.wait()
                if dep in failures:
                    failures[node.uid] = DependencyFailed(
                        f"{node.name} was not built: a dependency failed "
                        f"({failures[dep].message.splitlines()[0]})")
                    return
            error = await self._join(node, listener, requested_by)
            if error is not None:
                failures[node.uid] = error
        finally:
            finished[node.uid].set()

    async def _join(self, node: Node, listener: Listener, requested_by: int
                    ) -> IxError | None:
        flight = self._flights.get(node.uid)
        if flight is None:
            if self.runner.is_valid(node):
                return None
            assert self._nursery is not None, "Scheduler.serve() is not running"
            flight = Flight(node, requested_by)
            self._flights[node.uid] = flight
            self._nursery.start_soon(self._fly, flight)
        else:
            listener("joined", {"uid": node.uid, "name": node.name})
        flight.waiters += 1
        flight.listeners.append(listener)
        try:
            await flight.done.wait()
        finally:
            flight.waiters -= 1
            flight.listeners.remove(listener)
            if flight.waiters == 0 and not flight.done.is_set():
                log.info("cancel %s %s: nobody waits for it", node.name, node.uid)
                flight.cancel_scope.cancel()
        return flight.error

    async def _fly(self, flight: Flight) -> None:
        node = flight.node
        pool = {"fetch": "fetch", "realm": "realm"}.get(node.kind, "build")
        try:
            with flight.cancel_scope:
                async with self._limiters[pool]:
                    if not self.runner.is_valid(node):
                        flight.started = time.time()
                        self.started_count += 1
                        flight.emit("started", {"uid": node.uid, "name": node.name,
                                                "kind": node.kind})
                        await self.runner.run_node(node, flight.emit, flight.requested_by)
                        flight.emit("finished", {
                            "uid": node.uid, "name": node.name, "kind": node.kind,
                            "duration": time.time() - flight.started})
            if flight.cancel_scope.cancelled_caught:
                flight.error = BuildCancelled(f"{node.name} was cancelled: nobody waits for it")
        except IxError as exc:
            flight.error = exc
        except Exception as exc:
            log.exception("internal error running %s", node.name)
            flight.error = InternalError(f"internal error running {node.name}: {exc!r}")
        finally:
            del self._flights[node.uid]
            flight.done.set()
