"""What runs against the store as it is (`needed_plan`), and the scheduler running only
that: a valid package needs none of its build inputs, a realm needs what it links."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from ixd.build.scheduler import Scheduler
from ixd.model.nodes import Node, NodeKind, Plan, needed_plan
from tests.test_scheduler import FakeRunner, quiet


def _node(uid: str, *deps: str, kind: NodeKind = "build") -> Node:
    return Node(uid=uid, kind=kind, name=uid, deps=deps, inputs=(),
                outputs=(f"/store/{uid}",))


#: a tool and a source make libc; libc and the tool make lib and app; the realm links both
PLAN = Plan((_node("src", kind="fetch"), _node("cc"), _node("libc", "src", "cc"),
             _node("lib", "libc", "cc"), _node("app", "lib", "libc", "cc"),
             _node("rlm", "app", "lib", kind="realm")), ("rlm",))


def _uids(plan: Plan) -> list[str]:
    return [n.uid for n in plan.nodes]


def test_valid_packages_need_none_of_their_build_inputs() -> None:
    valid = {"app", "lib"}  # gc took libc, cc and the source: build-only inputs
    needed = needed_plan(PLAN, lambda n: n.uid in valid)
    assert _uids(needed) == ["lib", "app", "rlm"]
    assert needed.targets == PLAN.targets


def test_a_valid_realm_still_needs_what_it_links() -> None:
    valid = {"rlm", "app"}  # lib is gone (never so after gc: this is a repair)
    assert _uids(needed_plan(PLAN, lambda n: n.uid in valid)) == [
        "src", "cc", "libc", "lib", "app", "rlm"]
    everything = {n.uid for n in PLAN.nodes}
    assert _uids(needed_plan(PLAN, lambda n: n.uid in everything)) == ["lib", "app", "rlm"]


def test_an_invalid_package_needs_its_inputs_and_nothing_is_left_out_of_a_fresh_store(
        ) -> None:
    assert needed_plan(PLAN, lambda n: False) == PLAN
    needed = needed_plan(PLAN, lambda n: n.uid in {"lib", "cc"})
    assert _uids(needed) == ["src", "cc", "libc", "lib", "app", "rlm"]


def test_a_substitutable_package_needs_only_its_references() -> None:
    needed = needed_plan(PLAN, lambda n: False, {"app": ("lib",), "lib": ()})
    assert [(n.uid, n.kind, n.deps) for n in needed.nodes] == [
        ("lib", "substitute", ()), ("app", "substitute", ("lib",)),
        ("rlm", "realm", ("app", "lib"))]


async def test_the_scheduler_builds_nothing_for_valid_packages_whose_inputs_are_gone(
        autojump_clock: Any) -> None:
    runner = FakeRunner()
    runner.valid = {"app", "lib"}
    scheduler = Scheduler(runner, jobs=2)
    events: list[tuple[str, dict[str, Any]]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        await scheduler.run(PLAN, lambda kind, data: events.append((kind, data)), 0)
        assert runner.started == ["rlm"]  # the realm's assembly, no build
        assert events[0][1]["todo"] == 1 and events[0][1]["total"] == 3
        # a package whose inputs are asked for: the build-only inputs are built again
        runner.started.clear()
        runner.valid = {"rlm", "app", "lib"}
        await scheduler.run(Plan(PLAN.nodes, ("libc",)), quiet, 0)
        assert sorted(runner.started) == ["cc", "libc", "src"]
        nursery.cancel_scope.cancel()


async def test_what_a_running_plan_judged_valid_stays_a_gc_root_until_it_ends(
        autojump_clock: Any) -> None:
    """The collector's roots include every path of a plan under way, the valid nodes whose
    inputs were left out among them: nothing judged valid goes before it is read."""
    runner = FakeRunner(seconds=10)
    runner.valid = {"app", "lib"}
    scheduler = Scheduler(runner, jobs=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.serve)
        nursery.start_soon(scheduler.run, PLAN, quiet, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert runner.started == ["rlm"]  # assembling: app and lib are read now
        assert {"/store/app", "/store/lib", "/store/rlm"} <= scheduler.kept_paths()
        await trio.sleep(11)  # the assembly ends at 10
        assert scheduler.kept_paths() == set()
        nursery.cancel_scope.cancel()
