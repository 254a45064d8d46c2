"""The daemon's ops in this process, on a real SQLite build database and a real store folder,
with a fake runner where builds would run: the no-op answer from a settled realm, who may
change a realm, the generation a rollback goes to, `status` pages, the admin checks, the
handler table, and the runner's garbage-collection guard."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from ixd.build.runner import StoreRunner
from ixd.build.scheduler import BuildSlot, Listener, Scheduler
from ixd.daemon.build_ops import BuildOps
from ixd.daemon.catalog import Catalog
from ixd.daemon.core import Config, Daemon
from ixd.daemon.emit import Relay
from ixd.daemon.identity import Caller
from ixd.daemon.realm_access import RealmAccess
from ixd.daemon.realm_cache import RealmCache, Settled
from ixd.daemon.realm_change import RealmChanges
from ixd.daemon.realm_ops import RealmOps, rollback_target
from ixd.model.layout import Layout
from ixd.model.nodes import Node, Plan, Source
from ixd.model.realm import RealmPatch, RealmState, apply_patch
from ixd.model.words import lex_mutation
from ixd.store.db import BuildDatabase, Generation
from ixd.wire.errors import (
    BadRequest,
    CacheError,
    NoSuchRealm,
    PermissionDenied,
    RealmError,
    UnknownOp,
)
from ixd.wire.ops import check_request

ROOT = Caller(uid=0, gid=0, pid=1)
#: a uid without an account: it may change only realms it made
STRANGER = Caller(uid=54321, gid=54321, pid=1)
OTHER_UID = 1234
REALM = "ops-work"  # not a login: whoever creates it owns it
A = "bin/a"
B = "bin/b"


def quiet(kind: str, data: dict[str, Any]) -> None:
    pass


def checked(op: str, args: dict[str, Any]) -> Any:
    """`args` as the server hands them to op `op`: checked, in the op's record."""
    return check_request(op, args)


def patches(*words: str, realm: str = REALM) -> list[RealmPatch]:
    return lex_mutation([realm, *words], realm)


class FakeRunner:
    """Validity as a set; builds that end when the test opens `gate`; remote workers as
    the test sets them."""

    def __init__(self) -> None:
        self.valid: set[str] = set()
        self.gate = trio.Event()
        self.remote: dict[str, str] = {}

    def is_valid(self, node: Node) -> bool:
        return node.uid in self.valid

    def expected_duration(self, node: Node) -> float | None:
        return 12.5 if node.kind == "build" else None

    async def run_node(self, node: Node, emit: Listener, requested_by: int,
                       slot_done: BuildSlot | None = None) -> None:
        if slot_done is not None:  # as a local build: it runs in a build slot
            await slot_done.start()
        await self.gate.wait()
        self.valid.add(node.uid)

    def remote_worker(self, uid: str) -> str | None:
        return self.remote.get(uid)


@dataclass
class World:
    layout: Layout
    db: BuildDatabase
    cache: RealmCache
    access: RealmAccess
    catalog: Catalog
    runner: FakeRunner
    scheduler: Scheduler
    changes: RealmChanges
    realms: RealmOps
    builds: BuildOps

    def entry(self, realm: str, number: int) -> Path:
        """A folder in the store for generation `number` of `realm`."""
        path = self.layout.store / f"{number:032x}-rlm-{realm}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def settle(self, realm: str, words: list[str], owner: int) -> Settled:
        """`realm` as a change of `words` by `owner` would leave it: a generation recorded,
        its plan's entries valid, its link switched, remembered as settled."""
        state = RealmState(realm)
        for patch in patches(*words, realm=realm):
            state = apply_patch(state, patch)
        number = len(self.db.generations(realm)) + 1
        path = self.entry(realm, number)
        fetch = Node(uid="f" * 64, kind="fetch", name="https://example.invalid/a.tar.gz",
                     deps=(), inputs=(), outputs=(str(self.layout.source_path("f" * 64)),),
                     sources=(Source("https://example.invalid/a.tar.gz", "f" * 64, "a"),))
        build = Node(uid="b" * 32, kind="build", name=A, deps=(fetch.uid,), inputs=(),
                     outputs=(str(self.layout.store / f"{'b' * 32}-bin-a"),))
        assemble = Node(uid=path.name[:32], kind="realm", name=f"realm {realm}",
                        deps=(build.uid,), inputs=(build.outputs[0],), outputs=(str(path),))
        plan = Plan((fetch, build, assemble), (assemble.uid,))
        self.runner.valid |= {n.uid for n in plan.nodes}
        generation = self.db.add_generation(realm, str(path), state.to_json(), owner, owner)
        self.layout.realm_link(realm).parent.mkdir(parents=True, exist_ok=True)
        self.layout.realm_link(realm).unlink(missing_ok=True)
        self.layout.realm_link(realm).symlink_to(path)
        settled = Settled(generation, owner, state, plan, self.catalog.changes)
        self.cache.settle(realm, settled)
        return settled


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    layout = Layout(tmp_path / "root")
    layout.ensure()
    (tmp_path / "overlay").mkdir()
    db = BuildDatabase(layout.database)
    cache = RealmCache()
    access = RealmAccess(db, layout, cache, admin_group=None)
    catalog = Catalog((tmp_path / "overlay",), layout, {})
    runner = FakeRunner()
    scheduler = Scheduler(runner, jobs=1)
    yield World(layout, db, cache, access, catalog, runner, scheduler,
                RealmChanges(db, layout, catalog, access, cache, scheduler, runner),
                RealmOps(db, layout, access, cache),
                BuildOps(db, layout, catalog, scheduler, runner, cluster=None))
    db.close()


# --- a change that changes nothing ----------------------------------------------------------


def test_a_noop_is_answered_from_the_settled_realm(world: World) -> None:
    settled = world.settle(REALM, [f"+{A}", f"+{B}"], owner=STRANGER.uid)
    world.layout.realm_link(REALM).unlink()  # the answer puts the link back as it was

    for words, fresh in [([f"+{B}"], False), ([f"+{A}", f"+{B}"], True)]:
        answer = world.changes.unchanged(patches(*words), STRANGER, fresh)
        assert answer == {"realms": [{
            "realm": REALM, "path": settled.generation.path, "generation": 1,
            "changed": False, "state": settled.state.to_json()}]}
    assert world.layout.realm_link(REALM).resolve() == Path(settled.generation.path)


@pytest.mark.parametrize("why", ["flag", "recipe changed", "entry collected", "not settled"])
def test_a_change_is_not_answered_as_a_noop(world: World, why: str) -> None:
    words = [f"+{B}"]
    settled = world.settle(REALM, [f"+{A}", f"+{B}"], owner=STRANGER.uid)
    if why == "flag":
        words = [f"+{B}", "--x=1"]
    elif why == "recipe changed":
        world.catalog.changes += 1
    elif why == "entry collected":
        world.runner.valid.discard(settled.plan.nodes[1].uid)
    else:
        world.cache.forget(REALM)
    assert world.changes.unchanged(patches(*words), STRANGER, fresh=False) is None


def test_a_noop_does_not_need_the_fetched_sources(world: World) -> None:
    settled = world.settle(REALM, [f"+{A}"], owner=STRANGER.uid)
    world.runner.valid.discard(settled.plan.nodes[0].uid)  # the source left the cache
    assert world.changes.unchanged(patches(f"+{A}"), STRANGER, fresh=False) is not None


def test_a_noop_of_another_users_realm_is_refused(world: World) -> None:
    world.settle(REALM, [f"+{A}"], owner=OTHER_UID)
    with pytest.raises(PermissionDenied, match=f"may not change realm '{REALM}'"):
        world.changes.unchanged(patches(f"+{A}"), STRANGER, fresh=False)


def test_a_squatted_realm_is_never_a_noop(world: World) -> None:
    world.settle("root", [f"+{A}"], owner=OTHER_UID)  # `root` is uid 0's login
    assert world.changes.unchanged(patches(f"+{A}", realm="root"), ROOT, fresh=False) is None


# --- who may change a realm ----------------------------------------------------------------


def test_a_new_realm_is_its_creators(world: World) -> None:
    claim = world.access.authorize(REALM, STRANGER, "change")
    assert (claim.owner, claim.exists, claim.squatted) == (STRANGER.uid, False, False)


def test_only_its_owner_and_root_may_change_a_realm(world: World) -> None:
    world.db.add_generation(REALM, str(world.entry(REALM, 1)), {}, OTHER_UID, OTHER_UID)
    with pytest.raises(PermissionDenied, match="may not purge realm"):
        world.access.authorize(REALM, STRANGER, "purge")
    claim = world.access.authorize(REALM, ROOT, "purge")
    assert (claim.owner, claim.exists) == (OTHER_UID, True)


def test_the_settled_owner_is_asked_before_the_database(world: World) -> None:
    world.settle(REALM, [f"+{A}"], owner=STRANGER.uid)
    statements: list[str] = []
    world.db._db.conn.set_trace_callback(statements.append)
    try:
        claim = world.access.authorize(REALM, STRANGER, "change")
    finally:
        world.db._db.conn.set_trace_callback(None)
    assert (claim.owner, claim.exists) == (STRANGER.uid, True) and statements == []


def test_a_squatters_realm_goes_to_the_login(world: World) -> None:
    world.settle("root", [f"+{A}"], owner=OTHER_UID)
    claim = world.access.authorize("root", ROOT, "change")
    assert (claim.owner, claim.exists, claim.squatted) == (0, False, True)
    assert world.access.evict_squatter("root")
    assert world.db.realm("root") is None and "root" not in world.cache.settled
    assert not world.layout.realm_link("root").is_symlink()
    assert not world.access.evict_squatter("root")  # nothing left to drop


# --- rollback ------------------------------------------------------------------------------


def generation(number: int) -> Generation:
    return Generation(REALM, number, f"/store/{number}", {}, 0.0, 0)


@pytest.mark.parametrize(("current", "to", "expected"), [
    (4, None, 2),  # the newest before the current one, over a gap
    (2, None, 1),  # not the newest of all
    (2, 4, 4),  # forward, when asked
])
def test_the_generation_a_rollback_goes_to(current: int, to: int | None,
                                           expected: int) -> None:
    generations = [generation(n) for n in (1, 2, 4)]
    assert rollback_target(REALM, generations, current, to).number == expected


@pytest.mark.parametrize(("current", "to", "message"), [
    (1, None, r"at its first generation \(1\)"),
    (4, 3, "has no generation 3; it has 1, 2, 4"),
])
def test_a_rollback_with_nowhere_to_go(current: int, to: int | None, message: str) -> None:
    with pytest.raises(RealmError, match=message):
        rollback_target(REALM, [generation(n) for n in (1, 2, 4)], current, to)


async def test_a_rollback_switches_the_realm_back(world: World) -> None:
    first = world.settle(REALM, [f"+{A}"], owner=STRANGER.uid)
    world.settle(REALM, [f"+{B}"], owner=STRANGER.uid)
    answer = await world.realms.op_rollback(checked("rollback", {"realm": REALM}), STRANGER,
                                            quiet)
    assert answer == {"realm": REALM, "generation": 1, "previous": 2,
                      "path": first.generation.path}
    assert world.layout.realm_link(REALM).resolve() == Path(first.generation.path)
    assert world.db.realm(REALM)["current"] == 1  # type: ignore[index]
    assert REALM not in world.cache.settled  # the next change is not answered from before


async def test_a_rollback_to_a_generation_gone_from_the_store(world: World) -> None:
    first = world.settle(REALM, [f"+{A}"], owner=STRANGER.uid)
    world.settle(REALM, [f"+{B}"], owner=STRANGER.uid)
    await trio.Path(first.generation.path).rmdir()
    with pytest.raises(RealmError, match="gone from the store"):
        await world.realms.op_rollback(checked("rollback", {"realm": REALM}), STRANGER,
                                       quiet)
    assert world.db.realm(REALM)["current"] == 2  # type: ignore[index]


async def test_a_generation_whose_entry_is_gone_is_marked_collected(world: World) -> None:
    first = world.settle(REALM, [f"+{A}"], owner=STRANGER.uid)
    world.settle(REALM, [f"+{B}"], owner=STRANGER.uid)
    await trio.Path(first.generation.path).rmdir()
    listed = await world.realms.op_generations(checked("generations", {"realm": REALM}),
                                               STRANGER, quiet)
    assert [(g["number"], g["collected"]) for g in listed["generations"]] == [
        (1, True), (2, False)]
    with pytest.raises(RealmError, match=r"1 of realm .* was collected: .* nothing was changed"):
        await world.realms.op_rollback(checked("rollback", {"realm": REALM, "to": 1}),
                                       STRANGER, quiet)


@pytest.mark.parametrize(("args", "caller", "error"), [
    ({"realm": REALM, "to": True}, STRANGER, BadRequest),
    ({"realm": REALM}, Caller(uid=OTHER_UID, gid=OTHER_UID, pid=1), PermissionDenied),
    ({"realm": "ops-none"}, STRANGER, NoSuchRealm),
])
async def test_a_rollback_refused(world: World, args: dict[str, Any], caller: Caller,
                                  error: type[Exception]) -> None:
    world.settle(REALM, [f"+{A}"], owner=STRANGER.uid)
    world.settle(REALM, [f"+{B}"], owner=STRANGER.uid)
    with pytest.raises(error):
        await world.realms.op_rollback(checked("rollback", args), caller, quiet)


async def test_purge_forgets_the_realm(world: World) -> None:
    world.settle(REALM, [f"+{A}"], owner=STRANGER.uid)
    assert await world.realms.op_purge(checked("purge", {"realm": REALM}), STRANGER, quiet) == {
        "realm": REALM, "purged": True}
    assert world.db.realm(REALM) is None and REALM not in world.cache.settled
    assert not world.layout.realm_link(REALM).is_symlink()
    with pytest.raises(NoSuchRealm):
        await world.realms.op_purge(checked("purge", {"realm": REALM}), STRANGER, quiet)


# --- status pages --------------------------------------------------------------------------


def build_node(i: int) -> Node:
    return Node(uid=f"{i:032x}", kind="build", name=f"bin/n{i}", deps=(), inputs=(),
                outputs=(f"/store/{i:032x}-bin-n{i}",))


async def test_status_pages_running_builds_first(world: World) -> None:
    nodes = [build_node(i) for i in range(3)]
    async with trio.open_nursery() as nursery:
        await nursery.start(world.scheduler.serve)
        nursery.start_soon(world.scheduler.run, Plan(tuple(nodes), ()), quiet, 0)
        await trio.testing.wait_all_tasks_blocked()  # one build runs, two wait for the slot
        running = next(f.node.uid for f in world.scheduler.flights() if f.started)
        world.runner.remote[running] = ""  # submitted to a cluster, no worker said so yet

        first = await world.builds.op_status(checked("status", {"limit": 2}), ROOT, quiet)
        assert [b["state"] for b in first["builds"]] == ["running", "queued"]
        assert (first["total"], first["running"], first["queued"]) == (3, 1, 2)
        assert (first["jobs"], first["slots_free"], first["offset"]) == (1, 0, 0)
        top = first["builds"][0]
        assert top["uid"] == running and top["worker"] == "(submitted)"
        assert top["expected"] == 12.5 and top["requested_by"] == "root"
        assert top["waiting"] == ["root"] and top["waiting_count"] == 1
        assert "worker" not in first["builds"][1]

        world.runner.remote[running] = "tcp://worker-1"
        rest = await world.builds.op_status(checked("status", {"limit": 2, "offset": 2}),
                                            ROOT, quiet)
        assert len(rest["builds"]) == 1 and rest["builds"][0]["state"] == "queued"
        shown = {b["uid"] for b in first["builds"] + rest["builds"]}
        assert shown == {n.uid for n in nodes}
        again = await world.builds.op_status(checked("status", {}), ROOT, quiet)
        assert again["builds"][0]["worker"] == "tcp://worker-1"

        world.runner.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert (await world.builds.op_status(checked("status", {}), ROOT, quiet))["total"] == 0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("args", [{"limit": 0}, {"limit": 1001}, {"offset": -1},
                                  {"limit": "2"}])
async def test_status_refuses_a_bad_page(world: World, args: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        await world.builds.op_status(checked("status", args), ROOT, quiet)


# --- the daemon: its handler table and the admin ops ---------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "overlay").mkdir()
    made = Daemon(Config(root=tmp_path / "root", overlays=(tmp_path / "overlay",),
                         confine=False))
    yield made
    made.db.close()


OPS = ["build", "builds", "cluster-build", "dep", "diff", "export", "gc", "generations", "let",
       "list", "log", "mut", "ping", "plan", "purge", "push", "rollback", "run", "search",
       "show", "status", "why"]


async def test_an_unknown_op_is_refused_naming_the_ops(daemon: Daemon) -> None:
    with pytest.raises(UnknownOp) as refused:
        await daemon.handle("frobnicate", {}, ROOT, quiet)
    assert refused.value.code == "E_UNKNOWN_OP"
    assert refused.value.message == (f"unknown op 'frobnicate'; this daemon knows: "
                                     f"{', '.join(OPS)}")
    pinged = await daemon.handle("ping", checked("ping", {}), STRANGER, Relay(quiet))
    assert pinged["uid"] == STRANGER.uid


async def test_only_a_cluster_workers_account_may_build_for_the_cluster(
        daemon: Daemon) -> None:
    for caller in (ROOT, STRANGER):
        with pytest.raises(PermissionDenied, match="builds for no cluster"):
            await daemon.handle("cluster-build", checked("cluster-build", {"node": {}}),
                                caller, Relay(quiet))


async def test_admin_ops_need_an_admin(daemon: Daemon) -> None:
    for op, doing in [("gc", "collect garbage"), ("push", "push to the cache")]:
        with pytest.raises(PermissionDenied, match=f"may not {doing}: that needs root or "
                                                   r"the admin group \(none set\)"):
            await daemon.handle(op, checked(op, {}), STRANGER, Relay(quiet))
    with pytest.raises(CacheError, match="no push cache"):
        await daemon.handle("push", checked("push", {}), ROOT, Relay(quiet))
    assert await daemon.handle("gc", checked("gc", {}), ROOT, Relay(quiet)) == {
        "entries": 0, "bytes": 0, "kept": 0,
                                                          "logs": 0, "log_bytes": 0}


# --- the runner's guard of what garbage collection deletes -----------------------------------


async def test_a_node_being_collected_waits_for_the_collection(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    layout.ensure()
    db = BuildDatabase(layout.database)
    entry = "e" * 32
    db.register_valid(entry, str(layout.store / f"{entry}-bin-e"), "bin/e", "bin", "h")
    runner = StoreRunner(layout, db, confine=False, mirrors=(), make_thrs=1)
    sha = "d" * 64  # a source already fetched: running its node only waits for the guard
    layout.source_path(sha).parent.mkdir(parents=True, exist_ok=True)
    layout.source_path(sha).write_bytes(b"")
    fetch = Node(uid=sha, kind="fetch", name="https://example.invalid/d", deps=(),
                 inputs=(), outputs=(str(layout.source_path(sha)),),
                 sources=(Source("https://example.invalid/d", sha, "d"),))
    ran = trio.Event()

    async def run() -> None:
        await runner.run_node(fetch, quiet, 0)
        ran.set()

    assert runner.is_valid_uid(entry)
    async with trio.open_nursery() as nursery:
        with runner.collecting([entry, sha]):
            assert not runner.is_valid_uid(entry)  # nobody counts on it from now on
            nursery.start_soon(run)
            await trio.testing.wait_all_tasks_blocked()
            assert not ran.is_set()
    assert ran.is_set() and not runner.is_valid_uid(entry)
    db.close()


def test_a_worker_is_noted_only_for_a_remote_build_of_this_daemon(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    layout.ensure()
    db = BuildDatabase(layout.database)
    runner = StoreRunner(layout, db, confine=False, mirrors=(), make_thrs=1)
    runner.note_remote_worker("c" * 32, "tcp://worker-1")  # another ixd's build
    assert runner.remote_worker("c" * 32) is None
    db.close()
