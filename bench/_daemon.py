"""Shared pieces of the daemon benchmarks: a real `ixd` on a fresh root, the real `ixc`.

`BenchDaemon.start(jobs=N)` makes a root under /tmp and starts ixd there the way the tests do
(`tests.daemon_harness.start_daemon`: the test overlay and pkgs, the seeded mirror), with
`--jobs N`; it returns once the daemon serves. `stop()` stops it and removes the root.
`BENCH_OVERLAY` holds the benchmarks' own recipes (bench/nix.py's `bin/nap`).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ixd.model.realm import patch_to_wire
from ixd.model.words import lex_mutation
from ixd.wire.transport import Client
from tests.daemon_harness import (
    PKGS,
    PROJECT,
    TEST_OVERLAY,
    RunningDaemon,
    read_rows,
    start_daemon,
)

PYTHON = sys.executable
#: the installed client, as a user runs it (pyproject's script-files; `python -m` is slower)
IXC = Path(sys.executable).with_name("ixc")
#: the benchmarks' own recipes, before the test overlay and pkgs
BENCH_OVERLAY = Path(__file__).resolve().with_name("overlay")


def env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "PYTHONPATH": str(PROJECT)}


def slow(tag: str, secs: str = "0") -> str:
    """The selector of one `bin/slow` package (distinct tags are distinct packages)."""
    return f"bin/slow(secs={secs},tag={tag})"


def nap(tag: str, secs: str = "0") -> str:
    """The selector of one `bin/nap` package (BENCH_OVERLAY: `sleep` and `echo`, the work
    of bench/nix.py's Nix derivation; distinct tags are distinct packages)."""
    return f"bin/nap(secs={secs},tag={tag})"


def mut_args(realm: str, packages: Sequence[str]) -> dict[str, Any]:
    """The `mut` request `ixc mut REALM +PKG...` sends, built the way `ixc` builds it."""
    patches = lex_mutation([realm, *(f"+{p}" for p in packages)], realm)
    return {"patches": [patch_to_wire(p) for p in patches]}


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p50 = median of the sorted samples, p99 = the 99th % one)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def proc_memory(pid: int, fields: Sequence[str]) -> dict[str, int]:
    """`fields` of /proc/PID/status and smaps_rollup (kB, or a count), each as the first of
    the two files names it."""
    found: dict[str, int] = {}
    for name in ("status", "smaps_rollup"):
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields and key not in found:
                found[key] = int(value.split()[0])
    return found


def load_average() -> str:
    """The 1-minute load average and the core count (others may share this machine)."""
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def timed(repeat: int, call: Callable[[], None]) -> list[float]:
    """Wall time of `call()`, `repeat` times."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


class BenchDaemon:
    def __init__(self, running: RunningDaemon, jobs: int, tmp: Path) -> None:
        self.running = running
        self.root = running.root
        self.process = running.process
        self.log = running.log
        self.socket = running.socket
        self.database = running.root / "var" / "ixd.sqlite"
        self.jobs = jobs
        #: the folder holding the root, the log and whatever else a benchmark keeps
        self.tmp = tmp

    @classmethod
    def start(cls, *, jobs: int, label: str = "bench", extra: Sequence[str] = (),
              overlays: Sequence[Path] = (TEST_OVERLAY, PKGS)) -> BenchDaemon:
        tmp = Path(tempfile.mkdtemp(prefix=f"ix-{label}-", dir="/tmp"))
        tmp.chmod(0o755)  # build users must reach the store
        try:
            running = start_daemon(tmp / "root", overlays=overlays,
                                   extra=["--jobs", str(jobs), *extra])
        except BaseException:
            _remove_tree(tmp)
            raise
        return cls(running, jobs, tmp)

    def report_log(self) -> None:
        """Say so if the daemon exited badly or logged errors or warnings."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            text = []
        bad = [line for line in text
               if " ERROR " in line or " WARNING " in line or "Traceback" in line]
        if self.process.returncode not in (0, None):
            print(f"NOTE: ixd exited {self.process.returncode}; log tail:\n{self.log_tail()}")
        if bad:
            print(f"NOTE: the daemon logged {len(bad)} warnings/errors, e.g.:")
            for line in bad[:5]:
                print(f"  {line}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def ixc_argv(self, *words: str) -> list[str]:
        """The command line of `ixc WORDS` against this daemon (run it with `env()`): the
        installed `ixc` where there is one."""
        argv, _env = self.running.ixc_argv(*words)
        module = argv.index("client.main")
        return [str(IXC), *argv[module + 1:]] if IXC.is_file() else argv

    def connect(self) -> Client:
        return Client.connect(self.socket)

    def request(self, op: str, args: dict[str, Any]) -> Any:
        with self.connect() as client:
            return client.request(op, args)

    def build_rows(self) -> list[dict[str, Any]]:
        """The rows of the daemon's `builds` table (read-only, beside the daemon)."""
        return read_rows(self.database, "SELECT * FROM builds ORDER BY id")

    def cpu_seconds(self) -> float:
        """The daemon's own CPU time so far (user + system; not its builds)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def children_cpu_seconds(self) -> float:
        """CPU time of the daemon's child processes that have ended (user + system): the
        builds with everything they ran, and the daemon's helpers (`rm`, `kill`)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def vm_hwm(self) -> str:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    def stop(self, *, keep: bool = False) -> int:
        status = self.running.stop()
        self.report_log()
        if not keep:
            _remove_tree(self.tmp)
        return status

    def __enter__(self) -> BenchDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _remove_tree(path: Path) -> None:
    """Remove a bench root; store entries are read-only, so make them writable first."""
    if not path.exists():
        return
    for dirpath, dirnames, _files in os.walk(path):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o755)
    shutil.rmtree(path, ignore_errors=True)


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


@dataclass
class WorkerResult:
    index: int
    #: time.monotonic() (one clock for every process) when the worker began and ended its work
    start: float
    end: float
    value: Any = None
    error: str | None = None


def _worker(index: int, socket_path: str, work: Callable[[int, Client], Any],
            barrier: Any, results: Any) -> None:
    start = end = 0.0
    try:
        with Client.connect(socket_path) as client:
            barrier.wait()
            start = time.monotonic()
            value = work(index, client)
            end = time.monotonic()
        results.put(WorkerResult(index, start, end, value))
    except BaseException as exc:  # reported, never lost
        results.put(WorkerResult(index, start, end or time.monotonic(), None,
                                 f"{type(exc).__name__}: {exc}"))


def run_workers(daemon: BenchDaemon, count: int, work: Callable[[int, Client], Any], *,
                deadline: float = 600.0) -> list[WorkerResult]:
    """Run `work(index, client)` in `count` forked processes, each with its own connection
    to the daemon; all connect first and start together (a barrier). A worker that fails
    reports its error in `WorkerResult.error`."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(i, str(daemon.socket), work, barrier, results))
             for i in range(count)]
    for proc in procs:
        proc.start()
    collected: list[WorkerResult] = []
    end = time.monotonic() + deadline
    try:
        while len(collected) < count:
            try:
                collected.append(results.get(timeout=max(0.0, end - time.monotonic())))
            except queue.Empty:
                barrier.abort()
                break
    finally:
        for proc in procs:
            proc.join(timeout=max(0.0, end - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
    missing = set(range(count)) - {r.index for r in collected}
    for index in sorted(missing):
        collected.append(WorkerResult(index, 0.0, 0.0, None,
                                      "worker died without a result (exit "
                                      f"{procs[index].exitcode})"))
    return sorted(collected, key=lambda r: r.index)
