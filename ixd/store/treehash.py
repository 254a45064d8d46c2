"""The content hash of a store entry: every path, its type and mode, and its bytes or target.

Recorded when an entry is registered valid, so `ixd verify` can tell an entry that changed or
lost files since (disk faults, a hand edit, a crash that left it half written).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from ixd.store.safeio import open_regular

_CHUNK = 1 << 20


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for top, dirs, files in os.walk(root):
        dirs.sort()
        rel_top = os.path.relpath(top, root)
        entries = sorted([*dirs, *files])
        for name in entries:
            path = os.path.join(top, name)
            info = os.lstat(path)
            rel = os.path.normpath(os.path.join(rel_top, name))
            mode = stat.S_IMODE(info.st_mode) & 0o555  # write bits come and go
            if stat.S_ISLNK(info.st_mode):
                digest.update(f"L {rel} {os.readlink(path)}\n".encode())
            elif stat.S_ISDIR(info.st_mode):
                digest.update(f"D {rel} {mode:o}\n".encode())
            elif stat.S_ISREG(info.st_mode):
                digest.update(f"F {rel} {mode:o} {info.st_size}\n".encode())
                # a build made this file: no link followed, no FIFO waited on
                fd = open_regular(path)
                try:
                    while chunk := os.read(fd, _CHUNK):
                        digest.update(chunk)
                finally:
                    os.close(fd)
            else:
                digest.update(f"O {rel} {stat.S_IFMT(info.st_mode):o}\n".encode())
    return digest.hexdigest()


def tree_size(root: Path) -> int:
    """Bytes used by the files of a tree (symlinks count as their own size)."""
    total = 0
    for top, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except FileNotFoundError:
                pass
    return total
