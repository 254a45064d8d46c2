"""Linux's inotify, the three calls `ixd.daemon.watch` makes of it, through ctypes.

`Inotify()` opens a non-blocking descriptor; `add_watch(path, mask)` gives a watch
descriptor (or -1 where the path cannot be watched: gone, not a folder, the watch limit);
`read()` returns every event waiting, decoded. No paths are kept here: the watcher keeps its
own index of watched folders. In place of pyinotify in the daemon: with asyncore (which it
needs and Python 3.12 no longer has) it was 0.6 MiB of the daemon's memory, and it kept an
object of its own per watched folder (1 MiB more for stal/IX's 4,254 folders, beside the
watcher's own index). `services/session.py` still uses pyinotify.
"""

from __future__ import annotations

import ctypes
import os
import struct
from typing import NamedTuple

IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_DONT_FOLLOW = 0x2000000
IN_ISDIR = 0x40000000

#: struct inotify_event's fixed part: wd, mask, cookie, len (of the NUL-padded name after it)
_HEADER = struct.Struct("iIII")
#: a read's buffer: many events, never less than one with the longest name (NAME_MAX 255)
_READ = 64 << 10


class Event(NamedTuple):
    """One event: its watch (-1 for a queue overflow), what happened, the name in the
    watched folder it happened to ("" for the folder itself)."""

    wd: int
    mask: int
    name: str


def decode(data: bytes) -> list[Event]:
    """The events in what one read of an inotify descriptor returned."""
    events = []
    offset = 0
    while offset < len(data):
        wd, mask, _cookie, size = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        name = os.fsdecode(data[offset:offset + size].rstrip(b"\0"))
        offset += size
        events.append(Event(wd, mask, name))
    return events


class Inotify:
    """An inotify descriptor (non-blocking, closed on exec)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm_watch = libc.inotify_rm_watch
        self._rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"inotify_init1: {os.strerror(errno)}")
        self.fd: int = fd

    def add_watch(self, path: str, mask: int) -> int:
        """The watch of `path` (the same one again for a folder watched already, its mask
        replaced), or -1 where it cannot be watched."""
        wd: int = self._add_watch(self.fd, os.fsencode(path), mask)
        return wd

    def rm_watch(self, wd: int) -> None:
        """Drop a watch (its IN_IGNORED event follows); one the kernel dropped already is
        no error."""
        self._rm_watch(self.fd, wd)

    def read(self) -> list[Event]:
        """Every event waiting (none if none is)."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self.fd, _READ)
            except BlockingIOError:
                return events
            if not data:
                return events
            events += decode(data)

    def close(self) -> None:
        """Close the descriptor, which drops every watch."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
