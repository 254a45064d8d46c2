"""A full file system, told as such: which one (its mount point), how much is free, and what
frees some (`ixc gc`, `ixd --min-free`) — in the reply to the user and in the daemon's log."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ixd.wire.errors import NoSpace

#: below this much free space, a failed build is taken for one the file system stopped
NEARLY_FULL = 1 << 20
#: what a build's own tools print when a write fails for want of space
_FULL_WORDS = (b"No space left on device", b"Disk quota exceeded")


def mount_point(path: Path) -> Path:
    """The folder `path`'s file system is mounted on (the first folder above it, going up,
    on another device)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def free_bytes(path: Path) -> tuple[int, int]:
    """(free, total) bytes of `path`'s file system, as an unprivileged writer sees it."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize


def is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def looks_full(path: Path, log_tail: bytes) -> bool:
    """Whether a failed build most likely ran out of space: its log says so, or the file
    system it wrote on has (almost) nothing left."""
    if any(words in log_tail for words in _FULL_WORDS):
        return True
    try:
        return free_bytes(path)[0] < NEARLY_FULL
    except OSError:
        return False


def no_space(path: Path, doing: str, log: Path | None = None, tail: str = "") -> NoSpace:
    """The error for a write under `path` that found no space while `doing` (`tail`: the
    end of its log, to quote)."""
    try:
        mount = mount_point(path)
        free, total = free_bytes(path)
        where = f"the file system on {mount} ({_size(free)} free of {_size(total)})"
    except OSError:
        where = f"the file system of {path}"
    seen = f"; log: {log}" if log is not None else ""
    return NoSpace(f"no space left on {where} while {doing}; free some: `ixc gc` (an "
                   f"administrator) deletes what no realm needs, and `ixd --min-free SIZE` "
                   f"collects garbage before the disk fills{seen}{tail}")


def _size(count: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= factor:
            return f"{count / factor:.1f} {unit}"
    return f"{count} bytes"
