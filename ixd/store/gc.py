"""Garbage collection: mark from roots through realm closures, sweep through trash.

Roots are every realm's current generation and the newest `keep` generations of each realm,
and every path of every plan in flight (what builds read and write, and the realm of an
`ixc run` whose command runs). A realm entry's closure is the list of store dirs its
`meta.json` links. Marking is pure; the sweep first makes the garbage invalid in memory (so no
new request counts on it), then unregisters it, renames it into trash and deletes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from ixd.store.safeio import read_bounded
from ixd.wire.errors import GcAborted

log = logging.getLogger("ixd.store.gc")


@dataclass(frozen=True)
class GcResult:
    entries: int
    bytes: int
    kept: int
    #: build logs deleted, and their bytes
    logs: int = 0
    log_bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"entries": self.entries, "bytes": self.bytes, "kept": self.kept,
                "logs": self.logs, "log_bytes": self.log_bytes}


@dataclass(frozen=True)
class LogFile:
    """A file of the daemon's log folder: its name, size and last write (seconds)."""

    name: str
    size: int
    mtime: float


def logs_to_delete(logs: Iterable[LogFile], keep_uids: set[str], collected: set[str],
                   now: float, keep_seconds: float) -> list[LogFile]:
    """The logs a collection deletes: those of the entries it collected, at once; those of
    builds that left no valid entry (failed, cancelled, collected before) once older than
    `keep_seconds`; never the log of a valid entry or of a build under way (`keep_uids`).
    Anything else in the folder (a log cut short mid-rewrite) goes with the old ones."""
    doomed = []
    for log_file in logs:
        uid = log_file.name.removesuffix(".log") if log_file.name.endswith(".log") else None
        if uid is not None and uid in keep_uids:
            continue
        if (uid is not None and uid in collected) or now - log_file.mtime > keep_seconds:
            doomed.append(log_file)
    return doomed


class NumberedGeneration(Protocol):
    """A realm's generation (`ixd.store.db.GenerationRef` or `Generation`)."""

    @property
    def realm(self) -> str: ...

    @property
    def number(self) -> int: ...

    @property
    def path(self) -> str: ...


G = TypeVar("G", bound=NumberedGeneration)


def root_paths(generations: Iterable[G], current: Mapping[str, int], keep: int,
               in_flight: Iterable[str]) -> set[str]:
    """Store paths that must stay: realm generations kept by policy, work in flight (plans
    under way, and `ixc run` realms whose command runs)."""
    by_realm: dict[str, list[G]] = {}
    for generation in generations:
        by_realm.setdefault(generation.realm, []).append(generation)
    roots = set(in_flight)
    for realm, gens in by_realm.items():
        gens.sort(key=lambda g: g.number)
        kept = gens[-keep:] if keep > 0 else []
        roots.update(g.path for g in kept)
        number = current.get(realm)
        roots.update(g.path for g in gens if g.number == number)
    return roots


def with_build_inputs(links_of: Mapping[str, list[str]], built_from: Mapping[str, list[str]]
                      ) -> dict[str, list[str]]:
    """Realm links and build inputs as one map to mark along (`--keep-build-inputs`)."""
    merged = {path: list(links) for path, links in links_of.items()}
    for path, inputs in built_from.items():
        merged.setdefault(path, []).extend(inputs)
    return merged


def mark(roots: set[str], links_of: Mapping[str, list[str]]) -> set[str]:
    """Roots plus what every marked entry links (`links_of[path]`: a realm's from its
    meta.json; with `with_build_inputs`, an entry's build inputs too)."""
    marked = set(roots)
    todo = list(roots)
    while todo:
        path = todo.pop()
        for linked in links_of.get(path, ()):
            if linked not in marked:
                marked.add(linked)
                todo.append(linked)
    return marked


#: a realm's meta.json larger than this is not read (tens of thousands of entries fit)
MAX_META_SIZE = 64 << 20


def realm_links(path: str) -> list[str]:
    """The store dirs a realm entry links, from its meta.json (blocking).

    Marking fails closed: a realm entry whose links cannot be read raises GcAborted, so the
    collection stops rather than deleting what that realm may hold.
    """
    meta_path = Path(path) / "meta.json"
    try:
        dirs = realm_store_dirs(path)
    except (OSError, ValueError) as exc:
        log.error("gc: cannot read the links of realm entry %s: %s", path, exc)
        raise GcAborted(
            f"garbage collection stopped: the realm entry {path} cannot be read ({exc}), so "
            f"what it links cannot be told from garbage; nothing was deleted. Check "
            f"{meta_path} (ixd verify), or remove that generation, then collect again"
        ) from None
    return dirs


def realm_store_dirs(path: str) -> list[str]:
    """The store dirs a realm entry links, from its meta.json (blocking); OSError or
    ValueError if they cannot be read."""
    try:
        meta = json.loads(read_bounded(Path(path) / "meta.json", MAX_META_SIZE))
        dirs = meta["store_dirs"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"meta.json holds no store_dirs ({exc!r})") from None
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ValueError("store_dirs is not a list of paths")
    return dirs
