"""The one queue of the daemon: runs plans, joining nodes already under way.

Every node goes through `Scheduler.run`. Only what the store lacks runs: a node valid in the
store is skipped, and so are the build inputs of valid nodes (`needed_plan`: gc may delete a
package's build-only inputs, and nothing builds them again while it stays valid); a node
queued or running for anybody is joined, not started again; a node nobody waits for any more
is cancelled. Flights (one per uid under way) live in the scheduler's own nursery, not in the
request that started them, so a second waiter keeps a build going after the first left.
Pools bound parallelism: builds share `jobs` slots, fetches and realm assembly have their own.
Up to as many builds as there are slots get ready meanwhile, given build users to spare
(`ready_ahead`; their sandboxes set up, waiting for a slot: `BuildSlot`), so a slot's next
command starts as the last one ends. Build slots go round-robin between the users waiting
(by uid), then between each user's
requests, and no user holds more than `max_jobs_per_user` of them (`ixd.build.fairness`): a
user's many requests do not starve another user's one.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from ixd.build.fairness import FairSlots, Ticket
from ixd.model.nodes import Node, Plan, needed_plan
from ixd.wire import events
from ixd.wire.errors import BuildCancelled, CacheError, DependencyFailed, InternalError, IxError

log = logging.getLogger("ixd.build.scheduler")


class Listener(Protocol):
    """Where progress goes: called with each event (a kind of `ixd.wire.events` and its
    data); never blocks. The server forwards them to waiting clients."""

    def __call__(self, kind: str, data: dict[str, Any], /) -> None: ...

#: builds that use the network (`net`) at once, besides the build slots, as stal/IX's
#: `network` pool (16 there; 8 here: each still takes one of the build users)
NETWORK_POOL = 8
#: plans tried with substitutes before the rest is built without (each try refuses one more)
SUBSTITUTE_TRIES = 3
#: while a node runs, a `heartbeat` event this often (seconds) tells its waiters how long so
#: far (and the expected time): a long build is never a silent terminal
HEARTBEAT_EVERY = 10.0
#: the latest log lines of a build replayed to a request that joins it (lines, characters)
JOIN_REPLAY_LINES = 1000
JOIN_REPLAY_CHARS = 256 * 1024


def ready_ahead(jobs: int, build_users: int | None) -> int:
    """How many builds may get ready ahead of their slot with `build_users` build users
    (None: builds run as the daemon, no pool). A build getting ready holds a build user: with
    none to spare beyond the slots', the slots' builds could wait for users the ready ones
    hold, and those for the slots."""
    if build_users is None:
        return jobs
    return max(0, min(jobs, build_users - jobs))


class BuildSlot:
    """The build slot a flight waits for, and then holds while its command runs.

    A flight's runner starts once its ticket may get ready (`FairSlots.wait_ready`: it is
    among the next to be granted), sets its build up and then waits in `start` for the slot
    itself; the slot is granted in the fair order whatever got ready. Calling it gives the
    slot (or the place in the queue) back early (the build's processes ended, or it runs on
    a cluster); `take_again` waits for one again (a build that must run here after all).
    Without `slots`, a flight that needs none: `start` returns at once."""

    def __init__(self, slots: FairSlots | None = None, ticket: Ticket | None = None,
                 user: int = 0, request: int = 0) -> None:
        self._slots = slots
        self._ticket = ticket if slots is not None else None
        self._user = user
        self._request = request
        self._on_start: Callable[[], None] | None = None

    @property
    def gated(self) -> bool:
        """Whether the build waits for its slot (`start`) before its command runs."""
        return self._slots is not None

    def when_started(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once, when the build starts: it holds its slot (`start`), or it
        leaves this machine's slots (called: it runs on a cluster)."""
        self._on_start = callback

    async def start(self) -> None:
        """Wait until the slot is granted; the command may run once this returns."""
        if self._slots is not None and self._ticket is not None:
            ticket = self._ticket
            try:
                await self._slots.wait(ticket)
            except BaseException:
                self._ticket = None  # `wait` gave the place (or slot) back
                raise
        self._started()

    def __call__(self) -> None:
        self._started()
        if self._slots is not None and self._ticket is not None:
            ticket, self._ticket = self._ticket, None
            self._slots.give_up(ticket)

    async def take_again(self) -> None:
        if self._slots is not None and self._ticket is None:
            self._ticket = await self._slots.acquire(self._user, self._request)

    def _started(self) -> None:
        if self._on_start is not None:
            on_start, self._on_start = self._on_start, None
            on_start()


class NodeRunner(Protocol):
    """Does the work of one node and records it valid; raises IxError on failure."""

    def is_valid(self, node: Node) -> bool: ...

    def expected_duration(self, node: Node) -> float | None: ...

    async def run_node(self, node: Node, emit: Listener, requested_by: int,
                       slot_done: BuildSlot = ...) -> None:
        """A build waits for `slot_done.start()` (its build slot) once it is ready to run its
        command, not before. `slot_done()` may be called once the node's processes have
        ended: its build slot goes to the next build while this one's bookkeeping
        (canonicalising, hashing, registering) goes on."""


class PlanNarrower(Protocol):
    """Turns build nodes a binary cache holds into substitute nodes (`ixd.cache.substitute`)."""

    async def narrow(self, plan: Plan, is_valid: Callable[[Node], bool]) -> Plan: ...


@dataclass(eq=False)
class Flight:
    """One node under way, shared by every request that needs it."""

    node: Node
    requested_by: int
    #: the request whose turn this flight takes in the fair queue (of `requested_by`)
    request_key: int
    done: trio.Event = field(default_factory=trio.Event)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    error: IxError | None = None
    #: uid of each waiting request's caller (a uid twice: two requests of one user)
    waiting_uids: Counter[int] = field(default_factory=Counter)
    listeners: list[Listener] = field(default_factory=list)
    #: the build's latest log lines (see `replay_log`), and how many it printed in all
    recent_log: deque[str] = field(default_factory=deque)
    recent_chars: int = 0
    log_lines: int = 0
    #: bytes of its log file up to the end of the last line handed to the listeners (what a
    #: follower reads from the file before the lines it is handed live)
    log_end: int = 0
    queued: float = field(default_factory=time.time)
    started: float | None = None
    #: its place in the build slots' queues (build nodes only)
    ticket: Ticket | None = None
    #: how each waiting user spelt the node (its name in their own plan), by uid
    names: dict[int, str] = field(default_factory=dict)

    def name_for(self, uid: int) -> str:
        """The node as user `uid` spelt it if they wait for it, else as its requester did."""
        return self.names.get(uid) or self.names.get(self.requested_by) or self.node.name

    @property
    def waiters(self) -> int:
        return sum(self.waiting_uids.values())

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        if kind == events.LOG_MARK:  # the builder's word on where its log file is: not an event
            self.log_end = int(data["end"])
            return
        if kind == events.LOG and isinstance(data.get("line"), str):
            self._remember(data["line"])
        elif kind == events.LOG_SKIPPED:  # lines left out live: replays count them as earlier
            self.log_lines += int(data.get("count", 0))
        for listener in list(self.listeners):
            listener(kind, data)

    def _remember(self, line: str) -> None:
        self.log_lines += 1
        self.recent_log.append(line)
        self.recent_chars += len(line)
        while len(self.recent_log) > JOIN_REPLAY_LINES or self.recent_chars > JOIN_REPLAY_CHARS:
            self.recent_chars -= len(self.recent_log.popleft())

    def replay_log(self, listener: Listener) -> None:
        """Hand a request joining the build its log so far: how many earlier lines are left
        out (`log-skipped`), then the latest ones. Called in the same step as the listener
        is added, it misses no line and repeats none; `ixc log -f` replays the whole file."""
        uid = self.node.uid
        skipped = self.log_lines - len(self.recent_log)
        if skipped:
            listener(events.LOG_SKIPPED, {"uid": uid, "count": skipped})
        for line in self.recent_log:
            listener(events.LOG, {"uid": uid, "line": line})


class Scheduler:
    def __init__(self, runner: NodeRunner, jobs: int,
                 substituter: PlanNarrower | None = None,
                 max_jobs_per_user: int | None = None, owner: int | None = None,
                 lookahead: int | None = None) -> None:
        """`owner`: the uid of the daemon's own account, whose builds are not capped;
        `lookahead`: how many builds get ready ahead of their slot (default `jobs`)."""
        self.runner = runner
        self.substituter = substituter
        self.jobs = jobs
        self._flights: dict[str, Flight] = {}
        self._nursery: trio.Nursery | None = None
        # Builds get ready while the slots are busy (their scratch and sandbox set up): a
        # freed slot's next command starts at once.
        self.build_slots = FairSlots(jobs, max_jobs_per_user,
                                     uncapped=() if owner is None else (owner,),
                                     lookahead=jobs if lookahead is None else lookahead)
        self._limiters = {"fetch": trio.CapacityLimiter(4), "realm": trio.CapacityLimiter(2),
                          "substitute": trio.CapacityLimiter(8),
                          "network": trio.CapacityLimiter(NETWORK_POOL)}
        self._request_keys = itertools.count(1)
        #: plans of requests in flight: the garbage collector's roots
        self._kept: dict[int, Plan] = {}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Own the nursery flights run in; returns only when cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def flights(self) -> list[Flight]:
        return list(self._flights.values())

    def flight_of(self, uid: str) -> Flight | None:
        """The flight of node `uid` if it is queued or running."""
        return self._flights.get(uid)

    @property
    def free_slots(self) -> int:
        """Build slots no build holds now."""
        return self.build_slots.free

    @contextlib.contextmanager
    def keep(self, plan: Plan) -> Iterator[None]:
        """Keep every path of `plan` from garbage collection while the block runs."""
        key = next(self._request_keys)
        self._kept[key] = plan
        try:
            yield
        finally:
            del self._kept[key]

    def kept_paths(self) -> set[str]:
        paths: set[str] = set()
        for plan in self._kept.values():
            for node in plan.nodes:
                paths.update(node.inputs)
                paths.update(node.outputs)
        return paths

    async def run(self, plan: Plan, listener: Listener, requested_by: int) -> None:
        """Make the plan's targets valid, running only the nodes the store lacks and needs
        (`needed_plan`); raise the first failure (BuildFailed). The whole plan is kept from
        garbage collection meanwhile: a node judged valid stays so until it is read."""
        with self.keep(plan):
            if self.substituter is None:
                await self._run(plan, listener, requested_by)
            else:
                await self._run_substituting(plan, self.substituter, listener, requested_by)

    async def _run_substituting(self, plan: Plan, substituter: PlanNarrower,
                                listener: Listener, requested_by: int) -> None:
        """Run the plan with what the caches hold substituted; a substitute refused (the
        substituter remembers it) is built here on the next try, with what it needs."""
        for _ in range(SUBSTITUTE_TRIES):
            # asked about only what must be built: a valid node's inputs need no substitute
            needed = needed_plan(plan, self.runner.is_valid)
            narrowed = await substituter.narrow(needed, self.runner.is_valid)
            try:
                await self._run(narrowed, listener, requested_by)
                return
            except CacheError as exc:
                log.warning("substitution failed, building instead: %s", exc)
                listener(events.NOTICE, {"text": f"{exc}; building it here instead"})
        await self._run(plan, listener, requested_by)

    async def _run(self, plan: Plan, listener: Listener, requested_by: int) -> None:
        plan = needed_plan(plan, self.runner.is_valid)
        finished: dict[str, trio.Event] = {n.uid: trio.Event() for n in plan.nodes}
        failures: dict[str, IxError] = {}
        todo = [n for n in plan.nodes if not self.runner.is_valid(n)]
        todo_uids = {n.uid for n in todo}
        request_key = next(self._request_keys)
        listener(events.PLAN, {"total": len(plan.nodes), "todo": len(todo), "jobs": self.jobs,
                          "nodes": [{"uid": n.uid, "name": n.name, "kind": n.kind,
                                     "expected": self.runner.expected_duration(n)}
                                    for n in todo]})
        for node in plan.nodes:
            if node.uid not in todo_uids:
                finished[node.uid].set()
        async with trio.open_nursery() as nursery:
            for node in todo:
                nursery.start_soon(self._want, node, finished, failures, listener,
                                   requested_by, request_key)
        if failures:
            own = [e for e in failures.values() if not isinstance(e, DependencyFailed)]
            raise (own or list(failures.values()))[0]

    async def _want(self, node: Node, finished: dict[str, trio.Event],
                    failures: dict[str, IxError], listener: Listener,
                    requested_by: int, request_key: int) -> None:
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
            error = await self._join(node, listener, requested_by, request_key)
            if error is not None:
                failures[node.uid] = error
        finally:
            finished[node.uid].set()

    async def _join(self, node: Node, listener: Listener, requested_by: int,
                    request_key: int) -> IxError | None:
        flight = self._flights.get(node.uid)
        if flight is None:
            if self.runner.is_valid(node):
                return None
            assert self._nursery is not None, "Scheduler.serve() is not running"
            flight = Flight(node, requested_by, request_key)
            if node.kind == "build" and not node.net:
                flight.ticket = self.build_slots.ticket(requested_by, request_key)
            self._flights[node.uid] = flight
            self._nursery.start_soon(self._fly, flight)
        else:
            listener(events.JOINED, {"uid": node.uid, "name": node.name})
            flight.replay_log(listener)  # no await until the listener is added below
            if flight.ticket is not None:  # a shared build takes each waiter's turn
                self.build_slots.add_key(flight.ticket, requested_by, request_key)
        flight.waiting_uids[requested_by] += 1
        flight.names.setdefault(requested_by, node.name)
        if node.name != flight.node.name:  # every waiter reads the node as they spelt it
            listener = _renaming(listener, node.name)
        flight.listeners.append(listener)
        try:
            await flight.done.wait()
        finally:
            flight.waiting_uids[requested_by] -= 1
            flight.waiting_uids += Counter()  # drop zero counts
            if not flight.waiting_uids[requested_by]:
                flight.names.pop(requested_by, None)
            flight.listeners.remove(listener)
            if flight.waiters == 0 and not flight.done.is_set():
                log.info("cancel %s %s: nobody waits for it", node.name, node.uid)
                flight.cancel_scope.cancel()
        return flight.error

    async def _run_flight(self, flight: Flight, slot_done: BuildSlot | None = None) -> None:
        node = flight.node
        if self.runner.is_valid(node):
            return
        slot = slot_done or BuildSlot()
        beating = trio.CancelScope()
        assert self._nursery is not None
        nursery = self._nursery

        def started() -> None:  # its command runs (or it went to a cluster): not while ready
            if beating.cancel_called:
                return
            flight.started = time.time()
            expected = self.runner.expected_duration(node)
            flight.emit(events.STARTED, {"uid": node.uid, "name": node.name, "kind": node.kind,
                                         "expected": expected})
            nursery.start_soon(_heartbeat, flight, expected, beating)

        if slot.gated:
            slot.when_started(started)
        else:
            started()
        try:
            await self.runner.run_node(node, flight.emit, flight.requested_by, slot)
        finally:
            beating.cancel()
        flight.emit(events.FINISHED, {"uid": node.uid, "name": node.name, "kind": node.kind,
                                      "duration": time.time() - (flight.started or time.time())})

    async def _fly(self, flight: Flight) -> None:
        node = flight.node
        try:
            with flight.cancel_scope:
                if flight.ticket is not None:
                    await self.build_slots.wait_ready(flight.ticket)
                    slot = BuildSlot(self.build_slots, flight.ticket, flight.requested_by,
                                     flight.request_key)
                    try:
                        await self._run_flight(flight, slot)
                    finally:
                        slot()
                else:
                    async with self._limiters[_pool_of(node)]:
                        await self._run_flight(flight)
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


async def _heartbeat(flight: Flight, expected: float | None, scope: trio.CancelScope
                     ) -> None:
    """Every HEARTBEAT_EVERY seconds while the node runs (until `scope` is cancelled): how
    long so far, and how long its package took last time (its waiters' ETA)."""
    node, started = flight.node, trio.current_time()
    with scope:
        while True:
            await trio.sleep(HEARTBEAT_EVERY)
            flight.emit(events.HEARTBEAT, {"uid": node.uid, "name": node.name, "kind": node.kind,
                                      "elapsed": trio.current_time() - started,
                                      "expected": expected})


def _renaming(listener: Listener, name: str) -> Listener:
    """`listener`, with the node's events naming it `name` (its waiter's own spelling)."""
    def renamed(kind: str, data: dict[str, Any]) -> None:
        listener(kind, {**data, "name": name} if "name" in data else data)
    return renamed


def _pool_of(node: Node) -> str:
    """The limiter a node without a build slot waits for: a `net` build waits for the
    network pool (it mostly waits on the network, not the CPU), the others by kind."""
    return "network" if node.kind == "build" else node.kind
