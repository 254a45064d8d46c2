"""The descriptor a recipe renders to (docs/recipes.md, "What a recipe renders to"), validated."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from ixd.model.selector import Selector, parse_selector
from ixd.wire.errors import BadName, RecipeError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
POOLS = ("slot", "full", "misc", "threads", "network")
#: what of the host a build sees (docs/recipes.md, "The build's view of the host"): nothing
#: but its inputs; the host's system folders for its own build (stage 0's captures); or
#: for its own build and every build that uses it as a tool (the `bld/host/*` wrappers)
HOST_VIEWS = ("none", "build", "tool")


@dataclass(frozen=True)
class Fetch:
    url: str
    sha256: str


@dataclass(frozen=True)
class Descriptor:
    fetch: tuple[Fetch, ...]
    #: argv of the build command; empty for a hub
    script_exec: tuple[str, ...]
    script_data: str
    bld_deps: tuple[Selector, ...]
    host_libs: tuple[Selector, ...]
    target_libs: tuple[Selector, ...]
    bld_data: tuple[Selector, ...]
    run_deps: tuple[Selector, ...]
    run_data: tuple[Selector, ...]
    lib_deps: tuple[Selector, ...]
    ind_deps: tuple[Selector, ...]
    #: the tools of the package's fix-up hooks, run over a realm (docs/recipes.md,
    #: "Realm fix-ups"; ixd.recipes.fixup)
    fix_deps: tuple[Selector, ...]
    net: bool
    #: seconds of build time the recipe asks for, beyond the daemon's --build-timeout
    timeout: float = 0.0
    #: one of HOST_VIEWS
    host_view: str = "none"
    #: the upstream version the recipe names (`{% block version %}`; "" if none): shown,
    #: never part of the uid
    version: str = ""

    @property
    def is_hub(self) -> bool:
        return not self.script_exec

    @property
    def edge_counts(self) -> tuple[int, int, int, int, int, int, int]:
        """How many selectors it writes along each edge of a package, in the order of
        `ixd.recipes.package.DIRECT_EDGES` (bld.deps, target and host libraries, bld.data,
        lib.deps, run.deps, run.data): made once."""
        counts: tuple[int, int, int, int, int, int, int] | None = self.__dict__.get("_counts")
        if counts is None:
            counts = (len(self.bld_deps), len(self.target_libs), len(self.host_libs),
                      len(self.bld_data), len(self.lib_deps), len(self.run_deps),
                      len(self.run_data))
            self.__dict__["_counts"] = counts
        return counts

    def __hash__(self) -> int:
        # interned descriptors are dict keys looked up once per package and build: the hash
        # of all their fields (a long script among them) made once
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self)))
            self.__dict__["_hash"] = cached
        return cached

    def __getstate__(self) -> dict[str, Any]:
        # pickled (the graph's snapshot): the hash made once is this process's (strings hash
        # otherwise in the next)
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def to_raw(self) -> dict[str, Any]:
        """A descriptor as recipes render it that `parse_descriptor` reads back as this one
        (what the render store keeps of a render taken by another flag set)."""

        def texts(selectors: tuple[Selector, ...]) -> list[str]:
            return [str(s) for s in selectors]

        return {
            "bld": {"fetch": [{"url": f.url, "md5": f.sha256} for f in self.fetch],
                    "script": {"exec": list(self.script_exec), "data": self.script_data},
                    "deps": texts(self.bld_deps), "host_libs": texts(self.host_libs),
                    "target_libs": texts(self.target_libs), "data": texts(self.bld_data)},
            "run": {"deps": texts(self.run_deps), "data": texts(self.run_data)},
            "lib": {"deps": texts(self.lib_deps)},
            "ind": {"deps": texts(self.ind_deps)},
            "fix": {"deps": texts(self.fix_deps)},
            "net": self.net,
            "timeout": self.timeout,
            "host_view": self.host_view,
            "repo": {"version": self.version},
        }


def _section(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: descriptor field {key!r} must be an object")
    return value


def _selectors(section: dict[str, Any], key: str, where: str) -> tuple[Selector, ...]:
    value = section.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecipeError(f"{where}: descriptor field {key!r} must be a list of selectors")
    result = []
    for text in value:
        try:
            result.append(parse_selector(text.strip(), from_recipe=True))
        except BadName as exc:
            raise RecipeError(
                f"{where}: bad dependency {text!r} in {key!r}: {exc.message}") from None
    return tuple(result)


def parse_descriptor(raw: dict[str, Any], where: str) -> Descriptor:
    """Validate a rendered descriptor; `where` names the recipe in error messages."""
    bld = _section(raw, "bld", where)
    run = _section(raw, "run", where)
    fetch = []
    for item in bld.get("fetch", []):
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise RecipeError(f"{where}: each bld.fetch item needs a url and a checksum")
        sha = str(item.get("md5", item.get("sha256", ""))).lower()
        if not _SHA256.match(sha):
            raise RecipeError(f"{where}: source {item['url']} has checksum {sha!r}; "
                              f"write its sha256 (64 hex digits) on the line after the URL")
        fetch.append(Fetch(item["url"], sha))
    script = bld.get("script") or {}
    if not isinstance(script, dict):
        raise RecipeError(f"{where}: bld.script must be an object {{exec, data}}")
    script_exec = script.get("exec") or []
    if not isinstance(script_exec, list) or not all(isinstance(a, str) for a in script_exec):
        raise RecipeError(f"{where}: bld.script.exec must be a list of strings")
    script_data = script.get("data", "")
    if not isinstance(script_data, str):
        raise RecipeError(f"{where}: bld.script.data must be a string")
    # task_pool is checked (a misspelt pool is a recipe error) but not kept: the scheduler's
    # pools follow the node kinds. predict_outputs and repo are not read at all.
    pool = raw.get("task_pool") or "slot"
    if pool not in POOLS:
        raise RecipeError(f"{where}: task_pool {pool!r} is not one of {', '.join(POOLS)}")
    timeout = raw.get("timeout") or 0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise RecipeError(f"{where}: timeout {timeout!r} must be a number of seconds")
    host_view = raw.get("host_view") or "none"
    if host_view not in HOST_VIEWS:
        raise RecipeError(f"{where}: host_view {host_view!r} is not one of "
                          f"{', '.join(HOST_VIEWS)}")
    repo = raw.get("repo")
    version = repo.get("version") if isinstance(repo, dict) else ""
    return Descriptor(
        version=version.strip() if isinstance(version, str) else "",
        timeout=float(timeout),
        host_view=host_view,
        fetch=tuple(fetch),
        script_exec=tuple(script_exec),
        script_data=script_data,
        bld_deps=_selectors(bld, "deps", where),
        host_libs=_selectors(bld, "host_libs", where),
        target_libs=_selectors(bld, "target_libs", where),
        bld_data=_selectors(bld, "data", where),
        run_deps=_selectors(run, "deps", where),
        run_data=_selectors(run, "data", where),
        lib_deps=_selectors(_section(raw, "lib", where), "deps", where),
        ind_deps=_selectors(_section(raw, "ind", where), "deps", where),
        fix_deps=_selectors(_section(raw, "fix", where), "deps", where),
        net=bool(raw.get("net", False)),
    )
