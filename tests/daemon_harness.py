"""Start a real `ixd` process and drive it with the real `ixc` command, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from client.transport import Client
from ixd.errors import IxError

PROJECT = Path(__file__).resolve().parent.parent
PKGS = PROJECT / "pkgs"
TEST_OVERLAY = PROJECT / "tests" / "overlay"


@dataclass
class RunningDaemon:
    root: Path
    socket: Path
    process: subprocess.Popen[bytes]
    log: Path
    args: list[str] = field(default_factory=list)

    def ixc(self, *words: str, check: bool = True, user: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the real `ixc` command (as `user` if given) against this daemon."""
        argv = [sys.executable, "-m", "client.main", "--socket", str(self.socket), *words]
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "PYTHONPATH": str(PROJECT)}
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


def start_daemon(root: Path, *, overlays: Sequence[Path] = (TEST_OVERLAY, PKGS),
                 extra: Sequence[str] = ()) -> RunningDaemon:
    root.mkdir(parents=True, exist_ok=True)
    log = root.parent / f"{root.name}-ixd.log"
    args = [sys.executable, "-m", "ixd.main", "--root", str(root)]
    for overlay in overlays:
        args += ["--overlay", str(overlay)]
    args += list(extra)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "PYTHONPATH": str(PROJECT)}
    with log.open("wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                   cwd="/")
    socket = root / "var" / "ixd.sock"
    daemon = RunningDaemon(root, socket, process, log, args)
    try:
        wait_until_serving(socket, process, log)
    except BaseException:
        daemon.stop()
        raise
    return daemon
