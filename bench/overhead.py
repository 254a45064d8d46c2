"""Benchmark: the daemon's own cost per build node, beyond the build itself (issue 13, item 3).

    python -m bench.overhead [--nodes 1000] [--jobs 2] [--parts 40]

One `mut` of a realm of N trivial packages (`bin/slow(secs=0,tag=oK)`: a confined build
that writes one small script) through a real ixd with --jobs J. Each node's slot time is
wall x J / N. The build itself is what the same command costs when run directly, without
the daemon: this process runs one more such node's own command (from the daemon's plan) in
the sandbox the builder makes (`chpst` as a build user + `bwrap` with the same binds),
N/10 times, J at a time, in the same run. The difference is the daemon's per-node overhead
(scheduling, scratch, logging, output canonicalisation, hashing, database writes,
registration): the issue's goal is <= 5 ms.

Also prints the builds table's own figures (the span from one build's start to its end, as
the daemon recorded it), the daemon's CPU time per node, and that of its child processes
(the builds themselves and the daemon's helper processes: on a machine others share, CPU
time is steadier than wall time).

Then where that time goes (`--parts N`, each part timed alone N times, one at a time, the
way the builder does it): the scratch, the cgroup, the exec chain layer by layer (fork+exec
from Python, `chpst` as the build user, `bwrap` with the node's binds, `sh` entering the
cgroup, then the node's own command), the sweep of the build user's processes, the statfs
that tells whether the build's work may wait in the trash (room for another whole build) or
must be removed before the slot is handed on (and that removal), its output canonicalised and
hashed, and the database's writes. Parts marked
`slot` hold the build slot; `after` parts run once the slot went to the next build (still
CPU the machine's other builds share). With build users to spare, the exec chain's set-up
(chpst, bwrap's namespaces and mounts) is done while the build waits for its slot: what the
slot then waits for is bwrap's exec of the command and the sandbox's end.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bench._daemon import BenchDaemon, load_average, ms, mut_args, percentile, slow
from ixd.daemon.main import default_max_memory
from ixd.model.layout import Layout
from ixd.store.buildusers import (
    DEFAULT_GROUP,
    BuildUser,
    BuildUserPool,
    kill_processes_of,
    load_pool,
)
from ixd.store.canonical import canonicalise
from ixd.store.cgroup import BuildCgroup, enter_argv
from ixd.store.cgroup import probe as probe_cgroups
from ixd.store.confine import build_identity_argv, confinement_argv, sandbox_etc
from ixd.store.db import BuildDatabase
from ixd.store.elf import machine_check
from ixd.store.fstree import remove_tree
from ixd.store.scratch import SMALL_WORK, Scratch, holds_at_most, prepare, sandbox_etc_dir
from ixd.store.space import free_bytes


def direct_runs(node: dict[str, Any], count: int, jobs: int) -> float:
    """Median wall time of `node`'s own command (a plan node of the daemon's, its inputs
    still in the store) run directly in the sandbox the builder makes, as a build user
    (held like a daemon holds one), `jobs` at a time: the build itself, without the daemon."""
    top = Path(tempfile.mkdtemp(prefix="ix-overhead-", dir="/var/tmp"))
    top.chmod(0o755)
    etc = top / "etc"
    etc.mkdir()
    for name, text in sandbox_etc().items():
        (etc / name).write_text(text)
    store_path = Path(node["outputs"][0])
    pool = BuildUserPool(load_pool(DEFAULT_GROUP))
    times: list[float] = []

    async def one(index: int, slots: trio.CapacityLimiter) -> None:
        async with slots, pool.take() as user:
            scratch = top / f"s{index}"
            for sub in ("", "tmp", "src", "out"):
                (scratch / sub).mkdir()
                os.chown(scratch / sub, user.uid, user.gid)
            env = {**node["env"], "out": str(store_path), "tmp": str(scratch / "tmp"),
                   "src": str(scratch / "src"), "uid": node["uid"], "make_thrs": "1"}
            argv = [*build_identity_argv(user.uid, user.gid, max_processes=512),
                    *confinement_argv(net=False, inputs=[Path(p) for p in node["inputs"]],
                                      binds=[(scratch, scratch), (scratch / "out", store_path)],
                                      tmp=scratch / "tmp", etc=etc, chdir=scratch / "tmp"),
                    *node["command"]]
            begin = time.perf_counter()
            await trio.run_process(argv, env=env, stdin=node["stdin"].encode(),
                                   stdout=subprocess.DEVNULL, cwd=scratch)
            times.append(time.perf_counter() - begin)

    async def all_runs() -> None:
        slots = trio.CapacityLimiter(jobs)
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(one, index, slots)

    try:
        trio.run(all_runs)
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)
    return statistics.median(times)


#: how many times each part of the slot is timed, one at a time
PART_REPEAT = 40


@dataclass
class Part:
    name: str
    #: on the slot's way (the next build waits for it), or after the slot is handed on
    in_slot: bool
    seconds: float


def _median_time(repeat: int, setup: Callable[[int], Any], call: Callable[[Any], Any],
                 teardown: Callable[[Any], Any] = lambda _: None) -> float:
    """Median wall time of `call(setup(i))`, `repeat` times (setup and teardown untimed)."""
    samples = []
    for index in range(repeat):
        state = setup(index)
        begin = time.perf_counter()
        call(state)
        samples.append(time.perf_counter() - begin)
        teardown(state)
    return statistics.median(samples)


def _run(argv: list[str], env: dict[str, str] | None = None, stdin: bytes = b"",
         cwd: Path | None = None) -> None:
    done = subprocess.run(argv, env=env or {"PATH": "/usr/bin:/bin"}, input=stdin,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr[-500:]!r}")


def slot_parts(node: dict[str, Any], repeat: int) -> list[Part]:
    """Each step of a confined build's life timed on its own, one at a time, the way the
    builder does it (`ixd.store.builder`): its scratch, its cgroup, the exec chain layer by
    layer (`sh` entering the cgroup, `chpst` as the build user with its limits, `bwrap` with
    the node's binds), the command itself, the sweep of the user's processes, the removal
    of its work, canonicalising and hashing its output, and the database's writes."""
    top = Path(tempfile.mkdtemp(prefix="ix-parts-", dir="/var/tmp"))
    top.chmod(0o755)
    layout = Layout(top / "root")
    layout.ensure()
    etc = sandbox_etc_dir(layout)
    store_path = Path(node["outputs"][0])
    pool = BuildUserPool(load_pool(DEFAULT_GROUP))
    cgroups, _how = probe_cgroups(layout.root)
    memory = default_max_memory(2)
    parts: list[Part] = []
    counter = itertools.count()

    def make_scratch(root: Path, user: BuildUser) -> None:
        prepare(Scratch(root, store_path, True, layout.trash), user)

    def fresh_scratch(user: BuildUser) -> Path:
        scratch = layout.scratch(f"p{next(counter)}")
        make_scratch(scratch, user)
        return scratch

    def chain(user: BuildUser, scratch: Path, *, cgroup: BuildCgroup | None, bwrap: bool,
              command: list[str]) -> list[str]:
        argv = build_identity_argv(user.uid, user.gid, max_processes=512,
                                   max_file_size=32 << 30,
                                   max_data=memory if cgroup is None else None)
        if cgroup is not None:
            argv = enter_argv(cgroup.procs) + argv
        if bwrap:
            argv += confinement_argv(
                net=False, store_view=(scratch / "store", store_path.parent),
                inputs=[Path(p) for p in node["inputs"]], binds=[(scratch, scratch)],
                tmp=scratch / "tmp", etc=etc, chdir=scratch / "tmp")
        return argv + command

    env = {**node["env"], "out": str(store_path), "uid": node["uid"], "make_thrs": "1"}
    try:
        with pool.holding_one() as user:
            def scratch_gone(scratch: Path) -> None:
                subprocess.run(["rm", "-rf", str(scratch)], check=True)

            parts.append(Part("scratch: folders, links, chown (spawner thread)", True,
                              _median_time(repeat, lambda i: layout.scratch(f"s{i}"),
                                           lambda s: make_scratch(s, user),
                                           scratch_gone)))
            if cgroups is not None:
                def new_cgroup(index: int) -> BuildCgroup:
                    return cgroups.build(f"c{index}")

                parts.append(Part("cgroup made (mkdir, limits)", True, _median_time(
                    repeat, new_cgroup, lambda c: c.create(memory, 512), BuildCgroup.remove)))

                def made_cgroup(index: int) -> BuildCgroup:
                    cgroup = cgroups.build(f"r{index}")
                    cgroup.create(memory, 512)
                    return cgroup

                parts.append(Part("cgroup removed", False, _median_time(
                    repeat, made_cgroup, BuildCgroup.remove)))
            true = ["/bin/true"]
            parts.append(Part("exec: fork+exec /bin/true from Python (the floor)", True,
                              _median_time(repeat, lambda i: None, lambda _: _run(true))))
            scratch = fresh_scratch(user)
            parts.append(Part("exec: + chpst as the build user, limits", True, _median_time(
                repeat, lambda i: None, lambda _: _run(chain(
                    user, scratch, cgroup=None, bwrap=False, command=true)))))
            parts.append(Part("exec: + bwrap, the node's binds", True, _median_time(
                repeat, lambda i: None, lambda _: _run(chain(
                    user, scratch, cgroup=None, bwrap=True, command=true)))))
            build_env = {**env, "tmp": str(scratch / "tmp"), "src": str(scratch / "src")}

            def build(cgroup: BuildCgroup | None) -> None:
                _run(chain(user, scratch, cgroup=cgroup, bwrap=True,
                           command=list(node["command"])),
                     env=build_env, stdin=node["stdin"].encode(), cwd=scratch)

            parts.append(Part("exec: + the node's own command (its build)", True,
                              _median_time(repeat, lambda i: None, lambda _: build(None))))
            if cgroups is not None:
                def cgroup_for_run(index: int) -> BuildCgroup:
                    cgroup = cgroups.build(f"e{index}")
                    cgroup.create(memory, 512)
                    return cgroup

                parts.append(Part("exec: + sh entering the cgroup first (the whole chain)",
                                  True, _median_time(repeat, cgroup_for_run, build,
                                                     BuildCgroup.remove)))
            parts.append(Part("kill -9 -1 as the build user (if the sandbox's end was not "
                              "seen)", True, _median_time(
                                  repeat, lambda i: None, lambda _: kill_processes_of(user))))

            def work_of(index: int) -> list[Path]:
                scratch = fresh_scratch(user)
                (scratch / "tmp" / "x").write_text("x")
                return [scratch / "tmp", scratch / "src"]

            parts.append(Part("room to spare: statfs of the build file system", True,
                              _median_time(repeat, lambda i: None,
                                           lambda _: free_bytes(layout.build))))
            # with room to spare, the work waits in the trash for one rm -rf of many builds'
            parts.append(Part("work removed: rm -rf tmp src (no room: a large work)", True,
                              _median_time(repeat, work_of, lambda w: _run(
                                  ["rm", "-rf", "--one-file-system", "--", *map(str, w)]))))
            parts.append(Part("work removed: counted, then shutil.rmtree (no room: a small "
                              "work)", True, _median_time(repeat, work_of, lambda w: (
                                  holds_at_most(w, SMALL_WORK), *map(remove_tree, w)))))

            def output_of(index: int) -> Path:
                scratch = fresh_scratch(user)
                out = scratch / "store" / store_path.name
                (out / "bin").mkdir()
                (out / "bin" / "slow").write_text("#!/bin/sh\necho slow\n")
                (out / "env").write_text(f'export PATH="{store_path}/bin:$PATH"\n')
                return out

            check = machine_check(node["meta"].get("target", "linux-x86_64")
                                  if isinstance(node.get("meta"), dict) else "linux-x86_64")
            parts.append(Part("output canonicalised and hashed (thread, after the slot)",
                              False, _median_time(repeat, output_of, lambda out: canonicalise(
                                  out, content_hash=True, check=check))))
    finally:
        if cgroups is not None:
            cgroups.close()
        subprocess.run(["rm", "-rf", str(top)], check=False)
    parts.append(Part("database: build row, then registered + ended (2 commits)", False,
                      database_writes(repeat)))
    return parts


def database_writes(repeat: int) -> float:
    """Median time of one build's writes (its row; its entry and its row's end in one
    batch), on a database of its own."""
    with tempfile.TemporaryDirectory(prefix="ix-parts-db-") as folder:
        db = BuildDatabase(Path(folder) / "db.sqlite")
        counter = itertools.count()

        def one(_: object) -> None:
            n = next(counter)
            uid = f"{n:032x}"
            build_id = db.build_started(uid, "bin/slow", {"tag": str(n)}, "/x.log", 0)
            db.write_batch([lambda: db.register_valid(uid, f"/s/{uid}-bin-slow", "bin/slow",
                                                      "bin", "h" * 64, ["/s/a", "/s/b"]),
                            lambda: db.build_ended(build_id, "valid")])

        took = _median_time(repeat, lambda i: None, one)
        db.close()
    return took


def print_parts(parts: list[Part]) -> None:
    """Each part, and for the exec chain's layers what each adds to the one before."""
    print("  where a build's time goes (each part alone, one at a time, median; `slot`: the "
          "next build waits for it, `after`: done once the slot is handed on):")
    previous: float | None = None
    for part in parts:
        where = "slot " if part.in_slot else "after"
        step = ""
        if part.name.startswith("exec:"):
            if previous is not None:
                step = f"  (+{(part.seconds - previous) * 1000:.2f})"
            previous = part.seconds
        print(f"    {where} {part.name:<66} {ms(part.seconds)}{step}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--parts", type=int, default=PART_REPEAT, metavar="N",
                        help="times each part of a build is timed alone (0: not at all)")
    args = parser.parse_args()
    daemon = BenchDaemon.start(jobs=args.jobs, label="overhead")
    try:
        # the tool chain first (bld/host/sh and what it needs), so only the N nodes count
        daemon.request("build", {"packages": [slow("warm-up")]})
        before = len(daemon.build_rows())
        cpu_before = daemon.cpu_seconds()
        children_before = daemon.children_cpu_seconds()
        packages = [slow(f"o{i}") for i in range(args.nodes)]
        begin = time.perf_counter()
        result = daemon.request("mut", mut_args("overhead", packages))
        wall = time.perf_counter() - begin
        cpu = daemon.cpu_seconds() - cpu_before
        children = daemon.children_cpu_seconds() - children_before
        rows = daemon.build_rows()[before:]
        assert result["realms"][0]["changed"], result
        if len(rows) != args.nodes or any(r["state"] != "valid" for r in rows):
            print(f"FAILED: {len(rows)} builds for {args.nodes} nodes, "
                  f"{sum(r['state'] != 'valid' for r in rows)} not valid")
            return 1
        daemon.report_log()
        # one more package's node, to run its command without the daemon
        plan = daemon.request("plan", {"packages": [slow("bare")]})
        node = next(n for n in plan["nodes"] if n["name"].startswith("bin/slow"))
        bare = direct_runs(node, max(20, args.nodes // 10), args.jobs)
        parts = slot_parts(node, args.parts) if args.parts else []
    finally:
        daemon.stop()
    slot = wall * args.jobs / args.nodes
    spans = [r["duration"] for r in rows if r["duration"] is not None]
    print(f"overhead: {args.nodes} trivial confined builds, ixd --jobs {args.jobs}; "
          f"{load_average()}")
    print(f"  realm of {args.nodes} built in {wall:.2f} s: slot time per node {ms(slot)}")
    print(f"  its command run directly in the same sandbox, {args.jobs} at a time: {ms(bare)}")
    print(f"  daemon overhead per node (slot time - bare command): {ms(slot - bare)} "
          f"(goal <= 5 ms)")
    print(f"  builds table span per build: p50 {ms(percentile(spans, 50))}, "
          f"p99 {ms(percentile(spans, 99))}")
    print(f"  daemon CPU per node: {ms(cpu / args.nodes)}")
    print(f"  its child processes' CPU per node (builds and helpers): "
          f"{ms(children / args.nodes)}")
    if parts:
        print_parts(parts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
