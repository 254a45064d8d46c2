"""Benchmark: the toolchain, piece by piece, through a real ixd (issue 24).

    python -m bench.toolchain [--jobs 2] [--keep]

A fresh ixd on a fresh root (the seeded source mirror, `python -m tests.seed`) builds, one
package at a time so that each build has the machine to itself (`make -j` cores within it):

- the toolchain's pieces, each on top of the previous: lib/c (musl) with clang, compiler-rt's
  builtins, libunwind, libc++abi, libc++;
- the C++ programs on top: bin/ninja, bin/lzip, bin/gperf, each with its size;
- the C packages with clang (the default) and again with gcc (`--cc=gcc`): lib/c, bin/hello,
  lib/lua and bin/lua, lib/lzma and bin/xz, lib/ncurses and bin/less; the build time of each
  and the size of each program (as installed, and stripped).

For each build: its wall time (the daemon's record of it) and its CPU time (user + system
of the build's processes, which the daemon reaps: the growth of its children's CPU time
while that one build ran). Other work on the machine lengthens the first, not the second.
Figures only; nothing is asserted. Takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._daemon import load_average
from tests.daemon_harness import RunningDaemon, start_daemon

#: the toolchain's pieces, in build order (each needs the ones before it)
PIECES = ["lib/c", "lib/compiler_rt/builtins", "lib/unwind", "lib/c++abi", "lib/c++"]
#: the C++ programs and the program each installs
CXX_PROGRAMS = {"bin/ninja": "ninja", "bin/lzip": "lzip", "bin/gperf": "gperf"}
#: the C packages, in build order, and the program each installs (None for a library)
C_PACKAGES = {"lib/c": None, "bin/hello": "hello", "lib/lua": None, "bin/lua": "lua",
              "lib/lzma": None, "bin/xz": "xz", "lib/ncurses": None, "bin/less": "less"}


@dataclass
class Built:
    wall: float
    cpu: float
    out: Path


class Bench:
    def __init__(self, daemon: RunningDaemon) -> None:
        self.daemon = daemon

    def children_cpu(self) -> float:
        """CPU time of the daemon's reaped children: its builds (user + system, seconds)."""
        stat = Path(f"/proc/{self.daemon.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def build(self, selector: str) -> Built:
        """Build `selector` (its closure is built already, but for its own node)."""
        before = self.children_cpu()
        done = self.daemon.ixc("build", selector, timeout=3600)
        cpu = self.children_cpu() - before
        out = Path(done.stdout.split()[-1])
        rows = json.loads(self.daemon.ixc("--json", "builds", "--limit", "20").stdout)
        durations = [b["duration"] for b in rows["builds"]
                     if b["name"] == selector and b["state"] == "valid"]
        if not durations:
            raise SystemExit(f"{selector} was not built here (already valid?): {rows}")
        return Built(durations[0], cpu, out)


def sizes(program: Path, tmp: Path) -> tuple[int, int | None]:
    """A program's size as installed, and stripped (None without a strip tool)."""
    size = program.stat().st_size
    strip = shutil.which("strip") or shutil.which("llvm-strip-14")
    if strip is None:
        return size, None
    copy = tmp / f"stripped-{program.name}"
    shutil.copyfile(program, copy)
    subprocess.run([strip, str(copy)], check=True)
    stripped = copy.stat().st_size
    copy.unlink()
    return size, stripped


def kib(size: int | None) -> str:
    return f"{size / 1024:8.0f}" if size is not None else "       -"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.toolchain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="ixd --jobs (build slots)")
    parser.add_argument("--keep", action="store_true", help="keep the root afterwards")
    args = parser.parse_args(argv)

    # not under /tmp: a build's /tmp is its own scratch
    top = Path(tempfile.mkdtemp(prefix="ix-bench-toolchain-", dir="/var/tmp"))
    top.chmod(0o755)
    started = time.monotonic()
    print(f"# bench.toolchain: one build at a time, {load_average()} at the start")
    daemon = start_daemon(top / "root", extra=["--jobs", str(args.jobs)])
    try:
        bench = Bench(daemon)
        print("\n## the toolchain's pieces (clang " + clang_version() + ")\n")
        print(f"{'piece':28} {'wall s':>8} {'cpu s':>8}")
        total_wall = total_cpu = 0.0
        for piece in PIECES:
            got = bench.build(piece)
            total_wall += got.wall
            total_cpu += got.cpu
            print(f"{piece:28} {got.wall:8.1f} {got.cpu:8.1f}", flush=True)
        print(f"{'(all five)':28} {total_wall:8.1f} {total_cpu:8.1f}")

        print("\n## the C++ programs (clang, libc++)\n")
        print(f"{'program':28} {'wall s':>8} {'cpu s':>8} {'KiB':>8} {'stripped':>8}")
        for package, program in CXX_PROGRAMS.items():
            got = bench.build(package)
            size, stripped = sizes(got.out / "bin" / program, top)
            print(f"{package:28} {got.wall:8.1f} {got.cpu:8.1f} {kib(size)} {kib(stripped)}",
                  flush=True)

        print("\n## the C packages: clang (the default) against gcc (--cc=gcc)\n")
        print(f"{'package':16} {'clang s':>8} {'gcc s':>8} {'clang cpu':>9} {'gcc cpu':>8} "
              f"{'clang KiB':>9} {'gcc KiB':>8} {'stripped':>17}")
        totals = {"clang": [0.0, 0.0], "gcc": [0.0, 0.0]}
        for package, c_program in C_PACKAGES.items():
            results = {}
            for compiler, selector in (("clang", package), ("gcc", f"{package}(cc=gcc)")):
                results[compiler] = bench.build(selector)
                totals[compiler][0] += results[compiler].wall
                totals[compiler][1] += results[compiler].cpu
            clang, gcc = results["clang"], results["gcc"]
            line = (f"{package:16} {clang.wall:8.1f} {gcc.wall:8.1f} {clang.cpu:9.1f} "
                    f"{gcc.cpu:8.1f}")
            if c_program is not None:
                clang_size, clang_stripped = sizes(clang.out / "bin" / c_program, top)
                gcc_size, gcc_stripped = sizes(gcc.out / "bin" / c_program, top)
                line += (f" {kib(clang_size):>9} {kib(gcc_size)} "
                         f"{kib(clang_stripped)} {kib(gcc_stripped)}")
            print(line, flush=True)
        print(f"{'(all)':16} {totals['clang'][0]:8.1f} {totals['gcc'][0]:8.1f} "
              f"{totals['clang'][1]:9.1f} {totals['gcc'][1]:8.1f}")
        print(f"\n# {time.monotonic() - started:.0f} s in all, {load_average()} at the end")
    finally:
        status = daemon.stop()
        if status != 0:
            print(f"NOTE: ixd exited {status}; its log: {daemon.log}", file=sys.stderr)
        if args.keep:
            print(f"# kept {top}")
        else:
            subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
            shutil.rmtree(top, ignore_errors=True)
    return 0


def clang_version() -> str:
    found = shutil.which("clang")
    if found is None:
        return "not installed"
    first = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    return first.splitlines()[0] if first else "?"


if __name__ == "__main__":
    sys.exit(main())
