"""Roots with the toolchain's libraries prebuilt on ixd's default chain (stage 0's clang,
stage 1's tools: lib/c, musl built by ix from source, and compiler-rt's builtins; and in one
of them the C++ runtimes too) that test daemons start from, instead of bootstrapping and
building them again in every module's fresh store. Each is built in a thread from the start
of the run, and the modules that need it run last (tests/conftest.py; in a parallel run,
once it is ready: tests/parallel.py).

A store entry's uid covers the store paths of its inputs, so entries are only valid at the
root path they were built at: a prebuilt root is made once per test run at one path, kept
aside untouched, and copied back to that path (`cp -a`, store entries, database and logs)
for each daemon that asks; the copy is deleted when that daemon is done. One seeded daemon at
a time, then, in all the processes of a run (`SeededRoot.hold` locks the path). Its entries
are exactly what that daemon would have built (they were built by an ixd at that very path,
registered valid in the copied database), so every other package is still built for real on
top of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from ixd.store.fstree import remove_tree
from tests.daemon_harness import PKGS, TEST_OVERLAY, RunningDaemon, make_reachable, start_daemon

#: the prebuilt roots of a run, by the fixture (and mark) that gives one, and what each holds
#: (with the build tools they need: stages 0 and 1): what every C package links (by clang,
#: the default compiler); the whole toolchain, for test_packages_real: the C++ runtimes,
#: and musl built by gcc for its --cc=gcc build; and the cross targets' own, for
#: test_cross: musl and the builtins for linux-aarch64 and linux-riscv64, the C++ runtimes
#: for aarch64 (with the host's musl and builtins, which every cross build has among its
#: host libraries). Each root's modules run in one process, so two processes of a
#: parallel run each run daemons on one (tests/parallel.py).
#: the prebuilt roots are built on ixd's default chain (stages 0 and 1), as their daemons
#: build: the package set, cross and cache tests run on it, and test_bootstrap compares
#: its own builds with the lib_c_root's
BOOT_CHAIN = True

SEEDED_ROOTS = {
    "lib_c_root": ("lib/c", "lib/compiler_rt/builtins"),
    "toolchain_root": ("lib/c", "lib/compiler_rt/builtins", "lib/c++", "lib/c(cc=gcc)"),
    "cross_root": ("lib/c++(target=linux-aarch64)", "lib/c(target=linux-riscv64)",
                   "lib/compiler_rt/builtins(target=linux-riscv64)"),
}


class SeededRoot:
    """One root path of this test run whose store starts with lib/c built."""

    def __init__(self, top: Path) -> None:
        self.top = top
        #: the root every seeded daemon of this run uses, one after the other
        self.path = top / "root"
        #: the prebuilt root, once made
        self.pristine = top / "pristine"
        #: what went wrong making it, if it failed
        self.failure = top / "failed"
        #: the process id of the daemon building the prebuilt root, while it runs
        self.builder_pid_file = top / "builder.pid"
        self._taken = False
        self._removed = itertools.count()

    def prebuild(self, packages: Sequence[str], stop: threading.Event) -> None:
        """Build `packages` with a real daemon at `path`, then keep its root aside (unless
        `stop` is set first: the run ended before a test needed it)."""
        # it builds beside the tests that need no prebuilt root (they run first): as the
        # processor's second choice, so their timings do not suffer
        daemon = start_daemon(self.path, overlays=(TEST_OVERLAY, PKGS), niceness=19,
                              boot=BOOT_CHAIN)
        self.builder_pid_file.write_text(str(daemon.process.pid))
        try:
            if stop.is_set():
                raise AssertionError("the run ended before the root was needed")
            daemon.ixc("build", *packages, timeout=1800)
        finally:
            status = daemon.stop()
            self.builder_pid_file.unlink(missing_ok=True)
        assert status == 0, daemon.log.read_text()
        (self.path / "var" / "ixd.sock").unlink(missing_ok=True)
        self.path.rename(self.pristine)

    def builder_pid(self) -> int | None:
        """The daemon building the prebuilt root, while it runs."""
        try:
            return int(self.builder_pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None  # not started yet, or done (or the file is being written)

    @contextlib.contextmanager
    def hold(self) -> Iterator[Path]:
        """`path` for the caller alone (whatever is left there is deleted afterwards): for
        daemons that start there in turn, one of them from `copy_into_place()`."""
        if self._taken:
            raise AssertionError(f"the seeded root {self.path} is in use: one seeded daemon "
                                 f"at a time (its entries are only valid at that path)")
        self._taken = True
        # and one process at a time: other workers of a parallel run wait here (though the
        # run hands all modules of one root to one worker, tests/parallel.py)
        lock = os.open(self.top / "hold.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self.path
        finally:
            if self.path.exists():
                away = self.top / f"used-{os.getpid()}-{next(self._removed)}"
                self.path.rename(away)
                remove_tree(away)
            os.close(lock)
            self._taken = False

    def copy_into_place(self) -> None:
        """A fresh copy of the prebuilt root at `path` (which must be held, and free)."""
        assert self._taken and not self.path.exists(), self.path
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.pristine), str(self.path)],
                       check=True)

    @contextlib.contextmanager
    def take(self) -> Iterator[Path]:
        """A fresh copy of the prebuilt root at `path`, deleted afterwards."""
        with self.hold() as path:
            self.copy_into_place()
            yield path

    @contextlib.contextmanager
    def daemon(self, extra: Sequence[str] = (), *, socket: Path | None = None,
               overlays: Sequence[Path] = (TEST_OVERLAY, PKGS)) -> Iterator[RunningDaemon]:
        """A daemon on a fresh copy of the prebuilt root, which every account can reach;
        it must stop cleanly."""
        with self.take() as root:
            running = start_daemon(root, overlays=overlays, extra=extra, socket=socket,
                                   boot=BOOT_CHAIN)
            try:
                yield running
                assert running.stop() == 0, running.log.read_text()
            finally:
                running.stop()


class Prebuild:
    """The prebuilt root of this run, made in a thread of its own once started: the musl
    build overlaps the tests that run before the first one needing it. One process of a run
    makes it (`start`); the workers of a parallel run follow it through its folder
    (`follow`): it is ready once `pristine` exists, failed once `failed` does."""

    #: how long a test may wait for the prebuilt root (seconds)
    DEADLINE = 1800.0

    def __init__(self, packages: Sequence[str]) -> None:
        self.packages = packages
        self._seeded: SeededRoot | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, top: Path) -> None:
        """Make the root in `top` (a folder no other process of the run makes it in; not
        under /tmp: a build's /tmp is its own scratch, which would hold the mount points of
        a root under /tmp, see test_e2e's test_build_cannot_write_outside_its_output)."""
        if self._seeded is not None:
            return
        top.mkdir(mode=0o755)
        make_reachable(top)
        self._seeded = SeededRoot(top)
        self._thread = threading.Thread(target=self._build,
                                        args=(self._seeded, self.packages, self._stop),
                                        name=f"ix-test-prebuild-{top.name}", daemon=True)
        self._thread.start()

    def follow(self, top: Path) -> None:
        """Use the root another process of the run makes in `top`."""
        self._seeded = SeededRoot(top)

    @staticmethod
    def _build(seeded: SeededRoot, packages: Sequence[str], stop: threading.Event) -> None:
        try:
            seeded.prebuild(packages, stop)
        except BaseException:
            staging = seeded.failure.with_suffix(".tmp")
            staging.write_text(traceback.format_exc())
            staging.rename(seeded.failure)

    def finished(self) -> bool:
        """Whether the root is made (or failed to be)."""
        seeded = self._seeded
        return seeded is not None and (seeded.pristine.exists() or seeded.failure.exists())

    def result(self) -> SeededRoot:
        """The prebuilt root, once made."""
        seeded = self._seeded
        assert seeded is not None, "the prebuilt root was neither started nor followed"
        deadline = time.monotonic() + self.DEADLINE
        while not self.finished():
            if time.monotonic() > deadline:
                raise AssertionError(f"the prebuilt root in {seeded.top} took more than "
                                     f"{self.DEADLINE} s")
            # a test waits for it now: the build is no longer the processor's second choice
            # (again each second: the daemon may not have started yet)
            builder = seeded.builder_pid()
            for pid in [builder, *descendants(builder)] if builder else []:
                with contextlib.suppress(OSError):
                    # each thread has its own niceness (the daemon's spawner thread
                    # passes its own on to the builds it starts)
                    for thread in os.listdir(f"/proc/{pid}/task"):
                        os.setpriority(os.PRIO_PROCESS, int(thread), 0)
            if self._thread is not None:
                self._thread.join(timeout=1)
            else:
                time.sleep(1)  # polled, with the deadline above: the build is elsewhere
        if seeded.failure.exists():
            raise AssertionError(f"prebuilding lib/c failed:\n{seeded.failure.read_text()}")
        return seeded

    def close(self) -> None:
        """Stop the build if it still runs (no test came to need it), then delete everything
        it made (by the process that made it)."""
        if self._thread is None or self._seeded is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            # its daemon may not have started when asked first: asked again each second
            builder = self._seeded.builder_pid()
            if builder:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(builder, signal.SIGTERM)
            self._thread.join(timeout=1)
        remove_tree(self._seeded.top)


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (children, theirs, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(name))
    found, stack = [], list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children.get(child, []))
    return found
