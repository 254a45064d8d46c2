"""`ixc export`: a realm's closure as one tarball that unpacks at the same root on another
machine (`tar -xf FILE -C /`), e.g. a cross-built realm for its target.

The daemon names what to pack (op `export`: the realm's current entry, every store dir it
links, and the realm's link); the client reads those from the store itself, which anyone may
read, and writes the file as the user who asked: the daemon writes nowhere for a client.

The tarball is deterministic: members in path order, owner root, the store's timestamp (1)
on every member, modes as in the store, no device numbers, gzip without a time or a name.
It holds the root's `store/` and `realm/` folders, the entries and the realm's link (a
relative link into `store/`), not the folders above the root (so that unpacking at `/`
changes no existing folder's mode). Symbolic links (a realm's files are links into the
store) are packed as links.
"""

from __future__ import annotations

import os
import stat
import tarfile

from ixd.wire.errors import ExportError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from gzip import GzipFile
    from typing import IO, Any

#: the timestamp of every member: the store's own (ixd.store.canonical.STORE_MTIME)
MTIME = 1
#: what an output file's name may end in, and the compression it asks for
COMPRESSIONS = {".tar": "", ".tar.gz": "gz", ".tgz": "gz", ".tar.xz": "xz"}
_READ = 1 << 20


def compression_of(output: str) -> str:
    """The compression an output name asks for ("-", standard output, is a plain tar)."""
    if output == "-":
        return ""
    for suffix, compression in COMPRESSIONS.items():
        if output.endswith(suffix):
            return compression
    raise UsageError(f"`ixc export`: {output!r} does not name a tarball; end it in "
                     f"{', '.join(COMPRESSIONS)} (or give - for standard output)")


def write_export(answer: dict[str, Any], output: str, stdout: IO[bytes]) -> dict[str, Any]:
    """Write the closure the daemon named (`answer` of op `export`) to `output` ("-":
    `stdout`); return what was written. A file is written beside `output` and renamed
    over it once whole, so a failed export leaves nothing."""
    compression = compression_of(output)
    if output == "-":
        counts = _write(answer, stdout, compression)
        return {**counts, "realm": answer["realm"], "file": "-"}
    folder = os.path.dirname(os.path.abspath(output))
    partial = os.path.join(folder, f".{os.path.basename(output)}.{os.getpid()}.partial")
    try:
        with open(partial, "xb") as raw:
            counts = _write(answer, raw, compression)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, output)
    except OSError as exc:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise ExportError(f"cannot write {output}: {exc.strerror or exc}") from None
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
    return {**counts, "realm": answer["realm"], "file": output}


def _write(answer: dict[str, Any], raw: IO[bytes], compression: str) -> dict[str, Any]:
    if compression == "gz":
        import gzip

        # no time, no name in gzip's header: the same closure gives the same bytes
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
            return _pack(answer, packed)
    if compression == "xz":
        import lzma

        with lzma.LZMAFile(raw, "wb") as packed:
            return _pack(answer, packed)
    return _pack(answer, raw)


def _pack(answer: dict[str, Any], stream: IO[bytes] | GzipFile) -> dict[str, Any]:
    root, link = answer["root"], answer["link"]
    entries: list[str] = answer["store_dirs"]
    store = os.path.join(root, "store")
    counts = {"entries": len(entries), "files": 0, "bytes": 0}
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_folder_info(root, os.lstat(root)))
        for folder in sorted((store, os.path.dirname(link))):
            tar.addfile(_folder_info(folder, os.lstat(folder)))
        for path in sorted([*entries, link]):
            if path == link:
                info = _info(path, stat.S_IFLNK | 0o777, 0)
                info.type = tarfile.SYMTYPE
                info.linkname = os.path.relpath(entries[0], os.path.dirname(link))
                tar.addfile(info)
                continue
            for member, st in _walk(path):
                _add(tar, member, st, counts)
    return counts


def _walk(top: str) -> Iterator[tuple[str, os.stat_result]]:
    """Every path under `top` (itself first), in path order, with its lstat."""
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        raise ExportError(f"the store entry {top} went away while it was exported (collected"
                          f" by gc?); export again") from None
    yield top, st
    if stat.S_ISDIR(st.st_mode):
        for name in sorted(os.listdir(top)):
            yield from _walk(os.path.join(top, name))


def _add(tar: tarfile.TarFile, path: str, st: os.stat_result, counts: dict[str, Any]) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        tar.addfile(_folder_info(path, st))
    elif stat.S_ISLNK(st.st_mode):
        info = _info(path, mode, 0)
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        tar.addfile(info)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb", buffering=_READ) as f:
            size = os.fstat(f.fileno()).st_size
            tar.addfile(_info(path, mode, size), f)
        counts["files"] += 1
        counts["bytes"] += size
    else:
        raise ExportError(f"{path} is neither a file, a folder nor a link (type "
                          f"{stat.S_IFMT(st.st_mode):o}): the store holds none such; "
                          f"`ixd verify` checks it")


def _folder_info(path: str, st: os.stat_result) -> tarfile.TarInfo:
    info = _info(path, stat.S_IMODE(st.st_mode), 0)
    info.type = tarfile.DIRTYPE
    return info


def _info(path: str, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.mode, info.size, info.mtime = mode, size, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
