"""Realm fix-ups, stal/IX's `fix.deps` (docs/recipes.md, "Realm fix-ups").

A package may ship hooks in its `fix/` folder (`fix/glib_compile_schemas.sh`) and name in
`fix.deps` the tools they run (`bld/glib`). stal/IX runs every realm's hooks in the
assembled realm, with the tools of all its packages' `fix.deps` on PATH, then removes `fix/`.

ix runs them in a build node of their own, sandboxed like every build: it links the realm's
package dirs into a scratch folder (the front package last, so it wins), runs the hooks there
in name order and keeps, in its output, the regular files the hooks made (everything linked is
a symlink). The realm node links that output first, so what the hooks made wins. The node is
content-addressed like any build (its uid hashes its script, its environment and its inputs'
uids, never the realm's name): two realms with the same packages share one fix-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ixd.model.layout import Layout
from ixd.model.nodes import Node
from ixd.model.selector import Selector
from ixd.recipes.packages import Package, content_hash

#: the hooks' runner; IX_R_DIR lists the realm's store dirs back to front
FIXUP_SCRIPT = r"""set -eu
mkdir "$tmp/realm"
cd "$tmp/realm"
ix_list="$IX_R_DIR"
while [ -n "$ix_list" ]; do
    ix_dir="${ix_list%%:*}"
    case "$ix_list" in *:*) ix_list="${ix_list#*:}" ;; *) ix_list="" ;; esac
    cp -rs --no-preserve=mode --remove-destination "$ix_dir/." .
done
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
find . -type f -exec cp -P --parents {} "$out/" \;
"""


def fixer_selectors(packages: Iterable[Package]) -> list[Selector]:
    """The `fix.deps` of every package a realm links, in the order it links them (as
    stal/IX's: a package, then its run closure), each selector once."""
    seen: dict[Selector, None] = {}
    for package in packages:
        for p in reversed(package.run_closure):
            for selector in p.descriptor.fix_deps:
                seen.setdefault(selector, None)
    return list(seen)


def fixup_node(realm: str, dirs: Sequence[str], dir_uids: Sequence[str],
               fixers: Sequence[Package], layout: Layout) -> Node:
    """The node that runs the hooks of a realm linking `dirs` (front first; built by the
    nodes `dir_uids`), with the `fixers` (loaded as build tools) and their run closures on
    PATH."""
    tools: dict[str, Package] = {}
    for fixer in fixers:
        for p in reversed(fixer.run_closure):
            if p.out_dir is not None:
                tools.setdefault(p.out_dir, p)
    env = {
        "IX_R_DIR": ":".join(reversed(dirs)),
        # the tools first; the host's own for the hooks' shell work, as stal/IX's realm
        # brings a shell and busybox
        "PATH": ":".join([*(f"{d}/bin" for d in tools), "/usr/bin", "/bin"]),
    }
    inputs = [*dirs, *tools]
    uid = content_hash({"fixup": FIXUP_SCRIPT, "env": env, "inputs": inputs})
    return Node(
        uid=uid,
        kind="build",
        name=f"fix-up of realm {realm}",
        deps=tuple(dict.fromkeys([*dir_uids, *(p.uid for p in tools.values())])),
        inputs=tuple(inputs),
        outputs=(str(layout.store_dir(uid, "fix", "realm")),),
        command=("/bin/sh", "-s"),
        stdin=FIXUP_SCRIPT,
        env=env,
        meta={"package": "fix-up", "realm": realm, "flags": {}},
        entry_kind="fix",
    )
