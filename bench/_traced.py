"""Run a module under tracemalloc; SIGUSR2 writes a summary of its memory.

    python -m bench._traced FRAMES REPORT MODULE [ARGS...]

Used by `bench/memory.py --trace` and `--allocators`: the summary (written to REPORT with one
rename) is what each allocator holds (glibc's malloc, Python's obmalloc, SQLite) and, when
FRAMES is not 0, the traced total and the largest files by the size of what their lines
allocated (the innermost frame; importlib's own files hold the module code every import
loaded). FRAMES 0 traces nothing: the process's memory stays comparable to an untraced one.
"""

from __future__ import annotations

import ctypes
import os
import re
import runpy
import signal
import sys
import tempfile
import threading
import tracemalloc
from types import FrameType

from ixd.daemon.heap import MallInfo2

#: the snapshot of the previous summary, which the next one is compared to
_previous: list[tracemalloc.Snapshot] = []


def allocators() -> str:
    """What each allocator holds: glibc's malloc (in use, free but kept, mmapped), Python's
    obmalloc (arenas of 1 MiB; blocks in use), SQLite's own count, the threads."""
    libc = ctypes.CDLL(None)
    lines = []
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
        lines.append(f"malloc: heap {info.arena >> 10} KiB ({info.uordblks >> 10} KiB in use, "
                     f"{info.fordblks >> 10} KiB free in {info.ordblks} chunks, "
                     f"{info.keepcost >> 10} KiB trimmable at the top), mmapped "
                     f"{info.hblkhd >> 10} KiB in {info.hblks}")
    sqlite = ctypes.CDLL("libsqlite3.so.0")
    now, high = ctypes.c_int64(), ctypes.c_int64()
    for op, name in ((0, "memory used"), (2, "page cache overflow")):
        sqlite.sqlite3_status64(op, ctypes.byref(now), ctypes.byref(high), 0)
        lines.append(f"sqlite {name}: {now.value >> 10} KiB (high {high.value >> 10} KiB)")
    lines.append(f"python: {sys.getallocatedblocks()} blocks, {len(sys.modules)} modules, "
                 f"{threading.active_count()} threads, {len(os.listdir('/proc/self/task'))} "
                 f"tasks (threads C code started too)")
    lines.append("obmalloc: " + obmalloc())
    return "\n".join(lines) + "\n"


def obmalloc() -> str:
    """The arena lines of `sys._debugmallocstats()` (it writes to the C stderr)."""
    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    wanted = ("arenas allocated current", "arenas highwater mark", "bytes in allocated blocks",
              "bytes in available blocks", "unused pools", "bytes lost to")
    found = [re.sub(r"\s+", " ", line.strip("# ")) for line in text.splitlines()
             if any(w in line for w in wanted)]
    return "; ".join(found)


def summary(top: int = 14) -> str:
    if not tracemalloc.is_tracing():
        return allocators()
    snapshot = tracemalloc.take_snapshot()
    sizes: dict[str, int] = {}
    for trace in snapshot.traces:
        where = trace.traceback[0].filename  # the innermost frame
        sizes[where] = sizes.get(where, 0) + trace.size
    total = sum(sizes.values())
    shown = sorted(sizes.items(), key=lambda item: -item[1])[:top]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    lines = [f"traced {total / 1048576:.2f} MiB in {len(snapshot.traces)} blocks (peak since "
             f"the last summary {peak / 1048576:.2f} MiB)"]
    lines += [f"{size / 1048576:6.2f} MiB  {short(name)}" for name, size in shown]
    for group in ("filename", "lineno") if _previous else ():
        lines.append(f"grown since the last summary, by {group}:")
        for stat in snapshot.compare_to(_previous[0], group)[:top]:
            frame = stat.traceback[0]
            where = short(frame.filename) + (f":{frame.lineno}" if group == "lineno" else "")
            lines.append(f"{stat.size_diff / 1048576:+6.2f} MiB {stat.count_diff:+7d} blocks  "
                         f"{where}")
    _previous[:] = [snapshot]
    return allocators() + "\n".join(lines) + "\n"


def short(path: str) -> str:
    for marker in ("/site-packages/", "/python3.11/", "/perf/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main() -> None:
    frames, report, module = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    def write(signum: int, frame: FrameType | None) -> None:
        text = summary()
        with open(report + ".tmp", "w") as handle:
            handle.write(text)
        os.rename(report + ".tmp", report)

    if frames:
        tracemalloc.start(frames)
    signal.signal(signal.SIGUSR2, write)
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
