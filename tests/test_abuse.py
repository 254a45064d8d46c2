"""One user cannot starve the others (issue 21, rows 3 to 7): every attack below runs as a
real unprivileged account against a real root-run ixd, and the bound it meets is checked
here; the figures (latencies under the attack, memory, file sizes) are `bench/abuse.py`'s.

- build slots: three long builds of one user leave a slot for another user's build;
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.daemon_harness import RunningDaemon, public_daemon, wait_for

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="attacks run as real accounts: root")

ATTACKER = "ixtbob"
VICTIM = "ixtalice"


def spawn(daemon: RunningDaemon, user: str, *words: str) -> subprocess.Popen[str]:
    argv, env = daemon.ixc_argv(*words, user=user)
    return subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def status(daemon: RunningDaemon) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(daemon.ixc("status", "--json").stdout)
    return value


@pytest.fixture(scope="module")
def two_slots(accounts: dict[str, int]) -> Iterator[RunningDaemon]:
    with public_daemon("ix-abuse-slots-", ["--jobs", "2"]) as running:
        yield running


def test_three_long_builds_of_one_user_leave_a_slot_for_another(
        two_slots: RunningDaemon) -> None:
    """Row 3: with --jobs 2, three 60 s builds of the attacker; the victim's 0.1 s build
    starts at once and is done long before the first of them could end."""
    daemon = two_slots
    longs = [f"bin/attack/hold(tag=long{i},secs=60)" for i in range(3)]
    flood = spawn(daemon, ATTACKER, "build", *longs)
    try:
        def attackers_builds() -> list[dict[str, Any]]:
            return [b for b in status(daemon)["builds"]
                    if b["name"].startswith("bin/attack/hold(")]

        def flooding() -> bool:
            assert flood.poll() is None, flood.communicate()
            builds = attackers_builds()
            return len(builds) == 3 and any(b["state"] == "running" for b in builds)

        wait_for(flooding, "the attacker's builds to be queued and one to run")
        started = time.monotonic()
        done = daemon.ixc("build", "bin/slow(secs=0.1,tag=victim)", user=VICTIM, timeout=55)
        took = time.monotonic() - started
        assert "-slow" in done.stdout
        # the attacker's builds: one running all along, the other two still waiting
        states = sorted(b["state"] for b in attackers_builds())
        assert states == ["queued", "queued", "running"], states
        assert took < 55  # not after a 60 s build of the attacker's
        assert flood.poll() is None
        assert status(daemon)["jobs_per_user"] == 1
    finally:
        os.killpg(flood.pid, 9)
        flood.communicate()
