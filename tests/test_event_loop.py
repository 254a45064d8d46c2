"""Blocking file-system work (finishing a large build tree, hashing, collecting garbage) runs
in worker threads: the daemon's event loop keeps answering meanwhile."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.wire.transport import Client
from tests.daemon_harness import RunningDaemon, public_daemon

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="a confined daemon runs as root")


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    with public_daemon("ix-loop-", ["--jobs", "1"]) as running:
        yield running


def test_status_answers_while_a_large_tree_is_finished(daemon: RunningDaemon) -> None:
    daemon.ixc("build", "bld/host/sh")  # the tool first: then only the big tree is in flight
    argv, env = daemon.ixc_argv("build", "bin/many(count=20000)")
    build = subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    latencies: list[float] = []
    written_at: float | None = None
    log_dir = daemon.root / "var" / "log"
    with Client.connect(daemon.socket) as client:
        while build.poll() is None:
            started = time.monotonic()
            client.request("status", {})
            latencies.append(time.monotonic() - started)
            if written_at is None and _written(log_dir):
                written_at = len(latencies)
    out, err = build.communicate()
    assert build.returncode == 0, err
    tree = Path(out.strip())
    assert sum(1 for _ in (tree / "share").rglob("f*")) == 20000
    assert written_at is not None, "never saw the build's files written"
    finishing = latencies[written_at:]
    assert len(finishing) >= 5, "the tree was finished before status could be asked"
    assert max(finishing) < 0.1, sorted(finishing)[-5:]


def _written(log_dir: Path) -> bool:
    for log in log_dir.glob("*.log"):
        try:
            if "many files written" in log.read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False
