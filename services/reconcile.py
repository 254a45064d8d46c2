"""One reconciliation pass, and the bookkeeping between passes.

`Reconciler.sync()` asks where the realm's current generation is (`locate`: the daemon
says, and only for a realm of ours), reads its services and the tree, plans
(`services.model.plan`) and applies the actions, logging one line per service that
changes. `Reconciler.reap()` removes retired folders whose runsv has gone, escalating to
KILL for a service that does not stop on TERM. Neither ever raises for one bad service or
folder: it logs and goes on.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services import tree
from services.model import REALM_LINK, Create, LeaveAlone, Retire, Update, plan

log = logging.getLogger("ix.session")

#: how long a retired service gets to stop on TERM before runsv is told to KILL it
STOP_GRACE = 10.0
#: a retired folder is not removed sooner than this, so a runsv that runsvdir was starting
#: just as the folder was renamed has settled (and can be seen) first
REAP_MIN_AGE = 0.5


@dataclass
class Summary:
    generation: str | None = None
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unreadable: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.retired)


#: the current generation of the realm followed, if the daemon says it is ours; None if
#: there is no such realm; raises tree.RealmNotOurs (another uid's realm) or
#: tree.RealmUnreadable (the daemon cannot be asked now)
Locate = Callable[[], str | None]


class Reconciler:
    def __init__(self, svdir: Path, realm: str, locate: Locate, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.svdir = svdir
        self.realm = realm
        self.locate = locate
        self.clock = clock
        self.retired: dict[Path, float] = {}  # retired folder → when
        self.killed: set[Path] = set()
        self._said: set[str] = set()  # warnings given, to give each once
        self._generation: str | bool | None = False  # False: not read yet

    def sync(self) -> Summary:
        summary = Summary()
        try:
            try:
                located = self.locate()
            except tree.RealmNotOurs as exc:  # its services stop: never run as us
                located = None
                self._once(f"notours:{exc}", logging.WARNING,
                           "realm %s: %s; none of its services run", self.realm, exc)
            else:
                self._said = {s for s in self._said if not s.startswith("notours:")}
            generation, desired, warnings = tree.read_realm_services(located)
        except tree.RealmUnreadable as exc:
            summary.unreadable = str(exc)
            self._once(f"unreadable:{exc}", logging.WARNING,
                       "realm %s cannot be read, services left as they are: %s",
                       self.realm, exc)
            return summary
        summary.generation = generation
        self._said = {s for s in self._said if not s.startswith("unreadable:")}
        if generation != self._generation:
            self._generation = generation
            if generation is None:
                log.info("realm %s is not there (or not ours): it provides no services",
                         self.realm)
            else:
                log.info("realm %s is %s: services %s", self.realm, generation,
                         " ".join(sorted(desired)) or "(none)")
        for warning in warnings:
            self._once(f"warn:{generation}:{warning}", logging.WARNING, "%s", warning)
        try:
            present, unfinished, retired = tree.scan_tree(self.svdir, self.realm)
        except FileNotFoundError:  # the tree itself was removed: start it again
            log.warning("service tree %s is gone: making it again", self.svdir)
            try:
                self.svdir.mkdir(mode=0o755, parents=True, exist_ok=True)
                present, unfinished, retired = tree.scan_tree(self.svdir, self.realm)
            except OSError as exc:
                summary.unreadable = f"cannot make the service tree {self.svdir}: {exc}"
                log.error("%s", summary.unreadable)
                return summary
        except OSError as exc:
            summary.unreadable = f"cannot read the service tree {self.svdir}: {exc}"
            self._once(f"tree:{exc}", logging.ERROR, "%s", summary.unreadable)
            return summary
        try:
            tree.point_realm_link(self.svdir, generation)
        except OSError as exc:
            self._once(f"link:{exc}", logging.ERROR, "cannot point %s/%s at %s: %s",
                       self.svdir, REALM_LINK, generation, exc)
        for path in unfinished:  # left by a session that died while creating it
            shutil.rmtree(path, ignore_errors=True)
        for path in retired:
            self.retired.setdefault(path, self.clock())
        for action in plan(desired, present):
            try:
                self._apply(action, summary)
            except OSError as exc:
                name = action.name if isinstance(action, Retire | LeaveAlone) else \
                    action.spec.name
                summary.failed.append(name)
                log.error("service %s: %s failed: %s", name, type(action).__name__.lower(),
                          exc)
        for name in list(self._said_left_alone()):
            if name not in summary.left_alone:
                self._said.discard(f"alone:{name}")
        return summary

    def _apply(self, action: Create | Update | Retire | LeaveAlone, summary: Summary) -> None:
        if isinstance(action, Create):
            path = tree.create_service(self.svdir, self.realm, action.spec)
            summary.created.append(action.spec.name)
            log.info("service %s added: %s (runsvdir starts it)", action.spec.name, path)
        elif isinstance(action, Update):
            restart = tree.update_service(self.svdir, self.realm, action.spec, action.old)
            folder = self.svdir / action.spec.name
            if restart.runsv:
                tree.control(folder, "x")
            else:
                if restart.main:
                    tree.control(folder, "t")
                if restart.log:
                    tree.control(folder / "log", "t")
            summary.updated.append(action.spec.name)
            how = ("runsv restarted" if restart.runsv else
                   " and ".join(w for w, b in (("service", restart.main), ("log", restart.log))
                                if b) + " restarted")
            log.info("service %s updated: %s", action.spec.name, how)
        elif isinstance(action, Retire):
            path = tree.retire_service(self.svdir, action.name)
            self.retired[path] = self.clock()
            summary.retired.append(action.name)
            log.info("service %s removed: no longer in realm %s (stopping it)", action.name,
                     self.realm)
        else:
            summary.left_alone.append(action.name)
            self._once(f"alone:{action.name}", logging.WARNING,
                       "service %s of realm %s not installed: %s", action.name,
                       self.realm, action.reason)

    def reap(self) -> int:
        """Remove retired folders whose runsv has gone; return how many still wait."""
        now = self.clock()
        for path, since in list(self.retired.items()):
            if not path.exists():
                del self.retired[path]
                continue
            if now - since < REAP_MIN_AGE:
                continue
            if tree.runsv_running(path):
                if now - since >= STOP_GRACE and path not in self.killed:
                    self.killed.add(path)
                    log.warning("service in %s did not stop on TERM within %.0fs: KILL",
                                path, STOP_GRACE)
                    tree.control(path, "k")
                    tree.control(path / "log", "k")
                continue
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                del self.retired[path]
                self.killed.discard(path)
        return len(self.retired)

    def running(self) -> list[Path]:
        """Our service folders (live or retired) whose runsv still runs."""
        try:
            present, _unfinished, retired = tree.scan_tree(self.svdir, self.realm)
        except OSError:
            return []
        folders = [self.svdir / n for n, p in present.items() if p.mine]
        return [f for f in folders + retired if tree.runsv_running(f)]

    def _said_left_alone(self) -> list[str]:
        return [s.split(":", 1)[1] for s in self._said if s.startswith("alone:")]

    def _once(self, key: str, level: int, fmt: str, *args: object) -> None:
        if key not in self._said:
            self._said.add(key)
            log.log(level, fmt, *args)
