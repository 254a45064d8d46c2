"""Generations tell the truth (real daemon, real socket): each shows its flags, adding what
a realm already has makes none, and gc forgets the generations it collects, so a rollback
to one fails before anything changes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.daemon_harness import RunningDaemon, public_daemon


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    with public_daemon("ix-generations-", ["--keep-generations", "0"]) as running:
        yield running


def _generations(daemon: RunningDaemon, realm: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        daemon.ixc("--json", "generations", realm).stdout)["generations"]
    return rows


def test_three_generations_with_different_flags_read_differently(
        daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "flags", "+bin/wave")
    daemon.ixc("mut", "flags", "bin/wave", "--wave_style=loud")
    daemon.ixc("mut", "flags", "--shout", "bin/wave", "--wave_style=quiet")
    lines = daemon.ixc("generations", "flags").stdout.splitlines()
    assert len(lines) == 3
    shown = [line[41:] for line in lines]  # what each generation holds, after who made it
    assert shown == ["bin/wave", "bin/wave --wave_style=loud",
                     "--shout=1 bin/wave --wave_style=quiet"], lines
    assert lines[2].startswith("*")


def test_adding_what_a_realm_already_has_makes_no_generation(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "again", "+bin/wave", "+bin/chatty(lines=1)")
    before = _generations(daemon, "again")
    # bin/wave is there (not at the front), as asked: nothing changes, not even the order
    answer = daemon.ixc("mut", "again", "+bin/wave")
    assert "unchanged" in answer.stdout
    answer = daemon.ixc("mut", "again", "bin/chatty(lines=1)")
    assert "unchanged" in answer.stdout
    assert _generations(daemon, "again") == before


def test_gc_forgets_collected_generations_and_a_rollback_to_one_changes_nothing(
        daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "old", "+bin/wave")
    daemon.ixc("mut", "old", "bin/wave", "--wave_style=loud")
    daemon.ixc("mut", "old", "bin/wave", "--wave_style=quiet")
    assert [g["number"] for g in _generations(daemon, "old")] == [1, 2, 3]
    first = _generations(daemon, "old")[0]["path"]
    daemon.ixc("gc")  # --keep-generations 0: only the current one stays
    assert not os.path.exists(first)
    assert [g["number"] for g in _generations(daemon, "old")] == [3]
    link = os.readlink(daemon.realm("old"))
    refused = daemon.ixc("rollback", "old", "--to", "1", check=False)
    assert refused.returncode == 1 and "has no generation 1" in refused.stderr
    refused = daemon.ixc("rollback", "old", check=False)
    assert refused.returncode == 1 and "nothing to roll back to" in refused.stderr
    assert os.readlink(daemon.realm("old")) == link
    assert [g["number"] for g in _generations(daemon, "old")] == [3]
