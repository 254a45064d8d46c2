"""Shared fixtures: real accounts for multi-user tests, and cleanup of what tests leave."""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests import daemon_harness
from tests.seeded_store import Prebuild, SeededRoot

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


#: the run's root with lib/c prebuilt (see `lib_c_root`)
PREBUILD = Prebuild()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # If tests need lib/c prebuilt, start building it now and run their modules last (whole
    # modules, in their order): the build overlaps every other test.
    needing = {item.path for item in items
               if "lib_c_root" in item.fixturenames or item.get_closest_marker("lib_c_root")}
    if needing:
        items.sort(key=lambda item: item.path in needing)  # stable: the order stays otherwise
        if not config.option.collectonly:
            PREBUILD.start()


def pytest_sessionfinish() -> None:
    PREBUILD.close()


@pytest.fixture(scope="session")
def lib_c_root() -> SeededRoot:
    """The root whose store starts with lib/c, built once for the whole run: modules whose
    daemons build C packages start from a copy instead of building musl again. (A module
    that asks for it through `request.getfixturevalue` is marked `lib_c_root`.)"""
    return PREBUILD.result()


#: held while a test run has the test accounts
ACCOUNTS_LOCK = "/tmp/ix-test-accounts.lock"


def _delete_account(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture(scope="session")
def accounts() -> Iterator[dict[str, int]]:
    """Two real unprivileged accounts, ixtalice and ixtbob, plus an admin group ixtadmins
    holding ixtcarol; removed again at the end, whatever happened."""
    if os.getuid() != 0:
        pytest.skip("creating accounts needs root")
    # Test runs of other checkouts on this machine use the same accounts: one run at a time
    # holds them (the lock goes with the process, however it ends).
    lock = os.open(ACCOUNTS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield from _accounts()
    finally:
        os.close(lock)


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
