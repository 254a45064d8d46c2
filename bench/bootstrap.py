"""Benchmark: ixd's default chain from an empty store (docs/recipes.md, "Stages").

    python -m bench.bootstrap [--jobs 2] [--runs 30] [--no-confine] [--keep]

A real ixd on a fresh root (overlay `pkgs/`, the seeded source mirror) builds, one stage
after the other: stage 0 (the host's clang and the seed captured), stage 1 (musl, BusyBox,
GNU make, dash, from source), lib/c (musl on stage 1's tools), compiler-rt's builtins and
bin/hello. For each stage it prints the wall time of `ixc build`, the CPU time (user +
system) it took, the builds and their sum of build times (the build history's durations),
and the size the stage adds to the store. A confined build's processes are reaped inside its
sandbox (bwrap's pid namespace): their CPU time never reaches the daemon, so confined the
CPU column is the whole machine's (/proc/stat: exact on a machine doing nothing else); with
--no-confine (the daemon as root runs the same builds itself, unsandboxed) it is the
daemon's reaped children's, exact under any load. Then, to show what a second plan costs,
the wall time of `ixc plan bin/hello` on a restarted daemon (the capture's sha256 come from
var/host-capture.json, not from hashing the compiler again), and what the launcher costs:
`clang -c` of an empty file, the host's clang against stage 0's (started through ix's
launcher and the captured loader), the median of --runs runs each.

16 minutes on 2 cores at a load average of 16 to 28 (the machine shared); stage 1 and lib/c
take most of it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.daemon_harness import PKGS, RunningDaemon, start_daemon

#: the stages, each the packages it builds (on top of the ones before)
STAGES = (
    ("stage 0: capture", ("bld/boot/0/clang", "bld/boot/0/seed")),
    ("stage 1: from source", ("bld/boot/1/env",)),
    ("lib/c on stage 1", ("lib/c",)),
    ("compiler-rt's builtins", ("lib/compiler_rt/builtins",)),
    ("bin/hello", ("bin/hello",)),
)
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Stage:
    name: str
    wall: float
    cpu: float
    builds: list[tuple[str, float]]
    store_bytes: int


def children_cpu(pid: int) -> float:
    """Seconds of CPU the process's reaped children used (cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / TICKS


def machine_cpu() -> float:
    """Seconds of CPU the whole machine used (user, nice, system: /proc/stat's cpu line)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return (int(fields[1]) + int(fields[2]) + int(fields[3])) / TICKS


def store_bytes(root: Path) -> int:
    done = subprocess.run(["du", "-sb", str(root / "store")], capture_output=True, text=True,
                          check=True)
    return int(done.stdout.split()[0])


def history(daemon: RunningDaemon) -> dict[str, tuple[str, float]]:
    rows = json.loads(daemon.ixc("--json", "builds", "--limit", "500").stdout)["builds"]
    return {r["uid"]: (r["name"], r["duration"]) for r in rows
            if r["state"] == "valid" and r["duration"] is not None}


def run(jobs: int, root: Path, confine: bool) -> list[Stage]:
    extra = ["--jobs", str(jobs), *(() if confine else ("--no-confine",))]
    daemon = start_daemon(root, overlays=(PKGS,), extra=extra, boot=True)
    pid = daemon.process.pid

    def cpu() -> float:
        return machine_cpu() if confine else children_cpu(pid)

    stages = []
    try:
        seen: dict[str, tuple[str, float]] = {}
        for name, packages in STAGES:
            used, size = cpu(), store_bytes(root)
            started = time.monotonic()
            daemon.ixc("build", *packages, timeout=3600)
            wall = time.monotonic() - started
            built = history(daemon)
            new = [v for k, v in built.items() if k not in seen]
            seen = built
            stages.append(Stage(name, wall, cpu() - used, sorted(new),
                                store_bytes(root) - size))
    finally:
        daemon.stop()
    return stages


def clang_start(program: str, runs: int) -> float:
    """The median wall time of `program -c` of an empty C file (ms)."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([program, "-c", "-x", "c", "/dev/null", "-o", "/dev/null"], check=True)
        times.append(time.monotonic() - started)
    return statistics.median(times) * 1000


def replan(root: Path) -> float:
    daemon = start_daemon(root, overlays=(PKGS,), boot=True)
    try:
        started = time.monotonic()
        daemon.ixc("plan", "--summary", "bin/hello")
        return time.monotonic() - started
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bootstrap")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", action="store_true", help="keep the root afterwards")
    parser.add_argument("--runs", type=int, default=30, help="clang starts timed, each way")
    parser.add_argument("--no-confine", action="store_true",
                        help="builds unsandboxed, for their exact CPU time")
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="ix-bench-boot-", dir="/var/tmp"))
    top.chmod(0o755)
    root = top / "root"
    load_before = os.getloadavg()[0]
    try:
        stages = run(args.jobs, root, confine=not args.no_confine)
        again = replan(root)
        stage0 = next((root / "store").glob("*-bin-boot-0-clang")) / "bin" / "clang"
        host_ms = clang_start(shutil.which("clang") or "clang", args.runs)
        stage0_ms = clang_start(str(stage0), args.runs)
    finally:
        if not args.keep:
            subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
            shutil.rmtree(top, ignore_errors=True)
    print(f"ixd's default chain from an empty store, --jobs {args.jobs}, "
          f"{'unconfined: CPU of the builds' if args.no_confine else 'CPU of the machine'}, "
          f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print(f"{'stage':<22} {'wall s':>8} {'CPU s':>8} {'builds':>7} {'sum s':>8} {'store MB':>9}")
    for s in stages:
        print(f"{s.name:<22} {s.wall:8.1f} {s.cpu:8.1f} {len(s.builds):7d} "
              f"{sum(d for _, d in s.builds):8.1f} {s.store_bytes / 1e6:9.1f}")
    total_wall = sum(s.wall for s in stages)
    total_cpu = sum(s.cpu for s in stages)
    print(f"{'total':<22} {total_wall:8.1f} {total_cpu:8.1f}")
    for s in stages:
        print(f"  {s.name}: " + ", ".join(f"{n} {d:.1f}s" for n, d in s.builds))
    print(f"plan of bin/hello on a restarted daemon (capture sha256 kept): {again:.2f} s")
    print(f"clang -c of an empty file, median of {args.runs}: host {host_ms:.1f} ms, "
          f"stage 0 through the launcher {stage0_ms:.1f} ms")
    if args.keep:
        print(f"root kept: {root}")


if __name__ == "__main__":
    main()
