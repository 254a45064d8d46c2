"""ixd's default chain (docs/recipes.md, "Stages"): from an empty root, bin/hello builds with
stage 0 (the host's clang, captured) as the only input from the host, every other build in a
sandbox without the host's folders; and built twice, at the same root path, every entry of
its closure is the same bytes (the content hashes `ixd verify` checks).

The first build is the prebuilt root of the run (tests/seeded_store.py: an ixd built stages
0 and 1 and lib/c there from an empty store); this module builds everything again from an
empty store at that very path (at the start of the run, while the root is being built: each
process sees the path as its own), then bin/hello on a copy of the prebuilt root, and
compares.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ixd.store.elf import elf_interpreter
from ixd.store.fstree import remove_tree
from tests.daemon_harness import PKGS, TEST_OVERLAY, RunningDaemon, read_rows, start_daemon
from tests.seeded_store import SeededPath, SeededRoot

pytestmark = [pytest.mark.slow, pytest.mark.lib_c_root, pytest.mark.before_its_root]
BUILD_TIMEOUT = 1800
#: stage 0: the only builds that see the host
STAGE_0 = {"bld/boot/0/clang", "bld/boot/0/seed"}


@dataclass
class Built:
    """One build of bin/hello's closure at the prebuilt root's path."""

    plan: list[dict[str, Any]]
    #: uid -> content hash, from the store's table
    hashes: dict[str, str]
    #: build name -> seconds
    times: dict[str, float]
    hello: Path
    #: what the test overlay's bin/sandbox/view saw
    view: dict[str, str]


@dataclass
class Chain:
    fresh: Built
    again: Built
    #: uid -> content hash of the prebuilt root (stages 0 and 1, lib/c, built there first)
    prebuilt: dict[str, str]
    undeclared: subprocess.CompletedProcess[str]


def _build(daemon: RunningDaemon, fresh: bool) -> Built:
    started = time.monotonic()
    hello = Path(daemon.ixc("build", "bin/hello", timeout=BUILD_TIMEOUT).stdout.split()[-1])
    total = time.monotonic() - started
    view_out = Path(daemon.ixc("build", "bin/sandbox/view", timeout=BUILD_TIMEOUT)
                    .stdout.split()[-1])
    plan = json.loads(daemon.ixc("plan", "bin/hello").stdout)["nodes"]
    rows = read_rows(daemon.root / "var" / "ixd.sqlite", "SELECT uid, hash FROM store")
    history = json.loads(daemon.ixc("--json", "builds", "--limit", "500").stdout)["builds"]
    times = {b["name"]: b["duration"] for b in history
             if b["state"] == "valid" and b["duration"] is not None}
    if fresh:
        print(f"\nbin/hello from an empty store in {total:.1f}s:")
        for name, seconds in times.items():
            print(f"  {seconds:7.1f}s  {name}")
    view = {f.name: f.read_text() for f in (view_out / "share").iterdir()}
    return Built(plan, {r["uid"]: r["hash"] for r in rows}, times, hello, view)


@pytest.fixture(scope="module")
def chain(seeded_path: SeededPath, request: pytest.FixtureRequest) -> Iterator[Chain]:
    with seeded_path.hold() as root:
        # everything again, from an empty store at the prebuilt root's path
        daemon = start_daemon(root, overlays=(TEST_OVERLAY, PKGS), boot=True)
        try:
            fresh = _build(daemon, fresh=True)
            undeclared = daemon.ixc("build", "bin/sandbox/undeclared", check=False,
                                    timeout=BUILD_TIMEOUT)
        finally:
            assert daemon.stop() == 0, daemon.log.read_text()
        away = root.with_name(f"{root.name}-fresh-{os.getpid()}")
        root.rename(away)
        remove_tree(away)
        # bin/hello again, on the prebuilt root (stages 0 and 1 and lib/c built there first,
        # meanwhile)
        seeded: SeededRoot = request.getfixturevalue("lib_c_root")
        prebuilt = {r["uid"]: r["hash"] for r in read_rows(
            seeded.pristine / "var" / "ixd.sqlite", "SELECT uid, hash FROM store")}
        seeded.copy_into_place()
        daemon = start_daemon(root, overlays=(TEST_OVERLAY, PKGS), boot=True)
        try:
            again = _build(daemon, fresh=False)
            yield Chain(fresh, again, prebuilt, undeclared)
        finally:
            assert daemon.stop() == 0, daemon.log.read_text()


def test_only_stage_0_sees_the_host(chain: Chain) -> None:
    """No build of bin/hello's closure sees the host's folders but stage 0's captures."""
    builds = [n for n in chain.fresh.plan if n["kind"] == "build"]
    assert {n["name"] for n in builds if n["host_view"]} == STAGE_0
    names = {n["name"] for n in builds}
    assert {"bld/boot/1/sh", "bld/boot/1/make", "bld/boot/1/busybox", "bld/boot/1/clang",
            "lib/c", "lib/compiler_rt/builtins", "bin/hello"} <= names
    assert not [n for n in names if n.startswith("bld/host/")]


def test_hello_is_static_and_greets(chain: Chain) -> None:
    hello = chain.fresh.hello / "bin" / "hello"
    assert elf_interpreter(hello) is None
    done = subprocess.run([hello], capture_output=True, check=True, env={})
    assert done.stdout == b"Hello, world!\n"


def test_a_build_sees_its_inputs_and_not_the_host(chain: Chain) -> None:
    view = chain.fresh.view
    # /usr holds the declared env alone; /bin the declared shell (stage 1's dash)
    assert view["bin"].split() == ["/bin:", ".", "..", "sh", "/usr/bin:", ".", "..", "env"]
    assert view["sh"].strip().endswith("-bin-boot-1-sh/bin/sh")
    assert "lib" not in view["root"].split() and "lib64" not in view["root"].split()
    # a shell build declares no compiler: none is found, not the host's either
    assert not [p for p in view["found"].split() if p.startswith("/")], view["found"]


def test_a_tool_a_build_does_not_declare_is_not_found(chain: Chain) -> None:
    assert chain.undeclared.returncode != 0
    assert "perl: not found" in chain.undeclared.stderr
    assert "the host perl ran" not in chain.undeclared.stderr


def test_every_entry_of_hellos_closure_is_the_same_bytes_when_built_again(
        chain: Chain) -> None:
    """Built twice from an empty store at the same path (here and in the prebuilt root),
    then bin/hello on each: the content hashes agree for every entry of the closure."""
    names = {n["uid"]: n["name"] for n in chain.fresh.plan if n["kind"] == "build"}
    differ = []
    for uid, name in names.items():
        first = chain.prebuilt.get(uid) or chain.again.hashes.get(uid)
        second = chain.fresh.hashes.get(uid)
        assert first and second, f"{name} ({uid}) is missing from a store"
        if first != second:
            differ.append(f"{name} ({uid})")
    assert not differ, f"built twice, these differ: {', '.join(differ)}"
    # bin/hello itself was built on both, after two builds of everything below it
    hello = chain.fresh.hello.name.split("-", 1)[0]
    assert chain.fresh.hashes[hello] == chain.again.hashes[hello]
    assert set(chain.prebuilt) <= set(chain.fresh.hashes)
