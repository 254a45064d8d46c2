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
of the daemon and everything it started, the build's processes among them, while that one
build ran: a cgroup's CPU account made for the daemon, where the kernel has one; the
daemon's own share is small). Other work on the machine lengthens the first, not the
second. Figures only; nothing is asserted. Takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
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
    cpu: float | None
    out: Path


class CpuAccount:
    """The CPU time of a process and everything it starts from then on: a cgroup of its own
    (cgroup v2, or v1's cpuacct), since a build's processes are not all reaped by the daemon
    (bubblewrap's namespace init is not). None where no cgroup can be made (not root)."""

    def __init__(self, pid: int) -> None:
        self.usage: Path | None = None
        self.folder: Path | None = None
        for top, usage in ((Path("/sys/fs/cgroup/cpuacct"), "cpuacct.usage"),
                           (_cgroup2_folder(), "cpu.stat")):
            if top is None or not (top / "cgroup.procs").exists():
                continue
            folder = top / f"ix-bench-toolchain-{os.getpid()}"
            try:
                folder.mkdir()
                (folder / "cgroup.procs").write_text(str(pid))
            except OSError:
                with contextlib.suppress(OSError):
                    folder.rmdir()
                continue
            self.folder, self.usage = folder, folder / usage
            return

    def seconds(self) -> float | None:
        if self.usage is None:
            return None
        text = self.usage.read_text()
        if self.usage.name == "cpu.stat":  # usage_usec N
            return int(text.split("usage_usec", 1)[1].split()[0]) / 1e6
        return int(text) / 1e9

    def close(self) -> None:
        if self.folder is not None:
            with contextlib.suppress(OSError):
                self.folder.rmdir()


def _cgroup2_folder() -> Path | None:
    """This process's cgroup v2 folder, where cgroup v2 is mounted."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                folder = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
                if (folder / "cgroup.controllers").exists():
                    return folder
    return None


class Bench:
    def __init__(self, daemon: RunningDaemon, account: CpuAccount) -> None:
        self.daemon = daemon
        self.account = account
        self.built: dict[str, Built] = {}

    def build(self, selector: str) -> Built:
        """Build `selector` (its closure is built already, but for its own node), or say how
        it went when it was built before."""
        if selector in self.built:
            return self.built[selector]
        before = self.account.seconds()
        done = self.daemon.ixc("build", selector, timeout=3600)
        after = self.account.seconds()
        cpu = after - before if after is not None and before is not None else None
        out = Path(done.stdout.split()[-1])
        rows = json.loads(self.daemon.ixc("--json", "builds", "--limit", "20").stdout)
        durations = [b["duration"] for b in rows["builds"]
                     if b["name"] == selector and b["state"] == "valid"]
        if not durations:
            raise SystemExit(f"{selector} was not built here (already valid?): {rows}")
        self.built[selector] = Built(durations[0], cpu, out)
        return self.built[selector]


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


def secs(value: float | None, width: int = 8) -> str:
    return f"{value:{width}.1f}" if value is not None else " " * (width - 1) + "-"


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
    account = CpuAccount(daemon.process.pid)
    try:
        bench = Bench(daemon, account)
        if account.usage is None:
            print("# no cgroup could be made for the daemon: CPU times are not shown")
        print("\n## the toolchain's pieces (clang " + clang_version() + ")\n")
        print(f"{'piece':28} {'wall s':>8} {'cpu s':>8}")
        total_wall = total_cpu = 0.0
        for piece in PIECES:
            got = bench.build(piece)
            total_wall += got.wall
            total_cpu += got.cpu or 0.0
            print(f"{piece:28} {got.wall:8.1f} {secs(got.cpu)}", flush=True)
        print(f"{'(all five)':28} {total_wall:8.1f} {secs(total_cpu)}")

        print("\n## the C++ programs (clang, libc++)\n")
        print(f"{'program':28} {'wall s':>8} {'cpu s':>8} {'KiB':>8} {'stripped':>8}")
        for package, program in CXX_PROGRAMS.items():
            got = bench.build(package)
            size, stripped = sizes(got.out / "bin" / program, top)
            print(f"{package:28} {got.wall:8.1f} {secs(got.cpu)} {kib(size)} {kib(stripped)}",
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
                totals[compiler][1] += results[compiler].cpu or 0.0
            clang, gcc = results["clang"], results["gcc"]
            line = (f"{package:16} {clang.wall:8.1f} {gcc.wall:8.1f} {secs(clang.cpu, 9)} "
                    f"{secs(gcc.cpu)}")
            if c_program is not None:
                clang_size, clang_stripped = sizes(clang.out / "bin" / c_program, top)
                gcc_size, gcc_stripped = sizes(gcc.out / "bin" / c_program, top)
                line += (f" {kib(clang_size):>9} {kib(gcc_size)} "
                         f"{kib(clang_stripped)} {kib(gcc_stripped)}")
            print(line, flush=True)
        print(f"{'(all)':16} {totals['clang'][0]:8.1f} {totals['gcc'][0]:8.1f} "
              f"{secs(totals['clang'][1], 9)} {secs(totals['gcc'][1])}")
        print(f"\n# {time.monotonic() - started:.0f} s in all, {load_average()} at the end")
    finally:
        status = daemon.stop()
        account.close()
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
