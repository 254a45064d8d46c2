"""The layering contract: which package may import which (each package's `__init__` says it).

Every import counts, at module level or inside a function (a lazy import is a dependency all
the same), and so does `if TYPE_CHECKING:`. Read from the source with `ast`, so a violation
is found whether or not the code path runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent

#: each package and the packages it may import (besides itself, the standard library and
#: third-party libraries); `ixd` is the top package's `__init__` (the version)
ALLOWED: dict[str, set[str]] = {
    "ixd": set(),
    "ixd.wire": {"ixd"},
    "ixd.model": {"ixd", "ixd.wire"},
    "ixd.recipes": {"ixd", "ixd.wire", "ixd.model"},
    "ixd.store": {"ixd", "ixd.wire", "ixd.model"},
    "ixd.cache": {"ixd", "ixd.wire", "ixd.model", "ixd.store"},
    "ixd.build": {"ixd", "ixd.wire", "ixd.model", "ixd.recipes", "ixd.store", "ixd.cache"},
    "ixd.daemon": {"ixd", "ixd.wire", "ixd.model", "ixd.recipes", "ixd.store", "ixd.cache",
                   "ixd.build"},
    "services": {"ixd", "ixd.wire", "ixd.model"},
    "client": {"ixd", "ixd.wire", "ixd.model", "services"},
}
#: third-party packages a package must never import, even lazily
FORBIDDEN = {
    "client": {"trio", "jinja2", "sqlite_utils"},
    "ixd.wire": {"trio", "jinja2", "sqlite_utils"},
    "ixd.model": {"trio", "jinja2", "sqlite_utils"},
    "ixd.recipes": {"trio", "sqlite_utils"},
    "services": {"jinja2", "sqlite_utils"},
}
OURS = ("ixd", "client", "services")


def package_of(module: str) -> str:
    """The layer a dotted module belongs to: `ixd.store.db` -> `ixd.store`, `client.main` ->
    `client`, `ixd` -> `ixd`."""
    parts = module.split(".")
    if parts[0] != "ixd":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else "ixd"


def modules() -> Iterator[tuple[str, Path]]:
    for top in OURS:
        for path in sorted((PROJECT / top).rglob("*.py")):
            parts = path.relative_to(PROJECT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def imports_of(path: Path) -> Iterator[tuple[str, int]]:
    """Every module `path` imports, with the line: `from ixd.wire import errors` names
    `ixd.wire.errors` (a module) or `ixd.wire` (if `errors` were a name in it)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def known(module: str, ours: set[str]) -> str | None:
    """The longest prefix of `module` that is one of our modules, else None."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in ours:
            return prefix
    return None


def dependency_edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> where (file:line)."""
    ours = {name for name, _ in modules()}
    edges: dict[tuple[str, str], list[str]] = {}
    for name, path in modules():
        source = package_of(name)
        for imported, line in imports_of(path):
            target_module = known(imported, ours)
            if target_module is None:
                continue
            target = package_of(target_module)
            if target != source:
                where = f"{path.relative_to(PROJECT)}:{line}"
                edges.setdefault((source, target), []).append(where)
    return edges


def test_every_package_is_in_the_contract() -> None:
    packages = {package_of(name) for name, _ in modules()}
    assert packages == set(ALLOWED), "add the new package to ALLOWED (and its __init__)"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    bad = {target: where for (source, target), where in dependency_edges().items()
           if source == package and target not in ALLOWED[package]}
    assert not bad, f"{package} may import only {sorted(ALLOWED[package])}; it imports {bad}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_never_imports_forbidden_libraries(package: str) -> None:
    found = []
    for name, path in modules():
        if package_of(name) != package:
            continue
        for imported, line in imports_of(path):
            if imported.split(".")[0] in FORBIDDEN[package]:
                found.append(f"{path.relative_to(PROJECT)}:{line} imports {imported}")
    assert not found, found


def test_no_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for source, target in dependency_edges():
        graph.setdefault(source, set()).add(target)
    # depth-first search for a back edge, reporting the cycle it closes
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            assert cycle is None, " -> ".join(cycle)


def module_graph() -> dict[str, dict[str, str]]:
    """Each of our modules -> the modules of ours it imports -> where (file:line). An import
    of `pkg.mod` counts as one of `pkg.mod` (its package's `__init__` runs first, but says
    only what the package is)."""
    ours = {name for name, _ in modules()}
    graph: dict[str, dict[str, str]] = {}
    for name, path in modules():
        edges = graph.setdefault(name, {})
        for imported, line in imports_of(path):
            target = known(imported, ours)
            if target is not None and target != name:
                edges.setdefault(target, f"{path.relative_to(PROJECT)}:{line}")
    return graph


def module_cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or around a loop (the
    strongly connected components of more than one module, by Tarjan's algorithm, without
    recursion), each sorted; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return sorted(found)


def test_no_cycles_between_modules() -> None:
    """No module of ixd, client or services imports, even lazily or for mypy, a module that
    imports it back around a loop: such a pair is one idea split in two, loads half-done
    (`python -m client.main` once loaded `client.main` twice, as `__main__` and again from
    `client.commands`) and cannot be read on its own."""
    graph = module_graph()
    cycles = module_cycles(graph)
    shown = [" <-> ".join(group) + ": " + ", ".join(
        f"{a} -> {b} ({graph[a][b]})" for a in group for b in group if b in graph[a])
        for group in cycles]
    assert not cycles, "\n".join(shown)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""},
             "e": {"f": ""}, "f": {"e": ""}, "g": {}}
    assert module_cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert module_cycles({"a": {"b": ""}, "b": {}}) == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The reader of imports finds lazy and `TYPE_CHECKING` imports (what the contract
    tests rely on)."""
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from ixd.daemon.core import Daemon\n"
                      "def f():\n    import ixd.store.db\n")
    found = {name for name, _ in imports_of(module)}
    assert {"ixd.daemon.core.Daemon", "ixd.store.db"} <= found
    assert package_of("ixd.daemon.core") == "ixd.daemon"
    assert package_of("client.main") == "client"


def _git(*args: str) -> list[str]:
    import subprocess

    done = subprocess.run(["git", "-C", str(PROJECT), *args], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"not a git checkout: {done.stderr.strip()}")
    return [line for line in done.stdout.splitlines() if line]


def test_every_package_folder_has_a_tracked_init() -> None:
    tracked = set(_git("ls-files", *OURS))
    folders = {str(Path(path).parent) for path in tracked if path.endswith(".py")}
    missing = sorted(f for f in folders if f"{f}/__init__.py" not in tracked)
    assert not missing, f"package folders without a tracked __init__.py: {missing}"


def test_no_tracked_file_is_ignored() -> None:
    # a pattern such as `build/` once hid the whole `ixd/build/` package from git and ruff
    ignored = _git("ls-files", "--cached", "--ignored", "--exclude-standard")
    assert not ignored, f"tracked files that .gitignore matches: {ignored[:10]}"
