"""`ixd verify`: check every valid store entry against the content hash recorded for it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ixd.model.layout import Layout
from ixd.store.db import BuildDatabase
from ixd.store.treehash import tree_hash


@dataclass(frozen=True)
class Problem:
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.what}: {self.path}"


def verify_store(layout: Layout) -> Iterator[Problem | str]:
    """Yield each entry's path when it checks out, a Problem when it does not."""
    db = BuildDatabase(layout.database)
    try:
        entries = db.store_entries()
    finally:
        db.close()
    for entry in entries:
        path = Path(entry["path"])
        if not path.is_dir():
            yield Problem(entry["path"], "missing")
            continue
        try:
            changed = bool(entry["hash"]) and tree_hash(path) != entry["hash"]
        except OSError as exc:  # a file turned into a link or a FIFO, say
            yield Problem(entry["path"], f"cannot be read ({exc})")
            continue
        if changed:
            yield Problem(entry["path"], "changed since it was registered")
        else:
            yield entry["path"]
