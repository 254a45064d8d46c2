"""Memory as a limit: a cgroup per build, where the machine lets ixd make one.

A build is untrusted code; without a bound, one that allocates gigabytes takes the machine's
memory from everybody until the kernel's OOM killer picks a victim anywhere. With a cgroup of
its own, the build's processes (all of them: they cannot leave it, and bwrap gives them a
cgroup namespace in which it is the root) share `--max-memory` bytes, the page cache of what
they write included; past it the kernel reclaims, then kills a process of that build and of
no other, and ixd fails the build naming the limit. The same cgroup bounds the build's
processes (`pids.max`), beside the per-uid RLIMIT_NPROC.

Which mechanism a machine gets is found out once, at start (`probe`):

- **cgroup v2**, when ixd's own cgroup offers `memory` and `pids` to its children (a service
  manager delegated it, or ixd runs in the root cgroup): the builds' cgroups live in
  `OWN/ixd-TAG/`. A v2 cgroup with processes cannot hand controllers down, so ixd first moves
  itself into a leaf of its own (`OWN/ixd.daemon`).
- **cgroup v1**, when the `memory` controller is mounted as a v1 hierarchy (and `pids` too, if
  it is) and ixd may make a cgroup below its own there: `memory.limit_in_bytes` (and
  `memory.memsw.limit_in_bytes`, so swap is no way around it), `pids.max`, the OOM killer's
  count in `memory.oom_control`. Sound for this purpose: a build user cannot write to the
  root-owned `cgroup.procs` of any other cgroup, so it cannot move out, and v1 charges the
  same memory (anonymous and page cache) to the cgroup as v2 does.
- **none**: the builder falls back to RLIMIT_DATA per process (`chpst -d`), which bounds each
  process's heap but not their sum, and whose breach the build sees as a failed allocation
  (ixd cannot tell it from any other failure).

`TAG` is a hash of the daemon's root (its path and its folder's identity), so daemons of
several roots keep apart, even two at one path in two mount namespaces. A build's
cgroup is made just before it starts and removed when it is over; what a crash left is
removed at the next start (`Cgroups.clean`).

Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ixd.store.cgroup")

#: how long removing an emptied cgroup is tried (the kernel lets go of it a moment after
#: its last process is reaped)
REMOVE_GRACE = 2.0


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy as /proc/self/mountinfo and /proc/self/cgroup show it."""

    #: 2, or 1 for a v1 hierarchy
    version: int
    #: the controllers it carries (v1: from the mount's options)
    controllers: frozenset[str]
    #: where it is mounted, and the cgroup this process is in there
    mount: Path
    own: str

    @property
    def own_dir(self) -> Path:
        return self.mount / self.own.lstrip("/")


def hierarchies(mountinfo: str, cgroups: str) -> list[Hierarchy]:
    """The cgroup hierarchies of this process, from the text of /proc/self/mountinfo and
    /proc/self/cgroup (pure)."""
    own_v2 = None
    own_v1: dict[str, str] = {}
    for line in cgroups.splitlines():
        number, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if number == "0" and not names:
            own_v2 = path
        for name in names.split(","):
            if name:
                own_v1[name] = path
    found = []
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount, fstype, options = Path(fields[4]), tail[0], tail[2].split(",")
        if fstype == "cgroup2" and own_v2 is not None:
            found.append(Hierarchy(2, frozenset(), mount, own_v2))
        elif fstype == "cgroup":
            carried = frozenset(o for o in options if o in own_v1)
            if carried:
                found.append(Hierarchy(1, carried, mount, own_v1[min(carried)]))
    return found


@dataclass(frozen=True)
class Cgroups:
    """Where this daemon makes its builds' cgroups: one parent folder (v2), or one per v1
    hierarchy (memory, and pids if there is one)."""

    version: int
    memory: Path
    #: v1's pids hierarchy's parent folder (v2: the same folder as memory; None: no pids)
    pids: Path | None

    def describe(self) -> str:
        if self.version == 2:
            return f"cgroup v2 (memory.max, pids.max) under {self.memory}"
        pids = f", pids.max under {self.pids}" if self.pids else ""
        return f"cgroup v1 (memory.limit_in_bytes under {self.memory}{pids})"

    def build(self, name: str) -> BuildCgroup:
        """The cgroup of one build (not made yet)."""
        unique = f"{name}.{secrets.token_hex(4)}"
        if self.version == 2:
            return BuildCgroup(2, (self.memory / unique,))
        dirs = [self.memory / unique]
        if self.pids is not None:
            dirs.append(self.pids / unique)
        return BuildCgroup(1, tuple(dirs))

    def close(self) -> None:
        """Remove the builds' parent folders, at the daemon's stop (blocking; a folder a
        build's cgroup is still in stays, for the next start)."""
        for parent in {self.memory, *([self.pids] if self.pids else [])}:
            try:
                os.rmdir(parent)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.warning("cgroup %s not removed: %s", parent, exc.strerror)

    def clean(self) -> None:
        """Remove the cgroups a crash left (blocking; at start, once no process of any build
        user is left)."""
        for parent in {self.memory, *([self.pids] if self.pids else [])}:
            try:
                children = [p for p in parent.iterdir() if p.is_dir()]
            except OSError:
                continue
            for child in children:
                BuildCgroup(self.version, (child,)).remove()


class BuildCgroup:
    """One build's cgroup (one folder per hierarchy): made with its limits before the build
    starts, entered by the build's first process (`procs`), read for the OOM killer's count,
    removed after."""

    def __init__(self, version: int, dirs: tuple[Path, ...]) -> None:
        self.version = version
        self.dirs = dirs

    @property
    def procs(self) -> list[str]:
        """The files a process writes `0` to, to enter the cgroup (every hierarchy's)."""
        return [os.fspath(d / "cgroup.procs") for d in self.dirs]

    def create(self, memory: int, processes: int) -> None:
        """Make the cgroup with its limits (blocking)."""
        for folder in self.dirs:
            os.mkdir(folder, 0o755)
        if self.version == 2:
            (folder,) = self.dirs
            _write(folder / "memory.max", memory)
            _write_if_there(folder / "memory.swap.max", 0)  # memory is memory, not swap
            _write(folder / "pids.max", processes)
            return
        memory_dir = self.dirs[0]
        _write(memory_dir / "memory.limit_in_bytes", memory)
        _write_if_there(memory_dir / "memory.memsw.limit_in_bytes", memory)
        for folder in self.dirs[1:]:
            _write(folder / "pids.max", processes)

    def oom_kills(self) -> int:
        """How many of the build's processes the OOM killer ended (its memory bound)."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (self.dirs[0] / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak(self) -> int | None:
        """The most memory the build used at once, if the kernel says."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.dirs[0] / name).read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        """Remove the cgroup once its processes are gone (blocking; what still holds a
        process, or that the kernel will not let go of, is logged and left for the next
        start's `clean`)."""
        for folder in self.dirs:
            _kill_all(folder, self.version)
            deadline = time.monotonic() + REMOVE_GRACE
            while True:
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        log.warning("cgroup %s not removed: %s", folder, exc.strerror)
                        break
                    time.sleep(0.01)


def _kill_all(folder: Path, version: int) -> None:
    """SIGKILL whatever is left in a cgroup (a build's processes are all dead by now: this
    is for a cgroup a crash left)."""
    kill = folder / "cgroup.kill"
    if version == 2 and kill.exists():
        with contextlib.suppress(OSError):
            _write(kill, 1)
        return
    try:
        pids = (folder / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), 9)


def _write(path: Path, value: int | str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _write_if_there(path: Path, value: int) -> None:
    with contextlib.suppress(FileNotFoundError, PermissionError):
        _write(path, value)


def daemon_tag(root: Path) -> str:
    """The name part that keeps this daemon's cgroups apart from another root's (blocking: a
    stat). The folder's identity as well as its path: daemons in two mount namespaces (two
    containers, each with its own /ix) share the machine's cgroups, and one's start must
    not clean away the other's running builds."""
    folder = os.stat(root)
    return hashlib.sha256(b"%s\0%d\0%d" % (os.fsencode(root), folder.st_dev, folder.st_ino)
                          ).hexdigest()[:12]


def probe(root: Path, *, mountinfo: str | None = None, cgroups: str | None = None
          ) -> tuple[Cgroups | None, str]:
    """Where this daemon can make builds' cgroups, and a line saying which mechanism and
    why (blocking; at start, as root). v2 first, then v1; None if neither works here."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text() if mountinfo is None else mountinfo
        cgroups = Path("/proc/self/cgroup").read_text() if cgroups is None else cgroups
    except OSError as exc:
        return None, f"no cgroups: cannot read /proc/self ({exc.strerror})"
    found = hierarchies(mountinfo, cgroups)
    tag = f"ixd-{daemon_tag(root)}"
    reasons = []
    for hierarchy in (h for h in found if h.version == 2):
        try:
            return _setup_v2(hierarchy, tag), "enforced by cgroup v2"
        except OSError as exc:
            reasons.append(f"cgroup v2 at {hierarchy.own_dir}: {exc}")
    memory = next((h for h in found if h.version == 1 and "memory" in h.controllers), None)
    if memory is not None:
        pids = next((h for h in found if h.version == 1 and "pids" in h.controllers), None)
        try:
            return _setup_v1(memory, pids, tag), (
                "enforced by cgroup v1 (the memory controller is a v1 hierarchy here)")
        except OSError as exc:
            reasons.append(f"cgroup v1 memory at {memory.own_dir}: {exc}")
    elif not found:
        reasons.append("no cgroup hierarchy is mounted")
    return None, "no cgroup of ixd's own: " + "; ".join(reasons or ["none found"])


def _setup_v2(hierarchy: Hierarchy, tag: str) -> Cgroups:
    own = hierarchy.own_dir
    offered = set((own / "cgroup.controllers").read_text().split())
    if not {"memory", "pids"} <= offered:
        raise OSError(errno.ENOTSUP, f"it offers {' '.join(sorted(offered)) or 'nothing'}, "
                                     f"not memory and pids (not delegated)")
    _enable(own, hierarchy)
    base = own / tag
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o755)
    _write(base / "cgroup.subtree_control", "+memory +pids")
    cgroups = Cgroups(2, base, base)
    _try(cgroups)
    return cgroups


def _enable(own: Path, hierarchy: Hierarchy) -> None:
    """Let `own`'s children have memory and pids: a cgroup with processes cannot, so the
    daemon first moves into a leaf of its own (unless `own` is the root, which may)."""
    enabled = set((own / "cgroup.subtree_control").read_text().split())
    if {"memory", "pids"} <= enabled:
        return
    try:
        _write(own / "cgroup.subtree_control", "+memory +pids")
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY or hierarchy.own == "/":
            raise
    leaf = own / "ixd.daemon"
    with contextlib.suppress(FileExistsError):
        os.mkdir(leaf, 0o755)
    _write(leaf / "cgroup.procs", os.getpid())
    _write(own / "cgroup.subtree_control", "+memory +pids")


def _setup_v1(memory: Hierarchy, pids: Hierarchy | None, tag: str) -> Cgroups:
    bases = []
    for hierarchy in (memory, *([pids] if pids else [])):
        base = hierarchy.own_dir / tag
        with contextlib.suppress(FileExistsError):
            os.mkdir(base, 0o755)
        bases.append(base)
    cgroups = Cgroups(1, bases[0], bases[1] if len(bases) > 1 else None)
    _try(cgroups)
    return cgroups


def _try(cgroups: Cgroups) -> None:
    """Make and remove a cgroup with limits once: OSError if this machine will not."""
    trial = cgroups.build("probe")
    try:
        trial.create(64 << 20, 64)
    finally:
        trial.remove()


def enter_argv(procs: Iterable[str]) -> list[str]:
    """The prefix that puts the command that follows into a cgroup before it runs (the
    shell writes `0`, itself, to each hierarchy's cgroup.procs, then becomes the command):
    nothing the build starts can run before it is inside."""
    files = list(procs)
    steps = " && ".join(f'echo 0 > "${i + 1}"' for i in range(len(files)))
    return ["/bin/sh", "-c", f'{steps} && shift {len(files)} && exec "$@"', "ix-cgroup",
            *files]
