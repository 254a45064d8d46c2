"""Benchmark: what one user's abuse costs the others (issue 21, rows 3 to 6 and the limits).

    python -m bench.abuse [--only slots,flood,flags,memory,disk] [--jobs 2]
                          [--flood-bytes 3000000000] [--flag-sets 24000]

Each scenario starts a real ixd on a fresh root (tests/overlay + pkgs/; `flags` over
stal/IX's own tree), runs the attack as one uid (65534, not the daemon's own account, whose
builds and loads are not held to a user's share) and measures what another client sees
meanwhile, over the real socket:

- `slots`: three 60 s builds of the attacker with `--jobs 2`, then another uid's (65533)
  0.1 s build: how long that one takes;
- `flood`: a build that prints as fast as it can (`bin/attack/flood`, 3 GB by default):
  `status` p50/p99 of another client while it runs against without it, the log's largest
  and final size, the build's duration;
- `flags`: `plan` of one package with N distinct flag sets (no build), one request after
  another: ixd's RSS, `var/renders.jsonl`'s size, and another client's `status` p50 while
  it runs against before;
- `memory`: a build taking 1 GiB with `--max-memory 256M`: how it ends, and the cgroup's
  peak;
- `disk`: with `--max-output-size 32M` and `256M`, the issue's disk filler (1 MiB files one
  after another) and four writers of 8 MiB files at once, four times each: how far past the
  bound the scratch was when the build stopped.

Prints one table per scenario with units; the targets (issue 21) beside the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench._daemon import BenchDaemon, env, load_average, ms, percentile
from ixd.wire.transport import Client
from tests.daemon_harness import PKGS, TEST_OVERLAY, start_daemon

MiB = 1 << 20


def rss(pid: int) -> int:
    """VmRSS of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class StatusProbe:
    """Another client asking `status` over and over (one connection), in a thread: the
    latency of each answer while something else goes on."""

    def __init__(self, daemon: BenchDaemon, pause: float = 0.01) -> None:
        self.daemon = daemon
        self.pause = pause
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.daemon.connect() as client:
            while not self._stop.is_set():
                begin = time.perf_counter()
                client.request("status", {})
                self.samples.append(time.perf_counter() - begin)
                self._stop.wait(self.pause)

    def __enter__(self) -> StatusProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self) -> str:
        if not self.samples:
            return "no samples"
        return (f"p50 {ms(percentile(self.samples, 50)).strip()}, p99 "
                f"{ms(percentile(self.samples, 99)).strip()} ({len(self.samples)} calls)")


def quiet_status(daemon: BenchDaemon, seconds: float = 3.0) -> StatusProbe:
    with StatusProbe(daemon) as probe:
        time.sleep(seconds)
    return probe


def flood(args: argparse.Namespace) -> list[str]:
    problems: list[str] = []
    with BenchDaemon.start(jobs=args.jobs, label="abuse-flood") as daemon:
        baseline = quiet_status(daemon)
        selector = f"bin/attack/flood(bytes={args.flood_bytes})"
        uid = next(p["uid"] for p in daemon.request("dep", {"packages": [selector]})["packages"]
                   if p["name"] == "bin/attack/flood")
        log = daemon.root / "var" / "log" / f"{uid}.log"
        largest = 0
        started = time.perf_counter()
        builder = subprocess.Popen(daemon.ixc_argv("build", selector), env=env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with StatusProbe(daemon) as probe:
            while builder.poll() is None:
                try:
                    largest = max(largest, log.stat().st_size)
                except FileNotFoundError:
                    pass
                time.sleep(0.05)
        took = time.perf_counter() - started
        err = builder.stderr.read().decode() if builder.stderr else ""
        if builder.returncode != 0:
            problems.append(f"the flood build failed: {err[-500:]}")
        final = log.stat().st_size if log.exists() else 0
        print(f"flood: a build printing {args.flood_bytes / 1e9:.1f} GB, ixd --jobs {args.jobs}; "
              f"{load_average()}")
        print(f"  status of another client, no build:     {baseline.figures()}")
        print(f"  status of another client, during flood: {probe.figures()}  (target p50 <= 10 ms)")
        print(f"  the build took {took:.1f} s; its log: largest {largest / MiB:.1f} MiB while it "
              f"ran, {final / MiB:.1f} MiB at the end; ixd VmHWM {daemon.vm_hwm()}")
    return problems


#: stal/IX's own package tree (read-only test data of this machine)
STALIX = Path(os.environ.get(
    "IX_STALIX_PKGS", Path(__file__).resolve().parents[2] / "shared" / "stalix" / "pkgs"))
BOOT_PATH = "/usr/lib/llvm-14/bin:/usr/bin:/bin"


def flags(args: argparse.Namespace) -> list[str]:
    """`plan` of one package with N distinct flag sets, over stal/IX's own tree when it is
    there (a flag reaches the whole closure: 72 packages per flag set for bin/b64), planning
    only (--no-confine: nothing is built)."""
    problems: list[str] = []
    overlays = [Path(args.flag_overlay)] if args.flag_overlay else [TEST_OVERLAY, PKGS]
    extra = ["--no-confine", "--set", f"ix_boot_path={BOOT_PATH}"]
    tmp = Path(tempfile.mkdtemp(prefix="ix-abuse-flags-", dir="/tmp"))
    running = start_daemon(tmp / "root", overlays=overlays, extra=[*extra, "--jobs", "2"])
    daemon = BenchDaemon(running, 2, tmp)
    try:
        renders = daemon.root / "var" / "renders.jsonl"
        with daemon.connect() as client:  # the closure's shared part, rendered once
            client.request("plan", {"packages": [args.flag_package], "summary": True})
        baseline = quiet_status(daemon)
        before = rss(daemon.process.pid)
        largest = before
        largest_file = 0
        started = time.perf_counter()
        with StatusProbe(daemon) as probe:
            attacker = _as_user(ATTACKER_UID, _plan_flag_sets, str(daemon.socket),
                                args.flag_package, args.flag_sets)
            while attacker.poll() is None:
                largest = max(largest, rss(daemon.process.pid))
                largest_file = max(largest_file, _size(renders))
                time.sleep(0.2)
        took = time.perf_counter() - started
        if attacker.returncode != 0:
            problems.append(f"the flag-set client failed (exit {attacker.returncode})")
        after = rss(daemon.process.pid)
        largest_file = max(largest_file, _size(renders))
        where = args.flag_overlay or "tests/overlay + pkgs/"
        print(f"flags: `plan {args.flag_package}(abuse=N)` for {args.flag_sets} distinct N, "
              f"one after another as uid {ATTACKER_UID}, over {where}; {load_average()}")
        print(f"  {args.flag_sets} plans in {took:.1f} s ({args.flag_sets / took:.1f}/s)")
        print(f"  ixd RSS: {before / MiB:.0f} MiB before, {largest / MiB:.0f} MiB at most, "
              f"{after / MiB:.0f} MiB after; VmHWM {daemon.vm_hwm()}  (target <= 600 MB)")
        print(f"  var/renders.jsonl: {largest_file / MiB:.1f} MiB at most, "
              f"{_size(renders) / MiB:.1f} MiB after  (target <= 256 MB)")
        print(f"  status of another client, before:  {baseline.figures()}")
        print(f"  status of another client, during:  {probe.figures()}  (target p50 <= 10 ms)")
    finally:
        daemon.stop()
    return problems


#: the attacker of `flags`: not the daemon's own account, whose loads are not capped
ATTACKER_UID = 65534


class _Child:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll_wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode


def _as_user(uid: int, work: Callable[..., None], *args: object) -> _Child:
    """`work(*args)` in a forked process running as `uid` (the bench runs as root)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            work(*args)
            code = 0
        finally:
            os._exit(code)
    return _Child(pid)


def _plan_flag_sets(socket: str, package: str, count: int) -> None:
    with Client.connect(socket) as client:
        for n in range(count):
            client.request("plan", {"packages": [f"{package}(abuse={n})"], "summary": True})


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


#: the victim of `slots`: another uid without a share of its own yet
VICTIM_UID = 65533


def slots(args: argparse.Namespace) -> list[str]:
    problems: list[str] = []
    with BenchDaemon.start(jobs=2, label="abuse-slots") as daemon:
        longs = [f"bin/attack/hold(tag=long{n},secs=60)" for n in range(3)]
        attacker = _as_user(ATTACKER_UID, _build, str(daemon.socket), longs)
        try:
            deadline = time.monotonic() + 60
            while not any(b["state"] == "running" and b["name"].startswith("bin/attack/hold")
                          for b in daemon.request("status", {})["builds"]):
                if time.monotonic() > deadline:
                    problems.append("the attacker's builds never ran")
                    return problems
                time.sleep(0.05)
            started = time.perf_counter()
            victim = _as_user(VICTIM_UID, _build, str(daemon.socket),
                              ["bin/slow(secs=0.1,tag=victim)"])
            while victim.poll() is None:
                time.sleep(0.01)
            took = time.perf_counter() - started
            running = sum(1 for b in daemon.request("status", {})["builds"]
                          if b["state"] == "running")
        finally:
            os.kill(attacker.pid, 9)
            attacker.poll_wait()
        print(f"slots: three 60 s builds of uid {ATTACKER_UID}, then a 0.1 s build of uid "
              f"{VICTIM_UID}, ixd --jobs 2; {load_average()}")
        print(f"  the 0.1 s build took {took:.2f} s (request to answer; target <= 2 s); "
              f"afterwards {running} build(s) of the attacker running")
        if victim.returncode != 0:
            problems.append(f"the victim's build failed (exit {victim.returncode})")
    return problems


def _build(socket: str, selectors: list[str]) -> None:
    with Client.connect(socket) as client:
        client.request("build", {"packages": selectors})


def memory(args: argparse.Namespace) -> list[str]:
    problems: list[str] = []
    with BenchDaemon.start(jobs=args.jobs, label="abuse-memory",
                           extra=["--max-memory", "256M"]) as daemon:
        mechanism = next((line.split("): ", 1)[1] for line in daemon.log.read_text()
                          .splitlines() if "build memory" in line), "?")
        started = time.perf_counter()
        done = subprocess.run(daemon.ixc_argv("build", "bin/attack/hog(mb=1024)"), env=env(),
                              capture_output=True, text=True, check=False)
        took = time.perf_counter() - started
        error = next((line for line in done.stderr.splitlines() if "error" in line), "")
        print(f"memory: a build taking 1 GiB with --max-memory 256M; {load_average()}")
        print(f"  mechanism: {mechanism}")
        print(f"  exit {done.returncode} after {took:.1f} s: {error[:300]}")
        if "E_BUILD_LIMIT" not in done.stderr:
            problems.append("the hog was not stopped by its memory limit")
    return problems


def disk(args: argparse.Namespace) -> list[str]:
    problems: list[str] = []
    print(f"disk: how far past --max-output-size a build got before it was stopped; "
          f"{load_average()}")
    for bound in ("32M", "256M"):
        with BenchDaemon.start(jobs=args.jobs, label="abuse-disk",
                               extra=["--max-output-size", bound]) as daemon:
            for attack in ("filler", "burst"):
                ratios = []
                for n in range(4):
                    done = subprocess.run(
                        daemon.ixc_argv("build", f"bin/attack/{attack}(tag={n})"), env=env(),
                        capture_output=True, text=True, check=False)
                    found = re.search(r"([0-9.]+) times the limit", done.stderr)
                    if found is None:
                        problems.append(f"{attack} at {bound}: {done.stderr[-300:]}")
                        continue
                    ratios.append(float(found.group(1)))
                if ratios:
                    print(f"  --max-output-size {bound:>4}, {attack:<6}: held "
                          f"{', '.join(f'{r:.2f}' for r in ratios)} times the bound when "
                          f"stopped (target <= 1.25)")
    return problems


SCENARIOS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "slots": slots, "flood": flood, "flags": flags, "memory": memory, "disk": disk}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"scenarios, comma-separated (default: {','.join(SCENARIOS)})")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--flood-bytes", type=int, default=3_000_000_000)
    parser.add_argument("--flag-sets", type=int, default=24_000)
    parser.add_argument("--flag-package", default="bin/b64" if STALIX.is_dir() else "bin/less",
                        help="the package planned with each flag set (default: bin/b64 of "
                             "stal/IX's tree)")
    parser.add_argument("--flag-overlay", default=str(STALIX) if STALIX.is_dir() else "",
                        help="the recipe tree it comes from (default: stal/IX's, if there)")
    args = parser.parse_args()
    problems: list[str] = []
    for name in args.only.split(","):
        problems += SCENARIOS[name](args)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("RESULT: " + ("done" if not problems else f"FAILED ({len(problems)} problems)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
