"""Roots with the toolchain's libraries prebuilt on ixd's default chain (stage 0's clang,
stage 1's tools: lib/c, musl built by ix from source, and compiler-rt's builtins; the C++
runtimes; the cross targets' own) that test daemons start from, instead of bootstrapping and
building them again in every module's fresh store. They are built by one daemon in a thread
from the start of the run, and the modules that need them run last (tests/conftest.py; in a
parallel run, once their root is ready: tests/parallel.py).

A store entry's uid covers the store paths of its inputs, so entries are only valid at the
root path they were built at. Every prebuilt root is therefore made at one path, `ROOT`,
and every daemon that starts from one runs at that very path. So that the processes of a
parallel run (and the prebuilding thread) can each have a daemon there at once, each sees
`ROOT`'s folder as a private one of its own: its tests run in a mount namespace where a
folder of its own is bind-mounted on `ROOT`'s parent (`enter_own_root`), as each machine of
a team has its own /ix. The roots are built in stages: stage 1's tools, lib/c and the
builtins first (`lib_c_root`), kept aside as soon as they are built (the modules needing only
them start then), then everything the other roots add, on top, by the same daemon (two
builds at once), kept aside as one root for them all. Stages 0 and 1, lib/c and the builtins
are built once per run, not once per root.

A copy of a prebuilt root is made at `ROOT` (`cp -a`: store entries, database and logs) for
each daemon that asks, and deleted when that daemon is done; one seeded daemon at a time in
each process (`SeededPath.hold`). Its entries are exactly what that daemon would have built
(they were built by an ixd at that very path, registered valid in the copied database), so
every other package is still built for real on top of them.
"""

from __future__ import annotations

import contextlib
import ctypes
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

#: the prebuilt roots of a run are built on ixd's default chain (stages 0 and 1), as their
#: daemons build: the package set, cross and cache tests run on it, and test_bootstrap
#: compares its own builds with the lib_c_root's
BOOT_CHAIN = True

#: the root every other one starts from: what every C package links (by clang, the default
#: compiler), with the build tools it needs (stages 0 and 1)
BASE_ROOT = "lib_c_root"

#: the prebuilt roots of a run, by the fixture (and mark) that gives one, and what each adds
#: to BASE_ROOT's packages: the whole toolchain, for test_packages_real: the C++ runtimes,
#: and musl built by gcc for its --cc=gcc build; and the cross targets' own, for
#: test_cross: musl and the builtins for linux-aarch64 and linux-riscv64, the C++ runtimes
#: for aarch64. The roots other than BASE_ROOT are one root holding all they add.
SEEDED_ROOTS = {
    BASE_ROOT: ("lib/c", "lib/compiler_rt/builtins"),
    "toolchain_root": ("lib/c++", "lib/c(cc=gcc)"),
    "cross_root": ("lib/c++(target=linux-aarch64)", "lib/c(target=linux-riscv64)",
                   "lib/compiler_rt/builtins(target=linux-riscv64)"),
}

#: the stage (and kept-aside root) each prebuilt root is part of
_STAGE = {name: ("base" if name == BASE_ROOT else "full") for name in SEEDED_ROOTS}

#: the prebuilding thread's own folder (`enter_own_root`), where the roots are kept
_PREBUILDERS = "own-prebuild"

_CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2


def enter_own_root(seeded: Path, own: Path) -> None:
    """Let the calling thread, and every process and thread it starts from now on, see the
    folder `own` as `seeded`/mnt (where `ROOT` is): a mount namespace of its own (a thread
    may leave its process's: only `unshare` of the calling task)."""
    mnt = seeded / "mnt"
    mnt.mkdir(mode=0o755, exist_ok=True)
    own.mkdir(mode=0o755, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    _succeeded(libc.unshare(_CLONE_NEWNS), "a mount namespace of its own")
    _succeeded(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None),
               "its mounts made private")
    _succeeded(libc.mount(bytes(own), bytes(mnt), None, _MS_BIND, None),
               f"{own} bound on {mnt}")
    # how `SeededPath.hold` knows the caller is in it
    (mnt / f".own-{os.getpid()}").touch()


def leave_own_root(seeded: Path) -> None:
    """Undo `enter_own_root` for the calling thread's view (the folder stays, for whoever
    deletes the run's folders)."""
    libc = ctypes.CDLL(None, use_errno=True)
    _succeeded(libc.umount2(bytes(seeded / "mnt"), _MNT_DETACH), f"{seeded / 'mnt'} unmounted")


def _succeeded(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


class SeededPath:
    """`ROOT` for this process: the one path every seeded daemon runs at, private to the
    process (after `enter_own_root`)."""

    def __init__(self, seeded: Path) -> None:
        self.seeded = seeded
        #: the root every seeded daemon of this run uses, one after the other
        self.path = seeded / "mnt" / "root"
        self._taken = False
        self._removed = itertools.count()

    @property
    def held(self) -> bool:
        """Whether a caller holds `path` now."""
        return self._taken

    @contextlib.contextmanager
    def hold(self) -> Iterator[Path]:
        """`path` for the caller alone (whatever is left there is deleted afterwards): for
        daemons that start there in turn, one of them from `copy_into_place()`."""
        if not (self.path.parent / f".own-{os.getpid()}").exists():
            raise AssertionError(f"{self.path.parent} is not this process's own: its tests "
                                 f"were not started in a mount namespace of their own "
                                 f"(tests/conftest.py, pytest_configure; needs root)")
        if self._taken:
            raise AssertionError(f"the seeded root {self.path} is in use: one seeded daemon "
                                 f"at a time (its entries are only valid at that path)")
        self._taken = True
        try:
            yield self.path
        finally:
            if self.path.exists():
                away = self.path.parent / f"used-{next(self._removed)}"
                self.path.rename(away)
                remove_tree(away)
            self._taken = False


class SeededRoot:
    """One prebuilt root: a store that starts with lib/c (and more) built at `path`."""

    def __init__(self, at: SeededPath, pristine: Path) -> None:
        self._at = at
        self.path = at.path
        #: the prebuilt root, kept aside (every copy is made from it)
        self.pristine = pristine

    def hold(self) -> contextlib.AbstractContextManager[Path]:
        """`path` for the caller alone (see `SeededPath.hold`)."""
        return self._at.hold()

    def copy_into_place(self) -> None:
        """A fresh copy of the prebuilt root at `path` (which must be held, and free)."""
        assert self._at.held and not self.path.exists(), self.path
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
    """The prebuilt roots of this run, made in a thread of its own once started: their
    builds overlap the tests that run before the first one needing them. One process of a
    run makes them (`start`); the workers of a parallel run follow it through its folder
    (`follow`): a root is ready once its stage's kept-aside copy exists, failed once its
    stage's failure file does."""

    #: how long a test may wait for a prebuilt root (seconds)
    DEADLINE = 1800.0

    def __init__(self) -> None:
        self._seeded: Path | None = None
        self._at: SeededPath | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        #: the process id of the daemon building the roots, while it runs
        self._builder_pid: Path | None = None
        #: whether this process's tests see ROOT as their own (`enter`)
        self._entered = False

    def _use(self, seeded: Path) -> None:
        if self._seeded is None:
            seeded.mkdir(mode=0o755, exist_ok=True)
            make_reachable(seeded)
            self._seeded = seeded
            self._at = SeededPath(seeded)
            self._builder_pid = seeded / "builder.pid"
        assert self._seeded == seeded, (self._seeded, seeded)

    def enter(self, seeded: Path, name: str) -> None:
        """This process's tests see `ROOT` (in `seeded`) as a folder of their own (named
        after `name`, the process): call it from the thread that runs the tests, before
        they start threads."""
        self._use(seeded)
        enter_own_root(seeded, seeded / f"own-{name}")
        self._entered = True

    def start(self, seeded: Path, roots: Sequence[str]) -> None:
        """Make the prebuilt `roots` in `seeded` (not under /tmp: a build's /tmp is its own
        scratch, which would hold the mount points of a root under /tmp, see test_e2e's
        test_build_cannot_write_outside_its_output)."""
        self._use(seeded)
        if self._thread is not None or not roots:
            return
        assert self._seeded is not None
        full = tuple(dict.fromkeys(p for root in SEEDED_ROOTS if root in roots
                                   and _STAGE[root] == "full" for p in SEEDED_ROOTS[root]))
        self._thread = threading.Thread(target=self._build, args=(self._seeded, full),
                                        name="ix-test-prebuild", daemon=True)
        self._thread.start()

    def _pristine(self, root: str) -> Path:
        """Where `root` is kept (`_keep`), as every process sees it."""
        assert self._seeded is not None
        return self._seeded / _PREBUILDERS / f"pristine-{_STAGE[root]}"

    def _failure(self, root: str) -> Path:
        assert self._seeded is not None
        return self._seeded / f"failed-{_STAGE[root]}"

    def _build(self, seeded: Path, full: Sequence[str]) -> None:
        stage = "base"
        try:
            # the daemon building the roots sees ROOT as a folder of its own too
            enter_own_root(seeded, seeded / _PREBUILDERS)
            at = SeededPath(seeded)
            with at.hold() as path:
                self._build_stage(path, SEEDED_ROOTS[BASE_ROOT])
                self._keep(path, "base", copy=bool(full))
                if full:
                    stage = "full"
                    self._build_stage(path, full)
                    self._keep(path, "full", copy=False)
        except BaseException:
            failures = ["base", "full"] if stage == "base" else ["full"]
            for failed in failures:
                staging = seeded / f".failed-{failed}"
                staging.write_text(traceback.format_exc())
                staging.rename(seeded / f"failed-{failed}")

    def _build_stage(self, path: Path, packages: Sequence[str]) -> None:
        """Build `packages` with a real daemon at `path`."""
        assert self._builder_pid is not None
        # it builds beside the tests that need no prebuilt root (they run first): as the
        # processor's second choice, so their timings do not suffer
        daemon = start_daemon(path, overlays=(TEST_OVERLAY, PKGS), niceness=19,
                              boot=BOOT_CHAIN)
        self._builder_pid.write_text(str(daemon.process.pid))
        try:
            if self._stop.is_set():
                raise AssertionError("the run ended before the root was needed")
            daemon.ixc("build", *packages, timeout=1800)
        finally:
            status = daemon.stop()
            self._builder_pid.unlink(missing_ok=True)
        assert status == 0, daemon.log.read_text()
        (path / "var" / "ixd.sock").unlink(missing_ok=True)

    @staticmethod
    def _keep(path: Path, stage: str, *, copy: bool) -> None:
        """Keep the root at `path` aside as the `stage`'s (a copy, when more is to be built
        on it): beside it, in this thread's own folder (a rename cannot leave a mount),
        made whole before it appears under its name."""
        pristine = path.with_name(f"pristine-{stage}")
        if copy:
            staging = pristine.with_name(f".{pristine.name}")
            subprocess.run(["cp", "-a", "--reflink=auto", str(path), str(staging)],
                           check=True)
            staging.rename(pristine)
        else:
            path.rename(pristine)

    def path(self) -> SeededPath:
        """The prebuilt roots' path, as this process sees it (without waiting for a root:
        for a module that starts there before its root is ready)."""
        assert self._at is not None, "this process's tests have no path of their own (root?)"
        return self._at

    def finished(self, root: str) -> bool:
        """Whether `root` is made (or failed to be)."""
        return self._seeded is not None and (self._pristine(root).exists()
                                             or self._failure(root).exists())

    def builder_pid(self) -> int | None:
        """The daemon building the roots, while it runs."""
        try:
            return int(self._builder_pid.read_text()) if self._builder_pid else None
        except (FileNotFoundError, ValueError):
            return None  # not started yet, or done (or the file is being written)

    def result(self, root: str) -> SeededRoot:
        """The prebuilt `root`, once made."""
        assert self._at is not None, "the prebuilt roots were neither started nor followed"
        deadline = time.monotonic() + self.DEADLINE
        while not self.finished(root):
            if time.monotonic() > deadline:
                raise AssertionError(f"the prebuilt root {root} took more than "
                                     f"{self.DEADLINE} s")
            # a test waits for it now: the build is no longer the processor's second choice
            # (again each second: the daemon may not have started yet)
            builder = self.builder_pid()
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
        if self._failure(root).exists():
            raise AssertionError(f"prebuilding {root} failed:\n"
                                 f"{self._failure(root).read_text()}")
        return SeededRoot(self._at, self._pristine(root))

    def close(self) -> None:
        """Stop the build if it still runs (no test came to need it), then delete everything
        it made (by the process that made it)."""
        if self._entered and self._seeded is not None:
            leave_own_root(self._seeded)
            self._entered = False
        if self._thread is None or self._seeded is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            # its daemon may not have started when asked first: asked again each second
            builder = self.builder_pid()
            if builder:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(builder, signal.SIGTERM)
            self._thread.join(timeout=1)
        remove_tree(self._seeded)


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
