"""Only the administrator decides what goes into a binary cache: `ixc push` is refused to a
plain user and allowed to the admin group (caches and keys are ixd options, no op takes one).

Uses real accounts: run under `flock /tmp/ix-accounts.lock`."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import PROJECT, RunningDaemon, public_daemon


@pytest.fixture(scope="module")
def daemon(accounts: dict[str, int]) -> Iterator[RunningDaemon]:
    keys = Path(tempfile.mkdtemp(prefix="ix-cache-keys-"))
    subprocess.run([sys.executable, "-m", "ixd.daemon.main", "keygen", "admin-1",
                    "--dir", str(keys)],
                   check=True, capture_output=True, cwd=PROJECT)
    cache = keys / "cache"
    extra = ["--admin-group", "ixtadmins", "--push", f"file://{cache}", "--signing-key",
             str(keys / "admin-1.secret")]
    with public_daemon("ix-cache-admin-", extra) as running:
        yield running
    subprocess.run(["rm", "-rf", str(keys)], check=False)


def test_a_user_may_not_push_and_an_admin_may(daemon: RunningDaemon) -> None:
    refused = daemon.ixc("push", "bin/chatty", user="ixtalice", check=False)
    assert refused.returncode != 0 and "[E_PERMISSION]" in refused.stderr, refused.stderr
    daemon.ixc("build", "bin/chatty", user="ixtalice")
    allowed = daemon.ixc("--json", "push", "bin/chatty", user="ixtcarol")
    report = json.loads(allowed.stdout)
    assert len(report["pushed"]) + report["present"] >= 1

