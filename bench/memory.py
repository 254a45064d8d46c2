"""Benchmark: ixd's memory through bench/nix.py's workload, the ix side alone (issue 29, 3).

    python -m bench.memory [--packages 200] [--repeat 50] [--reps 3] [--jobs 2]
                           [--smaps] [--allocators] [--trace N] [--ixd=ARG ...]

One real ixd (`--jobs N`, build users, the bubblewrap sandbox) runs what bench/nix.py asks of
it, in the same order, as whole `ixc` processes: `--repeat` `ixc status`, a realm of
`--packages` distinct packages, `--repeat` re-adds of one of them, re-installs of all, then
`--reps` runs of 8 clients x 40 fresh 0.5 s builds (30 shared). It prints ixd's memory at
each step: RSS and PSS (smaps_rollup) at rest after its first answer, after the realm, after
the quick rows, and the peak of PSS (the figure of bench/nix.py's memory row, goal: <= Nix's
daemons, 26.0 MiB when measured) and of RSS during each 8 x 40 run; the median of those runs.
It also prints ixd's start-up until its first answer and the largest summed PSS of ixd's
child processes seen (builds and helpers: bench/nix.py counts neither them nor Nix's
builders). ixd runs no Python child; a child caught between vfork and exec shares ixd's
memory and shows ixd's own PSS there (about ixd's figure: not memory of its own).

`--ixd=ARG` passes ARG to ixd (e.g. `--ixd=--max-package-cache=1M`, to see what a cache
holds). `--allocators` prints, after each step (and each 8 x 40 run), what glibc's malloc
holds (in use, free but kept), Python's obmalloc (arenas, blocks), SQLite's own count and the
threads, as ixd itself reads them (bench/_traced.py, asked by a signal; no tracing: the other
figures stay comparable).
`--trace N` runs ixd under `bench/_traced.py` (tracemalloc, N frames): after each step it
prints the Python objects' total and the 12 largest files by size; tracing itself costs
memory and time, so the other figures of such a run are not comparable.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from bench._daemon import BenchDaemon, load_average, proc_memory
from bench.nix import CLIENTS, EACH, SHARED, Hung, IxSide, PeakPss, pss_kib, run, together
from tests.daemon_harness import start_daemon

#: /proc/PID/status and smaps_rollup fields, in kB
FIELDS = ("VmRSS", "Pss", "RssAnon", "RssFile")


def memory_kib(pid: int) -> dict[str, int]:
    return proc_memory(pid, FIELDS)


def mappings_kib(pid: int, top: int = 8) -> str:
    """The largest mappings by PSS (smaps), grouped by name: the heap, anonymous memory
    (other malloc arenas, thread stacks, Python's obmalloc arenas), each file."""
    sizes: dict[str, int] = {}
    name = "?"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:
            name = head[5] if len(head) > 5 else "[anon]"
        elif line.startswith("Pss:"):
            sizes[name] = sizes.get(name, 0) + int(head[1])
    shown = sorted(sizes.items(), key=lambda item: -item[1])[:top]
    return ", ".join(f"{Path(n).name or n} {kib / 1024:.1f}" for n, kib in shown)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (by /proc/*/task/*/children)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def mib(kib: float) -> str:
    return f"{kib / 1024:6.1f} MiB"


class Traced:
    """Ask the traced ixd (bench/_traced.py) for its tracemalloc summary: SIGUSR2 makes it
    write one to `report`."""

    def __init__(self, pid: int, report: Path) -> None:
        self.pid, self.report = pid, report

    def summary(self) -> str:
        self.report.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR2)
        end = time.monotonic() + 60
        while not self.report.exists():  # polling with a deadline
            if time.monotonic() > end:
                return "(no tracemalloc summary within 60 s)"
            time.sleep(0.05)
        time.sleep(0.2)  # written with one rename; the pause is the reader's margin only
        return self.report.read_text()


def start(jobs: int, trace: int | None, extra: list[str]) -> tuple[BenchDaemon, float]:
    """ixd, under bench/_traced.py unless `trace` is None (0: its allocator figures only)."""
    tmp = Path(tempfile.mkdtemp(prefix="ix-memory-", dir="/tmp"))
    tmp.chmod(0o755)
    module = (("bench._traced", str(trace), str(tmp / "traced.txt"), "ixd.daemon.main")
              if trace is not None else ("ixd.daemon.main",))
    began = time.perf_counter()
    running = start_daemon(tmp / "root", extra=["--jobs", str(jobs), *extra], module=module)
    return BenchDaemon(running, jobs, tmp), time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=50, help="samples of the quick rows")
    parser.add_argument("--reps", type=int, default=3, help="runs of the 8 x 40 row")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--smaps", action="store_true",
                        help="print ixd's largest mappings by PSS after each step")
    parser.add_argument("--trace", type=int, default=0, metavar="FRAMES",
                        help="run ixd under tracemalloc and print its largest files")
    parser.add_argument("--ixd", action="append", default=[], metavar="ARG",
                        help="an argument for ixd, e.g. --ixd=--max-package-cache=4M "
                             "(repeatable)")
    parser.add_argument("--allocators", action="store_true",
                        help="print what malloc, obmalloc and SQLite hold after each step "
                             "(asked of ixd by a signal: bench/_traced.py without tracing)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/memory.py runs as root (ixd's build users, as bench/nix.py)")
        return 0
    print(f"ixd's memory through bench/nix.py's rows, ix side alone: {args.packages} "
          f"packages, {args.jobs} build slots; {load_average()}")
    probed = args.trace or args.allocators
    daemon, startup = start(args.jobs, args.trace if probed else None, args.ixd)
    side = IxSide(args.jobs)
    side.daemon = daemon
    pid = daemon.process.pid
    traced = Traced(pid, daemon.tmp / "traced.txt") if probed else None

    def step(name: str) -> None:
        now = memory_kib(pid)
        print(f"  {name:<34} RSS {mib(now['VmRSS'])}  PSS {mib(now['Pss'])}  "
              f"anon {mib(now['RssAnon'])}  file {mib(now['RssFile'])}")
        if args.smaps:
            print(f"    PSS by mapping (MiB): {mappings_kib(pid)}")
        if traced is not None:
            print("    " + traced.summary().replace("\n", "\n    ").rstrip())

    try:
        daemon.request("ping", {})
        print(f"  start-up to first answer: {startup * 1000:.0f} ms "
              f"(the process's start, imports, recovery, the socket; wall time)")
        time.sleep(1.0)  # its start-up threads done, nothing asked of it
        step("at rest after its first answer")
        for _ in range(args.repeat):
            run(side.cheapest(), side.environ, args.timeout)
        everything = list(reversed(range(args.packages)))
        run(side.install(everything), side.environ, 600)
        step(f"after a {args.packages}-package realm")
        for _ in range(args.repeat):
            run(side.install([0]), side.environ, args.timeout)
        for _ in range(max(3, args.repeat // 5)):
            run(side.install(everything), side.environ, args.timeout)
        step("after the re-adds and re-installs")
        stamp = time.time_ns()
        runs = []
        for rep in range(1, args.reps + 1):
            runs.append(shared_run(side, pid, f"m{stamp}r{rep}", args.timeout))
            took, pss, rss, children = runs[-1]
            print(f"  8 x 40 run {rep}: {'hung' if took is None else f'{took:.1f} s'}, "
                  f"peak PSS {mib(pss)}, peak RSS {mib(rss)}, children's PSS at most "
                  f"{mib(children)}")
            step(f"after 8 x 40 run {rep}")
        print(f"\n  ixd's PSS during {CLIENTS} x {EACH} (median of {args.reps} peaks): "
              f"{mib(statistics.median(r[1] for r in runs))}   (goal <= Nix's daemons, "
              f"26.0 MiB)")
        print(f"  ixd's RSS during it (median of peaks): "
              f"{mib(statistics.median(r[2] for r in runs))}")
        print(f"  {load_average()}")
    finally:
        daemon.stop()
    return 0


def shared_run(side: IxSide, pid: int, tag: str,
               timeout: float) -> tuple[float | None, int, int, int]:
    """One 8 x 40 run (bench/nix.py's): its seconds (None if hung), ixd's peak PSS and RSS,
    and the largest summed PSS of ixd's child processes seen (kB)."""
    common = [f"{tag}c{n}" for n in range(SHARED)]
    clients = [[*common, *(f"{tag}o{c}n{n}" for n in range(EACH - SHARED))]
               for c in range(CLIENTS)]
    children = [0]

    def own_and_children() -> list[int]:
        children[0] = max(children[0], sum(pss_kib(k) for k in descendants(pid)))
        return [pid]

    with PeakPss(own_and_children) as pss, _PeakRss(pid) as rss:
        began = time.perf_counter()
        try:
            together([side.build(names) for names in clients], side.environ, timeout)
        except Hung:
            return None, pss.peak_kib, rss.peak_kib, children[0]
        took = time.perf_counter() - began
    return took, pss.peak_kib, rss.peak_kib, children[0]


class _PeakRss(PeakPss):
    """The peak VmRSS of one process while the block runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(lambda: [pid])

    def _sample(self) -> None:
        pid = self.pids()[0]
        while True:
            try:
                self.peak_kib = max(self.peak_kib, memory_kib(pid)["VmRSS"])
            except (OSError, KeyError):
                pass
            if self._stop.wait(0.25):  # the sampling period, not a synchronisation
                return


if __name__ == "__main__":
    raise SystemExit(main())
