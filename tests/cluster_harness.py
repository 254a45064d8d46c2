"""A Dask cluster of "machines" on this one: a `dask scheduler`, `ix-worker` processes and
ixd daemons, each in a mount namespace of its own where the common root path is its private
folder (as every machine of a team has its own /ix), sharing a real SeaweedFS cache. Used by
tests/test_cluster.py and bench/cluster.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ixd.store.fstree import remove_tree
from tests.daemon_harness import (
    HOST_TOOLS,
    MIRROR,
    PKGS,
    PROJECT,
    TEST_OVERLAY,
    RunningDaemon,
    make_reachable,
    read_rows,
    wait_for,
    wait_until_serving,
)
from tests.s3server import S3Server, free_port, running_s3, write_credentials

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
                 "-m", "ixd.build.worker", self.address, "--config", str(config), "--",
                 "--name", name, "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd="/", start_new_session=True)
        wait_for(lambda: "Registered to" in log.read_text(errors="replace"),
                 f"worker {name} to register", deadline=60)

    def worker_builds(self, name: str) -> list[dict[str, Any]]:
        """The builds table of worker `name`'s own store."""
        database = self.machine(name) / "var" / "ixd.sqlite"
        return read_rows(database, "SELECT * FROM builds") if database.exists() else []


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "PYTHONPATH": str(PROJECT)}


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
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
    args = [*IN_NAMESPACE, str(private), str(cluster.root), sys.executable, "-m", "ixd.daemon.main",
            "--root", str(cluster.root), "--socket", str(socket),
            "--overlay", str(TEST_OVERLAY), "--overlay", str(PKGS),
            "--mirror", f"{MIRROR}/{{sha}}", *HOST_TOOLS, *extra]
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



@contextlib.contextmanager
def running_cluster(workers: Sequence[str] = ("w1", "w2")) -> Iterator[Cluster]:
    """A scheduler, `workers`, a SeaweedFS cache and a signing key; all stopped after."""
    top = Path(tempfile.mkdtemp(prefix="ix-cluster-", dir="/var/tmp"))
    top.chmod(0o755)
    root = top / "ix"
    root.mkdir()
    try:
        with running_s3(top / "s3", (BUCKET,)) as s3:
            subprocess.run([sys.executable, "-m", "ixd.daemon.main", "keygen", "cluster-1", "--dir",
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
                for name in workers:
                    state.start_worker(name)
                yield state
            finally:
                for process in state.workers.values():
                    stop_process(process)
                if state.scheduler is not None:
                    stop_process(state.scheduler)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
        remove_tree(top)
