"""A root with lib/c (musl, built by ix from source) that test daemons start from, instead of
building musl again in every module's fresh store.

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
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ixd.fstree import remove_tree
from tests.daemon_harness import PKGS, TEST_OVERLAY, RunningDaemon, make_reachable, start_daemon

#: what the prebuilt root holds (with the build tools they need)
SEEDED_PACKAGES = ("lib/c",)


class SeededRoot:
    """The one root path of this test run whose store starts with lib/c built."""

    def __init__(self, top: Path) -> None:
        self.top = top
        #: the root every seeded daemon of this run uses, one after the other
        self.path = top / "root"
        self._pristine = top / "pristine"
        self._taken = False
        self._removed = itertools.count()

    def prebuild(self, packages: Sequence[str] = SEEDED_PACKAGES) -> None:
        """Build `packages` with a real daemon at `path`, then keep its root aside."""
        daemon = start_daemon(self.path, overlays=(TEST_OVERLAY, PKGS))
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


@contextlib.contextmanager
def seeded_root() -> Iterator[SeededRoot]:
    """Make the prebuilt root (one lib/c build); remove it at the end."""
    # not under /tmp: a build's /tmp is its own scratch, which would hold the mount points
    # of a root under /tmp (see test_e2e's test_build_cannot_write_outside_its_output)
    top = Path(tempfile.mkdtemp(prefix="ix-seeded-", dir="/var/tmp"))
    top.chmod(0o755)
    make_reachable(top)
    try:
        seeded = SeededRoot(top)
        seeded.prebuild()
        yield seeded
    finally:
        remove_tree(top)
