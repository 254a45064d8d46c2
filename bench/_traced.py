"""Run a module under tracemalloc; SIGUSR2 writes a summary of its Python objects.

    python -m bench._traced FRAMES REPORT MODULE [ARGS...]

Used by `bench/memory.py --trace`: the summary (written to REPORT with one rename) is the
traced total and the largest files by the size of what their lines allocated (the innermost
frame; importlib's own files hold the module code every import loaded).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import tracemalloc
from types import FrameType

#: the snapshot of the previous summary, which the next one is compared to
_previous: list[tracemalloc.Snapshot] = []


def summary(top: int = 14) -> str:
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
    return "\n".join(lines) + "\n"


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

    tracemalloc.start(frames)
    signal.signal(signal.SIGUSR2, write)
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
