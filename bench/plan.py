"""Benchmark: render + plan a 200-package realm over a generated 2,000-recipe overlay.

    python -m bench.plan [--packages 2000] [--realm 200] [--seed 1] [--keep]

Generates, in a temporary folder, an IX-shaped overlay: the project's `die/` templates plus a
chain `die/gen/l1.sh` … `l5.sh` (each extending the one before, on top of `//die/c/ix.sh`), and
`--packages` recipes in a layered DAG of 12 layers (a package depends only on lower layers
and always on the layer just below it, so the dependency depth is at least 11), 3 to 8
dependencies each over the bld_libs, lib_deps, run_deps and bld_tool edges, flags on some edges
(`lib/gen/l03/p0042(opt=1)`), `{% include %}` lines in some recipes, and a few hubs.
Deterministic for a seed. Nothing is built: plans only.

Then it measures:
  (a) a cold render + plan in a fresh process (`--cold-child`): the process's own timings,
      the packages loaded and renders done, and the whole process's wall time including
      interpreter start; plus, in that process, a re-plan with nothing changed and one
      after `invalidate_files` of the recipe the next step edits;
  (b) a real `ixd` (started on the generated overlay and the project's `pkgs/`) answering
      the `plan` op through the real client transport: cold, warm, and, if the daemon
      watches its overlays, warm after one recipe deep in the graph was edited;
  (c) peak memory: ru_maxrss of the cold child, VmHWM of the daemon.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.daemon_harness import RunningDaemon

_STARTED = time.perf_counter()

PROJECT = Path(__file__).resolve().parent.parent
PKGS = PROJECT / "pkgs"
LAYERS = 12
#: re-plans after the edit the in-process child times (their median is reported)
REPLANS = 5
PICKUP_DEADLINE = 30.0

# --- the generated overlay -----------------------------------------------------------------

CHAIN = {
    "l1": """\
{#- bench chain, level 1: a C build with a few extra flags -#}
{% extends '//die/c/ix.sh' %}
{% block c_flags %}
{{ super() }}
-fno-common
{% endblock %}
{% block configure %}
{{ super() }}
echo "configuring {{ name }}"
{% endblock %}
""",
    "l2": """\
{#- bench chain, level 2: defines, one depending on the flag `opt` -#}
{% extends '//die/gen/l1.sh' %}
{% block cpp_defines %}
{{ super() }}
GEN_LEVEL=2
{% if opt %}
GEN_OPT={{ opt }}
{% endif %}
{% endblock %}
{% block patch %}
{{ super() }}
: no patches for {{ basename }}
{% endblock %}
""",
    "l3": """\
{#- bench chain, level 3: a build step -#}
{% extends '//die/gen/l2.sh' %}
{% block build %}
{{ super() }}
: level 3 build of {{ basename }}
{% endblock %}
""",
    "l4": """\
{#- bench chain, level 4: install docs; `dbg` adds -g -#}
{% extends '//die/gen/l3.sh' %}
{% block install %}
{{ super() }}
mkdir -p "$out/share/doc/{{ basename }}"
{% endblock %}
{% block ld_flags %}
{{ super() }}
{% if dbg %}
-g
{% endif %}
{% endblock %}
""",
    "l5": """\
{#- bench chain, level 5: a test step and an env line -#}
{% extends '//die/gen/l4.sh' %}
{% block test %}
{{ super() }}
{% if not tool %}
: tests of {{ name }} pass
{% endif %}
{% endblock %}
{% block env %}
{{ super() }}
export GEN_{{ basename | upper }}=1
{% endblock %}
""",
}

COMMON_INCLUDE = """\
# shared helper, included by some recipes
: common step one
: common step two
"""


@dataclass
class Spec:
    name: str
    layer: int
    index: int
    base: str
    edges: dict[str, list[str]] = field(default_factory=dict)
    helper: bool = False
    common: bool = False


@dataclass
class Overlay:
    root: Path
    specs: dict[str, Spec]
    realm: list[str]
    edit: Spec
    stats: dict[str, int]


def _kind(name: str) -> str:
    return name.split("/", 1)[0]


def generate(root: Path, packages: int, realm_size: int, seed: int) -> Overlay:
    rng = random.Random(seed)
    shutil.copytree(PKGS / "die", root / "die")
    (root / "die" / "gen").mkdir()
    for level, text in CHAIN.items():
        (root / "die" / "gen" / f"{level}.sh").write_text(text)
    (root / "die" / "gen" / "common.inc").write_text(COMMON_INCLUDE)

    hubs = max(1, packages // 100)
    per_layer = (packages - hubs) / LAYERS
    by_layer: list[dict[str, list[str]]] = []
    specs: dict[str, Spec] = {}
    index = 0
    for layer in range(LAYERS):
        names: dict[str, list[str]] = {"lib": [], "bin": [], "bld": []}
        count = round(per_layer * (layer + 1)) - round(per_layer * layer)
        for _ in range(count):
            roll = rng.random()
            kind = "lib" if roll < 0.5 else "bin" if roll < 0.85 else "bld"
            stem = "t" if kind == "bld" else "p"
            name = f"{kind}/gen/l{layer:02}/{stem}{index:04}"
            names[kind].append(name)
            base = rng.choice(["l5", "l5", "l5", "l4", "l3"])
            specs[name] = Spec(name, layer, index, base, helper=rng.random() < 0.12,
                               common=rng.random() < 0.15)
            index += 1
        by_layer.append(names)

    stats = {"bld_libs": 0, "lib_deps": 0, "run_deps": 0, "bld_tool": 0, "flagged": 0}
    for spec in specs.values():
        if spec.layer == 0:
            continue
        below = [n for k in ("lib", "bin", "bld") for n in by_layer[spec.layer - 1][k]]
        wanted = rng.randint(3, 8)
        chosen = [rng.choice(below)]  # the layer just below: the depth is the layer count
        tries = 0
        while len(chosen) < wanted and tries < 100:
            tries += 1
            layer = rng.randrange(spec.layer)
            edge = rng.choices(["lib", "bin", "bld"], weights=[60, 25, 15])[0]
            pool = by_layer[layer][edge]
            if pool:
                dep = rng.choice(pool)
                if dep not in chosen:
                    chosen.append(dep)
        for dep in chosen:
            kind = _kind(dep)
            if kind == "bin":
                edge_name = "run_deps"
            elif kind == "bld":
                edge_name = "bld_tool"
            elif _kind(spec.name) == "lib" and rng.random() < 0.35:
                edge_name = "lib_deps"
            else:
                edge_name = "bld_libs"
            selector = dep
            if kind == "lib":
                roll = rng.random()
                if roll < 0.08:
                    selector = f"{dep}(opt=1)"
                elif roll < 0.10:
                    selector = f"{dep}(dbg=1)"
            if selector != dep:
                stats["flagged"] += 1
            stats[edge_name] += 1
            spec.edges.setdefault(edge_name, []).append(selector)

    top = [n for layer in by_layer[-3:] for k in ("lib", "bin") for n in layer[k]]
    hub_names = []
    for h in range(hubs):
        name = f"set/gen/s{h:03}"
        members = rng.sample([n for n in top if n.startswith("bin/")], 5)
        specs[name] = Spec(name, LAYERS, index + h, "hub", {"run_deps": members})
        hub_names.append(name)
    for spec in specs.values():
        write_recipe(root, spec)
    realm_pool = sorted(top)
    realm = hub_names[: max(1, realm_size // 50)]
    for name in rng.sample(realm_pool, min(realm_size - len(realm), len(realm_pool))):
        realm.append(f"{name}(opt=1)" if rng.random() < 0.1 else name)

    # the recipe to edit: a library of layer 1 that most packages name directly
    in_degree: dict[str, int] = {}
    for spec in specs.values():
        for selectors in spec.edges.values():
            for s in selectors:
                dep = s.split("(", 1)[0]
                in_degree[dep] = in_degree.get(dep, 0) + 1
    layer1 = by_layer[1]["lib"] or [n for k in by_layer[1].values() for n in k]
    edit = specs[max(layer1, key=lambda n: (in_degree.get(n, 0), n))]
    stats["recipes"] = len(specs)
    stats["includes"] = sum(s.helper + s.common for s in specs.values())
    stats["hubs"] = hubs
    return Overlay(root, specs, realm, edit, stats)


def write_recipe(root: Path, spec: Spec) -> None:
    folder = root / spec.name
    folder.mkdir(parents=True)
    stem = spec.name.rsplit("/", 1)[1]
    if spec.base == "hub":
        lines = [f"{{#- bench hub {spec.name} -#}}", "{% extends '//die/hub.sh' %}",
                 "{% block run_deps %}", *spec.edges["run_deps"], "{% endblock %}"]
        (folder / "ix.sh").write_text("\n".join(lines) + "\n")
        return
    lines = [f"{{#- bench recipe {spec.name}, layer {spec.layer} -#}}",
             f"{{% extends '//die/gen/{spec.base}.sh' %}}",
             f"{{% block version %}}{spec.layer}.{spec.index}{{% endblock %}}"]
    for block in ("bld_libs", "lib_deps", "run_deps"):
        if spec.edges.get(block):
            lines += [f"{{% block {block} %}}", *spec.edges[block], "{% endblock %}"]
    if spec.edges.get("bld_tool"):
        lines += ["{% block bld_tool %}", "{{ super() }}", *spec.edges["bld_tool"],
                  "{% endblock %}"]
    lines += ["{% block build %}", "{{ super() }}", f"echo {stem} > {stem}.txt"]
    if spec.helper:
        lines.append("{% include 'helper.inc' %}")
        (folder / "helper.inc").write_text(f": helper of {spec.name}\n")
    if spec.common:
        lines.append("{% include '//die/gen/common.inc' %}")
    lines += ["{% endblock %}", "{% block install %}", "{{ super() }}",
              'mkdir -p "$out/share/gen"', f'cp {stem}.txt "$out/share/gen/"',
              "{% endblock %}"]
    if _kind(spec.name) == "lib":
        lines += ["{% block libs %}", f"-l{stem}", "{% endblock %}"]
    (folder / "ix.sh").write_text("\n".join(lines) + "\n")


def edit_recipe(overlay: Overlay, generation: int) -> Path:
    """Change what the edited recipe renders (its build step), as an editor would."""
    path = overlay.root / overlay.edit.name / "ix.sh"
    stem = overlay.edit.name.rsplit("/", 1)[1]
    text = path.read_text()
    marker = f"echo {stem} > {stem}.txt"
    text = text.replace(marker, f"{marker}\n: edited {generation}", 1)
    path.write_text(text)
    return path


# --- (a) the cold child ----------------------------------------------------------------------


def cold_child(args: argparse.Namespace) -> None:
    """Runs in a fresh interpreter: import, load the realm, plan it; report as JSON."""
    import resource

    imported = time.perf_counter()
    from ixd.model.layout import Layout
    from ixd.model.selector import parse_selector
    from ixd.recipes.package import walk_closure
    from ixd.recipes.packages import GC_THRESHOLDS, PackageGraph
    from ixd.recipes.plan import realm_plan
    from ixd.recipes.tree import RecipeTree

    gc.set_threshold(*GC_THRESHOLDS)  # as ixd sets them
    t0 = time.perf_counter()
    import_s = t0 - imported
    selectors = [parse_selector(s) for s in json.loads(Path(args.realm_file).read_text())]
    layout = Layout(Path(args.root))
    bytecode = Path(args.bytecode) if args.bytecode else None
    # with --bytecode, what a restarted ixd keeps under var/: compiled templates, the host
    # tools' descriptions and the renders
    host_tools = bytecode.with_name("host-tools.json") if bytecode else None
    renders = bytecode.with_name("renders.jsonl") if bytecode else None
    graph = PackageGraph(RecipeTree([Path(o) for o in args.overlay], bytecode_dir=bytecode),
                         layout.store, host_tools_cache=host_tools, render_store=renders)

    def plan() -> tuple[Any, list[Any]]:
        packages = graph.load_all(selectors)
        meta = {"realm": "bench", "packages": [str(p.selector) for p in packages]}
        return realm_plan("bench", packages, meta, layout), packages

    cold_plan, packages = plan()
    cold_s = time.perf_counter() - t0
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    closure = list(walk_closure(packages))
    result: dict[str, Any] = {
        "import_s": import_s,
        "render_plan_s": cold_s,
        "since_script_start_s": time.perf_counter() - _STARTED,
        "loaded": len(graph),
        "renders": graph.renders,
        "closure": len(closure),
        "closure_buildable": sum(1 for p in closure if p.buildable),
        "nodes": len(cold_plan.nodes),
        "maxrss_kib": maxrss_kib,
    }
    if not args.in_process_replans:
        print(json.dumps(result))
        return
    t = time.perf_counter()
    plan()
    result["warm_unchanged_s"] = time.perf_counter() - t
    renders = graph.renders
    edited = Path(args.edit_file).resolve()
    samples = []
    for _ in range(REPLANS):  # the edit seen again each time: the same work, 5 samples
        t = time.perf_counter()
        result["invalidated"] = graph.invalidate_files([edited])
        plan()
        samples.append(time.perf_counter() - t)
    result["warm_after_invalidate_s"] = statistics.median(samples)
    result["warm_after_invalidate_max_s"] = max(samples)
    result["rerenders"] = (graph.renders - renders) // REPLANS
    print(json.dumps(result))


def run_cold_child(tmp: Path, overlay: Overlay, in_process_replans: bool = False,
                   bytecode: Path | None = None) -> tuple[dict[str, Any], float]:
    """Run the child; its wall time covers interpreter start to exit. With
    `in_process_replans` it also times re-plans before exiting (its wall time then means
    nothing)."""
    realm_file = tmp / "realm.json"
    realm_file.write_text(json.dumps(overlay.realm))
    argv = [sys.executable, "-m", "bench.plan", "--cold-child",
            "--root", str(tmp / "cold-root"), "--realm-file", str(realm_file),
            "--edit-file", str(overlay.root / overlay.edit.name / "ix.sh"),
            "--overlay", str(overlay.root), "--overlay", str(PKGS)]
    if in_process_replans:
        argv.append("--in-process-replans")
    if bytecode is not None:  # Jinja's bytecode cache, as ixd keeps it under var/
        argv += ["--bytecode", str(bytecode)]
    t = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=600)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"the cold child failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


# --- (b) the daemon --------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "PYTHONPATH": str(PROJECT)}


def planning_daemon(root: Path, overlays: Sequence[Path],
                    extra: Sequence[str] = ()) -> RunningDaemon:
    """ixd on `root` (new, or one an earlier daemon left), started the way the tests start
    it; unconfined: these benchmarks plan, they do not build."""
    # imported here: the cold child (`--cold-child`) times its own imports
    from tests.daemon_harness import start_daemon

    return start_daemon(root, overlays=overlays, extra=["--no-confine", *extra])


def vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def node_uids(plan: dict[str, Any], package: str) -> set[str]:
    return {n["uid"] for n in plan["nodes"]
            if n["name"] == package or n["name"].startswith(package + "(")}


def run_daemon(tmp: Path, overlay: Overlay) -> dict[str, Any]:
    import msgpack

    from ixd.wire.transport import Client

    result: dict[str, Any] = {}
    daemon = planning_daemon(tmp / "daemon-root", [overlay.root, PKGS])
    try:
        with Client.connect(daemon.socket) as client:
            args = {"packages": overlay.realm}

            def timed() -> tuple[float, dict[str, Any]]:
                t = time.perf_counter()
                plan = client.request("plan", args)
                return time.perf_counter() - t, plan

            result["cold_s"], plan = timed()
            result["nodes"] = len(plan["nodes"])
            result["reply_bytes"] = len(msgpack.packb(plan))
            result["warm_s"], _ = timed()
            before = node_uids(plan, overlay.edit.name)
            result["edited_nodes"] = len(before)
            edit_recipe(overlay, 1)
            edited_at = time.perf_counter()
            end = edited_at + PICKUP_DEADLINE
            polls = 0
            while time.perf_counter() < end:
                polls += 1
                took, plan = timed()
                if node_uids(plan, overlay.edit.name) != before:
                    result["after_change_s"] = took
                    result["pickup_s"] = time.perf_counter() - edited_at
                    result["polls"] = polls
                    result["warm_after_change_median_s"] = statistics.median(
                        timed()[0] for _ in range(5))
                    break
            else:
                result["not_picked_up"] = True
        result["vmhwm_kib"] = vm_hwm_kib(daemon.process.pid)
    finally:
        result["exit"] = daemon.stop()
    return result


# --- main ------------------------------------------------------------------------------------


def _mib(kib: int | None) -> str:
    return "unknown" if kib is None else f"{kib / 1024:.1f} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--packages", type=int, default=2000)
    parser.add_argument("--realm", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--realm-file", help=argparse.SUPPRESS)
    parser.add_argument("--edit-file", help=argparse.SUPPRESS)
    parser.add_argument("--overlay", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--in-process-replans", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bytecode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_child:
        cold_child(args)
        return 0
    if args.packages < LAYERS * 10:
        parser.error(f"--packages must be at least {LAYERS * 10}")

    tmp = Path(tempfile.mkdtemp(prefix="ix-bench-plan-"))
    try:
        t = time.perf_counter()
        overlay = generate(tmp / "gen", args.packages, args.realm, args.seed)
        s = overlay.stats
        print(f"overlay: {s['recipes']} recipes in {LAYERS} layers (dependency depth "
              f">= {LAYERS - 1}), die chain base.json > sh.sh > c/ix.sh > gen/l1..l5 "
              f"(8 levels), generated in {time.perf_counter() - t:.2f} s")
        print(f"  edges: bld_libs {s['bld_libs']}, lib_deps {s['lib_deps']}, run_deps "
              f"{s['run_deps']}, bld_tool {s['bld_tool']} ({s['flagged']} with flags); "
              f"{s['includes']} include lines; {s['hubs']} hubs")
        print(f"  realm: {len(overlay.realm)} top-level packages; edited recipe: "
              f"{overlay.edit.name} (layer {overlay.edit.layer})")

        cold, wall = run_cold_child(tmp, overlay)
        replans, _ = run_cold_child(tmp, overlay, in_process_replans=True)
        run_cold_child(tmp, overlay, bytecode=tmp / "bytecode")  # fills the cache
        cached, cached_wall = run_cold_child(tmp, overlay, bytecode=tmp / "bytecode")
        print("\n(a) cold, fresh process (python -m bench.plan --cold-child):")
        print(f"  realm closure: {cold['closure']} packages ({cold['closure_buildable']} "
              f"buildable), plan: {cold['nodes']} nodes")
        print(f"  packages loaded: {cold['loaded']}, renders: {cold['renders']}")
        print(f"  import ixd:              {cold['import_s'] * 1000:8.0f} ms")
        print(f"  render + plan (cold):    {cold['render_plan_s'] * 1000:8.0f} ms")
        print(f"  process wall time:       {wall * 1000:8.0f} ms "
              "(interpreter start, imports, render + plan, exit)")
        print(f"  with what ixd keeps under var/ (a daemon restart: compiled templates, host "
              f"tools, renders): "
              f"render + plan {cached['render_plan_s'] * 1000:.0f} ms, wall "
              f"{cached_wall * 1000:.0f} ms (goal: render + plan <= 1000 ms)")
        print("  in a second such process, after its cold plan (no socket, no wire):")
        print(f"    re-plan, nothing changed:               "
              f"{replans['warm_unchanged_s'] * 1000:8.1f} ms")
        print(f"    re-plan after invalidate_files(edited): "
              f"{replans['warm_after_invalidate_s'] * 1000:8.1f} ms median of {REPLANS} "
              f"(max {replans['warm_after_invalidate_max_s'] * 1000:.1f} ms) "
              f"({replans['invalidated']} packages invalidated, "
              f"{replans['rerenders']} re-rendered; goal <= 100 ms)")

        daemon = run_daemon(tmp, overlay)
        print("\n(b) ixd, op `plan` of the realm's packages over the client transport:")
        print(f"  plan: {daemon['nodes']} nodes, reply {daemon['reply_bytes'] / 2**20:.1f} MiB "
              f"of msgpack; the edited recipe is {daemon['edited_nodes']} of the nodes")
        print(f"  first request (cold in the daemon): {daemon['cold_s'] * 1000:8.0f} ms")
        print(f"  second request (warm, unchanged):   {daemon['warm_s'] * 1000:8.0f} ms")
        if daemon.get("not_picked_up"):
            print(f"  warm re-plan after a recipe change: UNAVAILABLE (the daemon did not "
                  f"pick up the edit within {PICKUP_DEADLINE:.0f} s)")
        else:
            print(f"  after editing {overlay.edit.name}: change seen by request "
                  f"{daemon['polls']}, {daemon['pickup_s'] * 1000:.0f} ms after the edit")
            print(f"  re-plan request that first saw it: "
                  f"{daemon['after_change_s'] * 1000:8.0f} ms")
            print(f"  warm re-plan after it, median of 5: "
                  f"{daemon['warm_after_change_median_s'] * 1000:8.0f} ms")

        print("\n(c) peak memory:")
        print(f"  cold child ru_maxrss: {_mib(cold['maxrss_kib'])}")
        print(f"  ixd VmHWM:            {_mib(daemon.get('vmhwm_kib'))}")
        print(f"\ntotal bench time {time.perf_counter() - _STARTED:.1f} s; ixd exited "
              f"{daemon['exit']} on SIGTERM")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
