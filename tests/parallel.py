"""Running the suite over several processes (pytest-xdist: `pytest -n N`).

xdist's controller hands work units to its workers. Here a unit is a whole module, so that a
module's daemons (module-scoped fixtures) start once, in one worker. A module that starts
from one of the prebuilt lib/c roots (tests/seeded_store.py) is handed out once its root is
ready: each process runs its seeded daemons at the roots' one path, which it sees as a
folder of its own, so two workers run such modules at once.

What the workers would each do once for the whole run, the controller does for all of them,
told by files in a folder of the run (`RunFolder`) that it shares with them:
- each worker says after its collection what its tests need (`Needs`): which prebuilt
  roots, the test accounts;
- the controller then builds those roots, in a thread, and creates the accounts, once;
- it holds a module back while its root is still being built and other units are left,
  so no worker sits waiting for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling


@dataclass
class Needs:
    """What the collected tests of the run need from the process running the session."""

    #: modules (their node-id prefix, "tests/test_x.py") starting from a prebuilt root, and
    #: the root (its fixture's name in tests/seeded_store.SEEDED_ROOTS)
    seeded_modules: dict[str, str] = field(default_factory=dict)
    #: whether any test uses the real test accounts
    accounts: bool = False
    #: modules with tests marked `slow`: handed out before the others (the longest first
    #: leaves the short ones to fill the end)
    slow_modules: set[str] = field(default_factory=set)
    #: modules on a prebuilt root that start before it is ready (mark `before_its_root`):
    #: handed out as if they needed none
    early_modules: set[str] = field(default_factory=set)


class RunFolder:
    """A folder the controller and its workers share for one run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def tell(self, worker: str, needs: Needs) -> None:
        """A worker's needs (each worker collects the same tests; each says so anyway)."""
        staging = self.path / f".needs-{worker}"
        staging.write_text(json.dumps({"seeded_modules": needs.seeded_modules,
                                       "accounts": needs.accounts,
                                       "slow_modules": sorted(needs.slow_modules),
                                       "early_modules": sorted(needs.early_modules)}))
        staging.rename(self.path / f"needs-{worker}.json")

    def needs(self) -> Needs:
        """What the workers said they need, together."""
        found = Needs()
        for told in self.path.glob("needs-*.json"):
            said = json.loads(told.read_text())
            found.seeded_modules.update(said["seeded_modules"])
            found.accounts |= said["accounts"]
            found.slow_modules.update(said["slow_modules"])
            found.early_modules.update(said["early_modules"])
        return found

    @property
    def _accounts(self) -> Path:
        return self.path / "accounts.json"

    def publish_accounts(self, accounts: dict[str, int]) -> None:
        staging = self._accounts.with_suffix(".tmp")
        staging.write_text(json.dumps(accounts))
        staging.rename(self._accounts)

    def accounts(self) -> dict[str, int]:
        """The accounts the controller created (before any test was handed out)."""
        try:
            accounts: dict[str, int] = json.loads(self._accounts.read_text())
        except FileNotFoundError:
            pytest.fail(f"the controller made no test accounts ({self._accounts} is missing):"
                        f" it creates them when a worker says its tests need them")
        return accounts


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def needs_of(items: list[pytest.Item], roots: Iterable[str]) -> Needs:
    """What `items` need: of the prebuilt `roots`, those each module's tests ask for (by
    fixture, or by a mark of the fixture's name where they ask through getfixturevalue)."""
    needs = Needs(accounts=any("accounts" in item.fixturenames for item in items),
                  slow_modules={module_of(item.nodeid) for item in items
                                if item.get_closest_marker("slow")},
                  early_modules={module_of(item.nodeid) for item in items
                                 if item.get_closest_marker("before_its_root")})
    for item in items:
        for root in roots:
            if root in item.fixturenames or item.get_closest_marker(root):
                module = module_of(item.nodeid)
                if needs.seeded_modules.setdefault(module, root) != root:
                    raise pytest.UsageError(
                        f"{module} asks for two prebuilt roots, {root} and "
                        f"{needs.seeded_modules[module]}: a module's tests must share one "
                        f"(their daemons run one after another at its path)")
    return needs


class ModuleScheduling(LoadScopeScheduling):
    """Whole modules as work units; a module on a prebuilt root is handed out once the root
    is ready (`seeded_ready`) or nothing else is left. Of what is ready, the modules on a
    prebuilt root go first (they waited for it: they end the run), slow ones before the
    others."""

    def __init__(self, config: pytest.Config, log: Any, *, needs: Callable[[], Needs],
                 seeded_ready: Callable[[str], bool]) -> None:
        super().__init__(config, log)
        self._needs = needs
        self._seeded_ready = seeded_ready

    def _split_scope(self, nodeid: str) -> str:
        return module_of(nodeid)

    def _assign_work_unit(self, node: Any) -> None:
        # xdist hands out the first unit of its queue: ready seeded modules, slow first,
        # then slow modules, then the others, last those whose roots are still being built
        needs = self._needs()

        def rank(unit: str) -> int:
            slow = unit in needs.slow_modules
            root = needs.seeded_modules.get(unit)
            if root is None or unit in needs.early_modules:
                return 2 if slow else 3
            if not self._seeded_ready(root):
                return 4
            return 0 if slow else 1

        for unit in sorted(self.workqueue, key=rank):
            self.workqueue.move_to_end(unit)
        super()._assign_work_unit(node)
