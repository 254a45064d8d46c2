"""Start-up recovery: after a crash (kill -9 at any moment) nothing valid is lost.

Only the database says what is valid. Whatever else is in the store (a build cut short, a
realm assembled but never registered), all build scratch and leftovers of realm switches go
to trash and are deleted; builds recorded as running become interrupted; every realm link is
made to point at its current generation, or at the newest generation still in the store.
Blocking: it runs before the daemon serves.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ixd.model.layout import Layout
from ixd.store.assemble import switch_realm_link
from ixd.store.db import BuildDatabase
from ixd.store.fstree import remove_tree

log = logging.getLogger("ixd.store.recovery")


@dataclass
class RecoveryReport:
    interrupted_builds: int = 0
    trashed: list[str] = field(default_factory=list)
    repaired_realms: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"recovery: {self.interrupted_builds} interrupted builds, "
                f"{len(self.trashed)} unregistered entries and scratch dirs moved to trash, "
                f"{len(self.repaired_realms)} realm links repaired"
                + (f" ({', '.join(self.repaired_realms)})" if self.repaired_realms else ""))


def move_to_trash(path: Path, layout: Layout) -> Path:
    """Rename `path` into trash (same file system: atomic), to be deleted later."""
    target = layout.trash / f"{path.name}.{secrets.token_hex(4)}"
    os.rename(path, target)
    return target


def empty_trash(layout: Layout) -> int:
    count = 0
    for entry in os.scandir(layout.trash):
        remove_tree(Path(entry.path))
        count += 1
    return count


def recover(layout: Layout, db: BuildDatabase) -> RecoveryReport:
    report = RecoveryReport(interrupted_builds=db.interrupt_running_builds())
    valid_paths = db.valid_paths()
    for entry in os.scandir(layout.store):
        if entry.path not in valid_paths:
            move_to_trash(Path(entry.path), layout)
            report.trashed.append(entry.name)
    for entry in os.scandir(layout.build):
        move_to_trash(Path(entry.path), layout)
        report.trashed.append(f"build/{entry.name}")
    for entry in os.scandir(layout.sources):
        if entry.name.startswith("."):  # a download cut short
            os.unlink(entry.path)
    _repair_realm_links(layout, db, valid_paths, report)
    empty_trash(layout)
    if report.trashed or report.repaired_realms or report.interrupted_builds:
        log.info(report.summary())
    return report


def _repair_realm_links(layout: Layout, db: BuildDatabase, valid_paths: set[str],
                        report: RecoveryReport) -> None:
    realms = {row["name"]: row for row in db.realms()}
    paths: dict[str, dict[int, str]] = {}
    for ref in db.generation_refs():
        paths.setdefault(ref.realm, {})[ref.number] = ref.path
    for entry in os.scandir(layout.realms):
        if entry.name.startswith(".") or entry.name not in realms:
            # a switch cut short, or a realm purged from the database but not yet unlinked
            os.unlink(entry.path)
            if not entry.name.startswith("."):
                report.repaired_realms.append(f"{entry.name} (removed)")
    for name, row in realms.items():
        generations = paths.get(name, {})
        number = row["current"]
        if generations.get(number) not in valid_paths:
            usable = [n for n, path in generations.items() if path in valid_paths]
            if not usable:
                log.warning("realm %s: no generation is left in the store; unlinked", name)
                layout.realm_link(name).unlink(missing_ok=True)
                db.drop_realm(name)
                report.repaired_realms.append(f"{name} (dropped)")
                continue
            number = db.set_current(name, max(usable)).number
        current = generations[number]
        link = layout.realm_link(name)
        target = os.path.relpath(current, layout.realms)
        if not link.is_symlink() or os.readlink(link) != target:
            switch_realm_link(link, Path(current))
            report.repaired_realms.append(f"{name} -> generation {number}")
            log.info("realm %s: link restored to generation %d (%s)", name, number, current)
