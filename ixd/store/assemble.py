"""Realm assembly and switching: the file-system side of realms.

A realm is a store entry: a symlink per file of its packages (the first package providing a
path wins), `meta.json` and an `env` that sources each package's `env`. The realm link
`<root>/realm/<name>` is switched with one rename, so a reader sees the old or the new realm,
never a mix.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import struct
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
        allowed = set(node.meta.get("allow_dynamic", ()))
        offenders = [o for d in node.inputs if d not in allowed for o in dynamic_programs(d)]
        if offenders:
            raise StaticPolicyViolation(
                f"{node.name}: dynamically linked programs are refused (every binary here is "
                f"static): {'; '.join(offenders)}. Build them statically, or accept them with "
                f"the flag --allow_dynamic on their package")
        linked: set[str] = set()
        dirs: set[str] = {""}
        for package_dir in node.inputs:
            _link_package(Path(package_dir), out, linked, dirs)
        meta = {**node.meta, "store_dirs": list(node.inputs), "uid": node.uid}
        (out / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        (out / "env").write_text(realm_env(out, node.inputs))
        canonicalise(out)
    except BaseException:
        remove_tree(out)
        raise


@functools.lru_cache(maxsize=65536)
def dynamic_programs(package_dir: str) -> tuple[str, ...]:
    """`path (interpreter)` of each dynamically linked program of a store entry.

    Only the entry's own regular files count: a wrapper's symlink to a host tool is a tool,
    not a program of the realm. Entries are immutable, so the answer is cached."""
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


def _link_package(package: Path, out: Path, linked: set[str], dirs: set[str]) -> None:
    for top, subdirs, files in os.walk(package):
        rel_top = os.path.relpath(top, package)
        rel_top = "" if rel_top == "." else rel_top
        kept = []
        for d in subdirs:
            rel = os.path.join(rel_top, d)
            full = os.path.join(top, d)
            if not rel_top and d == _HOOKS_DIR:
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
