"""The content hash of a store entry: every path, its type and mode, and its bytes or target.

Recorded when an entry is registered valid, so `ixd verify` can tell an entry that changed or
lost files since (disk faults, a hand edit, a crash that left it half written).

The hash is over one line per entry, each folder's entries sorted by name and listed before
its sub-folders' (`os.walk`'s order, top down): `ixd.store.canonical` computes the same hash
while it canonicalises a build's output, with the line makers below, in the same walk.
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
            if stat.S_ISLNK(info.st_mode):
                digest.update(link_line(rel, os.readlink(path)))
            elif stat.S_ISDIR(info.st_mode):
                digest.update(folder_line(rel, info.st_mode))
            elif stat.S_ISREG(info.st_mode):
                digest.update(file_line(rel, info.st_mode, info.st_size))
                # a build made this file: no link followed, no FIFO waited on
                fd = open_regular(path)
                try:
                    add_content(digest, fd)
                finally:
                    os.close(fd)
            else:
                digest.update(f"O {rel} {stat.S_IFMT(info.st_mode):o}\n".encode())
    return digest.hexdigest()


def link_line(rel: str, target: str) -> bytes:
    return f"L {rel} {target}\n".encode()


def folder_line(rel: str, mode: int) -> bytes:
    return f"D {rel} {stat.S_IMODE(mode) & 0o555:o}\n".encode()  # write bits come and go


def file_line(rel: str, mode: int, size: int) -> bytes:
    """The line before a file's bytes (`add_content`)."""
    return f"F {rel} {stat.S_IMODE(mode) & 0o555:o} {size}\n".encode()


def add_content(digest: hashlib._Hash, fd: int) -> None:
    """The bytes of the open file `fd`, from where it is to its end."""
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)


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
