"""Benchmark: finding packages in stal/IX's tree (issue 23: search ≤ 100 ms warm).

    python -m bench.ux [--pkgs ../shared/stalix/pkgs] [--repeat 20]

A fresh `ixd --no-confine --overlay PKGS` answers `search`, `show` and `why` through the real
client transport: the first request (cold: the package index is made, or the package
rendered) and the median and worst of --repeat warm ones; then the same commands as a person
runs them, the real `ixc` in a fresh interpreter each time (median wall time, start-up
included). `why` asks about a realm holding bin/curl and bin/python, recorded in the
database as a generation (nothing is built). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._daemon import env, load_average
from bench.plan import planning_daemon
from bench.stalix import BOOT_PATH, DEFAULT_PKGS
from ixd.store.db import BuildDatabase
from ixd.wire.transport import Client

REALM = "bench"
ENTRIES = ("bin/curl", "bin/python")
QUERIES: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "search curl": ("search", {"terms": ["curl"]}, ["search", "curl"]),
    "search lib z": ("search", {"terms": ["lib", "z"]}, ["search", "lib", "z"]),
    "show bin/curl": ("show", {"package": "bin/curl"}, ["show", "bin/curl"]),
    "why lib/z": ("why", {"package": "lib/z", "realm": REALM}, ["why", "lib/z", REALM]),
}


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def record_realm(database: Path) -> None:
    """A realm of ENTRIES, as `ixc mut` records it (its entry need not be built for `why`)."""
    state = {"name": REALM, "flags": {},
             "entries": [{"selector": s, "flags": {}} for s in ENTRIES]}
    db = BuildDatabase(database)
    try:
        db.add_generation(REALM, "/nonexistent", state, by=0, owner=0)
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ux", description=__doc__)
    parser.add_argument("--pkgs", type=Path, default=DEFAULT_PKGS)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ix-bench-ux-", dir="/var/tmp") as tmp:
        daemon = planning_daemon(Path(tmp) / "root", [args.pkgs.resolve()],
                                 ["--set", f"ix_boot_path={BOOT_PATH}"])
        try:
            record_realm(daemon.root / "var" / "ixd.sqlite")
            rows = []
            with Client.connect(daemon.socket) as client:
                for label, (op, request, _) in QUERIES.items():
                    cold = timed(lambda op=op, request=request: client.request(op, request))
                    warm = [timed(lambda op=op, request=request: client.request(op, request))
                            for _ in range(args.repeat)]
                    rows.append((label, cold, statistics.median(warm), max(warm)))
                found = client.request("search", {"terms": ["curl"]})
                recipes = len(client.request("search", {"prefix": ""})["names"])
            ixc = []
            for _, _, words in QUERIES.values():
                argv_ = [sys.executable, "-m", "client.main", "--socket", str(daemon.socket),
                         *words]
                ixc.append(statistics.median(
                    timed(lambda argv_=argv_: subprocess.run(argv_, env=env(), check=True,
                                                             capture_output=True))
                    for _ in range(max(3, args.repeat // 4))))
        finally:
            daemon.stop()
    print(f"stal/IX's tree at {args.pkgs}: {recipes} packages; {load_average()}")
    print(f"`search curl` finds {found['total']}, first {found['results'][0]['name']}")
    print(f"{'request':<16}{'cold':>10}{'warm p50':>11}{'warm max':>11}{'ixc (process)':>16}")
    for (label, cold, median, worst), whole in zip(rows, ixc, strict=True):
        print(f"{label:<16}{cold * 1000:>8.1f}ms{median * 1000:>9.2f}ms{worst * 1000:>9.2f}ms"
              f"{whole * 1000:>14.1f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
