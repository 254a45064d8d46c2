"""Cross targets without building them (tests/test_cross.py builds and runs them): a package
asked for two targets is two builds, each with its own C library and runtime library, while
the build tools are the host's, one build for both; a build whose output is for another
machine than its package's target never enters the store (E_WRONG_MACHINE)."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.model.layout import Layout
from ixd.model.nodes import Node
from ixd.model.selector import parse_selector
from ixd.recipes.packages import PackageGraph
from ixd.recipes.plan import build_plan
from ixd.recipes.tree import RecipeTree
from ixd.store.fstree import remove_tree
from ixd.wire.errors import RecipeError
from tests.daemon_harness import PKGS, RunningDaemon, read_rows, start_daemon

TARGETS = {"linux-aarch64": "aarch64", "linux-riscv64": "riscv64"}
HOST_MACHINE = {"x86_64": "x86_64", "aarch64": "aarch64", "riscv64": "riscv64"}[
    os.uname().machine]
#: the packages built for the target (the program, its C library and runtime library)
TARGET_SIDE = ("bin/hello", "lib/c", "lib/compiler_rt/builtins")


def hello_builds(nodes: list[Node]) -> dict[str, list[Node]]:
    """The build nodes of a plan, by package."""
    by_package: dict[str, list[Node]] = defaultdict(list)
    for node in nodes:
        if node.kind == "build":
            by_package[node.meta["package"]].append(node)
    return by_package


def test_two_targets_are_two_builds_of_each_target_package_and_one_of_each_tool(
        tmp_path: Path) -> None:
    graph = PackageGraph(RecipeTree([PKGS]), tmp_path / "store")
    asked = [graph.load(parse_selector(f"bin/hello(target={t})")) for t in TARGETS]
    asked.append(graph.load(parse_selector("bin/hello")))  # and the host's own
    builds = hello_builds(list(build_plan(asked, Layout(tmp_path)).nodes))
    for name in TARGET_SIDE:  # one build per target (the host's lib/c among the host's)
        assert len({n.uid for n in builds[name]}) == 3, name
        assert ({n.elf_machine for n in builds[name]}
                == {*TARGETS.values(), HOST_MACHINE}), name
    tools = [name for name in builds if name.startswith("bld/")]
    # ixd's default chain: stage 1's clang and make; the host's CMake for the other
    # targets' builtins (docs/recipes.md, "Stages")
    assert {"bld/boot/1/clang", "bld/boot/1/make", "bld/host/cmake"} <= set(tools)
    # a tool is built for the host alone: the targets add no build of a tool the host's own
    # hello uses (stage 1's compiler comes in two flavours, libc=boot and none, for the
    # host's builds as much as for the targets'), and one of any tool only they use
    host_only = hello_builds(list(build_plan([graph.load(parse_selector("bin/hello"))],
                                             Layout(tmp_path)).nodes))
    for name in tools:
        uids = {n.uid for n in builds[name]}
        mine = {n.uid for n in host_only.get(name, [])}
        assert uids == mine if mine else len(uids) == 1, name
        assert {n.elf_machine for n in builds[name]} == {HOST_MACHINE}, name
    # each target's program is compiled for it, against its own C library
    for node in builds["bin/hello"]:
        target = node.meta["flags"]["target"]
        machine = TARGETS.get(target, HOST_MACHINE)
        assert f"export IX_TARGET={machine}-unknown-linux-musl" in node.stdin
        [libc] = [n for n in builds["lib/c"] if n.meta["flags"]["target"] == target]
        assert libc.outputs[0] in node.env["IX_T_DIR"].split(":")
        assert libc.elf_machine == machine


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    top = Path(tempfile.mkdtemp(prefix="ix-cross-plan-", dir="/var/tmp"))
    running = start_daemon(top / "root")
    try:
        yield running
        assert running.stop() == 0, running.log.read_text()
    finally:
        running.stop()
        remove_tree(top)


def test_the_daemons_plan_for_two_targets_shares_the_host_tools(daemon: RunningDaemon
                                                               ) -> None:
    plan = json.loads(daemon.ixc("plan", *[f"bin/hello(target={t})" for t in TARGETS]).stdout)
    builds = hello_builds([Node.from_json(n) for n in plan["nodes"]])
    assert len(plan["targets"]) == 2
    assert {n.elf_machine for n in builds["bin/hello"]} == set(TARGETS.values())
    assert len(builds["bld/host/clang"]) == 1


def test_an_output_for_another_machine_than_its_target_is_refused_naming_both(
        daemon: RunningDaemon) -> None:
    """bin/dynamic copies the host's `true`: asked for another machine, its output is
    refused before it enters the store; asked for the host, the same build is accepted."""
    other = "linux-riscv64" if HOST_MACHINE != "riscv64" else "linux-aarch64"
    refused = daemon.ixc("build", f"bin/dynamic(target={other})", check=False)
    assert refused.returncode != 0
    assert "[E_WRONG_MACHINE]" in refused.stderr, refused.stderr
    assert (f"bin/dyntrue is an ELF file for {HOST_MACHINE} (e_machine "
            in refused.stderr), refused.stderr
    assert f"not for {TARGETS.get(other)} (e_machine " in refused.stderr
    [row] = read_rows(daemon.root / "var" / "ixd.sqlite",
                      "SELECT uid, state FROM builds WHERE name = 'bin/dynamic'")
    assert row["state"] == "failed"
    assert not list((daemon.root / "store").glob("*-bin-dynamic"))
    # the daemon goes on serving; the host's own build of it is the same build, accepted
    built = daemon.ixc("build", "bin/dynamic").stdout.split()
    assert built == [str(daemon.root / "store" / f"{row['uid']}-bin-dynamic")]


def test_gcc_is_refused_for_another_target_naming_clang(tmp_path: Path) -> None:
    """The host's gcc compiles for the host alone: asked for another target, the recipe
    refuses to render (before anything is built) and names the compiler that can."""
    graph = PackageGraph(RecipeTree([PKGS]), tmp_path / "store")
    with pytest.raises(RecipeError) as refused:
        graph.load(parse_selector("bin/hello(cc=gcc,target=linux-aarch64)"))
    assert ("it is built for linux-aarch64 (the host gcc builds for the host alone): "
            "--cc=gcc cannot build it; the compilers that can: clang") in refused.value.message
    graph.load(parse_selector("bin/hello(cc=gcc)"))  # for the host, it can
