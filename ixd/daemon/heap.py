"""The daemon's C heap (glibc's malloc): one arena for every thread, and memory freed after a
burst given back to the system.

Python's objects up to 512 bytes live in its own arenas; everything larger (dicts' tables,
long strings and lists, read buffers, SQLite's pages and statements) comes from malloc. glibc
keeps what is freed for reuse and gives back only a free top of the heap past a threshold
that it raises itself each time a large block is freed, so the heap keeps its high-water
mark: a realm's assembly or a burst of builds left 0.5 to 1.5 MiB of ixd's heap free but
resident (`bench/memory.py --allocators`). `malloc_trim(0)` returns the free top and every
free page inside the heap; `keep_heap_trimmed` calls it once a second when that much is free.
"""

from __future__ import annotations

import ctypes
from typing import Protocol

import trio

#: glibc's mallopt parameter M_ARENA_MAX, and the daemon's value of it
M_ARENA_MAX, MALLOC_ARENAS = -8, 1
#: seconds between looks at the heap
TRIM_PERIOD = 1.0
#: free bytes in the heap worth a trim (below it, what a trim would give back is a few pages)
TRIM_FREE = 256 << 10


class Malloc(Protocol):
    """What the trimmer needs of the C library's malloc."""

    def free_bytes(self) -> int: ...

    def trim(self) -> None: ...


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (malloc.h), in bytes."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


class GlibcMalloc:
    """glibc's malloc through ctypes (trio loads ctypes already)."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._mallinfo2 = libc.mallinfo2
        self._mallinfo2.restype = MallInfo2
        self._mallinfo2.argtypes = []
        self._malloc_trim = libc.malloc_trim
        self._malloc_trim.argtypes = [ctypes.c_size_t]

    def free_bytes(self) -> int:
        """The free bytes inside the main heap (`fordblks`, the top chunk included; a trim
        returns their pages but they stay free chunks, counted here)."""
        info: MallInfo2 = self._mallinfo2()
        return int(info.fordblks)

    def trim(self) -> None:
        self._malloc_trim(0)


def glibc_malloc() -> GlibcMalloc | None:
    """The C library's malloc, or None where it is not glibc's (no mallinfo2/malloc_trim)."""
    libc = ctypes.CDLL(None)
    if not (hasattr(libc, "mallinfo2") and hasattr(libc, "malloc_trim")):
        return None
    return GlibcMalloc(libc)


def one_malloc_arena() -> bool:
    """Ask glibc's malloc for one arena for every thread (MALLOC_ARENA_MAX=1); False where
    the C library has no `mallopt` or refuses. By default each thread that allocates gets an
    arena of its own, up to 8 per core, and memory freed in one is never reused by another:
    trio's worker threads come and go by the dozen under builds, and the arenas they leave
    held 0.7 to 1.1 MiB of ixd's RSS through bench/memory.py's 8 x 40 rows. The interpreter
    lock already serialises nearly all allocation, so one arena costs no waiting."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return mallopt is not None and mallopt(M_ARENA_MAX, MALLOC_ARENAS) == 1


async def keep_heap_trimmed(malloc: Malloc, period: float = TRIM_PERIOD,
                            free: int = TRIM_FREE) -> None:
    """Every `period` seconds, give the heap's free pages back when `free` bytes or more are
    free and the heap changed since the last trim (a trim leaves the free chunks counted as
    free: their pages are what it gives back). The trim runs in a worker thread (ctypes lets
    the interpreter lock go): 0.6 ms for 9 MiB free in a 25 MiB heap, but 4-5 ms for the
    41 MiB free beside stal/IX's set/ci graph, too long for the event loop."""
    trimmed_at = -1
    while True:
        await trio.sleep(period)
        now = malloc.free_bytes()
        if now >= free and now != trimmed_at:
            await trio.to_thread.run_sync(malloc.trim)
            trimmed_at = malloc.free_bytes()
