"""Realm assembly and switching: the file-system side of realms.

A realm is a store entry: a symlink per file of its packages (the first package providing a
path wins), `meta.json` and an `env` that sources each package's `env`. The realm link
`<root>/realm/<name>` is switched with one rename, so a reader sees the old or the new realm,
never a mix.

A realm whose packages ship fix-up hooks (`fix/*.sh`, `ixd.recipes.fixup`) is assembled as a
build instead (`hooks_build`): the same links, made by the daemon in the build's private
output (`link_farm`, the hooks' folders too), the hooks run there confined, and the daemon
writes `meta.json` and `env` over whatever they left (`finish_realm`) before the output is
canonicalised and moved into the store.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import stat
import struct
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from ixd.model.nodes import Node
from ixd.store.canonical import canonicalise
from ixd.store.elf import NotElf, elf_interpreter
from ixd.store.fstree import remove_tree
from ixd.wire.errors import RealmError, StaticPolicyViolation

#: files at a package's root that belong to the package itself, not to the realm
_PACKAGE_OWN = frozenset({"env", "meta.json"})
#: a package's fix-up hooks (`fix/`): run by the realm's fix-up node, never linked (stal/IX
#: removes the folder once they ran)
_HOOKS_DIR = "fix"


def assemble_realm(node: Node) -> None:
    """Build a realm node's store entry (blocking; the daemon runs it in a thread)."""
    out = Path(node.outputs[0])
    remove_tree(out)
    out.mkdir()
    try:
        check_static_policy(node)
        link_farm(out, node.inputs)
        top = os.open(out, _DIR_FLAGS)
        try:
            _write_realm_files(top, node)
        finally:
            os.close(top)
        canonicalise(out)
    except BaseException:
        remove_tree(out)
        raise


def check_static_policy(node: Node) -> None:
    """Refuse a realm that would link a dynamically linked program (`StaticPolicyViolation`)
    unless its package is flagged `allow_dynamic`."""
    allowed = set(node.meta.get("allow_dynamic", ()))
    offenders = [o for d in node.inputs if d not in allowed for o in dynamic_programs(d)]
    if offenders:
        raise StaticPolicyViolation(
            f"{node.name}: dynamically linked programs are refused (every binary here is "
            f"static): {'; '.join(offenders)}. Build them statically, or accept them with "
            f"the flag --allow_dynamic on their package")


def link_farm(out: Path, package_dirs: Iterable[str], *, hooks: bool = False) -> None:
    """A symlink in `out` for each file of the packages, the first providing a path winning
    (blocking). With `hooks`, the packages' `fix/` folders are linked too (for the hooks to
    run in), else left out."""
    linked: set[str] = set()
    dirs: set[str] = {""}
    for package_dir in package_dirs:
        _link_package(Path(package_dir), out, linked, dirs, hooks)


def realm_hooks(package_dirs: Iterable[str]) -> list[str]:
    """The names of the fix-up hooks (`fix/*.sh`) the packages ship, each once, in the order
    they run (blocking: reads the store). Only a real `fix` folder counts, as only one is
    linked."""
    names: set[str] = set()
    for package_dir in package_dirs:
        folder = os.path.join(package_dir, _HOOKS_DIR)
        try:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                continue
            names.update(n for n in os.listdir(folder) if n.endswith(".sh"))
        except FileNotFoundError:
            continue
    return sorted(names)


def hooks_build(node: Node) -> Node:
    """The build that assembles a realm node whose packages ship hooks: its output is the
    realm's store dir, its inputs the realm's packages and the hooks' tools."""
    return replace(node, kind="build", name=f"{node.name} (fix-up hooks)",
                   inputs=(*node.inputs, *node.meta.get("fix_tools", ())))


def finish_realm(out: Path, node: Node) -> None:
    """After the hooks of `node` ran in `out` (its build's private output, no process of the
    build left): refuse the dynamically linked programs they made, and write the realm's
    `meta.json` and `env` over whatever is there (blocking). Nothing the hooks left is
    followed: `out` is opened as a folder, not a link, and the names are removed first."""
    made = find_dynamic_programs(str(out))
    if made:
        raise StaticPolicyViolation(
            f"{node.name}: its fix-up hooks made dynamically linked programs, which are "
            f"refused (every binary here is static): {'; '.join(made)}")
    top = os.open(out, _DIR_FLAGS)
    try:
        for name in _PACKAGE_OWN:
            _remove_at(top, name, out)
        _write_realm_files(top, node)
    finally:
        os.close(top)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_at(folder: int, name: str, path: Path) -> None:
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        remove_tree(path / name)
    else:
        os.unlink(name, dir_fd=folder)


def _write_realm_files(folder: int, node: Node) -> None:
    """`meta.json` and `env` of the realm `node` in the open folder `folder`, made anew
    (never through a link)."""
    meta = {**node.meta, "store_dirs": list(node.inputs), "uid": node.uid}
    files = {"meta.json": json.dumps(meta, indent=1, sort_keys=True) + "\n",
             "env": realm_env(Path(node.outputs[0]), node.inputs)}
    for name, text in files.items():
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=folder)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)


@functools.lru_cache(maxsize=65536)
def dynamic_programs(package_dir: str) -> tuple[str, ...]:
    """`find_dynamic_programs` of a store entry: entries are immutable, so it is cached."""
    return find_dynamic_programs(package_dir)


def find_dynamic_programs(package_dir: str) -> tuple[str, ...]:
    """`path (interpreter)` of each dynamically linked program under a folder.

    Only its own regular files count: a wrapper's symlink to a host tool is a tool, not a
    program of the realm."""
    found = []
    for top, _dirs, files in os.walk(package_dir):
        for name in files:
            path = os.path.join(top, name)
            if os.path.islink(path):
                continue
            try:
                interpreter = elf_interpreter(Path(path))
            except (NotElf, OSError, struct.error):
                continue
            if interpreter is not None:
                found.append(f"{path} ({interpreter})")
    return tuple(found)


def _link_package(package: Path, out: Path, linked: set[str], dirs: set[str],
                  hooks: bool) -> None:
    for top, subdirs, files in os.walk(package):
        rel_top = os.path.relpath(top, package)
        rel_top = "" if rel_top == "." else rel_top
        kept = []
        for d in subdirs:
            rel = os.path.join(rel_top, d)
            full = os.path.join(top, d)
            if not rel_top and d == _HOOKS_DIR and not hooks:
                continue
            if os.path.islink(full):  # a symlinked folder is linked like a file
                files.append(d)
            elif rel in linked:  # a file of an earlier package wins over this folder
                continue
            else:
                kept.append(d)
                if rel not in dirs:
                    dirs.add(rel)
                    (out / rel).mkdir()
        subdirs[:] = kept
        for name in files:
            rel = os.path.join(rel_top, name)
            if (not rel_top and name in _PACKAGE_OWN) or rel in linked or rel in dirs:
                continue
            linked.add(rel)
            os.symlink(os.path.join(top, name), out / rel)


def realm_env(realm_dir: Path, package_dirs: list[str] | tuple[str, ...]) -> str:
    """The realm's `env`: the realm's bin/ first on PATH, then every package's own `env`
    (sourced back to front, so the front package's settings end up first)."""
    lines = [
        "# sourced by shells and `ixc run` to enter this realm",
        f'export IX_REALM="{realm_dir}"',
    ]
    for package_dir in reversed(package_dirs):
        if (Path(package_dir) / "env").is_file():
            lines.append(f'. "{package_dir}/env"')
    lines.append(f'export PATH="{realm_dir}/bin:${{PATH:-/usr/bin:/bin}}"')
    return "\n".join(lines) + "\n"


def switch_realm_link(link: Path, target: Path) -> None:
    """Point `link` at `target` atomically (a new symlink renamed over the old one)."""
    if not target.is_dir():
        raise RealmError(f"cannot switch {link.name} to {target}: it is not a store entry")
    link.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(target, link.parent)
    if link.is_symlink() and os.readlink(link) == relative:
        return  # already there: an unchanged realm costs no write
    tmp = link.with_name(f".{link.name}.{secrets.token_hex(6)}.tmp")
    os.symlink(relative, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_realm_link(link: Path) -> None:
    link.unlink(missing_ok=True)
