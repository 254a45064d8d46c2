"""Benchmark: stal/IX's own tree through a real ixd against stal/IX's own core (issues 11, 27).

    python -m bench.stalix --reference REF/ix [--pkgs ../shared/stalix/pkgs] [--repeat 4]
                           [TARGET...]

For each target (default: bin/b64, bin/curl, bin/git, set/stalix, set/pg and stal/IX's CI set
`set/ci(seed=1)`), in each repetition, one after the other (which goes first alternates, so
that the machine's load, which other users share, hits both alike):

- ixd, through the real client transport: a new `ixd --no-confine` on a new root, `dep` then
  the whole `plan` as `ixc plan` takes it (its JSON text in compressed pieces, `plan-text`
  events, each decompressed; printing it is not timed), timed from
  the first request to the last answer ("fresh"); the daemon stopped and started again on
  the same root, the same two requests ("restart"); then `plan` and `dep` again ("warm").
  The daemon's start (to its first answer) is not in these times; it is printed apart.
  Memory: the larger VmHWM of the two daemons.
- stal/IX: `ix build TARGET` with IX_DUMP_GRAPH=1 (it renders everything and prints the build
  graph; nothing is built), run by the system's python3 as stal/IX runs: wall time and peak
  memory (ru_maxrss of the child).

The machine's folder of compiled templates (`ixd --template-cache`) is a folder of this run:
empty in the first repetition (each target on a cold machine: "first"), then what earlier
runs compiled ("fresh": a new root on a machine that compiled the tree before). Printed: per
target the ratios ixd / stal/IX of each repetition's pair, their minimum and median, the
warm times, the peaks; and the load average at the start, after each repetition and at the
end. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.plan import PROJECT, planning_daemon, vm_hwm_kib

DEFAULT_PKGS = PROJECT.parent.parent / "shared" / "stalix" / "pkgs"
if not DEFAULT_PKGS.is_dir():
    DEFAULT_PKGS = PROJECT.parent / "shared" / "stalix" / "pkgs"
TARGETS = ("bin/b64", "bin/curl", "bin/git", "set/stalix", "set/pg", "set/ci(seed=1)")
BOOT_PATH = "/usr/lib/llvm-14/bin:/usr/bin:/bin"
#: the system's interpreter: stal/IX's `ix` runs with it
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass
class Sample:
    """One repetition of one target."""

    ixd_fresh: float = 0.0
    ixd_restart: float = 0.0
    warm_plan: float = 0.0
    warm_dep: float = 0.0
    ixd_peak_mib: float = 0.0
    start: float = 0.0
    reference: float = 0.0
    reference_peak_mib: float = 0.0
    packages: int = 0
    plan_bytes: int = 0
    first: bool = False


@dataclass
class Target:
    name: str
    samples: list[Sample] = field(default_factory=list)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def selector_args(target: str) -> dict[str, Any]:
    return {"packages": [target]}


def dep_and_plan(socket: Path, target: str) -> tuple[float, int, int]:
    """`dep`, then the plan as `ixc plan` takes it: the seconds both took, the packages
    `dep` listed, the plan's bytes."""
    from ixd.wire.transport import Client

    args = selector_args(target)
    got = [0]

    def count(event: Any) -> None:
        if event.kind == "plan-text":  # decompressed, as `ixc plan` does before it prints
            got[0] += len(zlib.decompress(event.data["zlib"]))

    with Client.connect(socket) as client:
        start = time.perf_counter()
        deps = client.request("dep", args)
        client.request("plan", {**args, "text": True}, count)
        return time.perf_counter() - start, len(deps["packages"]), got[0]


def unpack(event: Any) -> None:
    """A piece of the plan as `ixc plan` takes it (decompressed; printing not included)."""
    if event.kind == "plan-text":
        zlib.decompress(event.data["zlib"])


def measure_ixd(root: Path, pkgs: Path, target: str, template_cache: Path,
                sample: Sample) -> None:
    settings = ["--set", f"ix_boot_path={BOOT_PATH}", "--template-cache", str(template_cache)]
    from ixd.wire.transport import Client

    began = time.perf_counter()
    daemon = planning_daemon(root, [pkgs], settings)
    sample.start = time.perf_counter() - began
    try:
        sample.ixd_fresh, sample.packages, sample.plan_bytes = dep_and_plan(daemon.socket,
                                                                            target)
        peak = vm_hwm_kib(daemon.process.pid) or 0
    finally:
        daemon.stop()
    daemon = planning_daemon(root, [pkgs], settings)
    try:
        sample.ixd_restart, _, _ = dep_and_plan(daemon.socket, target)
        args = selector_args(target)
        with Client.connect(daemon.socket) as client:
            sample.warm_plan, _ = timed(lambda: client.request(
                "plan", {**args, "text": True}, unpack))
            sample.warm_dep, _ = timed(lambda: client.request("dep", args))
        peak = max(peak, vm_hwm_kib(daemon.process.pid) or 0)
    finally:
        daemon.stop()
    sample.ixd_peak_mib = peak / 1024


def measure_reference(reference: Path, pkgs: Path, target: str, sample: Sample) -> None:
    """stal/IX's `ix build TARGET` with IX_DUMP_GRAPH=1 (renders and prints the graph)."""
    name, _, flags = target.partition("(")
    argv = [SYSTEM_PYTHON, str(reference), "build", name]
    argv += [f"--{f}" for f in flags.rstrip(")").split(",") if f]
    env = {"PATH": BOOT_PATH, "IX_PATH": str(pkgs), "IX_DUMP_GRAPH": "1", "IX_ROOT": "/ix",
           "LANG": "C.UTF-8"}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                 cwd=str(reference.parent))
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines()
            raise SystemExit(f"stal/IX failed on {target}: {lines[-1:]}")
    sample.reference = wall
    sample.reference_peak_mib = usage.ru_maxrss / 1024


def figures(values: Sequence[float]) -> str:
    if not values:
        return "   -  "
    return f"{min(values):5.2f} / {statistics.median(values):5.2f}"


def report(target: Target) -> None:
    samples = target.samples
    fresh = [s for s in samples if not s.first]
    first = [s for s in samples if s.first]
    last = samples[-1]
    print(f"{target.name}: {last.packages} packages listed by dep, plan "
          f"{last.plan_bytes / 1e6:.1f} MB of JSON")
    print(f"  stal/IX ix build (graph only): {figures([s.reference for s in samples])} s "
          f"(min / median), peak {max(s.reference_peak_mib for s in samples):4.0f} MiB")
    for label, picked, attr in (("first (cold machine)", first, "ixd_fresh"),
                                ("fresh root", fresh, "ixd_fresh"),
                                ("restart", samples, "ixd_restart")):
        seconds = [getattr(s, attr) for s in picked]
        ratios = [getattr(s, attr) / s.reference for s in picked]
        print(f"  ixd dep+plan, {label:<20} {figures(seconds)} s   ratio to stal/IX "
              f"{figures(ratios)}")
    warm = [s.warm_dep + s.warm_plan for s in samples]
    print(f"  ixd dep+plan, {'warm':<20} {figures(warm)} s   ratio to stal/IX "
          f"{figures([w / s.reference for w, s in zip(warm, samples, strict=True)])}   "
          f"(plan {figures([s.warm_plan for s in samples])} s)")
    peak = max(s.ixd_peak_mib for s in samples)
    reference_low = min(s.reference_peak_mib for s in samples)
    reference_high = max(s.reference_peak_mib for s in samples)
    print(f"  ixd daemon start {figures([s.start for s in samples])} s; peak memory: ixd "
          f"{peak:4.0f} MiB (the largest), stal/IX {reference_low:4.0f}-{reference_high:.0f} "
          f"MiB: ratio {peak / reference_low:.2f} (to stal/IX's smallest)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--pkgs", type=Path, default=DEFAULT_PKGS)
    parser.add_argument("--reference", type=Path, required=True,
                        help="stal/IX's `ix` script (its core beside it)")
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args(argv)
    reference = args.reference.resolve()
    loads = [os.getloadavg()[0]]
    print(f"stal/IX tree {args.pkgs}; load average {loads[0]:.2f} on {os.cpu_count()} cores")
    targets = [Target(t) for t in args.targets]
    with tempfile.TemporaryDirectory(prefix="ix-bench-stalix-", dir="/var/tmp") as tmp:
        top = Path(tmp)
        top.chmod(0o755)
        shared = top / "templates"
        for rep in range(args.repeat):
            for index, target in enumerate(targets):
                sample = Sample(first=rep == 0)
                # the first repetition: nothing compiled yet, for every target
                cache = top / f"templates-first-{index}" if rep == 0 else shared
                root = top / f"root-{rep}-{index}"
                steps = [functools.partial(measure_ixd, root, args.pkgs, target.name, cache,
                                           sample),
                         functools.partial(measure_reference, reference, args.pkgs,
                                           target.name, sample)]
                for step in steps if (rep + index) % 2 == 0 else reversed(steps):
                    step()
                if rep == 0:  # what this target compiled serves the next repetitions
                    shared.mkdir(exist_ok=True)
                    for entry in cache.iterdir():
                        if not (shared / entry.name).exists():
                            shutil.copy2(entry, shared / entry.name)
                shutil.rmtree(root, ignore_errors=True)
                target.samples.append(sample)
            loads.append(os.getloadavg()[0])
            print(f"repetition {rep + 1} done; load average {loads[-1]:.2f}", flush=True)
    for target in targets:
        report(target)
    print(f"load average: {', '.join(f'{x:.2f}' for x in loads)} (start, after each "
          f"repetition) on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
