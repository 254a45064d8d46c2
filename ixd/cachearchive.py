"""Cache archives: a store entry as a zstd-compressed tar, packed and unpacked safely.

Packing reads our own canonical store entry. Unpacking treats the archive as hostile even
after its hash checked out (a trusted signer may have been fooled): members are created one
by one through folder descriptors into a private folder only the daemon can reach; only
regular files, folders and symbolic links are accepted, no absolute paths, no `..`, no
member under a link, no link leading out of its entry or the store, nothing twice, and no
more bytes than the signed index names. Never `tarfile.extractall`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ixd.cacheformat import check_link_target, member_path
from ixd.errors import CacheUnsafeArchive

#: members one archive may hold
MAX_MEMBERS = 1_000_000
ZSTD_LEVEL = 3
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


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


class _Bounded:
    """A readable stream that refuses to give more than `limit` bytes (a zstd bomb)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size >= 0 else _CHUNK)
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise CacheUnsafeArchive(f"the archive unpacks to more than {self.limit} bytes; "
                                     f"refused")
        return data


def unpack(archive: Path, out: Path, *, store_dir: str, max_content: int) -> None:
    """Unpack `archive` into the new folder `out` (0700), checking every member; raise
    CacheUnsafeArchive naming the first bad one. `out` is left for the caller to remove."""
    import zstandard

    os.mkdir(out, 0o700)
    top = os.open(out, _DIR_FLAGS)
    try:
        with open(archive, "rb") as handle:
            reader = zstandard.ZstdDecompressor().stream_reader(handle)
            # tar headers and padding on top of the files' bytes
            bounded: Any = _Bounded(reader, max_content + 1024 * MAX_MEMBERS // 64 + (1 << 20))
            try:
                with tarfile.open(fileobj=bounded, mode="r|") as tar:
                    _unpack_members(tar, top, store_dir, max_content)
            except (tarfile.TarError, zstandard.ZstdError, EOFError, ValueError) as exc:
                raise CacheUnsafeArchive(f"the archive is not a valid tar.zst: {exc}") from exc
    finally:
        os.close(top)


def _unpack_members(tar: tarfile.TarFile, top: int, store_dir: str, max_content: int) -> None:
    kinds: dict[str, str] = {"": "dir"}
    content = 0
    for count, member in enumerate(tar, 1):
        if count > MAX_MEMBERS:
            raise CacheUnsafeArchive(f"the archive holds more than {MAX_MEMBERS} members")
        path = member_path(member.name)
        if path == "":
            if not member.isdir():
                raise CacheUnsafeArchive("the archive's top member is not a folder")
            continue
        if path in kinds:
            raise CacheUnsafeArchive(f"archive member {path!r} comes twice")
        parent, _, name = path.rpartition("/")
        if kinds.get(parent) != "dir":
            raise CacheUnsafeArchive(f"archive member {path!r} is not inside a folder of the "
                                     f"archive (its folder is missing, later, or a link)")
        if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            content += member.size
            if content > max_content:
                raise CacheUnsafeArchive(f"the archive's files hold more than the "
                                         f"{max_content} bytes its index names")
            kind = "file"
        elif member.type == tarfile.DIRTYPE:
            kind = "dir"
        elif member.type == tarfile.SYMTYPE:
            check_link_target(path, member.linkname, store_dir)
            kind = "symlink"
        else:
            raise CacheUnsafeArchive(f"archive member {path!r} is a "
                                     f"{_TYPE_NAMES.get(member.type, 'special file')}; only "
                                     f"files, folders and symbolic links are accepted")
        folder = os.open(parent or ".", _DIR_FLAGS, dir_fd=top)
        try:
            if kind == "dir":
                os.mkdir(name, 0o755, dir_fd=folder)
            elif kind == "symlink":
                os.symlink(member.linkname, name, dir_fd=folder)
            else:
                _write_file(tar, member, folder, name)
        finally:
            os.close(folder)
        kinds[path] = kind


_TYPE_NAMES = {tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE: "character device",
               tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "FIFO",
               tarfile.CONTTYPE: "contiguous file", tarfile.GNUTYPE_SPARSE: "sparse file"}


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, folder: int, name: str) -> None:
    source = tar.extractfile(member)
    assert source is not None  # a regular member always has data
    mode = 0o755 if member.mode & 0o111 else 0o644  # never setuid: canonicalise checks too
    fd = os.open(name, _FILE_FLAGS, mode, dir_fd=folder)
    try:
        while chunk := source.read(_CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
    finally:
        os.close(fd)


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
