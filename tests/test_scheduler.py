"""The scheduler with a fake runner: dedup, fairness, cancellation (virtual time)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
import trio
import trio.testing

from ixd.build.fairness import FairSlots, Ticket
from ixd.build.scheduler import NETWORK_POOL, BuildSlot, Listener, Scheduler, ready_ahead
from ixd.model.nodes import Node, Plan
from ixd.wire.errors import BuildFailed, DependencyFailed


def node(uid: str, *deps: str) -> Node:
    return Node(uid=uid, kind="build", name=f"pkg/{uid}", deps=deps, inputs=(),
                outputs=(f"/store/{uid}",))


class FakeRunner:
    def __init__(self, seconds: float = 1.0, failing: frozenset[str] = frozenset(),
                 bookkeeping: float = 0.0) -> None:
        self.valid: set[str] = set()
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.seconds = seconds
        self.failing = failing
        #: seconds of work after the build's processes ended (its slot given back)
        self.bookkeeping = bookkeeping

    def is_valid(self, n: Node) -> bool:
        return n.uid in self.valid

    def expected_duration(self, n: Node) -> float | None:
        return None

    async def run_node(self, n: Node, emit: Listener, requested_by: int,
                       slot_done: BuildSlot | None = None) -> None:
        if slot_done is not None:  # as a local build: its command runs in a build slot
            await slot_done.start()
        self.started.append(n.uid)
        try:
            await trio.sleep(self.seconds)
        except trio.Cancelled:
            self.cancelled.append(n.uid)
            raise
        if n.uid in self.failing:
            raise BuildFailed(f"{n.name} failed")
        if self.bookkeeping and slot_done is not None:
            slot_done()
            await trio.sleep(self.bookkeeping)
        self.valid.add(n.uid)


def quiet(kind: str, data: dict[str, Any]) -> None:
    pass


async def test_the_next_build_starts_while_the_last_ones_bookkeeping_goes_on(
        autojump_clock: Any) -> None:
    runner = FakeRunner(seconds=1.0, bookkeeping=0.5)
    scheduler = Scheduler(runner, jobs=1)
    started: dict[str, float] = {}
    finished: dict[str, float] = {}

    def listener(kind: str, data: dict[str, Any]) -> None:
        if kind == "started":
            started[data["uid"]] = trio.current_time()

    async def request(name: str, plan: Plan) -> None:
        await scheduler.run(plan, listener, 1)
        finished[name] = trio.current_time()

    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        begin = trio.current_time()
        async with trio.open_nursery() as requests:
            requests.start_soon(request, "first", Plan((node("a"), node("c", "a")), ("c",)))
            await trio.testing.wait_all_tasks_blocked()
            requests.start_soon(request, "second", Plan((node("b"),), ("b",)))
        nursery.cancel_scope.cancel()
    # one slot: b starts when a's command ends, not after a's bookkeeping; c, which needs
    # a, waits for a to be valid and then for b's command
    assert started["a"] - begin == 0
    assert started["b"] - begin == pytest.approx(1.0)
    assert started["c"] - begin == pytest.approx(2.0)
    assert finished["first"] - begin == pytest.approx(3.5)


async def test_net_builds_wait_for_the_network_pool_not_the_build_slots(
        autojump_clock: Any) -> None:
    runner = FakeRunner(seconds=1.0)
    scheduler = Scheduler(runner, jobs=1)
    started: dict[str, float] = {}

    def listener(kind: str, data: dict[str, Any]) -> None:
        if kind == "started":
            started[data["uid"]] = trio.current_time()

    fetches = [dataclasses.replace(node(f"net{i}"), net=True)
               for i in range(NETWORK_POOL + 1)]
    plan = Plan((node("cpu"), *fetches), ())
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        begin = trio.current_time()
        await scheduler.run(plan, listener, 1)
        nursery.cancel_scope.cancel()
    # the one build slot runs `cpu`; the net builds run beside it, NETWORK_POOL at once
    assert started["cpu"] - begin == 0
    at_once = sorted(started[f.uid] - begin for f in fetches)
    assert at_once[:NETWORK_POOL] == [0] * NETWORK_POOL
    assert at_once[NETWORK_POOL] == pytest.approx(1.0)


async def test_shared_nodes_run_once_for_concurrent_requests(autojump_clock: Any) -> None:
    runner = FakeRunner()
    scheduler = Scheduler(runner, jobs=2)
    a = Plan((node("x"), node("y", "x"), node("a", "y")), ("a",))
    b = Plan((node("x"), node("y", "x"), node("b", "y")), ("b",))
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        async with trio.open_nursery() as requests:
            requests.start_soon(scheduler.run, a, quiet, 1)
            requests.start_soon(scheduler.run, b, quiet, 2)
        nursery.cancel_scope.cancel()
    assert sorted(runner.started) == ["a", "b", "x", "y"]
    assert runner.started.index("y") > runner.started.index("x")


@pytest.mark.parametrize("small_uid", [2, 1], ids=["another-user", "same-user"])
async def test_free_slots_go_round_robin_between_requests(autojump_clock: Any,
                                                          small_uid: int) -> None:
    # another user's single package, and a user's own small request beside their big one
    runner = FakeRunner()
    scheduler = Scheduler(runner, jobs=1)
    big = Plan(tuple(node(f"big{i}") for i in range(20)), ())
    small = Plan((node("small"),), ())
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        async with trio.open_nursery() as requests:
            requests.start_soon(scheduler.run, big, quiet, 1)
            await trio.testing.wait_all_tasks_blocked()
            requests.start_soon(scheduler.run, small, quiet, small_uid)
        nursery.cancel_scope.cancel()
    # the single package waited for one of the big request's builds, not for all twenty
    assert runner.started.index("small") == 1


async def test_slots_go_round_robin_between_users_not_requests(autojump_clock: Any) -> None:
    """User A floods the queue with ten requests of five builds; user B's one request of
    five still gets every other slot, not one turn in eleven."""
    runner = FakeRunner(seconds=1.0)
    scheduler = Scheduler(runner, jobs=1)
    alice, bob = 1001, 1002
    finished: dict[str, float] = {}

    async def request(name: str, plan: Plan, uid: int) -> None:
        await scheduler.run(plan, quiet, uid)
        finished[name] = trio.current_time()

    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        async with trio.open_nursery() as requests:
            for r in range(10):
                plan = Plan(tuple(node(f"a{r}-{i}") for i in range(5)), ())
                requests.start_soon(request, f"a{r}", plan, alice)
            await trio.testing.wait_all_tasks_blocked()
            b_queued = trio.current_time()
            requests.start_soon(request, "b", Plan(tuple(node(f"b-{i}") for i in range(5)), ()),
                                bob)
        nursery.cancel_scope.cancel()
    assert len(runner.started) == 55
    # B's builds interleave with A's: after the build already running, every other slot
    users = [uid[0] for uid in runner.started]
    assert users[:11] == ["a", "b"] * 5 + ["a"]
    # half of one slot makes B's fair share 5 builds in 10 s; it is done within twice that
    fair_share = 5 * 1.0 * 2
    assert finished["b"] - b_queued <= 2 * fair_share
    assert finished["b"] - b_queued <= 11.0
    assert max(finished.values()) == pytest.approx(55.0)




def granted_in_turn(slots: FairSlots, first: Ticket, waiting: list[Ticket]) -> list[Ticket]:
    """With one slot: each granted ticket releases it in turn; the order they got it in."""
    order: list[Ticket] = []
    holder = first
    for _ in waiting:
        slots.release(holder)
        holder = next(t for t in waiting if t.granted and t not in order)
        order.append(holder)
    slots.release(holder)
    return order


@pytest.mark.parametrize("seed", range(60))
def test_the_forecast_names_the_tickets_granted_next(seed: int) -> None:
    """`upcoming(k)` are the tickets the next k grants go to, in order, when the k slots
    are freed by the daemon's own (uncapped) builds: whatever the queues went through
    (shared builds in several queues, tickets given up, heads already granted)."""
    rng = random.Random(seed)
    total = rng.randint(1, 3)
    slots = FairSlots(total, per_user=rng.randint(1, total), uncapped=(0,))
    holders = [slots.ticket(0) for _ in range(total)]
    assert all(t.granted for t in holders)
    tickets: list[Ticket] = []
    for _ in range(rng.randint(0, 25)):
        step = rng.random()
        if step < 0.6 or not tickets:
            tickets.append(slots.ticket(rng.choice("ABC"), rng.randint(1, 3)))
        elif step < 0.85:
            slots.add_key(rng.choice(tickets), rng.choice("ABC"), rng.randint(1, 3))
        else:
            slots.give_up(rng.choice(tickets))
    forecast = slots.upcoming(total)
    granted_before = {t for t in tickets if t.granted}
    order: list[Ticket] = []
    for holder in holders:
        slots.release(holder)
        order += [t for t in tickets if t.granted and t not in granted_before
                  and t not in order]
    assert order == forecast
    assert slots.waiting == sum(not t.done for t in tickets)


async def test_the_next_builds_get_ready_while_the_slots_are_busy(autojump_clock: Any) -> None:
    """As many builds as slots set themselves up ahead; each starts its command as a slot
    frees, and one more gets ready in its place."""
    ready: dict[str, float] = {}
    started: dict[str, float] = {}

    class ReadyingRunner(FakeRunner):
        async def run_node(self, n: Node, emit: Listener, requested_by: int,
                           slot_done: BuildSlot | None = None) -> None:
            ready[n.uid] = trio.current_time()
            assert slot_done is not None
            await slot_done.start()
            started[n.uid] = trio.current_time()
            await trio.sleep(1.0)
            slot_done()
            self.valid.add(n.uid)

    scheduler = Scheduler(ReadyingRunner(), jobs=2, max_jobs_per_user=2)
    plan = Plan(tuple(node(f"n{i}") for i in range(6)), ())
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        await scheduler.run(plan, quiet, 1)
        nursery.cancel_scope.cancel()
    assert sorted(started.values()) == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert sorted(ready.values()) == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert all(ready[uid] <= started[uid] for uid in ready)


@pytest.mark.parametrize("users", [2, 3, 4])
async def test_builds_ready_ahead_never_hold_the_build_users_the_slots_need(
        autojump_clock: Any, users: int) -> None:
    """A build getting ready holds a build user (as LocalBuilds does). One user's four
    builds fill the slots and two more get ready; two other users come, and each freed slot
    goes to one of them, while each freed build user goes to a ready build: with as many
    users as slots, those hold the users the slots' builds need, and wait for the slots.
    `ready_ahead` leaves none ready then, and every build ends."""
    jobs, pool = 2, trio.CapacityLimiter(users)
    ran: list[str] = []

    class UserHolding(FakeRunner):
        async def run_node(self, n: Node, emit: Listener, requested_by: int,
                           slot_done: BuildSlot | None = None) -> None:
            assert slot_done is not None
            async with pool:  # held while it gets ready, runs and settles
                await slot_done.start()
                ran.append(n.uid)
                await trio.sleep(1.0)
                slot_done()
                await trio.sleep(0.5)  # its bookkeeping, its user still held
            self.valid.add(n.uid)

    scheduler = Scheduler(UserHolding(), jobs=jobs, max_jobs_per_user=jobs,
                          lookahead=ready_ahead(jobs, users))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)
            async with trio.open_nursery() as requests:
                requests.start_soon(scheduler.run,
                                    Plan(tuple(node(f"a{i}") for i in range(4)), ()), quiet, 1)
                await trio.testing.wait_all_tasks_blocked()
                requests.start_soon(scheduler.run, Plan((node("x"),), ()), quiet, 2)
                requests.start_soon(scheduler.run, Plan((node("y"),), ()), quiet, 3)
            nursery.cancel_scope.cancel()
    assert sorted(ran) == ["a0", "a1", "a2", "a3", "x", "y"]


def test_builds_get_ready_ahead_only_with_build_users_to_spare() -> None:
    assert ready_ahead(2, None) == 2 and ready_ahead(2, 16) == 2 and ready_ahead(2, 4) == 2
    assert ready_ahead(2, 3) == 1 and ready_ahead(2, 2) == 0 and ready_ahead(2, 1) == 0


def test_fair_slots_turns_go_by_user_then_by_request() -> None:
    slots = FairSlots(1)
    first = slots.ticket("A", 1)
    assert first.granted
    a1 = [slots.ticket("A", 1) for _ in range(3)]
    a2 = [slots.ticket("A", 2) for _ in range(3)]
    b = [slots.ticket("B", 9) for _ in range(3)]
    order = granted_in_turn(slots, first, [*a1, *a2, *b])
    # B has not been served: first; then A's request 2 (A's 1 was served last) ...
    assert order == [b[0], a2[0], b[1], a1[0], b[2], a2[1], a1[1], a2[2], a1[2]]
    assert slots.waiting == 0 and slots.free == 1 and slots.held == {}


def test_a_shared_build_takes_the_turn_of_any_waiter() -> None:
    slots = FairSlots(1)
    running = slots.ticket("A")  # A's first build takes the free slot
    assert running.granted
    own = [slots.ticket("A") for _ in range(5)]
    shared = slots.ticket("A")  # A asked for it last ...
    slots.add_key(shared, "B")  # ... but B waits for it too
    mine = slots.ticket("B")
    order = granted_in_turn(slots, running, [*own, shared, mine])
    # B had no turn yet: its turn goes to the shared build, not to A's sixth
    assert order[0] is shared and shared.user == "B"
    assert order[1] is own[0] and order[2] is mine
    assert order[3:] == own[1:] and slots.waiting == 0


def test_one_user_holds_at_most_its_share_of_the_slots() -> None:
    """Issue 21, row 3: three long builds of A with two slots leave one for B at once."""
    slots = FairSlots(2)
    assert slots.per_user == 1
    a = [slots.ticket("A") for _ in range(3)]
    assert [t.granted for t in a] == [True, False, False]
    assert slots.free == 1 and slots.held == {"A": 1}
    b = slots.ticket("B")
    assert b.granted and slots.free == 0
    slots.release(b)  # B is done: its slot waits for a user under their share
    assert slots.free == 1 and not a[1].granted
    slots.release(a[0])
    assert a[1].granted and not a[2].granted and slots.held == {"A": 1}
    # a build B waits for too takes B's share, and so runs beside A's
    slots.add_key(a[2], "B")
    assert a[2].granted and a[2].user == "B" and slots.held == {"A": 1, "B": 1}


def test_the_daemons_own_account_may_hold_every_slot() -> None:
    slots = FairSlots(2, uncapped=(0,))
    assert [slots.ticket(0).granted for _ in range(3)] == [True, True, False]
    assert not slots.ticket("A").granted  # and others wait their turn as before


def test_the_share_of_one_slot_is_the_slot() -> None:
    slots = FairSlots(1)
    assert slots.per_user == 1 and slots.ticket("A").granted
    assert FairSlots(4).per_user == 3 and FairSlots(4, per_user=4).per_user == 4
    assert FairSlots(2, per_user=9).per_user == 2
    with pytest.raises(ValueError, match="at least one slot"):
        FairSlots(2, per_user=0)


async def test_a_flood_of_long_builds_leaves_a_slot_for_another_user(
        autojump_clock: Any) -> None:
    runner = FakeRunner(seconds=60.0)
    scheduler = Scheduler(runner, jobs=2)
    finished: dict[str, float] = {}

    async def request(name: str, plan: Plan, uid: int) -> None:
        await scheduler.run(plan, quiet, uid)
        finished[name] = trio.current_time()

    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        begin = trio.current_time()
        async with trio.open_nursery() as requests:
            for i in range(3):
                requests.start_soon(request, f"a{i}", Plan((node(f"a{i}"),), ()), 1001)
            await trio.testing.wait_all_tasks_blocked()
            runner.seconds = 0.1
            requests.start_soon(request, "b", Plan((node("b"),), ()), 1002)
            await trio.testing.wait_all_tasks_blocked()
            runner.seconds = 60.0
        nursery.cancel_scope.cancel()
    # the slot B's build leaves stays free: A holds its share, one at a time
    assert finished["b"] - begin == pytest.approx(0.1)
    assert sorted(finished.values())[1:] == pytest.approx([60.0, 120.0, 180.0])


async def test_failure_stops_dependents_and_reaches_every_waiter(autojump_clock: Any) -> None:
    runner = FakeRunner(failing=frozenset({"x"}))
    scheduler = Scheduler(runner, jobs=2)
    plan = Plan((node("x"), node("y", "x")), ("y",))
    errors: list[BaseException] = []

    async def request() -> None:
        try:
            await scheduler.run(plan, quiet, 1)
        except BuildFailed as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        async with trio.open_nursery() as requests:
            requests.start_soon(request)
            requests.start_soon(request)
        nursery.cancel_scope.cancel()
    assert runner.started == ["x"]
    assert len(errors) == 2
    assert all(type(e) is BuildFailed and "pkg/x failed" in e.message for e in errors)
    assert not isinstance(errors[0], DependencyFailed)


async def test_build_nobody_waits_for_is_cancelled(autojump_clock: Any) -> None:
    runner = FakeRunner(seconds=100)
    scheduler = Scheduler(runner, jobs=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        with trio.move_on_after(5):
            await scheduler.run(Plan((node("long"),), ()), quiet, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert runner.cancelled == ["long"]
        assert scheduler.flights() == []
        assert scheduler.build_slots.free == 1
        nursery.cancel_scope.cancel()


async def test_build_goes_on_while_another_request_waits(autojump_clock: Any) -> None:
    runner = FakeRunner(seconds=100)
    scheduler = Scheduler(runner, jobs=1)
    plan = Plan((node("long"),), ())
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        async with trio.open_nursery() as requests:
            requests.start_soon(scheduler.run, plan, quiet, 2)
            with trio.move_on_after(5):
                await scheduler.run(plan, quiet, 1)
        nursery.cancel_scope.cancel()
    assert runner.started == ["long"] and runner.cancelled == []
    assert "long" in runner.valid


async def test_cancelled_waiter_reports_cancellation_to_a_late_joiner(
        autojump_clock: Any) -> None:
    runner = FakeRunner(seconds=100)
    scheduler = Scheduler(runner, jobs=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        with trio.move_on_after(1):
            await scheduler.run(Plan((node("n"),), ()), quiet, 1)
        await trio.testing.wait_all_tasks_blocked()
        # a new request after the cancellation starts it afresh and succeeds
        await scheduler.run(Plan((node("n"),), ()), quiet, 2)
        nursery.cancel_scope.cancel()
    assert runner.started == ["n", "n"] and "n" in runner.valid


async def test_fair_slots_forget_a_cancelled_waiter() -> None:
    slots = FairSlots(1)
    first = await slots.acquire("a")
    got: list[str] = []

    async def take(key: str) -> None:
        ticket = await slots.acquire(key)
        got.append(key)
        slots.release(ticket)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "c")
        await trio.testing.wait_all_tasks_blocked()
        async with trio.open_nursery() as inner:
            inner.start_soon(take, "b")
            await trio.testing.wait_all_tasks_blocked()
            assert slots.waiting == 2
            inner.cancel_scope.cancel()
        assert slots.waiting == 1
        slots.release(first)
    assert got == ["c"]
    assert slots.free == 1


def test_fair_slots_need_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FairSlots(0)


async def test_a_long_node_sends_a_heartbeat_every_ten_seconds(autojump_clock: Any) -> None:
    runner = FakeRunner(seconds=35)
    scheduler = Scheduler(runner, jobs=1)
    beats: list[tuple[float, float]] = []

    def listener(kind: str, data: dict[str, Any]) -> None:
        if kind == "heartbeat":
            beats.append((trio.current_time(), data["elapsed"]))

    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        begin = trio.current_time()
        await scheduler.run(Plan((node("long"),), ()), listener, 1)
        await trio.sleep(30)  # none after the node is done
        nursery.cancel_scope.cancel()
    assert [round(at - begin) for at, _ in beats] == [10, 20, 30]
    assert [round(elapsed) for _, elapsed in beats] == [10, 20, 30]


async def test_each_waiter_reads_a_shared_node_as_they_spelt_it(autojump_clock: Any) -> None:
    runner = FakeRunner(seconds=20)
    scheduler = Scheduler(runner, jobs=1)
    seen: dict[int, set[str]] = {1: set(), 2: set()}

    def listener(user: int) -> Listener:
        def heard(kind: str, data: dict[str, Any]) -> None:
            if "name" in data:
                seen[user].add(data["name"])
        return heard

    theirs = dataclasses.replace(node("x"), name="pkg/x(frobnicate=1)")
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        async with trio.open_nursery() as requests:
            requests.start_soon(scheduler.run, Plan((theirs,), ()), listener(1), 1)
            await trio.testing.wait_all_tasks_blocked()
            requests.start_soon(scheduler.run, Plan((node("x"),), ()), listener(2), 2)
            await trio.testing.wait_all_tasks_blocked()
            flight = scheduler.flight_of("x")
            assert flight is not None
            assert (flight.name_for(1), flight.name_for(2)) == ("pkg/x(frobnicate=1)", "pkg/x")
            assert flight.name_for(3) == "pkg/x(frobnicate=1)"  # a bystander: the asker's
        nursery.cancel_scope.cancel()
    assert seen == {1: {"pkg/x(frobnicate=1)"}, 2: {"pkg/x"}}
    assert runner.started == ["x"]
