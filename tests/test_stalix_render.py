"""The parts of the recipe language stal/IX's tree needs (issue 11), one by one, on small
overlays: filters, platforms, the render context, kinds, recipe-written flags, mount.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ixd.model import platforms
from ixd.model.selector import parse_selector
from ixd.recipes.filters import FILTERS
from ixd.recipes.package import pkg_name, uniq_id
from ixd.recipes.packages import PackageGraph
from ixd.recipes.tree import RecipeTree
from ixd.wire.errors import BadFlag, BadName, RecipeError, RecipeNotFound

HOST = "linux-x86_64"


def recipe(root: Path, name: str, data: str, **more: object) -> Path:
    """A buildable recipe whose script is `data` (a Jinja template); its file."""
    path = root / name / "ix.sh"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"bld": {"script": {"exec": ["/bin/sh", "-s"], "data": "@DATA@"}, **more}}
    path.write_text(json.dumps(body).replace('"@DATA@"', "{{ (" + data + ") | jd }}"))
    return path


def graph(root: Path, tmp_path: Path, **settings: str) -> PackageGraph:
    return PackageGraph(RecipeTree([root]), tmp_path / "store", host=HOST, settings=settings)


def script(g: PackageGraph, selector: str) -> str:
    return g.load(parse_selector(selector)).descriptor.script_data


# --- filters ---------------------------------------------------------------------------


def test_filters_read_versions_as_stalix_does() -> None:
    # lib/sqlite/3/t: 3.45.1 → 3450100
    version = "3.45.1"
    major = FILTERS["field"](version, 0)
    minor = FILTERS["pad"](FILTERS["field"](version, 1), 3)
    assert (major, minor) == ("3", "450")
    assert FILTERS["add"]("45", 1) == 46 and FILTERS["add"](2, "3") == 5
    assert FILTERS["fjoin"](["a", "b"], ";") == "a;b"
    assert FILTERS["jd"]({"b": 1, "a": 2}) == '{"b": 1, "a": 2}'  # order kept
    assert FILTERS["parse_urls"]("https://x/a.tgz\nsha:" + "a" * 64 + "\n# note\n") == [
        {"url": "https://x/a.tgz", "md5": "a" * 64}]
    assert FILTERS["fix_list"]("  a   b\n\n# c\n d ") == "a b d"
    assert FILTERS["lines"]("\n a\n\nb \n") == ["a", "", "b"]


def test_defined_names_what_is_missing(tmp_path: Path) -> None:
    recipe(tmp_path / "o", "bin/user", "user | defined('user')")
    with pytest.raises(RecipeError, match="user undefined: set it as a flag"):
        script(graph(tmp_path / "o", tmp_path), "bin/user")
    assert script(graph(tmp_path / "o", tmp_path), "bin/user(user=alice)") == "alice"


# --- platforms -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fields"), [
    ("linux-x86_64", {"gnu": {"three": "x86_64-unknown-linux", "four": "x86_64-unknown-linux-elf"},
                      "rust": "x86_64-unknown-linux-musl", "llvm_target": "X86",
                      "cmake_system_name": "Linux", "linux_arch": "x86_64", "endian": "little",
                      "obj_fmt": "elf", "vendor": "unknown", "clang_os": "linux",
                      "dl_suffix": "so", "bits": 64, "ptrlen": 8}),
    ("linux-aarch64", {"linux_arch": "arm64", "go_arch": "arm64", "llvm_target": "AArch64"}),
    ("linux-riscv64", {"linux_arch": "riscv", "llvm_target": "RISCV", "family": "riscv"}),
    ("mingw-w64-x86_64", {"os": "mingw32", "exe_suffix": ".exe", "vendor": "w64",
                          "rust": "x86_64-pc-windows-gnullvm",
                          "cmake_system_name": "Windows"}),
    ("freebsd-x86_64", {"os": "freebsd", "rust": "x86_64-unknown-freebsd"}),
    ("darwin-arm64", {"arch": "arm64", "gnu_arch": "aarch64", "symbol_prefix": "_",
                      "clang_os": "darwin11", "dl_suffix": "dylib"}),
    ("wasi-wasm32", {"bits": 32, "obj_fmt": "wasm", "family": "wasm"}),
])
def test_platform_descriptions_carry_stalix_fields(name: str, fields: dict[str, object]) -> None:
    described = platforms.describe(name)
    assert {k: described[k] for k in fields} == fields
    assert len(described["id"]) == 22 and described["name"] == name


def test_platform_names_and_aliases() -> None:
    assert platforms.resolve("mingw64", HOST) == "mingw-w64-x86_64"
    assert platforms.resolve("host", HOST) == HOST
    assert platforms.describe("linux-x86_64")["id"] != platforms.describe("linux-aarch64")["id"]
    with pytest.raises(BadFlag, match="unknown target platform 'plan9-x86_64'"):
        platforms.resolve("plan9-x86_64", HOST)


# --- the render context ----------------------------------------------------------------


def test_settings_have_stalix_defaults_and_ixd_set_overrides(tmp_path: Path) -> None:
    root = tmp_path / "o"
    recipe(root, "bin/cc", "default_clang + ' ' + default_allocator + ' ' + ix_dir")
    assert script(graph(root, tmp_path), "bin/cc") == f"21 gperftools {tmp_path}"
    assert script(graph(root, tmp_path, default_clang="18"), "bin/cc").startswith("18 ")
    # a package's flag wins over the setting, as in stal/IX
    assert script(graph(root, tmp_path), "bin/cc(default_clang=19)").startswith("19 ")


def test_boot_tools_are_found_on_the_boot_path(tmp_path: Path) -> None:
    tools = tmp_path / "boot"
    tools.mkdir()
    (tools / "clang-cpp").write_text("#!/bin/sh\n")
    (tools / "clang-cpp").chmod(0o755)
    root = tmp_path / "o"
    recipe(root, "bld/boot/cc", "(ix_boot_tool('clang-cpp') or 'none') + ' ' + "
                                "(ix_boot_tool('no-such-tool') or 'none')")
    g = graph(root, tmp_path, ix_boot_path=str(tools))
    assert script(g, "bld/boot/cc") == f"{tools}/clang-cpp none"


def test_names_kinds_and_ids_follow_stalix(tmp_path: Path) -> None:
    root = tmp_path / "o"
    recipe(root, "lib/gperftools/17", "uniq_id + ' ' + basename + ' ' + name + ' ' + kind")
    recipe(root, "pip/pygments", "kind + ' ' + uniq_id + (' pip' if pip else '')")
    g = graph(root, tmp_path)
    assert script(g, "lib/gperftools/17") == "lib_gperftools_17 17 lib/gperftools/17/ix.sh lib"
    assert script(g, "pip/pygments") == "pip pip_pygments pip"
    assert script(g, "pip/pygments/ix.sh") == "pip pip_pygments pip"
    assert pkg_name("bin/c++/x", "bin") == "bin-c-plus-plus-x"
    assert uniq_id("bld/busybox/ix", "bin") == "bin_busybox_ix"
    assert g.load(parse_selector("lib/gperftools/17")).out_dir.endswith("-lib-gperftools-17")


def test_boot_packages_pass_boot_to_their_libraries(tmp_path: Path) -> None:
    root = tmp_path / "o"
    recipe(root, "bld/boot/2/sh", "'boot' if boot else 'no'",
           target_libs=["lib/boot/c"])
    recipe(root, "lib/boot/c", "('boot' if boot else 'no') + ' ' + (setx or '')")
    recipe(root, "bin/x", "'x'", target_libs=["lib/boot/c"], deps=["bld/boot/2/sh"])
    g = graph(root, tmp_path)
    sh = g.load(parse_selector("bld/boot/2/sh"))
    assert sh.descriptor.script_data == "boot" and sh.flags["boot"] == "1"
    assert [p.descriptor.script_data for p in sh.target_libs] == ["boot 1"]
    x = g.load(parse_selector("bin/x"))
    assert [p.descriptor.script_data for p in x.target_libs] == ["no "]
    assert [t.name for t in x.tools] == ["bld/boot/2/sh"] and "boot" not in x.flags


def test_intro_and_isfile(tmp_path: Path) -> None:
    root = tmp_path / "o"
    recipe(root, "bin/dep", "'dep ' + (flavour or '')")
    recipe(root, "bin/svc", "intro('bin/dep').uid + ' ' + "
                            "('yes' if isfile('/bin/sh') else 'no') + ' ' + "
                            "('yes' if isfile('/nonexistent') else 'no')")
    g = graph(root, tmp_path)
    svc = g.load(parse_selector("bin/svc(flavour=mild)"))
    dep = g.load(parse_selector("bin/dep(flavour=mild)"))
    assert svc.descriptor.script_data == f"{dep.uid} yes no"
    assert dep.key in svc.deps  # a change to bin/dep re-renders bin/svc


def test_ix_error_refuses_with_the_recipes_words(tmp_path: Path) -> None:
    recipe(tmp_path / "o", "bin/no", "ix.error('clang-cpp not in path')")
    with pytest.raises(RecipeError, match="refuses to render: clang-cpp not in path"):
        script(graph(tmp_path / "o", tmp_path), "bin/no")


def test_any_first_component_is_a_kind_and_induced_deps_reach_host_libs(
        tmp_path: Path) -> None:
    root = tmp_path / "o"
    recipe(root, "lib/ind", "'ind'")
    (root / "bld" / "env").mkdir(parents=True)
    (root / "bld" / "env" / "ix.sh").write_text(json.dumps({"ind": {"deps": ["lib/ind"]}}))
    recipe(root, "bld/tool", "'tool'", **{})
    (root / "bld" / "tool" / "ix.sh").write_text(json.dumps(
        {"bld": {"script": {"exec": ["/bin/sh", "-s"], "data": "tool"}},
         "run": {"deps": ["bld/env"]}}))
    recipe(root, "bin/app", "'app'", deps=["bld/tool"])
    app = graph(root, tmp_path).load(parse_selector("bin/app"))
    # lib/ind is induced by bld/env, which is in bld/tool's run closure, not a direct tool
    assert [p.name for p in app.target_libs] == ["lib/ind"]
    assert [p.name for p in app.host_libs] == ["lib/ind"]
    assert app.node is not None and "lib-ind" in app.node.env["IX_H_DIR"]


# --- flags written by recipes ----------------------------------------------------------


def test_recipes_may_write_flags_clients_may_not(tmp_path: Path) -> None:
    root = tmp_path / "o"
    recipe(root, "bin/svc", "srv_command")
    recipe(root, "bin/wrap", "'wrap'", deps=["bin/svc(srv_command=exec irqbalance -f;x)"])
    g = graph(root, tmp_path)
    wrap = g.load(parse_selector("bin/wrap"))
    assert [t.descriptor.script_data for t in wrap.tools] == ["exec irqbalance -f;x"]
    with pytest.raises(BadFlag, match="contains ' '"):
        parse_selector("bin/svc(srv_command=exec irqbalance)")
    # a selector made with the recipe charset is still refused at the top (a client's place)
    with pytest.raises(BadFlag, match="contains ';'"):
        g.load(parse_selector("bin/svc(srv_command=a;b)", from_recipe=True))


# --- mount.py, read as data ------------------------------------------------------------


MOUNT = '''
import json
open(MARKER, "w").write("ran")  # never runs in ixd
PYPI = json.loads(parent.serve("pypi.json"))
TMPL = r"""
{"bld": {"fetch": [{"url": "{url}", "md5": "{sha}"}],
         "script": {"exec": ["/bin/sh", "-s"], "data": "wheel {{ kind }}"}},
 "run": {"deps": {{ "{run}".split() | jd }}}}
"""
'''


def test_mount_recipes_are_generated_from_the_index_without_running_mount_py(
        tmp_path: Path) -> None:
    root = tmp_path / "o"
    (root / "pip").mkdir(parents=True)
    marker = tmp_path / "ran"
    (root / "pip" / "mount.py").write_text(MOUNT.replace("MARKER", repr(str(marker))))
    sha = "b" * 64
    (root / "pip" / "pypi.json").write_text(json.dumps({
        "mako/ix.sh": {"url": "https://w/mako.whl", "sha": sha, "run": ["pip/markupsafe"]},
        "markupsafe/ix.sh": {"url": "https://w/ms.whl", "sha": sha},
    }))
    g = graph(root, tmp_path)
    mako = g.load(parse_selector("pip/mako"))
    assert mako.kind == "pip" and mako.descriptor.script_data == "wheel pip"
    assert [f.url for f in mako.descriptor.fetch] == ["https://w/mako.whl"]
    assert [p.name for p in mako.run_closure] == ["pip/markupsafe", "pip/mako"]
    assert not marker.exists()
    with pytest.raises(RecipeNotFound, match="no recipe for package 'pip/nothere'"):
        g.load(parse_selector("pip/nothere"))
    # a mount.py without a TMPL literal serves nothing
    (root / "pip" / "mount.py").write_text("TMPL = compute()\n")
    g.invalidate_files([root / "pip" / "mount.py"])
    with pytest.raises(RecipeNotFound, match="no recipe for package 'pip/mako'"):
        graph(root, tmp_path).load(parse_selector("pip/mako"))


# --- ixd --set -------------------------------------------------------------------------


def test_ixd_set_gives_render_settings(tmp_path: Path) -> None:
    import argparse

    from ixd.daemon.main import build_parser, config_from_args, parse_setting

    assert parse_setting("default_clang=18") == ("default_clang", "18")
    assert parse_setting("ix_boot_path=/a:/b=c") == ("ix_boot_path", "/a:/b=c")
    for bad in ("default_clang", "=18", "1x=2", "a-b=1"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
            parse_setting(bad)
    args = build_parser().parse_args(["--root", str(tmp_path), "--overlay", str(tmp_path),
                                      "--set", "default_clang=18", "--set", "stalix=1"])
    assert config_from_args(args).settings == (("default_clang", "18"), ("stalix", "1"))


def test_recipe_names_with_an_empty_part_are_paths(tmp_path: Path) -> None:
    """`lib/{{ x }}/trim` with x unset is `lib//trim`: stal/IX opens the path lib/trim."""
    root = tmp_path / "o"
    recipe(root, "lib/trim", "'trim'")
    recipe(root, "bin/app", "'app'", target_libs=["lib//trim", "lib/trim/"])
    app = graph(root, tmp_path).load(parse_selector("bin/app"))
    assert [p.name for p in app.target_libs] == ["lib/trim"]
    with pytest.raises(BadName, match="contains '//'"):
        parse_selector("lib//trim")  # a client's name stays exact


# --- target_realm ------------------------------------------------------------------------


def test_realms_share_the_renders_that_never_name_target_realm(tmp_path: Path) -> None:
    root = tmp_path / "o"
    recipe(root, "lib/a", "'a'")
    recipe(root, "bin/x", "'x'", target_libs=["lib/a"])
    recipe(root, "bin/y", "'y in ' + (target_realm or 'no realm')", target_libs=["lib/a"])
    g = graph(root, tmp_path)
    x1 = g.load(parse_selector("bin/x(target_realm=r1)"))
    assert g.renders == 2 and x1.target_libs[0].flags["target_realm"] == "r1"
    x2 = g.load(parse_selector("bin/x(target_realm=r2)"))
    assert g.renders == 2  # another realm: the same renders
    assert x2 is not x1 and x2.uid == x1.uid and x2.display_name == "bin/x"
    assert g.load(parse_selector("bin/x")).uid == x1.uid and g.renders == 2
    # a recipe naming target_realm renders for each realm
    assert script(g, "bin/y(target_realm=r1)") == "y in r1"
    assert script(g, "bin/y(target_realm=r2)") == "y in r2"
    assert script(g, "bin/y") == "y in no realm"
    assert g.renders == 5
    # an edit reaches the shared render
    (root / "lib" / "a" / "ix.sh").write_text((root / "lib" / "a" / "ix.sh").read_text()
                                              .replace("'a'", "'a2'"))
    g.invalidate_files([root / "lib" / "a" / "ix.sh"])
    assert g.load(parse_selector("bin/x(target_realm=r1)")).target_libs[0] \
        .descriptor.script_data == "a2"
    assert g.load(parse_selector("bin/x(target_realm=r2)")).target_libs[0] \
        .descriptor.script_data == "a2"


def test_fix_deps_are_gathered_over_the_realm_in_link_order(tmp_path: Path) -> None:
    from ixd.recipes.fixup import fixer_selectors

    root = tmp_path / "o"
    recipe(root, "aux/f1", "'f1'", **{})
    (root / "aux" / "f1" / "ix.sh").write_text(json.dumps(
        {"bld": {"script": {"exec": ["/bin/sh", "-s"], "data": "f1"}},
         "fix": {"deps": ["bld/t1", "bld/t2(v=1)"]}}))
    (root / "aux" / "f2").mkdir(parents=True)
    (root / "aux" / "f2" / "ix.sh").write_text(json.dumps(
        {"bld": {"script": {"exec": ["/bin/sh", "-s"], "data": "f2"}},
         "fix": {"deps": ["bld/t3", "bld/t1"]}}))
    recipe(root, "bin/a", "'a'", **{})
    (root / "bin" / "a" / "ix.sh").write_text(json.dumps(
        {"bld": {"script": {"exec": ["/bin/sh", "-s"], "data": "a"}},
         "run": {"data": ["aux/f2", "aux/f1"]}}))
    g = graph(root, tmp_path)
    a = g.load(parse_selector("bin/a"))
    assert [str(s) for s in fixer_selectors([a])] == ["bld/t3", "bld/t1", "bld/t2(v=1)"]
    for tool in ("bld/t1", "bld/t2", "bld/t3"):
        recipe(root, tool, "'tool ' + kind + ' ' + target.name + ' ' + (v or '')")
    tools = g.load_tools(fixer_selectors([a]))
    assert [p.descriptor.script_data for p in tools] == [
        f"tool bin {HOST} ", f"tool bin {HOST} ", f"tool bin {HOST} 1"]
