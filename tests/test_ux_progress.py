"""Progress a person trusts (issue 23), through a real daemon on its real socket: a
heartbeat with the ETA from history while a node runs long, a count that never passes its
total across a daemon restart, Ctrl-C telling what became of the build, and every waiter
reading a shared build as they spelt it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import RunningDaemon, public_daemon, start_daemon, wait_for


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    with public_daemon("ix-ux-progress-", ["--jobs", "2"]) as running:
        yield running


class Running:
    """An `ixc` process whose stderr is read as it comes."""

    def __init__(self, daemon: RunningDaemon, *words: str, user: str | None = None) -> None:
        argv, env = daemon.ixc_argv(*words, user=user)
        # A run started in the background of a shell without job control ignores SIGINT, and
        # its children would inherit that: ixc gets the terminal's default, as a user's does
        # (a handler of ours is reset to the default in the child; SIG_IGN is inherited).
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, cwd="/",
                                            start_new_session=True)
        finally:
            if ignored:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.lines: list[str] = []
        assert self.process.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,))
        self._reader.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, deadline: float = 60) -> None:
        wait_for(lambda: any(text in line for line in self.lines), f"{text!r} on stderr",
                 deadline)

    def interrupt(self) -> None:
        """Ctrl-C, as a terminal sends it: SIGINT to the whole process group (runuser and
        the ixc it runs)."""
        os.killpg(self.process.pid, signal.SIGINT)

    def finish(self, timeout: float = 300, daemon: RunningDaemon | None = None) -> int:
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # what it said, and the daemon's view, to tell why
            log = daemon.log.read_text(errors="replace").splitlines()[-60:] if daemon else []
            # how the processes of its group handle SIGINT (blocked, ignored or caught)
            signals = [f"{pid}: " + " ".join(line for line in Path(
                f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Sig"))
                for pid in _group_of(self.process.pid)]
            raise AssertionError(f"ixc still runs after {timeout} s; it said:\n{self.stderr}"
                                 "\n--- its processes' signals:\n" + "\n".join(signals) +
                                 "\n--- the daemon's log:\n" + "\n".join(log)) from None
        self._reader.join(timeout=30)
        return status

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:  # the test failed half way: nothing of it stays
            os.killpg(self.process.pid, signal.SIGKILL)
        self.finish(60)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def _group_of(pgid: int) -> list[int]:
    """The live processes of process group `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def test_a_long_build_beats_every_ten_seconds_with_the_eta_from_history(
        daemon: RunningDaemon) -> None:
    first = daemon.ixc("build", "bin/slow(secs=11,tag=beat)").stderr
    assert re.search(r"\[\d/\d\] still building bin/slow\(secs=11,tag=beat\): 1\ds so far$",
                     first, re.MULTILINE), first
    daemon.ixc("gc")  # nothing keeps it: built again below, with its last time known
    again = daemon.ixc("build", "bin/slow(secs=11,tag=beat)").stderr
    assert re.search(r"still building bin/slow\(secs=11,tag=beat\): 1\ds so far, about \ds "
                     r"left \(it took 1\ds last time\)", again), again


def test_the_count_never_passes_its_total_across_a_daemon_restart() -> None:
    top = Path(tempfile.mkdtemp(prefix="ix-ux-retry-", dir="/var/tmp"))
    top.chmod(0o755)
    running = start_daemon(top / "root", extra=["--jobs", "1"])
    try:
        with Running(running, "mut", "retry", "+bin/slow(secs=1,tag=r1)",
                     "+bin/slow(secs=20,tag=r2)") as mut:
            mut.wait_for_line("building bin/slow(secs=20,tag=r2)")
            running.process.send_signal(signal.SIGKILL)
            running.process.wait()
            running = start_daemon(top / "root", extra=["--jobs", "1"])
            assert mut.finish() == 0, mut.stderr
        counts = [(int(d), int(t)) for d, t in re.findall(r"^\[(\d+)/(\d+)\]", mut.stderr,
                                                            re.MULTILINE)]
        assert counts and all(done <= total for done, total in counts), mut.stderr
        assert "retrying once ixd is back" in mut.stderr
    finally:
        running.stop()
        subprocess.run(["rm", "-rf", str(top)], check=False)


def test_ctrl_c_says_the_build_was_cancelled_and_the_realm_is_unchanged(
        daemon: RunningDaemon) -> None:
    with Running(daemon, "mut", "stopped", "+bin/slow(secs=60,tag=cc)") as mut:
        mut.wait_for_line("building bin/slow(secs=60,tag=cc)")
        mut.interrupt()
        assert mut.finish(60, daemon) == 130
    assert "ixc: interrupted: the realm is unchanged" in mut.stderr, mut.stderr
    assert "ixc: bin/slow(secs=60,tag=cc): cancelled (nobody else waited for it)" in mut.stderr
    wait_for(lambda: "tag=cc" not in daemon.ixc("status").stdout, "the build to be cancelled")
    assert "stopped" not in daemon.ixc("list").stdout.split()


def test_ctrl_c_says_a_shared_build_goes_on_for_the_other_waiter(
        daemon: RunningDaemon, accounts: dict[str, int]) -> None:
    with Running(daemon, "build", "bin/slow(secs=60,tag=sh)", user="ixtalice") as alice:
        alice.wait_for_line("building bin/slow(secs=60,tag=sh)")
        with Running(daemon, "mut", "+bin/slow(secs=60,tag=sh)", user="ixtbob") as bob:
            bob.wait_for_line("waiting for (shared) bin/slow(secs=60,tag=sh)")
            bob.interrupt()
            assert bob.finish(60, daemon) == 130
        assert "ixc: bin/slow(secs=60,tag=sh): still being built, for ixtalice" in bob.stderr, \
            bob.stderr
        alice.interrupt()
        assert alice.finish(60) == 130
    assert "bin/slow(secs=60,tag=sh): cancelled" in alice.stderr, alice.stderr


def test_each_display_of_a_shared_build_shows_its_own_askers_spelling(
        daemon: RunningDaemon, accounts: dict[str, int]) -> None:
    with Running(daemon, "build", "bin/slow(secs=8,tag=sp,frobnicate=1)",
                 user="ixtalice") as alice:
        alice.wait_for_line("building bin/slow(frobnicate=1,secs=8,tag=sp)")
        with Running(daemon, "build", "bin/slow(secs=8,tag=sp)", user="ixtbob") as bob:
            bob.wait_for_line("waiting for (shared)")
            # a bystander sees the request as its asker spelt it; bob sees his own
            wait_for(lambda: "bin/slow(frobnicate=1,secs=8,tag=sp)" in daemon.ixc(
                "status", user="ixtcarol").stdout, "carol's status")
            assert "bin/slow(secs=8,tag=sp)  " in daemon.ixc("status", user="ixtbob").stdout
            assert alice.finish() == 0 and bob.finish() == 0
    assert "built bin/slow(secs=8,tag=sp)" in bob.stderr
    assert "frobnicate" not in bob.stderr, bob.stderr
