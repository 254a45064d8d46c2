"""Reading files a build made: never follow a link, never block, never read without bound.

Everything in the store was written by untrusted build code. A FIFO would hang a plain
`open()`, a symlink to `/dev/zero` would feed it forever, a 10 GB `meta.json` would exhaust
memory. Every read of a store file by the daemon goes through `open_regular`, which opens
with O_NOFOLLOW|O_NONBLOCK and checks that it got a regular file, and `read_bounded`.
"""

from __future__ import annotations

import os
import stat

_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class NotRegularFile(OSError):
    """The path is a symlink, FIFO, device, socket or folder where a file was expected."""


class FileTooLarge(OSError):
    """A file is larger than its reader allows."""


def open_regular(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> int:
    """An fd of `path`, which must be a regular file and not a symlink (the caller closes
    it). Raises NotRegularFile otherwise, OSError when it cannot be opened."""
    try:
        fd = os.open(path, _FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the last component is a symlink
            raise NotRegularFile(f"{os.fspath(path)} is a symbolic link") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{os.fspath(path)} is not a regular file "
                                 f"(type {stat.S_IFMT(mode):o})")
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    """The whole content of a regular file of at most `limit` bytes; FileTooLarge if more."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise FileTooLarge(f"{os.fspath(path)} is {size} bytes; at most {limit} are read")
        chunks = []
        total = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FileTooLarge(f"{os.fspath(path)} grew past {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)

