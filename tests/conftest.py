"""Shared fixtures: real accounts for multi-user tests, the roots with lib/c prebuilt, and
cleanup of what tests leave; and what a parallel run (`pytest -n N`) shares between its
processes (tests/parallel.py)."""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests import daemon_harness
from tests.parallel import ModuleScheduling, Needs, RunFolder, module_of, needs_of
from tests.seeded_store import SEEDED_ROOTS, Prebuild, SeededPath, SeededRoot

# Property tests: a hundred cases each in every test run (the suite runs often, and each
# run draws new ones); `bench/fuzz.py` (profile `fuzz`) runs the fuzzers with tens of
# thousands. No time limits: the machine may be busy (a slow case is not a failing one).
settings.register_profile("ci", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=int(os.environ.get("IX_FUZZ_EXAMPLES", "20000")),
                          deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("IX_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def _remove_readable_client() -> Iterator[None]:
    yield
    shutil.rmtree(daemon_harness._READABLE, ignore_errors=True)


class Run:
    """What this process does for the whole run. Alone, or as xdist's controller (`pytest
    -n N`), it makes the prebuilt lib/c roots and the test accounts when tests need them; as a
    worker, it uses those its controller made (tests/parallel.py)."""

    def __init__(self) -> None:
        #: the folder shared with xdist's workers (and the prebuilt roots' home)
        self._folder: RunFolder | None = None
        #: a worker's controller's folder, and the worker's name there
        self.controllers: RunFolder | None = None
        self.worker = ""
        #: what the run's tests need (as the workers of a parallel run told it)
        self.needs = Needs()
        #: the prebuilt lib/c roots (see `lib_c_root`)
        self.prebuild = Prebuild()
        #: the test accounts, when made by this process for its workers
        self.accounts: contextlib.ExitStack = contextlib.ExitStack()
        self.made_accounts: dict[str, int] | None = None

    def folder(self) -> RunFolder:
        """This process's run folder, made when first asked for."""
        if self._folder is None:
            # not under /tmp: the prebuilt root lives here (see Prebuild.start)
            self._folder = RunFolder(Path(tempfile.mkdtemp(prefix="ix-run-", dir="/var/tmp")))
            self._folder.path.chmod(0o755)
        return self._folder

    def start_prebuilds(self, roots: Iterable[str]) -> None:
        self.prebuild.start(self.folder().path / "seeded", sorted(roots))

    def make_accounts(self) -> dict[str, int]:
        if self.made_accounts is None:
            self.made_accounts = self.accounts.enter_context(_locked_accounts())
            self.folder().publish_accounts(self.made_accounts)
        return self.made_accounts

    def close(self) -> None:
        self.prebuild.close()
        self.accounts.close()
        if self._folder is not None:
            shutil.rmtree(self._folder.path, ignore_errors=True)


RUN = Run()


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        RUN.controllers = RunFolder(Path(workerinput["ix_run_folder"]))
        RUN.worker = workerinput["workerid"]
    if os.geteuid() == 0:
        # this process's seeded daemons run at the prebuilt roots' one path, seen as a
        # folder of its own (tests/seeded_store.py): before any test starts a thread
        run = RUN.controllers or RUN.folder()
        RUN.prebuild.enter(run.path / "seeded", RUN.worker or "main")


@pytest.hookimpl(optionalhook=True)  # xdist's
def pytest_configure_node(node: Any) -> None:
    """(xdist's controller, for each worker it starts) where to find what it makes for them."""
    node.workerinput["ix_run_folder"] = str(RUN.folder().path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    needs = needs_of(items, SEEDED_ROOTS)
    if RUN.controllers is not None:
        # a worker: the controller makes what the tests need, once it hears
        RUN.controllers.tell(RUN.worker, needs)
    elif needs.seeded_modules:
        # If tests need lib/c prebuilt, start building it now and run their modules last
        # (whole modules, in their order): the build overlaps every other test.
        items.sort(key=lambda item: module_of(item.nodeid) in needs.seeded_modules)
        if not config.option.collectonly:
            RUN.start_prebuilds(set(needs.seeded_modules.values()))


@pytest.hookimpl(optionalhook=True)  # xdist's
def pytest_xdist_node_collection_finished(node: Any, ids: Sequence[str]) -> None:
    """(xdist's controller) A worker collected its tests, and said what they need."""
    RUN.needs = needs = RUN.folder().needs()
    if not node.config.option.collectonly:
        RUN.start_prebuilds(set(needs.seeded_modules.values()))
    if needs.accounts and os.getuid() == 0:
        RUN.make_accounts()


@pytest.hookimpl(optionalhook=True)  # xdist's
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> ModuleScheduling:
    return ModuleScheduling(config, log, needs=lambda: RUN.needs,
                            seeded_ready=RUN.prebuild.finished)


def pytest_sessionfinish() -> None:
    RUN.close()


@pytest.fixture(scope="session")
def seeded_path() -> SeededPath:
    """The prebuilt roots' one path, this process's own, without waiting for any root (a
    module marked `before_its_root` holds it, then asks for its root when it needs it)."""
    return RUN.prebuild.path()


@pytest.fixture(scope="session")
def lib_c_root() -> SeededRoot:
    """The root whose store starts with lib/c and compiler-rt's builtins, built once for the
    whole run: modules whose daemons build C packages start from a copy instead of building
    musl again. (A module that asks for it through `request.getfixturevalue` is marked
    `lib_c_root`.)"""
    return RUN.prebuild.result("lib_c_root")


@pytest.fixture(scope="session")
def toolchain_root() -> SeededRoot:
    """Like `lib_c_root`, with the C++ runtimes (lib/unwind, lib/c++abi, lib/c++) and lib/c
    built by gcc too (mark: `toolchain_root`)."""
    return RUN.prebuild.result("toolchain_root")


@pytest.fixture(scope="session")
def cross_root() -> SeededRoot:
    """Like `lib_c_root`, with lib/c and the builtins for linux-aarch64 and linux-riscv64 too,
    and the C++ runtimes for linux-aarch64 (mark: `cross_root`)."""
    return RUN.prebuild.result("cross_root")


#: held while a test run has the test accounts
ACCOUNTS_LOCK = "/tmp/ix-test-accounts.lock"


@pytest.fixture(scope="session")
def accounts() -> Iterator[dict[str, int]]:
    """Two real unprivileged accounts, ixtalice and ixtbob, plus an admin group ixtadmins
    holding ixtcarol; removed again at the end, whatever happened."""
    if os.getuid() != 0:
        pytest.skip("creating accounts needs root")
    if RUN.controllers is not None:
        yield RUN.controllers.accounts()  # made by the controller, for all its workers
    else:
        with _locked_accounts() as made:
            yield made


@contextlib.contextmanager
def _locked_accounts() -> Iterator[dict[str, int]]:
    # Test runs of other checkouts on this machine use the same accounts: one run at a time
    # holds them (the lock goes with the process, however it ends).
    lock = os.open(ACCOUNTS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield from _accounts()
    finally:
        os.close(lock)


def _delete_account(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True)


def _accounts() -> Iterator[dict[str, int]]:
    names = ["ixtalice", "ixtbob", "ixtcarol"]
    created: list[str] = []
    group_made = False
    try:
        subprocess.run(["groupdel", "ixtadmins"], capture_output=True)
        subprocess.run(["groupadd", "--system", "ixtadmins"], check=True)
        group_made = True
        for name in names:
            _delete_account(name)
            extra = ["--groups", "ixtadmins"] if name == "ixtcarol" else []
            subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", *extra, name],
                           check=True)
            created.append(name)
        yield {name: pwd.getpwnam(name).pw_uid for name in names}
    finally:
        for name in created:
            _delete_account(name)
        if group_made:
            subprocess.run(["groupdel", "ixtadmins"], capture_output=True)
        assert not [n for n in names if _exists(n)]
        assert "ixtadmins" not in {g.gr_name for g in grp.getgrall()}


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
