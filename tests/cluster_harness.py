"""A Dask cluster of "machines" on this one, set up as the README says: a `dask scheduler`
and `ix-worker` processes running as the unprivileged worker account, each worker beside an
ixd of its own machine (`--cluster-worker-account`), and ixd daemons that submit, each
machine in a mount namespace of its own where the common root path is its private folder
(as every machine of a team has its own /ix), sharing a real SeaweedFS cache. Mutual TLS
with certificates from `ixd cluster-certs`, or plain TCP with --insecure-cluster. Used by
tests/test_cluster.py, tests/test_cluster_security.py and bench/cluster.py.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ixd.build.certs import make_certificates, members
from ixd.store.fstree import remove_tree
from tests.daemon_harness import (
    HOST_TOOLS,
    MIRROR,
    PKGS,
    PROJECT,
    SYSTEM_PYTHON,
    TEST_OVERLAY,
    RunningDaemon,
    make_reachable,
    read_rows,
    readable_client,
    wait_for,
    wait_until_serving,
)
from tests.s3server import S3Server, free_port, running_s3, write_credentials

BUCKET = "ix-cache"
PREFIX = "cluster"
#: the account ix-worker and the scheduler run as (runit/worker-account.sh, .ci/setup)
WORKER_ACCOUNT = "ixworker"
#: mount PRIVATE on ROOT in a new mount namespace, then run the rest
IN_NAMESPACE = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$1" "$2" && shift 2 && exec "$@"', "ix-machine"]


def slow(tag: str, secs: int = 1) -> str:
    return f"bin/slow(secs={secs},tag={tag})"


def account_python() -> tuple[str, str]:
    """An interpreter other accounts can run with Dask's `distributed` and ix importable,
    and the PYTHONPATH that makes it so: the system python3 (this run's interpreter may sit
    in root's home) on this run's site-packages (copied where others can read it, if they
    cannot where it is) and a readable copy of ix."""
    if sys.version_info[:2] != _version(SYSTEM_PYTHON):
        raise AssertionError(f"{SYSTEM_PYTHON} is not Python {sys.version_info[:2]}: other "
                             f"accounts could not use this run's packages")
    packages = Path(sysconfig.get_paths()["purelib"])
    if not _readable_by(WORKER_ACCOUNT, packages / "distributed" / "__init__.py"):
        copy = Path("/var/tmp") / f"ix-test-site-{os.getpid()}"
        if not copy.is_dir():
            staging = copy.with_name(copy.name + ".tmp")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(packages, staging, symlinks=True)
            subprocess.run(["chmod", "-R", "go+rX", str(staging)], check=True)
            staging.rename(copy)
            atexit.register(shutil.rmtree, copy, ignore_errors=True)
        packages = copy
    return SYSTEM_PYTHON, f"{readable_client()}:{packages}"


def _version(python: str) -> tuple[int, int]:
    out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def _readable_by(account: str, path: Path) -> bool:
    return subprocess.run(["runuser", "-u", account, "--", "test", "-r", str(path)],
                          check=False).returncode == 0


def as_account(account: str, argv: Sequence[str], env: dict[str, str]) -> list[str]:
    """`argv` run as `account` with exactly `env`."""
    return ["runuser", "-u", account, "--", "env", "-i",
            *[f"{k}={v}" for k, v in env.items()], *argv]


@dataclass
class Cluster:
    top: Path
    #: the root path every machine uses
    root: Path
    s3: S3Server
    port: int
    secret: Path
    public: Path
    credentials: Path
    #: mutual TLS (certificates in `certs`), else plain TCP with --insecure-cluster
    tls: bool
    scheduler: subprocess.Popen[bytes] | None = None
    #: the ix-worker processes, and the ixd of each worker's machine
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_daemons: dict[str, RunningDaemon] = field(default_factory=dict)
    #: how many times the scheduler was started (each start logs "Scheduler at:" once)
    _scheduler_starts: int = 0

    @property
    def address(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://127.0.0.1:{self.port}"

    @property
    def certs(self) -> Path:
        return self.top / "certs"

    def cache_url(self) -> str:
        return self.s3.url(BUCKET, PREFIX)

    def machine(self, name: str) -> Path:
        """The folder that is `root` on machine `name`."""
        path = self.top / "machines" / name
        path.mkdir(parents=True, exist_ok=True)
        make_reachable(path)
        return path

    def member_tls(self, stem: str) -> list[str]:
        """The TLS options of member `stem` (`ixd-a`, `worker-w1`), its certificate made if
        it is new; --insecure-cluster without TLS."""
        if not self.tls:
            return ["--insecure-cluster"]
        cert, key = self.certs / f"{stem}.pem", self.certs / f"{stem}.key"
        if not cert.exists():
            kind, name = stem.split("-", 1)
            make_certificates(self.certs, members([name] if kind == "ixd" else [],
                                                  [name] if kind == "worker" else []))
            if kind == "worker":  # the worker account reads its own key
                _give(key, WORKER_ACCOUNT)
        return ["--tls-ca", str(self.certs / "ca.pem"), "--tls-cert", str(cert),
                "--tls-key", str(key)]

    def cache_args(self) -> list[str]:
        return ["--cache", self.cache_url(), "--trusted-key", str(self.public),
                "--push", self.cache_url(), "--signing-key", str(self.secret),
                "--cache-credentials", str(self.credentials)]

    def ixd_args(self, name: str, *, dask: str | None = None) -> list[str]:
        """The options of an ixd `name` that hands its builds to this cluster."""
        return [*self.cache_args(), "--dask", dask or self.address,
                *self.member_tls(f"ixd-{name}")]

    def start_scheduler(self) -> None:
        python, path = account_python()
        argv = [python, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                "--port", str(self.port), "--no-dashboard"]
        env = _env(path)
        if self.tls:
            make_certificates(self.certs, members([], []))
            _give(self.certs / "scheduler.key", WORKER_ACCOUNT)
            argv += ["--tls-ca-file", str(self.certs / "ca.pem"),
                     "--tls-cert", str(self.certs / "scheduler.pem"),
                     "--tls-key", str(self.certs / "scheduler.key")]
            env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
        log = self.top / "scheduler.log"
        with log.open("ab") as out:
            self.scheduler = subprocess.Popen(
                as_account(WORKER_ACCOUNT, argv, env), stdout=out, stderr=subprocess.STDOUT,
                cwd="/", start_new_session=True)
        wait_for(lambda: log.read_text(errors="replace").count("Scheduler at:")
                 > self._scheduler_starts, "the scheduler to listen", deadline=60)
        self._scheduler_starts += 1

    def stop_scheduler(self, sig: int = signal.SIGTERM) -> None:
        if self.scheduler is not None:
            stop_process(self.scheduler, sig)
            self.scheduler = None

    def start_worker(self, name: str, *, cpus: str | None = None) -> None:
        """ix-worker `name` as the worker account, beside the ixd of its machine (started
        too unless it runs already; with `cpus`, its builds on those cores only, as on a
        machine of that many), registered with the scheduler."""
        if name not in self.worker_daemons:
            self.worker_daemons[name] = start_machine_daemon(self, name, [
                *self.cache_args(), "--cluster-worker-account", WORKER_ACCOUNT,
                "--jobs", "1"], cpus=cpus)
        python, path = account_python()
        socket = self.top / f"{name}.sock"
        log = self.top / f"{name}.log"
        before = registrations(log)
        argv = [python, "-m", "ixd.build.worker", self.address, "--socket", str(socket),
                *self.member_tls(f"worker-{name}"), "--", "--name", name,
                "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"]
        with log.open("ab") as out:
            self.workers[name] = subprocess.Popen(
                as_account(WORKER_ACCOUNT, argv, _env(path)), stdout=out,
                stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
        wait_for(lambda: registrations(log) > before, f"worker {name} to register",
                 deadline=60)

    def stop_worker(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop ix-worker `name` (its machine's ixd goes on)."""
        stop_process(self.workers.pop(name), sig)

    def worker_builds(self, name: str) -> list[dict[str, Any]]:
        """The builds table of worker `name`'s own store."""
        database = self.machine(name) / "var" / "ixd.sqlite"
        return read_rows(database, "SELECT * FROM builds") if database.exists() else []

    def stop(self) -> None:
        for process in self.workers.values():
            stop_process(process)
        self.workers.clear()
        for daemon in self.worker_daemons.values():
            daemon.stop()
        self.worker_daemons.clear()
        self.stop_scheduler()


def registrations(log: Path) -> int:
    """How many times a worker logging to `log` registered with a scheduler."""
    return log.read_text(errors="replace").count("Registered to:") if log.exists() else 0


def _give(path: Path, account: str) -> None:
    entry = pwd.getpwnam(account)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _env(python_path: str = str(PROJECT)) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "PYTHONPATH": python_path, "HOME": "/nonexistent"}


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start_machine_daemon(cluster: Cluster, name: str, extra: Sequence[str], *,
                         cpus: str | None = None) -> RunningDaemon:
    """An ixd on machine `name`: its socket outside the root, its root private; with
    `cpus` (a `taskset` list), it and its builds run on those cores only."""
    private = cluster.machine(name)
    socket = cluster.top / f"{name}.sock"
    log = cluster.top / f"{name}-ixd.log"
    pinned = ["taskset", "-c", cpus] if cpus else []
    args = [*pinned, *IN_NAMESPACE, str(private), str(cluster.root), sys.executable, "-m",
            "ixd.daemon.main", "--root", str(cluster.root), "--socket", str(socket),
            "--overlay", str(TEST_OVERLAY), "--overlay", str(PKGS),
            "--mirror", f"{MIRROR}/{{sha}}", *HOST_TOOLS, *extra]
    with log.open("ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                   env=_env(), cwd="/")
    # seen from here, the daemon's root is its private folder
    daemon = RunningDaemon(private, socket, process, log, args)
    try:
        wait_until_serving(socket, process, log)
    except BaseException:
        daemon.stop()
        raise
    return daemon


@contextlib.contextmanager
def machine_daemon(cluster: Cluster, name: str, extra: Sequence[str]
                   ) -> Iterator[RunningDaemon]:
    """`start_machine_daemon`, stopped after the block."""
    daemon = start_machine_daemon(cluster, name, extra)
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def running_cluster(workers: Sequence[str] = ("w1", "w2"), *, tls: bool = True,
                    cpus: Sequence[str] | None = None) -> Iterator[Cluster]:
    """A scheduler, `workers` (each with its machine's ixd; on the cores `cpus[k]` if
    given), a SeaweedFS cache and a signing key; all stopped after."""
    top = Path(tempfile.mkdtemp(prefix="ix-cluster-", dir="/var/tmp"))
    top.chmod(0o755)
    root = top / "ix"
    root.mkdir()
    try:
        with running_s3(top / "s3", (BUCKET,)) as s3:
            subprocess.run([sys.executable, "-m", "ixd.daemon.main", "keygen", "cluster-1",
                            "--dir", str(top)], check=True, cwd=PROJECT, capture_output=True)
            state = Cluster(top, root, s3, free_port(), top / "cluster-1.secret",
                            top / "cluster-1.public", write_credentials(top / "credentials"),
                            tls)
            try:
                state.start_scheduler()
                for k, name in enumerate(workers):
                    state.start_worker(name, cpus=cpus[k] if cpus else None)
                yield state
            finally:
                state.stop()
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
        remove_tree(top)
