"""Benchmark: cross targets through a real ixd (issue 25).

    python -m bench.cross [--targets linux-aarch64 linux-riscv64] [--cxx] [--jobs 2] [--keep]

For each target, a fresh ixd on a fresh root (the seeded source mirror, `python -m
tests.seed`) builds, through `ixc build`:

- **chain**: `bin/hello(target=T)` from nothing: the host tools, the target's musl and
  compiler-rt builtins (and, as every cross build has them among its host libraries, the
  host's), then hello;
- **program on top**: `bin/lua(target=T)` on that (lib/lua and bin/lua);
- with `--cxx`, **C++ chain**: `bin/lzip(target=T)` on that (libunwind, libc++abi, libc++
  for the target, then lzip).

Then each program is run once under `qemu-<machine>-static` (its wall time beside).

For each step: the wall time of the `ixc build` command, and the CPU time (user + system) of
the daemon and everything it started meanwhile (a cgroup made for the daemon, as
bench/toolchain.py; "-" where none can be made), and the builds it ran. The figures of one
target do not include the other's: each has its own root. Figures only; nothing is
asserted. Takes about 10 minutes on 2 cores for both targets without --cxx.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench._daemon import load_average
from bench.toolchain import CpuAccount, secs
from tests.daemon_harness import RunningDaemon, start_daemon

#: each step: its name, the selector built (T: the target), the program run under qemu
STEPS = [("chain (hello from nothing)", "bin/hello(target=T)", ["hello"]),
         ("program on top (lua)", "bin/lua(target=T)", ["lua", "-e", "print(6*7)"])]
CXX_STEP = ("C++ chain (lzip)", "bin/lzip(target=T)", ["lzip", "--version"])


def step(daemon: RunningDaemon, account: CpuAccount, selector: str
         ) -> tuple[float, float | None, int, Path]:
    """Build `selector`: wall seconds, CPU seconds, builds run, its store dir."""
    before_cpu = account.seconds()
    before = _valid_builds(daemon)
    started = time.monotonic()
    done = daemon.ixc("build", selector, timeout=7200)
    wall = time.monotonic() - started
    after_cpu = account.seconds()
    cpu = after_cpu - before_cpu if after_cpu is not None and before_cpu is not None else None
    return wall, cpu, _valid_builds(daemon) - before, Path(done.stdout.split()[-1])


def _valid_builds(daemon: RunningDaemon) -> int:
    rows = json.loads(daemon.ixc("--json", "builds", "--limit", "1000").stdout)
    return sum(1 for b in rows["builds"] if b["state"] == "valid")


def run_under_qemu(machine: str, program: Path, args: list[str]) -> str:
    emulator = shutil.which(f"qemu-{machine}-static")
    if emulator is None:
        return "no qemu"
    started = time.monotonic()
    done = subprocess.run([emulator, str(program), *args], capture_output=True, timeout=120)
    took = time.monotonic() - started
    said = done.stdout.decode(errors="replace").splitlines()
    return f"{took:.2f}s, exit {done.returncode}: {said[0] if said else ''}"[:60]


def bench_target(target: str, steps: list[tuple[str, str, list[str]]], jobs: int,
                 keep: bool) -> list[str]:
    machine = target.split("-", 1)[1]
    top = Path(tempfile.mkdtemp(prefix=f"ix-bench-cross-{machine}-", dir="/var/tmp"))
    top.chmod(0o755)
    daemon = start_daemon(top / "root", extra=["--jobs", str(jobs)])
    account = CpuAccount(daemon.process.pid)
    lines = []
    try:
        total_wall = total_cpu = 0.0
        for name, selector, (program, *args) in steps:
            wall, cpu, builds, out = step(daemon, account, selector.replace("T", target))
            total_wall += wall
            total_cpu += cpu or 0.0
            ran = run_under_qemu(machine, out / "bin" / program, args)
            lines.append(f"| {target} | {name} | {builds} | {wall:.1f} | {secs(cpu, 1)} | "
                         f"{ran} |")
            print(lines[-1], flush=True)
        lines.append(f"| {target} | (all) | | {total_wall:.1f} | {total_cpu:.1f} | |")
        print(lines[-1], flush=True)
    finally:
        status = daemon.stop()
        account.close()
        if status != 0:
            print(f"NOTE: ixd exited {status}; its log: {daemon.log}", file=sys.stderr)
        if keep:
            print(f"# kept {top}")
        else:
            subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
            shutil.rmtree(top, ignore_errors=True)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cross", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["linux-aarch64", "linux-riscv64"])
    parser.add_argument("--cxx", action="store_true", help="the C++ chain too (bin/lzip)")
    parser.add_argument("--jobs", type=int, default=2, help="ixd --jobs (build slots)")
    parser.add_argument("--keep", action="store_true", help="keep the roots afterwards")
    args = parser.parse_args(argv)
    steps = [*STEPS, *([CXX_STEP] if args.cxx else [])]
    started = time.monotonic()
    print(f"# bench.cross: {load_average()} at the start\n")
    print("| target | step | builds | wall s | cpu s | under qemu |")
    print("|---|---|---:|---:|---:|---|")
    for target in args.targets:
        bench_target(target, steps, args.jobs, args.keep)
    print(f"\n# {time.monotonic() - started:.0f} s in all, {load_average()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
