"""Benchmark: how each cost grows with the store, its users and its build history.

    python -m bench.scale [--levels 1000:10:10000 5000:100:100000 20000:100:100000]
                          [--repeat 20] [--generations 3]

Each level is ENTRIES:USERS:HISTORY. For each, a fresh root and a real ixd:

1. ENTRIES packages `bin/slow(secs=0,tag=sK)` are planned by the daemon (`dep`, so their uids
   and store paths are the daemon's own) and their store entries written beside it, with the
   daemon stopped: a `bin/slow-sK` program and an `env`, canonical modes, registered valid
   with their content hash (building 20,000 packages would take an hour and measure builds,
   not the store);
2. HISTORY rows of build history;
3. USERS realms `benchK` made through the daemon (`ixc let`), each holding its share of the
   entries, each given GENERATIONS generations (the last ones differ by one package), so
   every entry is in some realm: a collection with nothing to delete has nothing to delete.

Then, each as whole client processes where a user would run one (median of --repeat):
ixd's start-up until its first answer, a no-op `mut` (re-adding a package the realm holds),
`status`, `builds` (its first page), `gc` with nothing to delete, `gc` after 10 % more
entries were registered outside every realm, `ixd verify`, ixd's RSS at the end and the
database's size. Goals (issue 29): start-up <= 1 s and gc <= 2 s at 20,000 entries; no-op,
status and builds flat (within 1.2x) from the smallest to the largest store.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench._daemon import PYTHON, BenchDaemon, env, load_average, percentile, slow
from ixd.model.layout import Layout
from ixd.store.treehash import tree_hash
from tests.daemon_harness import start_daemon

#: selectors per `dep` request while planning the entries
DEP_BATCH = 500


@dataclass(frozen=True)
class Level:
    entries: int
    users: int
    history: int

    @staticmethod
    def parse(text: str) -> Level:
        entries, users, history = (int(part) for part in text.split(":"))
        return Level(entries, users, history)

    def __str__(self) -> str:
        return f"{self.entries:,} / {self.users} / {self.history:,}"


@dataclass
class Figures:
    level: Level
    values: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def put(self, name: str, seconds: float) -> None:
        self.seconds[name] = seconds
        self.values[name] = f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def tag(n: int) -> str:
    return f"s{n}"


def plan_entries(daemon: BenchDaemon, count: int) -> list[dict[str, str]]:
    """The uid and store dir the daemon gives each of `count` packages (nothing built)."""
    found: list[dict[str, str]] = []
    for start in range(0, count, DEP_BATCH):
        selectors = [slow(tag(n)) for n in range(start, min(count, start + DEP_BATCH))]
        reply = daemon.request("dep", {"packages": selectors})
        found += [p for p in reply["packages"] if p["name"] == "bin/slow"]
    if len(found) != count:
        raise RuntimeError(f"dep gave {len(found)} bin/slow packages for {count}")
    return found


def write_entry(out: Path, name: str) -> str:
    """A store entry as a bin/slow build leaves it, canonical; its content hash."""
    (out / "bin").mkdir(parents=True)
    program = out / "bin" / f"slow-{name}"
    program.write_text(f"#!/bin/sh\necho slow-{name}\n")
    (out / "env").write_text(f'export PATH="{out}/bin:${{PATH:-}}"\n')
    program.chmod(0o555)
    (out / "env").chmod(0o444)
    for folder in (out / "bin", out):
        folder.chmod(0o555)
    for path in (program, out / "env", out / "bin", out):
        os.utime(path, (1, 1), follow_symlinks=False)
    return tree_hash(out)


def fill_store(root: Path, entries: list[dict[str, str]]) -> None:
    layout = Layout(root)
    rows = []
    now = time.time()
    for index, entry in enumerate(entries):
        out = Path(entry["out"])
        if out.exists():
            continue
        content_hash = write_entry(out, tag(index))
        rows.append((entry["uid"], str(out), "bin/slow", "bin", now, content_hash))
    with sqlite3.connect(layout.database) as db:
        db.executemany("INSERT OR REPLACE INTO store (uid, path, name, kind, registered, hash) "
                       "VALUES (?, ?, ?, ?, ?, ?)", rows)


def fill_history(root: Path, count: int, entries: list[dict[str, str]]) -> None:
    layout = Layout(root)
    start = time.time() - count
    rows = []
    for n in range(count):
        entry = entries[n % len(entries)]
        flags = json.dumps({"kind": "bin", "secs": "0", "tag": tag(n % len(entries)),
                            "target": "linux-x86_64"}, sort_keys=True)
        state = "failed" if n % 17 == 0 else "valid"
        rows.append((entry["uid"], f"bin/slow(secs=0,tag={tag(n % len(entries))})", flags,
                     state, start + n, start + n + 0.05, 0.05, None,
                     str(layout.log_path(entry["uid"])), 0, "" if state == "valid" else "x"))
    with sqlite3.connect(layout.database) as db:
        db.executemany("INSERT INTO builds (uid, name, flags, state, started, ended, duration, "
                       "exit_status, log, requested_by, error) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def client(daemon: BenchDaemon, *words: str) -> float:
    return client_output(daemon, *words)[0]


def client_output(daemon: BenchDaemon, *words: str) -> tuple[float, str]:
    """Seconds `ixc WORDS` took as a whole process, and what it printed."""
    argv = daemon.ixc_argv(*words)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env(), capture_output=True, cwd="/")
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"ixc {' '.join(words)[:80]} exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-1500:]}")
    return took, done.stdout.decode(errors="replace")


def collect(daemon: BenchDaemon, figures: Figures, name: str, expect: int) -> None:
    """`ixc gc`, timed; says so in the table when it deleted other than `expect` entries."""
    took, printed = client_output(daemon, "gc", "--json")
    figures.put(name, took)
    deleted = json.loads(printed)["entries"]
    if deleted != expect:
        figures.values[name] += f" ({deleted} deleted, not {expect}!)"


def median_of(repeat: int, daemon: BenchDaemon, *words: str) -> float:
    return percentile([client(daemon, *words) for _ in range(repeat)], 50)


def make_realms(daemon: BenchDaemon, count: int, users: int, generations: int) -> None:
    share = max(1, count // users)
    for user in range(users):
        mine = [slow(tag(n)) for n in range(user * share, min(count, (user + 1) * share))]
        if user == users - 1:  # the last user takes the remainder
            mine = [slow(tag(n)) for n in range(user * share, count)]
        for generation in range(generations):
            # each generation drops a different package of the realm, the last holds them all
            kept = mine if generation == generations - 1 else \
                [s for i, s in enumerate(mine) if i != generation]
            client(daemon, "let", f"bench{user}", *kept)


def restart(daemon: BenchDaemon) -> tuple[BenchDaemon, float]:
    """Stop ixd and start it again on the same root; seconds until it answered."""
    root, jobs, tmp = daemon.root, daemon.jobs, daemon.tmp
    daemon.running.stop()
    start = time.perf_counter()
    running = start_daemon(root, extra=["--jobs", str(jobs)])
    took = time.perf_counter() - start
    return BenchDaemon(running, jobs, tmp), took


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(level: Level, repeat: int, generations: int, keep: bool = False) -> Figures:
    figures = Figures(level)
    daemon = BenchDaemon.start(jobs=2, label="scale")
    try:
        started = time.perf_counter()
        entries = plan_entries(daemon, level.entries)
        daemon.running.stop()
        fill_store(daemon.root, entries)
        fill_history(daemon.root, level.history, entries)
        daemon, _ = restart(daemon)
        make_realms(daemon, level.entries, level.users, generations)
        print(f"  {level}: filled in {time.perf_counter() - started:.0f} s", flush=True)

        daemon, took = restart(daemon)
        figures.put("start-up to first answer", took)
        figures.put("no-op mut", median_of(repeat, daemon, "mut", "bench0", f"+{slow(tag(0))}"))
        figures.put("status", median_of(repeat, daemon, "status"))
        figures.put("builds (first page)", median_of(repeat, daemon, "builds"))
        collect(daemon, figures, "gc, nothing to delete", 0)

        extra = plan_entries_beyond(daemon, level.entries, level.entries // 10)
        daemon.running.stop()
        fill_store(daemon.root, extra)
        daemon, _ = restart(daemon)
        collect(daemon, figures, "gc, 10 % to delete", len(extra))

        start = time.perf_counter()
        done = subprocess.run([PYTHON, "-m", "ixd.daemon.main", "verify", "--root",
                               str(daemon.root), "--quiet"], env=env(), capture_output=True)
        figures.put("ixd verify", time.perf_counter() - start)
        if done.returncode != 0:
            figures.values["ixd verify"] += f" (exit {done.returncode})"
        figures.values["ixd RSS"] = f"{rss_mib(daemon.process.pid):.0f} MiB"
        database = Layout(daemon.root).database
        size = sum(p.stat().st_size for p in database.parent.glob(database.name + "*"))
        figures.values["database size"] = f"{size / (1 << 20):.1f} MiB"
    finally:
        daemon.stop(keep=keep)
        if keep:
            print(f"  kept: {daemon.root} (ixd stopped)", flush=True)
    return figures


def measure_again(root: Path, repeat: int) -> Figures:
    """The quick rows again on a root `--keep` left (its ixd stopped): start-up, no-op
    mut, status, builds, gc with nothing to delete, RSS; the same store before and after a
    change to ixd."""
    with sqlite3.connect(Layout(root).database) as db:
        entries = db.execute("SELECT COUNT(*) FROM store WHERE kind != 'rlm'").fetchone()[0]
        users = db.execute("SELECT COUNT(*) FROM realms").fetchone()[0]
        history = db.execute("SELECT COUNT(*) FROM builds").fetchone()[0]
    figures = Figures(Level(entries, users, history))
    start = time.perf_counter()
    running = start_daemon(root, extra=["--jobs", "2"])
    figures.put("start-up to first answer", time.perf_counter() - start)
    daemon = BenchDaemon(running, 2, root.parent)
    try:
        figures.put("no-op mut", median_of(repeat, daemon, "mut", "bench0", f"+{slow(tag(0))}"))
        figures.put("status", median_of(repeat, daemon, "status"))
        figures.put("builds (first page)", median_of(repeat, daemon, "builds"))
        collect(daemon, figures, "gc, nothing to delete", 0)
        figures.values["ixd RSS"] = f"{rss_mib(daemon.process.pid):.0f} MiB"
    finally:
        daemon.stop(keep=True)
    return figures


def plan_entries_beyond(daemon: BenchDaemon, first: int, count: int) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for start in range(first, first + count, DEP_BATCH):
        selectors = [slow(tag(n)) for n in range(start, min(first + count, start + DEP_BATCH))]
        reply = daemon.request("dep", {"packages": selectors})
        found += [p for p in reply["packages"] if p["name"] == "bin/slow"]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", nargs="+", type=Level.parse,
                        default=[Level(1000, 10, 10_000), Level(5000, 100, 100_000),
                                 Level(20_000, 100, 100_000)],
                        help="ENTRIES:USERS:HISTORY")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--keep", action="store_true",
                        help="leave each level's root behind, to profile ixd on it")
    parser.add_argument("--again", type=Path, nargs="+", default=[], metavar="ROOT",
                        help="instead of filling stores, time the quick rows again on roots "
                             "--keep left")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/scale.py runs as root (ixd confines builds as build users)")
        return 0
    print(f"how costs grow: levels (entries / users / history rows) "
          f"{', '.join(str(level) for level in args.levels) if not args.again else 'kept'}; "
          f"{load_average()}", flush=True)
    if args.again:
        results = [measure_again(root, args.repeat) for root in args.again]
    else:
        results = [measure(level, args.repeat, args.generations, args.keep)
                   for level in args.levels]
    names = list(results[0].values)
    width = max(len(n) for n in names) + 2
    print(f"\n{'':<{width}}" + "".join(f"{r.level!s:>26}" for r in results))
    for name in names:
        print(f"{name:<{width}}" + "".join(f"{r.values.get(name, '-'):>26}" for r in results))
    first, last = results[0], results[-1]
    print("\nlargest / smallest (goal: <= 1.2 for no-op mut, status, builds):")
    for name in ("no-op mut", "status", "builds (first page)", "start-up to first answer",
                 "gc, nothing to delete"):
        if first.seconds.get(name):
            print(f"  {name:<28} {last.seconds[name] / first.seconds[name]:.2f}")
    print(load_average())
    return 0


if __name__ == "__main__":
    sys.exit(main())
