"""A change that changes nothing costs one round trip (issue 13, item 2): it is answered from
the realm as its last change left it, with no rendering, no planning and no database, but
only while that is what the full change would answer: not once a recipe changed, a flag
differs, the order differs, or the caller may not change the realm.

A real `Daemon` in this process (real recipes, real builds, real SQLite, the real inotify
watcher), so the database's statements and the renders can be counted.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ixd.daemon.core import Config, Daemon
from ixd.daemon.emit import Relay, discard
from ixd.daemon.identity import Caller
from ixd.model.realm import patch_to_wire
from ixd.model.words import lex_mutation
from ixd.wire.errors import BadRequest, IxError, PermissionDenied
from ixd.wire.ops import check_request
from tests.daemon_harness import HOST_TOOLS_SETTINGS, MIRROR, PKGS, TEST_OVERLAY

ROOT = Caller(uid=0, gid=0, pid=1)
REALM = "noop"
A = "bin/slow(secs=0,tag=a)"
B = "bin/slow(secs=0,tag=b)"


def mut(*words: str) -> dict[str, Any]:
    return {"patches": [patch_to_wire(p) for p in lex_mutation([REALM, *words], REALM)]}


class Counted:
    """The daemon's SQL statements and renders from now on."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.statements: list[str] = []
        self.renders = daemon.graph.renders
        daemon.db._db.conn.set_trace_callback(self.statements.append)

    def stop(self) -> tuple[list[str], int]:
        self.daemon.db._db.conn.set_trace_callback(None)
        return self.statements, self.daemon.graph.renders - self.renders


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    overlay = tmp_path / "overlay"
    shutil.copytree(TEST_OVERLAY, overlay)  # edited by a test
    running = Daemon(Config(root=tmp_path / "root", overlays=(overlay, PKGS), confine=False,
                            mirrors=(f"{MIRROR}/{{sha}}",), jobs=2,
                            settings=HOST_TOOLS_SETTINGS))
    async with trio.open_nursery() as nursery:
        await nursery.start(running.scheduler.serve)
        await nursery.start(running.watch_recipes)
        yield running
        nursery.cancel_scope.cancel()


async def ask(daemon: Daemon, op: str, args: dict[str, Any], caller: Caller = ROOT) -> Any:
    return await daemon.handle(op, check_request(op, args), caller, Relay(discard))


async def test_a_noop_is_answered_without_planning_or_the_database(daemon: Daemon) -> None:
    made = (await ask(daemon, "mut", mut(f"+{A}", f"+{B}")))["realms"][0]
    assert made["changed"] and made["generation"] == 1

    counted = Counted(daemon)
    again = await ask(daemon, "mut", mut(f"+{B}"))  # B is at the front: nothing moves
    behind = await ask(daemon, "mut", mut(f"+{A}"))  # A is there as asked: it stays put
    same_set = await ask(daemon, "let", mut(f"+{A}", f"+{B}"))  # the same words, same order
    statements, renders = counted.stop()
    assert statements == [] and renders == 0
    for answer in (again, behind, same_set):
        realm = answer["realms"][0]
        assert not realm["changed"] and realm["generation"] == 1
        assert realm["path"] == made["path"] and realm["state"] == made["state"]

    # the full change says the same, word for word
    daemon.realm_cache.settled.clear()
    assert await ask(daemon, "mut", mut(f"+{B}")) == again


async def test_an_answer_without_the_state_when_not_asked_for(daemon: Daemon) -> None:
    """`state: false` (what ixc sends without --json): the same answer less each realm's
    state, from the full change and from the no-op alike; nothing else differs."""
    brief = (await ask(daemon, "mut", {**mut(f"+{A}"), "state": False}))["realms"][0]
    assert "state" not in brief and brief["changed"] and brief["generation"] == 1
    full = (await ask(daemon, "mut", mut(f"+{A}")))["realms"][0]  # the no-op, state asked
    assert [e["selector"] for e in full["state"]["entries"]] == [A]
    noop = (await ask(daemon, "mut", {**mut(f"+{A}"), "state": False}))["realms"][0]
    assert noop == {k: v for k, v in full.items() if k != "state"}
    assert {k: v for k, v in brief.items() if k != "changed"} == {
        k: v for k, v in noop.items() if k != "changed"}
    changed = (await ask(daemon, "let", {**mut(f"+{B}"), "state": False}))["realms"][0]
    assert "state" not in changed and changed["changed"] and changed["generation"] == 2


async def test_words_are_lexed_as_ixc_would_for_the_caller(daemon: Daemon) -> None:
    """`words` (what ixc sends): the same change as the patches ixc would have lexed, the
    caller's login the default realm; a bad word is the lexer's error, and no change."""
    by_patches = await ask(daemon, "mut", mut(f"+{A}", "--x=1"))
    daemon.realm_cache.settled.clear()
    by_words = await ask(daemon, "mut", {"words": [REALM, f"+{A}", "--x=1"]})
    assert by_words["realms"][0] == {**by_patches["realms"][0], "changed": False}
    own = (await ask(daemon, "mut", {"words": [f"+{B}"]}))["realms"][0]
    assert own["realm"] == "root" and own["generation"] == 1  # uid 0's login
    for words, code, says in (([REALM, "+nope"], "E_USAGE", "'+nope' is neither"),
                              ([REALM, f"-{A}", "--x=2"], "E_USAGE", "which is being removed"),
                              ([REALM, "+bin/x", "--kind=lib"], "E_BAD_FLAG", "'kind'"),
                              (["a:b", "+bin/x"], "E_BAD_REALM_NAME", "a:b"),
                              # ixc reads an embed's file as its user: ixd reads none
                              ([REALM, "+bin/x", "--embed:k=/etc/shadow"], "E_USAGE",
                               "'embed:k'")):
        with pytest.raises(IxError) as caught:
            await ask(daemon, "mut", {"words": words})
        assert caught.value.code == code and says in caught.value.message, caught.value
    for args in ({"words": [REALM], **mut(f"+{A}")}, {}, {"words": []}, {"words": [7]}):
        with pytest.raises(BadRequest):
            check_request("mut", args)
    realm = (await ask(daemon, "list", {"realm": REALM}))["state"]
    assert [e["selector"] for e in realm["entries"]] == [A]


@pytest.mark.parametrize("words", [
    [f"-{A}", f"+{A}"],  # raises A to the front: the front entry wins file conflicts
    [f"+{B}", "--x=1"],  # a flag on the entry
    ["--x=1"],  # a realm flag
    [f"-{A}"],
])
async def test_a_change_is_never_taken_for_a_noop(daemon: Daemon, words: list[str]) -> None:
    await ask(daemon, "mut", mut(f"+{A}", f"+{B}"))
    realm = (await ask(daemon, "mut", mut(*words)))["realms"][0]
    assert realm["changed"] and realm["generation"] == 2


async def test_a_let_in_another_order_is_a_change(daemon: Daemon) -> None:
    await ask(daemon, "mut", mut(f"+{A}", f"+{B}"))
    realm = (await ask(daemon, "let", mut(f"+{B}", f"+{A}")))["realms"][0]
    assert realm["changed"]
    assert [e["selector"] for e in realm["state"]["entries"]] == [A, B]


async def test_a_recipe_changed_since_the_realm_was_built_is_rebuilt(daemon: Daemon) -> None:
    made = (await ask(daemon, "mut", mut(f"+{A}")))["realms"][0]
    seen = daemon.catalog.changes
    recipe = daemon.config.overlays[0] / "bin" / "slow" / "ix.sh"
    recipe.write_text(recipe.read_text().replace("starts", "begins"))
    with trio.fail_after(30):  # the watcher reports the edit: polled, with a deadline
        while daemon.catalog.changes == seen:  # noqa: ASYNC110 (the daemon has no event)
            await trio.sleep(0.01)
    realm = (await ask(daemon, "mut", mut(f"+{A}")))["realms"][0]
    assert realm["changed"] and realm["generation"] == 2 and realm["path"] != made["path"]
    # and from then on the new build is the realm's no-op
    counted = Counted(daemon)
    again = (await ask(daemon, "mut", mut(f"+{A}")))["realms"][0]
    assert counted.stop() == ([], 0)
    assert not again["changed"] and again["path"] == realm["path"]


async def test_permission_is_checked_before_a_noop(daemon: Daemon) -> None:
    await ask(daemon, "mut", mut(f"+{A}"))
    stranger = Caller(uid=54321, gid=54321, pid=1)
    with pytest.raises(PermissionDenied):
        await ask(daemon, "mut", mut(f"+{A}"), stranger)


async def test_a_rollback_or_purge_is_not_answered_from_before(daemon: Daemon) -> None:
    await ask(daemon, "mut", mut(f"+{A}"))
    await ask(daemon, "mut", mut(f"+{B}"))
    back = await ask(daemon, "rollback", {"realm": REALM})
    assert back["generation"] == 1
    # the realm is at generation 1 (A alone) now: re-adding B is a change again
    realm = (await ask(daemon, "mut", mut(f"+{B}")))["realms"][0]
    assert realm["changed"] and realm["generation"] == 3
    await ask(daemon, "purge", {"realm": REALM})
    realm = (await ask(daemon, "mut", mut(f"+{B}")))["realms"][0]
    assert realm["changed"] and realm["generation"] == 1


async def test_a_collected_entry_is_not_taken_as_built(daemon: Daemon) -> None:
    made = (await ask(daemon, "mut", mut(f"+{A}")))["realms"][0]
    settled = daemon.realm_cache.settled[REALM]
    linked = set(settled.plan.nodes[-1].deps)  # what the realm links
    build = next(n for n in settled.plan.nodes if n.kind == "build" and n.uid in linked)
    daemon.runner.valid.discard(build.uid)  # as gc does for what it collects
    realm = (await ask(daemon, "mut", mut(f"+{A}")))["realms"][0]
    assert not realm["changed"] and realm["path"] == made["path"]
    assert build.uid in daemon.runner.valid  # the full change made it valid again


async def test_a_collected_build_input_is_not_built_again(daemon: Daemon) -> None:
    """What a valid package was only built from (a host tool) is garbage for gc: the same
    change is still answered from the realm, and nothing builds it again."""
    await ask(daemon, "mut", mut(f"+{A}"))
    settled = daemon.realm_cache.settled[REALM]
    linked = set(settled.plan.nodes[-1].deps)
    tool = next(n for n in settled.plan.nodes if n.kind == "build" and n.uid not in linked)
    daemon.runner.valid.discard(tool.uid)
    counted = Counted(daemon)
    realm = (await ask(daemon, "mut", mut(f"+{A}")))["realms"][0]
    statements, renders = counted.stop()
    assert not realm["changed"] and statements == [] and renders == 0
    assert tool.uid not in daemon.runner.valid
