"""Run by the reference's own interpreter: the packages stal/IX's `ix build WORDS` loads, in
the order its loader finishes them (tests/stalix_golden/record.py runs this; ix never
imports it).

    /usr/bin/python3 tests/stalix_golden/loadorder.py REF_DIR PLATFORM,... WORD...

Prints one JSON document: `[[name, platform, {flag: value}], ...]`, every package of the
closure once (the first time a package of that name and those flags is done), the platform
named by its name among PLATFORM,... (the reference keeps it as a description).

What is recorded is what `ix build` does before it assembles anything: the realm
`ephemeral` made of WORDS, its packages loaded with their run closures, then the build
graph of their buildable run closures. The reference's realm tool (`bld/realm`, which
`ix build` never builds) is left out. The reference's own modules do all of it; this file
only watches its package cache fill.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

REF = sys.argv[1]
sys.path.insert(0, REF)
sys.setrecursionlimit(10000)

import core.cmd_realm  # noqa: E402
import core.config  # noqa: E402
import core.gg  # noqa: E402
import core.lex  # noqa: E402
import core.manager  # noqa: E402
import core.package  # noqa: E402
import core.realm  # noqa: E402


def main(platforms: list[str], words: list[str]) -> None:
    finished: list[Any] = []
    cached = core.manager.Manager.cached

    def watching(self: Any, key: str, func: Any) -> Any:
        new = key not in self.cache
        value = cached(self, key, func)
        if new and isinstance(value, core.package.Package):
            finished.append(value)
        return value

    core.manager.Manager.cached = watching
    config = core.config.Config(os.path.join(REF, "ix"), os.environ["IX_PATH"].split(":"),
                                os.environ["IX_ROOT"], "", "")
    manager = core.manager.Manager(config)
    nodes: list[Any] = []
    for patch in core.cmd_realm.group_realms(core.lex.lex(["ephemeral", *words])):
        name = patch[0][2]["r"]
        realm = manager.ensure_realm(name)
        # the realm's state after the words, as RealmCtx is made, without its own uid (which
        # would load bld/realm)
        context = core.realm.RealmCtx.__new__(core.realm.RealmCtx)
        context.mngr, context.pkg_name = manager, name
        context.pkgs = core.realm.apply_patch(realm.pkgs["flags"], realm.pkgs["list"], patch)
        nodes.extend(context.iter_all_runtime_depends())
    core.gg.build_graph(nodes)

    by_id: dict[str, str] = {}
    for platform in platforms:  # the first name of a platform, not an alias
        by_id.setdefault(core.config.arch(platform)["id"], platform)
    seen: set[str] = set()
    out: list[list[Any]] = []
    for package in finished:
        flags = dict(package.selector["flags"])
        target = by_id[flags.pop("target")["id"]]
        # stal/IX sets `boot` to True, which recipes pass on as `True`; ix's is `1`
        flags = {k: ("1" if k == "boot" and str(v) == "True" else str(v))
                 for k, v in flags.items()}
        identity = json.dumps([package.selector["name"], target, flags], sort_keys=True)
        if identity not in seen:
            seen.add(identity)
            out.append([package.selector["name"], target, flags])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[2].split(","), sys.argv[3:])
