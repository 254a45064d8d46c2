"""Start a real `ixd` process and drive it with the real `ixc` command, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ixd.store.buildusers import DEFAULT_GROUP, members_of
from ixd.wire.errors import IxError
from ixd.wire.transport import Client

PROJECT = Path(__file__).resolve().parent.parent
PKGS = PROJECT / "pkgs"
TEST_OVERLAY = PROJECT / "tests" / "overlay"
SYSTEM_PYTHON = "/usr/bin/python3"
#: the source mirror `python -m tests.seed` fills (upstream hosts are unreachable here)
MIRROR = Path(os.environ.get("IX_TEST_MIRROR", "/var/cache/ix-mirror"))
_READABLE = Path("/tmp") / f"ix-test-client-{os.getpid()}"
#: what test daemons build with unless a test asks for ixd's default chain: the host's
#: tools (`ix_tools=host`, docs/recipes.md "Stages"). The bootstrapped chain takes minutes
#: from an empty root; the prebuilt roots (tests/seeded_store.py) hold it, and the tests of
#: the package set and of the bootstrap build on them.
HOST_TOOLS_SETTINGS = (("ix_tools", "host"),)
HOST_TOOLS = tuple(arg for name, value in HOST_TOOLS_SETTINGS
                   for arg in ("--set", f"{name}={value}"))


def readable_client() -> Path:
    """A copy of the client's modules every account can read (made once per test run)."""
    if not _READABLE.is_dir():
        staging = _READABLE.with_name(_READABLE.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        for package in ("client", "ixd", "services"):  # services: `ixc session`
            shutil.copytree(PROJECT / package, staging / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        staging.rename(_READABLE)
    return _READABLE


@dataclass
class RunningDaemon:
    root: Path
    socket: Path
    process: subprocess.Popen[bytes]
    log: Path
    args: list[str] = field(default_factory=list)

    def ixc_argv(self, *words: str, user: str | None = None) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of `ixc WORDS` (as `user`, if given).

        Another account cannot use our interpreter (it may sit in root's home), so it runs
        the system python3 on a world-readable copy of the client."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "PYTHONPATH": str(PROJECT)}
        python = sys.executable
        if user is not None:
            python, env["PYTHONPATH"] = SYSTEM_PYTHON, str(readable_client())
        argv = [python, "-m", "client.main", "--socket", str(self.socket), *words]
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        return argv, env

    def ixc(self, *words: str, check: bool = True, user: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the real `ixc` command (as `user` if given) against this daemon."""
        argv, env = self.ixc_argv(*words, user=user)
        result = subprocess.run(argv, capture_output=True, text=True, env=env,
                                timeout=timeout, cwd="/")
        if check and result.returncode != 0:
            raise AssertionError(
                f"ixc {' '.join(words)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def realm(self, name: str) -> Path:
        return self.root / "realm" / name

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def build_uids() -> set[int]:
    return {u.uid for u in members_of(DEFAULT_GROUP)}


def build_processes(*builds: str) -> dict[int, list[int]]:
    """Live processes of every build user, by uid: those of `builds` (node uids, which a
    build's processes carry in their environment as `uid=...`), since other daemons on the
    machine may be building too."""
    marks = {f"uid={build}".encode() for build in builds}
    found = {}
    for uid in build_uids():
        pids = [pid for pid in processes_of(uid) if marks & _environ(pid)]
        if pids:
            found[uid] = pids
    return found


def _environ(pid: int) -> set[bytes]:
    try:
        return set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return set()


def processes_of(uid: int) -> list[int]:
    """Pids of the live processes any of whose uids (real, effective, saved, file system) is
    `uid`, from /proc/PID/status (the owner of /proc/PID is not enough: a process that makes
    itself non-dumpable shows as root's there). Zombies are left out: they cannot act."""
    found = []
    needle = str(uid).encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/status", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # gone meanwhile
        try:
            status = os.read(fd, 4096)
        except OSError:
            continue
        finally:
            os.close(fd)
        start = status.find(b"\nUid:")
        if start < 0 or needle not in status[start + 5:status.find(b"\n", start + 1)].split():
            continue
        state = status.find(b"\nState:")
        if state >= 0 and status[state + 7:state + 10].strip()[:1] in (b"Z", b"X"):
            continue
        found.append(int(name))
    return found


def wait_for(condition: Callable[[], Any], what: str, deadline: float = 60.0) -> Any:
    """Poll `condition` until it is truthy (polling with a deadline, not a guessed sleep);
    its value, or AssertionError naming `what` after `deadline` seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {deadline}s waiting for {what}")


def wait_until_serving(socket: Path, process: subprocess.Popen[bytes], log: Path,
                       deadline: float = 30.0) -> None:
    """Poll the socket with a deadline until a ping answers."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise AssertionError(f"ixd exited {process.returncode}:\n{log.read_text()}")
        try:
            with Client.connect(socket) as client:
                client.request("ping", {})
                return
        except IxError:
            time.sleep(0.02)  # polling with a deadline, not synchronising on a guess
    raise AssertionError(f"ixd did not serve on {socket} within {deadline}s:\n{log.read_text()}")


def make_reachable(path: Path) -> None:
    """Let other accounts (the build users) pass through every folder above `path`: pytest's
    temporary folders are private to root, and ixd refuses a root build users cannot reach."""
    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod((mode & 0o7777) | 0o011)


def start_daemon(root: Path, *, overlays: Sequence[Path] = (TEST_OVERLAY, PKGS),
                 extra: Sequence[str] = (), socket: Path | None = None,
                 niceness: int = 0, mirror: bool = True, boot: bool = False,
                 module: Sequence[str] = ("ixd.daemon.main",)) -> RunningDaemon:
    """`niceness`: the daemon and its builds yield the processor to the tests (for a build
    that runs beside them); `mirror`: with the run's source mirror (without: only upstream
    hosts, unreachable here); `boot`: build with ixd's default chain (stages 0 and 1), not
    the host's tools (HOST_TOOLS); `module`: what `python -m` runs, with its arguments
    before ixd's (a wrapper such as tests/loop_audit.py)."""
    root.mkdir(parents=True, exist_ok=True)
    make_reachable(root)
    log = root.parent / f"{root.name}-ixd.log"
    args = [sys.executable, "-m", *module, "--root", str(root)]
    if niceness:
        args = ["nice", "-n", str(niceness), *args]
    for overlay in overlays:
        args += ["--overlay", str(overlay)]
    args += [*(["--mirror", f"{MIRROR}/{{sha}}"] if mirror else []),
             *(() if boot else HOST_TOOLS), *extra]
    if socket is not None:
        args += ["--socket", str(socket)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "PYTHONPATH": str(PROJECT)}
    with log.open("wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                   cwd="/")
    socket = socket or root / "var" / "ixd.sock"
    daemon = RunningDaemon(root, socket, process, log, args)
    try:
        wait_until_serving(socket, process, log)
    except BaseException:
        daemon.stop()
        raise
    return daemon


@contextlib.contextmanager
def public_daemon(prefix: str, extra: Sequence[str] = (), socket: Path | None = None,
                  module: Sequence[str] = ("ixd.daemon.main",)) -> Iterator[RunningDaemon]:
    """A daemon whose root every account can reach (pytest's temp folders are private to
    root), removed afterwards."""
    top = Path(tempfile.mkdtemp(prefix=prefix))
    top.chmod(0o755)
    running = start_daemon(top / "root", extra=extra, socket=socket, module=module)
    try:
        yield running
        assert running.stop() == 0, running.log.read_text()
    finally:
        running.stop()
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
        shutil.rmtree(top, ignore_errors=True)


def read_rows(database: Path, sql: str) -> list[dict[str, Any]]:
    """Rows of a daemon's database, read-only beside the running daemon."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()
