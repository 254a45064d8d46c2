"""Realm fix-ups, stal/IX's `fix/` hooks and `fix.deps` (docs/recipes.md, "Realm fix-ups").

A package may ship hooks in its `fix/` folder (`fix/glib_compile_schemas.sh`), and may name in
`fix.deps` the tools they run (`bld/glib`). stal/IX links a realm's packages into the realm's
own folder, runs every `fix/*.sh` there (in name order, with `sh`, from the realm's top
folder), removes `fix/`, and only then writes the realm's `meta.json` and `env`. The hooks
may do anything to the tree: make files, move or remove what was linked, make links; a
wrapper made by `die/fix/wrapper.sh` moves a program aside and writes, in its place, a script
that runs the moved one by the realm's own path (`$PWD` when the hook ran).

ix does the same, in the realm's node: whether there are hooks is decided when it runs, from
the packages built (`ixd.store.assemble.realm_hooks`), so a package needs no `fix.deps` to
have its hooks run. With hooks, the realm is assembled as a build (`ixd.store.assemble`): the
daemon links the packages into the build's private output (the hooks' folders too), the
hooks run there confined as a build user, with `$out` (and so `$PWD`) the realm's own store
path, and what they leave is the realm, canonicalised like any build's output; the daemon
then writes `meta.json` and `env` itself. This module holds the plan's side: the script that
runs the hooks, and the tools they get on PATH.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ixd.model.selector import Selector
from ixd.recipes.package import Package

#: runs a realm's hooks in the realm (`$out`), as stal/IX's realm assembly does; the folder is
#: gone afterwards, as in stal/IX
HOOKS_SCRIPT = r"""set -eu
cd "$out"
if [ -d fix ]; then
    for ix_hook in $(ls fix | LC_ALL=C sort); do
        case "$ix_hook" in
            *.sh)
                echo "ix: run hooks from $ix_hook" >&2
                sh "fix/$ix_hook"
                ;;
        esac
    done
    rm -rf fix
fi
"""
#: the host's own tools, for the hooks' shell work (stal/IX's realm brings a shell and busybox)
HOST_PATH = ("/usr/bin", "/bin")


def fixer_selectors(packages: Iterable[Package]) -> list[Selector]:
    """The `fix.deps` of every package a realm links, in the order it links them (as
    stal/IX's: a package, then its run closure), each selector once."""
    seen: dict[Selector, None] = {}
    for package in packages:
        for p in reversed(package.run_closure):
            for selector in p.descriptor.fix_deps:
                seen.setdefault(selector, None)
    return list(seen)


def hook_tools(fixers: Sequence[Package]) -> list[Package]:
    """The builds the hooks' tools are made of: the `fixers` (loaded as build tools) and
    their run closures, each once, a fixer before what it needs."""
    tools: dict[str, Package] = {}
    for fixer in fixers:
        for p in reversed(fixer.run_closure):
            if p.out_dir is not None:
                tools.setdefault(p.out_dir, p)
    return list(tools.values())


def hook_env(tools: Sequence[Package]) -> dict[str, str]:
    """The environment the hooks run with: the tools' `bin/` first, then the host's."""
    dirs = [p.out_dir for p in tools if p.out_dir is not None]
    return {"PATH": ":".join([*(f"{d}/bin" for d in dirs), *HOST_PATH])}
