"""Cache archives: a store entry as a reproducible zstd-compressed tar, and the entries it
refers to.

Packing reads our own canonical store entry. Unpacking is not done here: the archive is
hostile even after its hash checked out (a trusted signer may have been fooled), so it is
unpacked like a build, by tar as a build user in the sandbox (`ixd.cache.unpack`).
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

ZSTD_LEVEL = 3
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Packed:
    file_hash: str
    file_size: int
    #: bytes of the regular files in the archive
    content_size: int


def pack(entry: Path, archive: Path) -> Packed:
    """Write the store entry `entry` as a reproducible tar.zst (owner 0, time 1, sorted)."""
    content = 0

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        nonlocal content
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 1
        if info.isreg():
            content += info.size
        return info

    import zstandard  # here: a daemon without caches runs without it (Debian's python3)

    with open(archive, "wb") as handle:
        writer = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(handle, closefd=False)
        with writer, tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(entry, arcname=".", recursive=True, filter=normalise)
    digest = hashlib.sha256()
    size = 0
    with open(archive, "rb") as readback:
        while chunk := readback.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Packed(digest.hexdigest(), size, content)


def scan_references(entry: Path, store_dir: str, candidates: Container[str],
                    own: str) -> tuple[str, ...]:
    """The uids among `candidates` whose store paths appear in the files (or link targets)
    of `entry`: what it needs at run time, found as Nix finds references."""
    pattern = re.compile(re.escape(store_dir.rstrip("/").encode()) + rb"/([0-9a-f]{32})-")
    overlap = len(store_dir) + 40
    found: set[str] = set()

    def note(data: bytes) -> None:
        for match in pattern.finditer(data):
            uid = match.group(1).decode()
            if uid != own and uid in candidates:
                found.add(uid)

    for top, _dirs, files in os.walk(entry):
        for name in files:
            path = os.path.join(top, name)
            if os.path.islink(path):
                note(os.fsencode(os.readlink(path)))
                continue
            with open(path, "rb") as handle:
                tail = b""
                while chunk := handle.read(_CHUNK):
                    note(tail + chunk)
                    tail = chunk[-overlap:]
        for name in _dirs:
            path = os.path.join(top, name)
            if os.path.islink(path):
                note(os.fsencode(os.readlink(path)))
    return tuple(sorted(found))
