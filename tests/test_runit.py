"""ixd as a runit service, under a real runsvdir from Debian's runit package.

`runit/install.sh` sets everything up in a temporary tree (its own account, root, copy of
ix, service folder); a runsvdir started here supervises the service. The daemon is killed
with SIGKILL and must come back on its own and serve clients again; svlogd must have
written the log, `finish` how each run ended.

The helpers here (a world-readable temporary folder, a copy of the project other accounts
can run, test accounts removed afterwards, a runsvdir stopped with its services) serve
tests/test_services.py too.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.wire.errors import IxError
from ixd.wire.transport import Client
from tests.daemon_harness import HOST_TOOLS, PROJECT, wait_for

SYSTEM_PYTHON = "/usr/bin/python3"
RUNIT_TOOLS = ("runsvdir", "runsv", "sv", "svlogd", "chpst")

needs_runit = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in (*RUNIT_TOOLS, "useradd")),
    reason="needs root, runit and useradd (.ci/setup installs runit)")


# --- helpers (also used by tests/test_services.py) -----------------------------------------

@contextlib.contextmanager
def public_tmpdir(prefix: str) -> Iterator[Path]:
    """A temporary folder every account can traverse (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def public_copy(dest: Path) -> Path:
    """Copy what other accounts run (ixd/, client/, services/, pkgs/, runit/) into `dest`,
    world-readable: the virtualenv's interpreter and the checkout may be root's only."""
    dest.mkdir(mode=0o755, parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ixd", "client", "services", "pkgs", "runit"):
        shutil.copytree(PROJECT / name, dest / name, ignore=ignore, symlinks=True)
    subprocess.run(["chmod", "-R", "u=rwX,go=rX", str(dest)], check=True)
    return dest


def pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def remove_account(name: str) -> None:
    """Remove a test account (and its group), first ending every process it still has,
    each by its pid."""
    try:
        uid = int(subprocess.run(["id", "-u", name], capture_output=True, text=True,
                                 check=True).stdout)
    except subprocess.CalledProcessError:
        return
    for pid in pids_of_uid(uid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not pids_of_uid(uid), f"the processes of {name} to end", 10)
    subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(["groupdel", name], capture_output=True, check=False)
    assert subprocess.run(["id", name], capture_output=True).returncode != 0, \
        f"test account {name} is still there"


def account_name() -> str:
    return f"ixt{secrets.token_hex(4)}"


@contextlib.contextmanager
def throwaway_account(home: Path) -> Iterator[str]:
    """A throwaway login account with its home at `home`, removed afterwards."""
    name = account_name()
    try:
        subprocess.run(["useradd", "--user-group", "--home-dir", str(home),
                        "--no-create-home", "--shell", "/bin/sh", name],
                       check=True, capture_output=True)
        home.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.chown(home, name, name)
        yield name
    finally:
        remove_account(name)


def runsv_running(folder: Path) -> bool:
    from services.tree import runsv_running as running

    return running(folder)


class Runsvdir:
    """A root runsvdir over `svdir`; `stop()` stops it and every service it started."""

    def __init__(self, svdir: Path) -> None:
        self.svdir = svdir
        svdir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.process = subprocess.Popen(["runsvdir", "-P", str(svdir)], cwd="/",
                                        stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)  # TERM to every runsv, then exit
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        folders = [p.resolve() for p in self.svdir.iterdir() if p.is_dir()]
        try:
            wait_for(lambda: not any(runsv_running(f) for f in folders),
                     "every runsv to stop its service and exit", 30)
        finally:
            for folder in folders:  # whatever still runs, by its pid
                for pid_file in (folder / "supervise" / "pid",
                                 folder / "log" / "supervise" / "pid"):
                    with contextlib.suppress(OSError, ValueError):
                        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def ping(socket: Path) -> dict[str, object] | None:
    try:
        with Client.connect(socket) as client:
            value: dict[str, object] = client.request("ping", {})
            return value
    except IxError:
        return None


def service_pid(folder: Path) -> int | None:
    from services.tree import service_pid as pid

    return pid(folder)


# --- the ixd service -----------------------------------------------------------------------

STAMP = re.compile(r"^\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\.\d{5} ")


@needs_runit
def test_ixd_service_comes_back_after_kill_9() -> None:
    with public_tmpdir("ix-runit-") as base:
        runsvdir = Runsvdir(base / "service")
        try:
            # a runsvdir already watches the service folder, so install.sh waits for ixd
            done = subprocess.run(
                ["sh", str(PROJECT / "runit" / "install.sh"), "--prefix", str(base / "opt"),
                 "--root", str(base / "root"), "--sv-dir", str(base / "sv"),
                 "--service-dir", str(base / "service"), "--bin-dir", str(base / "bin"),
                 "--share-dir", str(base / "share")],
                capture_output=True, text=True, timeout=120, cwd="/")
            svc = base / "sv" / "ixd"
            log = svc / "log" / "main" / "current"
            assert done.returncode == 0, (done.stdout, done.stderr,
                                          log.read_text() if log.exists() else "")
            assert "ixd is up and answers" in done.stdout
            # the manual pages and completions, written from the commands' tables
            share = base / "share"
            for page, says in (("man1/ixc.1", "ixc why PKG"), ("man8/ixd.8", "ixd keygen")):
                shown = subprocess.run(["man", "-l", str(share / "man" / page)],
                                       capture_output=True, text=True, check=True,
                                       env={"MANWIDTH": "200", "PATH": "/usr/bin:/bin"})
                assert says in shown.stdout, shown.stdout[:2000]
            assert "complete -o nosort -F _ixc ixc" in (
                share / "bash-completion" / "completions" / "ixc").read_text()
            assert (share / "zsh" / "site-functions" / "_ixc").read_text().startswith(
                "#compdef ixc")
            assert (base / "root").stat().st_uid == 0  # root's, like nix-daemon's store
            socket = base / "root" / "var" / "ixd.sock"

            first = wait_for(lambda: ping(socket), "ixd to answer", 30)
            assert first["root"] == str(base / "root")
            pid = wait_for(lambda: service_pid(svc), "ixd's pid", 30)
            assert os.stat(f"/proc/{pid}").st_uid == 0  # builds run as build users instead

            # the build below uses the host's tools: ixd's default chain would bootstrap
            # first, from sources this service has no mirror for (the next start reads env/)
            (svc / "env" / "IX_ARGS").write_text(" ".join(HOST_TOOLS) + "\n")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: (p := service_pid(svc)) != pid and p, "runsv to start ixd again",
                     30)
            wait_for(lambda: ping(socket), "the restarted ixd to answer", 30)
            # (the pid of the ixd that answers: a start that lost a race may have come between)
            new_pid = service_pid(svc)
            assert new_pid not in (None, pid) and os.stat(f"/proc/{new_pid}").st_uid == 0

            # clients are served again, a build included, through the installed `ixc`
            built = subprocess.run([str(base / "bin" / "ixc"), "--socket", str(socket),
                                    "build", "bin/wave"], capture_output=True, text=True,
                                   timeout=120, cwd="/")
            assert built.returncode == 0, built.stderr
            assert "-bin-wave" in built.stdout

            # finish recorded how the first run ended; svlogd stamped every line
            last_end = svc / "last-end"
            wait_for(last_end.exists, "finish to record the kill", 30)
            assert "killed by signal 9" in last_end.read_text()
            text = wait_for(lambda: _log_with(log),
                            "svlogd to write both runs, the kill and the build", 30)
            lines = text.splitlines()
            assert all(STAMP.match(line) for line in lines), lines[:5]

            # a clean stop is recorded too
            subprocess.run(["sv", "-w", "30", "down", str(svc)], check=True,
                           capture_output=True)
            wait_for(lambda: "exited with status 0" in last_end.read_text(),
                     "finish to record the clean stop", 30)

            # a user's read-only command says so within seconds, naming the admin's command
            started = time.monotonic()
            down = subprocess.run([str(base / "bin" / "ixc"), "--socket", str(socket),
                                   "status"], capture_output=True, text=True, timeout=60,
                                  cwd="/")
            assert down.returncode == 3 and "[E_NO_DAEMON]" in down.stderr, down.stderr
            assert f"`sv up {svc}`" in down.stderr, down.stderr
            assert time.monotonic() - started < 10
        finally:
            runsvdir.stop()


def _uid(account: str) -> int:
    return int(subprocess.run(["id", "-u", account], capture_output=True, text=True,
                              check=True).stdout)


def _log_with(log: Path) -> str | None:
    try:
        text = log.read_text()
    except OSError:
        return None
    complete = (text.count("serving on") >= 2 and "uid=0 op=build" in text
                and "ixd service: ixd killed by signal 9" in text)
    return text if complete else None
