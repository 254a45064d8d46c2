"""Daemons of one machine sharing a group of build users never meet each other's builds, not
even at start: the confinement probe takes a build user the way builds do (its lock), so
another daemon's start-up `kill -9 -1` for that user cannot kill it (issue 22, item 6)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.store.buildusers import DEFAULT_GROUP, BuildUserPool, load_pool
from ixd.store.confine import probe_confinement
from ixd.wire.errors import ConfinementUnavailable
from tests.daemon_harness import (
    MIRROR,
    PROJECT,
    RunningDaemon,
    make_reachable,
    wait_until_serving,
)

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="build users need root")
#: daemons started at the same moment, and how many times
DAEMONS = 8
ROUNDS = 4


@contextlib.contextmanager
def daemons_at_once(top: Path, count: int) -> Iterator[list[RunningDaemon]]:
    """`count` ixd processes started together on roots of their own, sharing the machine's
    build users; every one must serve."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "PYTHONPATH": str(PROJECT)}
    started: list[RunningDaemon] = []
    try:
        for k in range(count):
            root = top / f"root{k}"
            root.mkdir()
            log = top / f"root{k}-ixd.log"
            args = [sys.executable, "-m", "ixd.daemon.main", "--root", str(root),
                    "--mirror", f"{MIRROR}/{{sha}}", "--jobs", "1"]
            with log.open("wb") as out:
                process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                           env=env, cwd="/")
            started.append(RunningDaemon(root, root / "var" / "ixd.sock", process, log, args))
        for daemon in started:
            wait_until_serving(daemon.socket, daemon.process, daemon.log, deadline=120)
        yield started
    finally:
        for daemon in started:
            daemon.stop()


@needs_root
def test_daemons_sharing_build_users_all_start_at_once() -> None:
    top = Path(tempfile.mkdtemp(prefix="ix-startup-", dir="/var/tmp"))
    try:
        make_reachable(top)
        for round_ in range(ROUNDS):
            folder = top / f"round{round_}"
            folder.mkdir()
            with daemons_at_once(folder, DAEMONS) as daemons:
                assert all(d.process.poll() is None for d in daemons)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@needs_root
def test_the_probe_takes_a_build_user_no_other_daemon_holds() -> None:
    users = load_pool(DEFAULT_GROUP)
    # Another daemon of this machine holds a build user. The suite's own daemons run at the
    # same time (pytest -n 2) and may hold some, so take the first one that is free.
    with BuildUserPool(users).holding_one() as held, \
            BuildUserPool(users).holding_one() as user:
        assert user != held
        assert probe_confinement((user.uid, user.gid)) is None


@needs_root
def test_a_probe_finds_no_free_build_user_and_says_so() -> None:
    users = load_pool(DEFAULT_GROUP)[:2]
    other = BuildUserPool(users)
    with contextlib.ExitStack() as held:
        for _ in users:  # all of them another daemon's (waiting for any the suite's own
            # daemons hold meanwhile: each holds one only while a build runs)
            held.enter_context(other.holding_one(deadline=300))
        with pytest.raises(ConfinementUnavailable, match="held by other"), \
                BuildUserPool(users).holding_one(deadline=0.2):
            pass


def test_a_probe_killed_by_a_signal_says_so(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\nkill -9 $$\n")
    fake.chmod(0o755)
    chpst = shutil.which("chpst")
    assert chpst is not None, "runit's chpst is missing (.ci/setup installs runit)"
    (tmp_path / "chpst").symlink_to(chpst)
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = probe_confinement()
    assert reason is not None
    assert "killed by signal 9 (SIGKILL)" in reason
    assert "user namespaces" not in reason
