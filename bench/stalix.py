"""Benchmark: stal/IX's own tree through a real ixd (issue 11).

    python -m bench.stalix [--pkgs ../shared/stalix/pkgs] [--reference REF/ix] [--repeat 3]
                           [TARGET...]

For each target (default: bin/b64, bin/curl, set/stalix and stal/IX's CI set
`set/ci(seed=1)`), a fresh `ixd --no-confine --overlay PKGS` on a fresh root answers, through
the real client transport: `dep` cold (first request of the daemon), `dep` warm (best of
--repeat), `plan --summary` warm, and the whole plan streamed (`plan-nodes` events); then the
daemon's peak memory (VmHWM). A second fresh daemon on the same root shows the cold `dep`
with Jinja's bytecode cache (ROOT/var/jinja) filled. With --reference (stal/IX's `ix`
script), the same targets through `IX_DUMP_GRAPH=1 ix build` for comparison: wall time and
peak memory (ru_maxrss of the child). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.plan import PROJECT, planning_daemon, vm_hwm_kib

DEFAULT_PKGS = PROJECT.parent / "shared" / "stalix" / "pkgs"
TARGETS = ("bin/b64", "bin/curl", "set/stalix", "set/ci(seed=1)")
BOOT_PATH = "/usr/lib/llvm-14/bin:/usr/bin:/bin"


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def measure_ixd(tmp: Path, pkgs: Path, target: str, repeat: int) -> dict[str, Any]:
    from ixd.wire.transport import Client

    settings = ["--set", f"ix_boot_path={BOOT_PATH}"]
    root = tmp / f"root-{abs(hash(target))}"
    args = {"packages": [target]}
    result: dict[str, Any] = {}
    daemon = planning_daemon(root, [pkgs], settings)
    try:
        with Client.connect(daemon.socket) as client:
            result["cold_dep"], deps = timed(lambda: client.request("dep", args))
            result["packages"] = len(deps["packages"])
            result["warm_dep"] = min(timed(lambda: client.request("dep", args))[0]
                                     for _ in range(repeat))
            result["summary"], summary = timed(
                lambda: client.request("plan", {**args, "summary": True}))
            result["nodes"] = summary["nodes"]
            streamed: list[int] = []

            def count(event: Any) -> None:
                if event.kind == "plan-nodes":
                    streamed.append(len(event.data["nodes"]))

            result["plan"], _ = timed(
                lambda: client.request("plan", {**args, "stream": True}, count))
            result["plan_events"] = len(streamed)
        result["peak_mib"] = (vm_hwm_kib(daemon.process.pid) or 0) / 1024
    finally:
        daemon.stop()
    # the same root again: templates come from the bytecode cache
    daemon = planning_daemon(root, [pkgs], settings)
    try:
        with Client.connect(daemon.socket) as client:
            result["cold_dep_bytecode"], _ = timed(lambda: client.request("dep", args))
    finally:
        daemon.stop()
    return result


def measure_reference(reference: Path, pkgs: Path, target: str) -> dict[str, Any]:
    """stal/IX's `ix build TARGET` with IX_DUMP_GRAPH=1 (renders and prints the graph)."""
    name, _, flags = target.partition("(")
    argv = ["/usr/bin/python3", str(reference), "build", name]  # stal/IX's own interpreter
    argv += [f"--{f}" for f in flags.rstrip(")").split(",") if f]
    env = {"PATH": BOOT_PATH, "IX_PATH": str(pkgs), "IX_DUMP_GRAPH": "1", "IX_ROOT": "/ix",
           "LANG": "C.UTF-8"}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                 cwd=str(reference.parent))
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if child.returncode != 0:
            err.seek(0)
            return {"error": err.read().decode(errors="replace").strip().splitlines()[-1:]}
    return {"wall": wall, "peak_mib": usage.ru_maxrss / 1024}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--pkgs", type=Path, default=DEFAULT_PKGS)
    parser.add_argument("--reference", type=Path, help="stal/IX's `ix` script")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"stal/IX tree {args.pkgs}; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="ix-bench-stalix-") as tmp:
        for target in args.targets:
            r = measure_ixd(Path(tmp), args.pkgs, target, args.repeat)
            print(f"{target}: {r['packages']} packages, {r['nodes']} plan nodes "
                  f"({r['plan_events']} plan-nodes events)")
            print(f"  ixd   cold dep {r['cold_dep']:7.2f} s   cold dep, bytecode cached "
                  f"{r['cold_dep_bytecode']:7.2f} s   warm dep {r['warm_dep']:6.3f} s   "
                  f"plan --summary {r['summary']:6.3f} s   plan streamed {r['plan']:6.2f} s   "
                  f"peak {r['peak_mib']:6.0f} MiB")
            if args.reference:
                ref = measure_reference(args.reference.resolve(), args.pkgs, target)
                if "error" in ref:
                    print(f"  stal/IX failed: {ref['error']}")
                else:
                    print(f"  stal/IX ix build (graph only) {ref['wall']:7.2f} s   peak "
                          f"{ref['peak_mib']:6.0f} MiB   ixd cold / stal/IX = "
                          f"{r['cold_dep'] / ref['wall']:.2f}, peak ratio "
                          f"{r['peak_mib'] / ref['peak_mib']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
