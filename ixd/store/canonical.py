"""Canonicalise a finished build's output before it enters the store.

The output was written by untrusted code under a build user's uid. Once every process of that
uid is dead (nothing can race us), the daemon walks the tree through file descriptors, never
following a symlink, and makes it a plain, immutable, daemon-owned tree:

- setuid, setgid and sticky bits are dropped; device nodes, FIFOs and sockets are removed;
- a file with more than one hard link is replaced by a copy of its own (no link may lead out
  of the tree, nor tie two store files together);
- extended attributes (ACLs, file capabilities) are removed;
- owner the daemon; folders 0555, files 0555 if any execute bit was set, else 0444;
- timestamps fixed at 1 (a second after the epoch), as Nix does.

Each change that was not routine is returned as a note for the build's log. Only then is the
tree renamed into `store/`, so nothing under `store/` is ever writable or setuid. Asked to, the
same walk computes the tree's content hash (`ixd.store.treehash`) as it will be once canonical: each
folder's entries are done before its sub-folders, in the hash's order.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from ixd.store.safeio import open_regular
from ixd.store.treehash import add_content, file_line, folder_line, link_line

#: folders nested deeper than this are refused (each level holds a file descriptor)
MAX_DEPTH = 256
#: the timestamp every store file gets
STORE_MTIME = 1

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device",
            stat.S_IFBLK: "block device"}


#: a check of one regular file of the tree (open, and its path in the tree)
FileCheck = Callable[[int, str], None]


class OutputRefused(Exception):
    """The output cannot be made a store entry (not a folder, nested too deep)."""


@dataclass
class Canonical:
    #: what was changed beyond owner, mode and time, one line each, for the build's log
    notes: list[str] = field(default_factory=list)
    files: int = 0
    #: bytes of regular files
    size: int = 0
    #: the canonical tree's `ixd.store.treehash.tree_hash`, if asked for
    content_hash: str | None = None


def canonicalise(top: str | os.PathLike[str], *, uid: int | None = None,
                 gid: int | None = None, content_hash: bool = False,
                 check: FileCheck | None = None) -> Canonical:
    """Make the tree at `top` canonical (blocking); raise OutputRefused if it cannot be.

    `uid`/`gid` default to the daemon's own; ownership is changed only where it differs.
    With `content_hash`, the result holds the canonical tree's content hash (what
    `tree_hash(top)` would say afterwards), from the same walk. `check` is called with
    each regular file, open, and its path in the tree (`ixd.store.elf.machine_check`);
    what it raises ends the walk.
    """
    owner = (os.geteuid() if uid is None else uid, os.getegid() if gid is None else gid)
    result = Canonical()
    digest = hashlib.sha256() if content_hash else None
    try:
        fd = os.open(top, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise OutputRefused(f"the output {os.fspath(top)} is not a folder") from None
        raise
    try:
        _walk(fd, "", 0, owner, result, digest, check)
    finally:
        os.close(fd)
    if digest is not None:
        result.content_hash = digest.hexdigest()
    return result


def _walk(fd: int, rel: str, depth: int, owner: tuple[int, int], result: Canonical,
          digest: hashlib._Hash | None, check: FileCheck | None) -> None:
    folders: list[tuple[str, str]] = []  # done after this folder's other entries
    for name in sorted(os.listdir(fd)):
        path = f"{rel}/{name}" if rel else name
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFLNK:
            if (st.st_uid, st.st_gid) != owner:
                os.chown(name, *owner, dir_fd=fd, follow_symlinks=False)
            os.utime(name, (STORE_MTIME, STORE_MTIME), dir_fd=fd, follow_symlinks=False)
            if digest is not None:
                digest.update(link_line(path, os.readlink(name, dir_fd=fd)))
        elif kind == stat.S_IFDIR:
            if depth + 1 > MAX_DEPTH:
                raise OutputRefused(f"{path} is nested more than {MAX_DEPTH} folders deep")
            if digest is not None:
                digest.update(folder_line(path, 0o555))  # its mode once finished
            folders.append((name, path))
        elif kind == stat.S_IFREG:
            _file(fd, name, path, st, owner, result, digest, check)
        else:
            os.unlink(name, dir_fd=fd)
            result.notes.append(f"removed {_SPECIAL.get(kind, 'special file')} {path}")
    for name, path in folders:
        sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
        try:
            _walk(sub, path, depth + 1, owner, result, digest, check)
        finally:
            os.close(sub)
    _finish(fd, rel or ".", os.fstat(fd), 0o555, owner, result)


def _file(fd: int, name: str, path: str, st: os.stat_result, owner: tuple[int, int],
          result: Canonical, digest: hashlib._Hash | None, check: FileCheck | None) -> None:
    if st.st_nlink > 1:
        _break_hard_link(fd, name)
        result.notes.append(f"hard link {path} ({st.st_nlink} links) replaced by a copy")
    file_fd = open_regular(name, dir_fd=fd)
    try:
        st = os.fstat(file_fd)
        if check is not None:
            check(file_fd, path)
        mode = 0o555 if st.st_mode & 0o111 else 0o444
        _finish(file_fd, path, st, mode, owner, result)
        result.files += 1
        result.size += st.st_size
        if digest is not None:
            digest.update(file_line(path, mode, st.st_size))
            add_content(digest, file_fd)
    finally:
        os.close(file_fd)


def _finish(fd: int, path: str, st: os.stat_result, mode: int, owner: tuple[int, int],
            result: Canonical) -> None:
    """Owner, attributes, mode and time of an open file or folder."""
    special = st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)
    if special & (stat.S_ISUID | stat.S_ISGID):
        bits = " and ".join(b for b, m in (("setuid", stat.S_ISUID), ("setgid", stat.S_ISGID))
                            if special & m)
        result.notes.append(f"{bits} bit removed from {path}")
    if (st.st_uid, st.st_gid) != owner:
        os.fchown(fd, *owner)
    for attribute in _xattrs(fd):
        os.removexattr(fd, attribute)
        result.notes.append(f"extended attribute {attribute} removed from {path}")
    if stat.S_IMODE(st.st_mode) != mode:
        os.fchmod(fd, mode)
    os.utime(fd, (STORE_MTIME, STORE_MTIME))


def _xattrs(fd: int) -> list[str]:
    try:
        return os.listxattr(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise


def _break_hard_link(fd: int, name: str) -> None:
    """Replace `name` by a copy of its bytes, so it is the only name of its file."""
    source = open_regular(name, dir_fd=fd)
    tmp = f".ix-copy-{secrets.token_hex(8)}"
    try:
        target = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=fd)
        try:
            os.fchmod(target, stat.S_IMODE(os.fstat(source).st_mode) & 0o777)
            _copy(source, target)
        finally:
            os.close(target)
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=fd)
        except FileNotFoundError:
            pass
        raise
    finally:
        os.close(source)


def _copy(source: int, target: int) -> None:
    try:
        while os.copy_file_range(source, target, 1 << 30):
            pass
    except OSError as exc:  # a file system without it: plain reads and writes
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        os.lseek(source, 0, os.SEEK_SET)
        os.lseek(target, 0, os.SEEK_SET)
        os.ftruncate(target, 0)
        while chunk := os.read(source, 1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(target, view):]
