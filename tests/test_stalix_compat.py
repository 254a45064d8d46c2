"""ix renders stal/IX's own tree as stal/IX's `ix` does (issues 11 and 27).

For a few targets, golden facts recorded from the reference (tests/stalix_golden/record.py
says how) are checked against ix's packages loaded from ../shared/stalix/pkgs: the package
names of the build closure, the number of build nodes (one per distinct stal/IX build), the
source URLs, for each build node a hash of its script (store paths, uids and settings
masked) and of the package names in its IX_B_DIR, IX_H_DIR and IX_T_DIR, in order, and
every package the reference loads, by name and flags, in its order (what `ixc dep` lists).
The CI set covers linux-x86_64, linux-aarch64, linux-riscv64, mingw-w64-x86_64 and
freebsd-x86_64. A real ixd answers stal/IX's command lines (`ixc dep bin/bash
--target=linux-aarch64`) as the reference's `ix build` reads them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ixd.model.selector import parse_selector
from ixd.recipes.loadorder import load_order
from ixd.recipes.package import walk_closure
from ixd.recipes.packages import PackageGraph
from ixd.recipes.tree import RecipeTree
from tests.daemon_harness import RunningDaemon, start_daemon
from tests.stalix_facts import differences, ix_facts
from tests.stalix_golden.record import selector_text, unpacked

GOLDEN = Path(__file__).resolve().parent / "stalix_golden"
STALIX_PKGS = Path(os.environ.get(
    "IX_STALIX_PKGS", Path(__file__).resolve().parents[2] / "shared" / "stalix" / "pkgs"))

TARGETS = sorted(p.stem for p in GOLDEN.glob("*.json"))


def golden(stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{stem}.json").read_text())
    return data


@pytest.fixture(scope="module")
def tree() -> RecipeTree:
    if not (STALIX_PKGS / "die").is_dir():
        pytest.skip(f"stal/IX's tree is not at {STALIX_PKGS} (set IX_STALIX_PKGS)")
    boot_path = golden(TARGETS[0])["settings"]["ix_boot_path"]
    for tool in ("clang-cpp", "lld", "llvm-ar"):
        if shutil.which(tool, path=boot_path) is None:
            pytest.skip(f"{tool} is not on {boot_path}: install clang-14 and lld-14 "
                        f"(.ci/setup does)")
    return RecipeTree([STALIX_PKGS])


def test_golden_files_cover_the_ci_set_and_the_small_targets() -> None:
    assert {"bin_b64", "bin_curl", "set_stalix", "set_ci", "bin_git", "set_pg", "bld_nasm",
            "bin_bash@linux-aarch64"} <= set(TARGETS)
    assert all(golden(stem)["packages"] for stem in TARGETS)
    # and the other platforms stal/IX knows, each for bin/b64 and bin/curl
    for platform in ("linux-aarch64", "linux-riscv64", "linux-armv7", "darwin-arm64",
                     "darwin-x86_64", "freebsd-x86_64", "mingw-w64-x86_64", "wasi-wasm32"):
        for target in ("bin_b64", "bin_curl"):
            assert f"{target}@{platform}" in TARGETS
            assert golden(f"{target}@{platform}")["flags"]["target"] == platform
    ci = golden("set_ci")
    assert ci["build_nodes"] > 3000 and len(ci["urls"]) > 1000


@pytest.fixture(scope="module")
def graphs() -> dict[str, PackageGraph]:
    """One package graph per set of settings, shared by the targets (as one ixd shares its
    graph between requests): what two targets have in common renders once."""
    return {}


@pytest.mark.slow
@pytest.mark.parametrize("stem", TARGETS)
def test_ix_renders_the_tree_as_stalix_does(stem: str, tree: RecipeTree,
                                            graphs: dict[str, PackageGraph],
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    expected = golden(stem)
    key = json.dumps(expected["settings"], sort_keys=True)
    if key not in graphs:
        graphs[key] = PackageGraph(tree, tmp_path_factory.mktemp("stalix") / "store",
                                   host="linux-x86_64", settings=expected["settings"],
                                   max_packages=1_000_000, max_bytes=1 << 40)
    graph = graphs[key]
    store = graph.store
    selector = parse_selector(expected["target"]).with_flags(expected["flags"])
    package = graph.load(selector)
    uids = {p.uid for p in graph.cache.values()}
    actual = ix_facts(walk_closure([package]), str(store), {}, uids)
    assert differences(expected, actual) == []
    assert actual["build_nodes"] == expected["build_nodes"]
    # every package stal/IX loads, hubs sharing a uid with another package included, in
    # its order
    listed = [selector_text(p.name, p.flags) for p in load_order([package])]
    assert_same_packages(unpacked(expected), listed)


def assert_same_packages(expected: list[str], actual: list[str]) -> None:
    """The same packages in the same order, or the first difference."""
    # (each side's set made once: set/ci lists thousands of packages)
    expected_set, actual_set = set(expected), set(actual)
    missing = [p for p in expected if p not in actual_set]
    extra = [p for p in actual if p not in expected_set]
    assert (missing[:5], extra[:5]) == ([], []), f"{len(missing)} missing, {len(extra)} extra"
    first = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=True)) if a != b),
                 None)
    assert first is None, f"order differs at {first}: {expected[first]} before {actual[first]}"


def test_every_descriptor_of_the_tree_reads_back_from_its_raw_form(
        tree: RecipeTree, tmp_path: Path) -> None:
    """What the render store keeps of a render another flag set took (`Descriptor.to_raw`)
    is read back as the same descriptor, for every package bin/curl loads."""
    from ixd.recipes.descriptor import parse_descriptor

    expected = golden("bin_curl")
    graph = PackageGraph(tree, tmp_path / "store", host="linux-x86_64",
                         settings=expected["settings"])
    graph.load(parse_selector(expected["target"]).with_flags(expected["flags"]))
    for package in graph.cache.values():
        raw = json.loads(json.dumps(package.descriptor.to_raw()))
        assert parse_descriptor(raw, package.name) == package.descriptor, package.name


def test_a_changed_script_is_told_apart(tree: RecipeTree, tmp_path: Path) -> None:
    """The comparison can fail: one rendered setting changed shows in the node it reaches."""
    expected = golden("bin_b64")
    settings = {**expected["settings"], "ix_trash_dir": "/elsewhere/trash"}
    store = tmp_path / "store"
    graph = PackageGraph(tree, store, host="linux-x86_64", settings=settings)
    package = graph.load(parse_selector(expected["target"]).with_flags(expected["flags"]))
    found = differences(expected, ix_facts(walk_closure([package]), str(store), {}, set()))
    assert found and all("differs: script" in line or line.startswith("extra node")
                         for line in found)


@pytest.fixture(scope="module")
def daemon(tree: RecipeTree, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A real ixd on the unchanged tree (no shim overlay), with the reference's settings."""
    settings = golden("bin_curl")["settings"]
    sets = [word for k, v in settings.items() for word in ("--set", f"{k}={v}")]
    running = start_daemon(tmp_path_factory.mktemp("stalix-ixd") / "root",
                           overlays=(STALIX_PKGS,), extra=sets)
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log.read_text()


def dep_list(daemon: RunningDaemon, *words: str) -> list[str]:
    deps = json.loads(daemon.ixc("--json", "dep", *words).stdout)["packages"]
    return [selector_text(p["name"], p["flags"]) for p in deps]


def test_ixd_answers_plain_dep_and_plan_as_stalix_ix_build(daemon: RunningDaemon) -> None:
    """`ixc dep bin/git` and `ixc plan bin/git`, no flags: what stal/IX's `ix build bin/git`
    loads and builds (its realm `ephemeral`: lib/glib/ix brings its fix-up, one build more
    than outside a realm)."""
    expected = golden("bin_git")
    assert_same_packages(unpacked(expected), dep_list(daemon, "bin/git"))
    summary = json.loads(daemon.ixc("plan", "--summary", "bin/git").stdout)
    assert summary["by_kind"]["build"] == expected["build_nodes"]
    assert summary["sources"] == expected["urls"]
    assert any(p.startswith("lib/glib/ix/fix(") for p in summary["packages"])
    plan = json.loads(daemon.ixc("plan", "bin/git").stdout)
    assert len(plan["nodes"]) == summary["nodes"]


def test_ixd_answers_stalix_command_lines(daemon: RunningDaemon) -> None:
    """stal/IX's flag forms: `--target=` after the package (its flag) or before it (the
    realm's, so every package's)."""
    expected = golden("bin_bash@linux-aarch64")
    assert_same_packages(unpacked(expected),
                         dep_list(daemon, "bin/bash", "--target=linux-aarch64"))
    assert_same_packages(unpacked(expected),
                         dep_list(daemon, "--target=linux-aarch64", "+bin/bash"))
    summary = json.loads(daemon.ixc("plan", "--summary", "--target=linux-aarch64",
                                    "bin/bash").stdout)
    assert summary["by_kind"]["build"] == expected["build_nodes"]
    assert summary["sources"] == expected["urls"]


def test_ixc_dep_names_hubs_that_share_a_uid(daemon: RunningDaemon) -> None:
    """`ixc dep bld/nasm` names bin/nasm too (a hub with bld/nasm's uid), every name once,
    in stal/IX's order."""
    names = daemon.ixc("dep", "bld/nasm").stdout.split()
    expected = list(dict.fromkeys(p.split("(", 1)[0] for p in unpacked(golden("bld_nasm"))))
    assert names == expected
    assert "bin/nasm" in names and names[-1] == "bld/nasm"


def test_a_restarted_ixd_answers_from_its_snapshot_as_stalix(
        tree: RecipeTree, tmp_path: Path) -> None:
    """ixd keeps its loaded graph when it stops (var/graph.snapshot, the daemon's only); the
    next ixd on the root takes it and answers `dep` and `plan` as the first did, as stal/IX
    does."""
    settings = golden("bin_b64")["settings"]
    sets = [word for k, v in settings.items() for word in ("--set", f"{k}={v}")]
    root = tmp_path / "root"
    answers = []
    for run in range(2):
        running = start_daemon(root, overlays=(STALIX_PKGS,), extra=sets)
        try:
            dep = running.ixc("--json", "dep", "bin/b64").stdout
            plan = running.ixc("plan", "bin/b64").stdout
            caches = json.loads(running.ixc("status", "--json").stdout)["caches"]
        finally:
            assert running.stop() == 0, running.log.read_text()
        answers.append((dep, plan))
        snapshot = root / "var" / "graph.snapshot"
        assert snapshot.stat().st_mode & 0o777 == 0o600
        assert (caches["packages_restored"] > 0) == (run == 1)
    assert answers[0] == answers[1]
    listed = [selector_text(p["name"], p["flags"]) for p in json.loads(answers[1][0])["packages"]]
    assert_same_packages(unpacked(golden("bin_b64")), listed)


def test_glib_brings_its_fix_up_only_in_a_realm(tree: RecipeTree, tmp_path: Path) -> None:
    """stal/IX's lib/glib/ix adds lib/glib/ix/fix (hooks that compile the realm's GSettings
    schemas) when `target_realm` is set; the realm's node then runs them with bld/glib."""
    from ixd.model.layout import Layout
    from ixd.recipes.fixup import fixer_selectors
    from ixd.recipes.plan import realm_plan

    settings = golden("bin_curl")["settings"]
    layout = Layout(tmp_path / "root")
    graph = PackageGraph(tree, layout.store, host="linux-x86_64", settings=settings,
                         max_packages=1_000_000)
    bare = graph.load(parse_selector("lib/glib/ix"))
    assert "lib/glib/ix/fix" not in [p.name for p in bare.run_closure]
    glib = graph.load(parse_selector("lib/glib/ix(target_realm=work)"))
    assert glib.uid == bare.uid  # the same build: the flag changes only its run closure
    assert [p.name for p in glib.run_closure][-2:] == ["lib/glib/ix/fix", "lib/glib/ix"]
    assert [str(s) for s in fixer_selectors([glib])] == ["bld/glib"]
    fixers = graph.load_tools(fixer_selectors([glib]))
    plan = realm_plan("work", [glib], {"realm": "work"}, layout, fixers)
    realm = plan.nodes[-1]
    # the realm's node runs the hooks it finds, with bld/glib built before and on PATH
    tools = [p for p in fixers[0].run_closure if p.out_dir]
    assert all(p.uid in realm.deps for p in tools)
    assert realm.meta["fix_tools"] == [p.out_dir for p in reversed(tools)]
    assert realm.env["PATH"] == ":".join([*(f"{d}/bin" for d in realm.meta["fix_tools"]),
                                          "/usr/bin", "/bin"])
    assert glib.out_dir in realm.inputs
    assert not set(realm.meta["fix_tools"]) & set(realm.inputs)
    assert realm.meta["fixers"] == ["bld/glib"]
    without = realm_plan("work", [bare], {"realm": "work"}, layout)
    assert "fix_tools" not in without.nodes[-1].meta
    assert without.nodes[-1].env["PATH"] == "/usr/bin:/bin"
