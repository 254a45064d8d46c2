"""A root with lib/c (musl, built by ix from source, with gcc and with clang) that test daemons
start from, instead of building musl again in every module's fresh store. It is built in a
thread from the start of the run, and the modules that need it run last (tests/conftest.py).

A store entry's uid covers the store paths of its inputs, so entries are only valid at the
root path they were built at: the prebuilt root is made once per test run at one path, kept
aside untouched, and copied back to that path (`cp -a`, store entries, database and logs)
for each daemon that asks; the copy is deleted when that daemon is done. One seeded daemon at
a time, then. Its entries are exactly what that daemon would have built (they were built by
an ixd at that very path, registered valid in the copied database), so every other package
is still built for real on top of them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from ixd.store.fstree import remove_tree
from tests.daemon_harness import PKGS, TEST_OVERLAY, RunningDaemon, make_reachable, start_daemon

#: what the prebuilt root holds (with the build tools they need): musl built with gcc, and
#: with clang where there is one (for test_packages_real's --cc=clang build)
SEEDED_PACKAGES = ("lib/c", *(("lib/c(cc=clang)",) if shutil.which("clang") else ()))


class SeededRoot:
    """The one root path of this test run whose store starts with lib/c built."""

    def __init__(self, top: Path) -> None:
        self.top = top
        #: the root every seeded daemon of this run uses, one after the other
        self.path = top / "root"
        self._pristine = top / "pristine"
        self._taken = False
        self._removed = itertools.count()
        #: the process id of the daemon building the prebuilt root, while it runs
        self.builder_pid: int | None = None

    def prebuild(self, packages: Sequence[str] = SEEDED_PACKAGES) -> None:
        """Build `packages` with a real daemon at `path`, then keep its root aside."""
        # it builds beside the tests that need no prebuilt root (they run first): as the
        # processor's second choice, so their timings do not suffer
        daemon = start_daemon(self.path, overlays=(TEST_OVERLAY, PKGS), niceness=19)
        self.builder_pid = daemon.process.pid
        try:
            daemon.ixc("build", *packages, timeout=1800)
        finally:
            status = daemon.stop()
        assert status == 0, daemon.log.read_text()
        (self.path / "var" / "ixd.sock").unlink(missing_ok=True)
        self.path.rename(self._pristine)

    @contextlib.contextmanager
    def hold(self) -> Iterator[Path]:
        """`path` for the caller alone (whatever is left there is deleted afterwards): for
        daemons that start there in turn, one of them from `copy_into_place()`."""
        if self._taken:
            raise AssertionError(f"the seeded root {self.path} is in use: one seeded daemon "
                                 f"at a time (its entries are only valid at that path)")
        self._taken = True
        try:
            yield self.path
        finally:
            if self.path.exists():
                away = self.top / f"used-{next(self._removed)}"
                self.path.rename(away)
                remove_tree(away)
            self._taken = False

    def copy_into_place(self) -> None:
        """A fresh copy of the prebuilt root at `path` (which must be held, and free)."""
        assert self._taken and not self.path.exists(), self.path
        subprocess.run(["cp", "-a", "--reflink=auto", str(self._pristine), str(self.path)],
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
            running = start_daemon(root, overlays=overlays, extra=extra, socket=socket)
            try:
                yield running
                assert running.stop() == 0, running.log.read_text()
            finally:
                running.stop()


class Prebuild:
    """The prebuilt root of this run, made in a thread of its own once started: the musl
    build overlaps the tests that run before the first one needing it."""

    def __init__(self) -> None:
        self._top: Path | None = None
        self._builder: SeededRoot | None = None
        self._thread: threading.Thread | None = None
        self._seeded: SeededRoot | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        # not under /tmp: a build's /tmp is its own scratch, which would hold the mount
        # points of a root under /tmp (see test_e2e's test_build_cannot_write_outside_its_output)
        self._top = Path(tempfile.mkdtemp(prefix="ix-seeded-", dir="/var/tmp"))
        self._top.chmod(0o755)
        make_reachable(self._top)
        self._builder = SeededRoot(self._top)
        self._thread = threading.Thread(target=self._build, args=(self._builder,),
                                        name="ix-test-prebuild", daemon=True)
        self._thread.start()

    def _build(self, seeded: SeededRoot) -> None:
        try:
            seeded.prebuild()
            self._seeded = seeded
        except BaseException as exc:
            self._error = exc

    def result(self) -> SeededRoot:
        """The prebuilt root, once made (started now if it was not yet)."""
        self.start()
        assert self._thread is not None and self._top is not None
        while self._thread.is_alive():
            # a test waits for it now: the build is no longer the processor's second choice
            # (again each second: the daemon may not have started yet)
            if self._builder is not None and self._builder.builder_pid is not None:
                for pid in [self._builder.builder_pid, *descendants(self._builder.builder_pid)]:
                    with contextlib.suppress(OSError):
                        # each thread has its own niceness (the daemon's spawner thread
                        # passes its own on to the builds it starts)
                        for thread in os.listdir(f"/proc/{pid}/task"):
                            os.setpriority(os.PRIO_PROCESS, int(thread), 0)
            self._thread.join(timeout=1)
        self._thread.join()
        if self._error is not None:
            raise AssertionError(f"prebuilding lib/c failed: {self._error}") from self._error
        assert self._seeded is not None
        return self._seeded

    def close(self) -> None:
        """Stop the build if it still runs (no test came to need it), then delete everything
        it made."""
        if self._thread is not None:
            builder = self._builder
            if self._thread.is_alive() and builder is not None and builder.builder_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(builder.builder_pid, signal.SIGTERM)
            self._thread.join()
        if self._top is not None:
            remove_tree(self._top)


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
