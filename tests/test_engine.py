"""The recipe engine: templates, flags along edges, closures and uids (no daemon, no builds)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from ixd.model.layout import Layout, entry_kind
from ixd.model.nodes import Node
from ixd.model.selector import parse_selector
from ixd.recipes.package import Package, walk_closure
from ixd.recipes.packages import PackageGraph
from ixd.recipes.plan import build_plan, realm_plan
from ixd.recipes.tree import RecipeTree
from ixd.wire.errors import BadName, DependencyCycle, RecipeError, RecipeNotFound

PROJECT_PKGS = Path(__file__).resolve().parent.parent / "pkgs"
HOST = "linux-x86_64"


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def sh_recipe(*, blocks: dict[str, str] | None = None, extends: str = "//die/sh.sh") -> str:
    parts = [f"{{% extends '{extends}' %}}"]
    for block, body in (blocks or {}).items():
        parts.append(f"{{% block {block} %}}\n{textwrap.dedent(body).strip()}\n{{% endblock %}}")
    return "\n".join(parts) + "\n"


@pytest.fixture
def overlay(tmp_path: Path) -> Path:
    """A small tree: bin/app with every kind of edge, a chain of libraries."""
    root = tmp_path / "overlay"
    write(root, "bin/app/ix.sh", sh_recipe(blocks={
        "bld_libs": "lib/a",
        "bld_tool": "{{ super() }}\nbld/tool",
        "host_libs": "lib/h",
        "bld_data": "aux/data",
        "run_deps": "bin/helper",
        "install": "echo app {{ opt }} > $out/app",
    }))
    write(root, "lib/a/ix.sh", sh_recipe(blocks={"lib_deps": "lib/b",
                                                  "install": "echo a{{ opt }}"}))
    write(root, "lib/b/ix.sh", sh_recipe(blocks={"lib_deps": "lib/c", "install": "echo b"}))
    write(root, "lib/c/ix.sh", sh_recipe(blocks={"install": "echo c {{ opt }}"}))
    write(root, "lib/h/ix.sh", sh_recipe(blocks={"install": "echo h"}))
    write(root, "bld/tool/ix.sh", sh_recipe(blocks={
        "ind_deps": "lib/induced", "run_deps": "bin/toolhelper", "install": "echo tool"}))
    write(root, "lib/induced/ix.sh", sh_recipe(blocks={"install": "echo induced"}))
    write(root, "bin/toolhelper/ix.sh", sh_recipe(blocks={"install": "echo th"}))
    write(root, "aux/data/ix.sh", sh_recipe(blocks={"install": "echo data"}))
    write(root, "bin/helper/ix.sh", sh_recipe(blocks={"install": "echo helper {{ opt }}"}))
    write(root, "set/both/ix.sh", sh_recipe(extends="//die/hub.sh",
                                            blocks={"run_deps": "bin/helper\nbin/app"}))
    write(root, "bin/other/ix.sh", sh_recipe(blocks={"install": "echo other"}))
    return root


def graph_for(overlay: Path, tmp_path: Path) -> PackageGraph:
    return PackageGraph(RecipeTree([overlay, PROJECT_PKGS]), tmp_path / "store", host=HOST)


def by_name(packages: tuple[Package, ...] | list[Package]) -> dict[str, Package]:
    return {p.name: p for p in packages}


# --- flags along edges --------------------------------------------------------------------


def test_flags_follow_each_kind_of_edge(overlay: Path, tmp_path: Path) -> None:
    graph = graph_for(overlay, tmp_path)
    app = graph.load(parse_selector("bin/app(opt=1,setx=1)"))
    assert app.flags == {"opt": "1", "setx": "1", "target": HOST, "kind": "bin"}

    libs = by_name(app.target_libs)
    # target libraries get all the parent's flags but the one-level ones, kind=lib
    assert libs["lib/a"].flags == {"opt": "1", "target": HOST, "kind": "lib"}
    assert libs["lib/c"].flags == {"opt": "1", "target": HOST, "kind": "lib"}
    # a tool's ind.deps are loaded as target libraries with the package's own flags
    assert libs["lib/induced"].flags == {"opt": "1", "target": HOST, "kind": "lib"}

    tools = by_name(app.tools)
    assert tools["bld/tool"].flags == {"target": HOST, "kind": "bin"}
    assert tools["bin/toolhelper"].flags == {"target": HOST, "kind": "bin"}  # tool's run closure
    assert by_name(app.host_libs)["lib/h"].flags == {"target": HOST, "kind": "lib"}
    assert by_name(app.data)["aux/data"].flags == {"target": HOST, "kind": "aux"}
    # run dependency of a buildable package: only its target, kind=bin
    assert by_name(app.run_closure)["bin/helper"].flags == {"target": HOST, "kind": "bin"}


def test_written_flags_win_and_hubs_pass_their_flags(overlay: Path, tmp_path: Path) -> None:
    write(overlay, "bin/app/ix.sh", sh_recipe(blocks={"bld_libs": "lib/a(opt=2)"}))
    graph = graph_for(overlay, tmp_path)
    app = graph.load(parse_selector("bin/app(opt=1)"))
    assert by_name(app.target_libs)["lib/a"].flags["opt"] == "2"
    assert by_name(app.target_libs)["lib/c"].flags["opt"] == "2"

    hub = graph.load(parse_selector("set/both(opt=7,verbose=1)"))
    helper = by_name(hub.run_closure)["bin/helper"]
    assert helper.flags == {"opt": "7", "target": HOST, "kind": "bin"}


def test_flag_that_renders_nothing_keeps_the_uid(overlay: Path, tmp_path: Path) -> None:
    graph = graph_for(overlay, tmp_path)
    plain = graph.load(parse_selector("bin/other"))
    flagged = graph.load(parse_selector("bin/other(unused=1)"))
    assert plain is not flagged
    assert plain.uid == flagged.uid
    assert graph.load(parse_selector("bin/helper")).uid != graph.load(
        parse_selector("bin/helper(opt=1)")).uid


# --- closures -----------------------------------------------------------------------------


def test_library_closure_is_transitive_and_dependencies_first(overlay: Path,
                                                              tmp_path: Path) -> None:
    """The closure lists users before what they use (stal/IX's order); IX_T_DIR, which the
    build reads, is the reverse: dependencies first."""
    app = graph_for(overlay, tmp_path).load(parse_selector("bin/app"))
    names = [p.name for p in app.target_libs]
    assert set(names) == {"lib/a", "lib/b", "lib/c", "lib/induced"}
    assert names.index("lib/c") > names.index("lib/b") > names.index("lib/a")
    t_dirs = app.node.env["IX_T_DIR"].split(":") if app.node else []
    assert [d.rsplit("-lib-", 1)[1] for d in t_dirs] == [n.split("/")[1]
                                                         for n in reversed(names)]
    # what a library drags along is part of its users' build inputs and uid
    assert {p.uid for p in app.target_libs} <= set(app.node.deps if app.node else ())


def test_library_run_closure_carries_its_lib_deps(overlay: Path, tmp_path: Path) -> None:
    lib = graph_for(overlay, tmp_path).load(parse_selector("lib/a"))
    assert [p.name for p in lib.lib_closure] == ["lib/b", "lib/c"]  # users first
    assert [p.name for p in lib.run_closure] == ["lib/c", "lib/b", "lib/a"]


def test_walk_visits_each_uid_once_in_stable_order(overlay: Path, tmp_path: Path) -> None:
    graph = graph_for(overlay, tmp_path)
    targets = graph.load_all([parse_selector("set/both"), parse_selector("bin/app")])
    first = [p.uid for p in walk_closure(targets)]
    assert len(first) == len(set(first))
    again = [p.uid for p in walk_closure(graph_for(overlay, tmp_path).load_all(
        [parse_selector("set/both"), parse_selector("bin/app")]))]
    assert first == again
    position = {uid: i for i, uid in enumerate(first)}
    for package in walk_closure(targets):
        for dep in package.build_inputs():
            assert position[dep.uid] < position[package.uid]


def test_cycle_is_reported_with_its_chain(tmp_path: Path) -> None:
    root = tmp_path / "o"
    write(root, "lib/x/ix.sh", sh_recipe(blocks={"lib_deps": "lib/y"}))
    write(root, "lib/y/ix.sh", sh_recipe(blocks={"lib_deps": "lib/x"}))
    with pytest.raises(DependencyCycle, match=r"lib/x.*lib/x/ix\.sh.*lib/y/ix\.sh.*lib/x"):
        graph_for(root, tmp_path).load(parse_selector("lib/x"))


# --- templates ----------------------------------------------------------------------------


def test_include_lines_and_base64(tmp_path: Path) -> None:
    root = tmp_path / "o"
    write(root, "bin/inc/frag.sh", "echo from-the-fragment\n")
    (root / "bin/inc/blob.bin").write_bytes(b"\x00\x01binary\xff")
    write(root, "bin/inc/ix.sh", """
        {% extends '//die/sh.sh' %}
        {% block install %}
        {% include 'frag.sh' %}
        echo {% raw %}{{x}}{% endraw %}
        B64=$(cat <<'EOF'
        {% include 'blob.bin/base64' %}
        EOF
        )
        {% endblock %}
        """)
    package = graph_for(root, tmp_path).load(parse_selector("bin/inc"))
    script = package.descriptor.script_data
    assert "echo from-the-fragment" in script
    assert "AAFiaW5hcnn/" in script  # base64 of the blob
    assert (root / "bin/inc/frag.sh").resolve() in package.files
    assert (root / "bin/inc/blob.bin").resolve() in package.files


def test_relative_and_root_template_paths(tmp_path: Path) -> None:
    root = tmp_path / "o"
    write(root, "bin/rel/common.sh", """
        {% extends '//die/sh.sh' %}
        {% block install %}echo common-{{ self.word() }}{% endblock %}
        """)
    write(root, "bin/rel/ix.sh", """
        {% extends 'common.sh' %}
        {% block word %}relative{% endblock %}
        """)
    package = graph_for(root, tmp_path).load(parse_selector("bin/rel"))
    assert "echo common-relative" in package.descriptor.script_data


def test_file_named_directly_by_sh_suffix(tmp_path: Path) -> None:
    root = tmp_path / "o"
    write(root, "bin/multi/t.sh", sh_recipe(blocks={"install": "echo direct"}))
    package = graph_for(root, tmp_path).load(parse_selector("bin/multi/t.sh"))
    assert "echo direct" in package.descriptor.script_data
    assert package.out_dir is not None and package.out_dir.endswith("-bin-multi-t")


def test_first_overlay_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write(first, "bin/dup/ix.sh", sh_recipe(blocks={"install": "echo first"}))
    write(second, "bin/dup/ix.sh", sh_recipe(blocks={"install": "echo second"}))
    graph = PackageGraph(RecipeTree([first, second, PROJECT_PKGS]), tmp_path / "s", host=HOST)
    assert "echo first" in graph.load(parse_selector("bin/dup")).descriptor.script_data


@pytest.mark.parametrize("name", ["../etc", "bin/../../etc", "/etc/passwd", "bin/x;rm",
                                  "bin/a b", "bin/x$(id)", "bin//x", ""])
def test_bad_names_are_refused_before_any_file_is_opened(tmp_path: Path, name: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    graph = graph_for(tmp_path / "empty", tmp_path)
    opened: list[str] = []
    monkeypatch.setattr(graph.tree.loader, "find", lambda n: opened.append(n))
    with pytest.raises(BadName):
        graph.load(parse_selector(name))
    assert opened == []


def test_render_errors_name_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "o"
    bad = write(root, "bin/bad/ix.sh", "{% extends '//die/sh.sh' %}\n{% block install %}\n"
                                       "{% if %}\n{% endblock %}\n")
    with pytest.raises(RecipeError, match=rf"{bad}:3"):
        graph_for(root, tmp_path).load(parse_selector("bin/bad"))

    undefined = write(root, "bin/undef/ix.sh", "{% extends '//die/sh.sh' %}\n"
                                               "{% block install %}\n"
                                               "echo {{ nothere | defined }}\n{% endblock %}\n")
    with pytest.raises(RecipeError, match=rf"{undefined}:3.*nothere"):
        graph_for(root, tmp_path).load(parse_selector("bin/undef"))

    write(root, "bin/missing/ix.sh", "{% extends '//die/nope.sh' %}\n")
    with pytest.raises(RecipeError, match=r"die/nope\.sh"):
        graph_for(root, tmp_path).load(parse_selector("bin/missing"))

    with pytest.raises(RecipeNotFound, match="bin/absent"):
        graph_for(root, tmp_path).load(parse_selector("bin/absent"))


# --- uids ---------------------------------------------------------------------------------


_UID_SCRIPT = """
import json, sys
from pathlib import Path
from ixd.recipes.packages import PackageGraph
from ixd.recipes.tree import RecipeTree
from ixd.model.selector import parse_selector
graph = PackageGraph(RecipeTree([Path(sys.argv[1]), Path(sys.argv[2])]), Path(sys.argv[3]))
print(json.dumps([graph.load(parse_selector(s)).uid for s in sys.argv[4:]]))
"""


def test_uids_are_identical_across_processes(overlay: Path, tmp_path: Path) -> None:
    selectors = ["bin/app(opt=1)", "set/both", "lib/a"]
    graph = PackageGraph(RecipeTree([overlay, PROJECT_PKGS]), tmp_path / "store")
    here = [graph.load(parse_selector(s)).uid for s in selectors]
    # nothing of ours but the code under test
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", _UID_SCRIPT, str(overlay), str(PROJECT_PKGS),
         str(tmp_path / "store"), *selectors],
        check=True, capture_output=True, text=True, env=env, cwd="/",
    )
    assert json.loads(out.stdout) == here


def test_one_recipe_change_changes_exactly_its_dependents(overlay: Path,
                                                          tmp_path: Path) -> None:
    selectors = [parse_selector(s) for s in ("bin/app", "set/both", "bin/other", "lib/h")]
    before = {p.key: p.uid for p in walk_closure(graph_for(overlay, tmp_path).load_all(selectors))}
    write(overlay, "lib/c/ix.sh", sh_recipe(blocks={"install": "echo c changed"}))
    after = {p.key: p.uid for p in walk_closure(graph_for(overlay, tmp_path).load_all(selectors))}
    assert before.keys() == after.keys()
    changed = {key[0] for key in before if before[key] != after[key]}
    # lib/c, what links it (app, through a's and b's lib_deps) and the hub holding app;
    # lib/a and lib/b only pass lib/c on to their users, their own builds do not read it
    assert changed == {"lib/c", "bin/app", "set/both"}


def test_invalidation_drops_exactly_the_dependents(overlay: Path, tmp_path: Path) -> None:
    graph = graph_for(overlay, tmp_path)
    app = graph.load(parse_selector("bin/app"))
    other = graph.load(parse_selector("bin/other"))
    path = write(overlay, "lib/c/ix.sh", sh_recipe(blocks={"install": "echo c edited"}))
    dropped = graph.invalidate_files([path.resolve()])
    assert dropped >= 4
    assert graph.load(parse_selector("bin/other")) is other  # untouched, still cached
    assert graph.load(parse_selector("bin/app")).uid != app.uid


def test_a_render_serves_every_flag_set_whose_values_read_are_the_same(
        overlay: Path, tmp_path: Path) -> None:
    """A render is a function of its files and of the context names it looked up: another
    flag set of the package that gives those names the same values takes it, unrendered;
    one that changes a name it read (or a file it read) is rendered."""
    graph = graph_for(overlay, tmp_path)
    first = graph.load(parse_selector("bin/app(unread=1)"))
    renders = graph.renders
    second = graph.load(parse_selector("bin/app(unread=2)"))
    # bin/app and its target libraries (which get every flag) take the renders they had
    assert graph.renders == renders and graph.shared_renders >= 4
    assert second.uid == first.uid and second.node is not None and first.node is not None
    assert second.node.stdin == first.node.stdin
    third = graph.load(parse_selector("bin/app(opt=x)"))  # app and lib/a, lib/c read `opt`
    assert graph.renders > renders and third.uid != first.uid
    assert "echo app x" in (third.node.stdin if third.node else "")
    # a file a shared render read changed: it serves no other flag set any more
    path = write(overlay, "lib/b/ix.sh", sh_recipe(blocks={"lib_deps": "lib/c",
                                                            "install": "echo b edited"}))
    graph.invalidate_files([path.resolve()])
    renders = graph.renders
    fourth = graph.load(parse_selector("bin/app(unread=3)"))
    assert graph.renders == renders + 1  # lib/b alone: the others read other files
    assert fourth.uid != first.uid


def test_plan_is_plain_data_with_dependencies_first(overlay: Path, tmp_path: Path) -> None:
    graph = graph_for(overlay, tmp_path)
    packages = graph.load_all([parse_selector("set/both")])
    plan = build_plan(packages, Layout(tmp_path))
    data = json.loads(json.dumps(plan.to_json()))
    seen: set[str] = set()
    for node in data["nodes"]:
        assert set(node["deps"]) <= seen, node["name"]
        seen.add(node["uid"])
        assert {"uid", "inputs", "outputs", "command"} <= node.keys()
        assert "pool" not in node
    assert set(data["targets"]) <= seen
    assert {p.uid for p in packages[0].run_closure if p.buildable} == set(data["targets"])


def test_nodes_carry_the_kind_of_the_entry_they_make(overlay: Path, tmp_path: Path) -> None:
    """The store's table records each entry's kind from its node, never from its path; the
    path is spelled by the layout alone."""
    layout = Layout(tmp_path)
    graph = graph_for(overlay, tmp_path)
    packages = graph.load_all([parse_selector("set/both")])
    plan = realm_plan("alice", packages, {}, layout)
    kinds = {n.entry_kind for n in plan.nodes if n.kind == "build"}
    assert kinds and kinds <= {"bin", "lib", "aux"}
    realm = plan.nodes[-1]
    assert realm.kind == "realm" and realm.entry_kind == "rlm"
    assert Path(realm.outputs[0]) == layout.store_dir(realm.uid, "rlm", "alice")
    for node in plan.nodes:
        if node.kind != "fetch":
            assert entry_kind(node.outputs[0]) == node.entry_kind
            assert Node.from_json(node.to_json()) == node


def test_streamed_plan_batches_keep_every_node_in_order_and_stay_small(
        overlay: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ixd.recipes import plan as planning

    graph = graph_for(overlay, tmp_path)
    plan = build_plan(graph.load_all([parse_selector("set/both")]), Layout(tmp_path))
    assert len(plan.nodes) >= 3
    monkeypatch.setattr(planning, "BATCH_NODES", 2)
    batches = list(planning.node_batches(plan))
    assert [n["uid"] for b in batches for n in b] == [n.uid for n in plan.nodes]
    assert all(1 <= len(b) <= 2 for b in batches) and len(batches) >= 2
    summary = planning.plan_summary(plan)
    assert summary["nodes"] == len(plan.nodes) and summary["targets"] == list(plan.targets)
    assert sum(summary["by_kind"].values()) == len(plan.nodes)


def test_the_plan_as_text_is_the_plans_json_in_pieces(overlay: Path, tmp_path: Path) -> None:
    """`ixc plan`'s text: `Plan.to_json` exactly, a node a line, in pieces of about the size
    asked for; a node's JSON is what `asdict` would give (every field, nothing more)."""
    import dataclasses

    from ixd.recipes import plan as planning

    graph = graph_for(overlay, tmp_path)
    plan = build_plan(graph.load_all([parse_selector("set/both")]), Layout(tmp_path))
    pieces = list(planning.plan_text(plan, chunk_bytes=1))
    assert len(pieces) == len(plan.nodes) + 1
    text = b"".join(pieces).decode()
    assert json.loads(text) == json.loads(json.dumps(plan.to_json()))
    assert len(text.splitlines()) == len(plan.nodes) + 2
    assert b"".join(planning.plan_text(plan)) == text.encode()
    for node in plan.nodes:
        assert node.to_json() == dataclasses.asdict(node)
    # what the daemon sends: the pieces, each compressed on its own
    sent = planning.compressed_plan_text(plan)
    assert b"".join(zlib.decompress(p) for p in sent.pieces) == text.encode()
    assert (sent.size, sent.nodes, sent.targets) == (len(text.encode()), len(plan.nodes),
                                                     plan.targets)


def test_a_dependents_render_is_reused_after_a_dependency_changes(overlay: Path,
                                                                  tmp_path: Path) -> None:
    """Editing a library re-renders that library only: its users get new closures and uids
    from their kept renders (issue 13: re-plan after one deep edit)."""
    graph = graph_for(overlay, tmp_path)
    app = graph.load(parse_selector("bin/app"))
    renders = graph.renders
    lib_c = overlay / "lib" / "c" / "ix.sh"
    lib_c.write_text(lib_c.read_text().replace("echo c", "echo c2"))
    dropped = graph.invalidate_files([lib_c])
    again = graph.load(parse_selector("bin/app"))
    assert dropped >= 3 and graph.renders == renders + 1
    assert again.uid != app.uid and again.descriptor == app.descriptor
