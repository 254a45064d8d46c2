"""Benchmark: the binary cache (issue 14) against a real SeaweedFS S3 server.

    python -m bench.cache [--packages lib/c bin/hello] [--nodes 1000] [--skip-builds]

Prints:

- **build**: `ixc build --packages` (lib/c, the toolchain wrappers, bin/hello) on a fresh
  root without a push cache, then again on a fresh root with `--push`: wall times, the
  difference (push overhead on the builder's critical path) and how long after the build
  the last index landed (the asynchronous upload);
- **substitute**: the same packages on a fresh root with `--cache`: wall time, entries, archive
  and unpacked MB and MB/s, and the ratio to the local build (goal ≤ 0.1);
- **look-up**: `BinaryCache.lookup` of --nodes uids (half of them in the cache, signed
  indexes) cold (a new cache object) and warm (the same again) (goal cold ≤ 1 s).

Every daemon runs on the same root path in turn (a cache serves one store dir); about
5 minutes on 2 cores, most of it the two builds of lib/c.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ixd.cache import format as fmt
from ixd.cache.binarycache import BinaryCache
from ixd.cache.stores import open_store, read_credentials
from tests.daemon_harness import PKGS, PROJECT, RunningDaemon, start_daemon, wait_for
from tests.s3server import running_s3, write_credentials

BUCKET = "bench"


def _fresh(root: Path) -> None:
    if root.exists():
        away = root.with_name(f"old-{secrets.token_hex(3)}")
        root.rename(away)
        subprocess.run(["chmod", "-R", "u+w", str(away)], check=False)
        shutil.rmtree(away, ignore_errors=True)


def _mut(daemon: RunningDaemon, packages: list[str]) -> float:
    """`ixc build PKG...`: makes the packages' run-time closures valid (lib/c is one)."""
    started = time.monotonic()
    daemon.ixc("build", *packages, timeout=3600)
    return time.monotonic() - started


def _rows(daemon: RunningDaemon) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(
        daemon.ixc("--json", "builds", "--limit", "500").stdout)["builds"]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", nargs="+", default=["lib/c", "bin/hello"])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--skip-builds", action="store_true",
                        help="only the look-up figures")
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="ix-bench-cache-"))
    top.chmod(0o755)
    try:
        with running_s3(top / "s3", (BUCKET,)) as s3:
            subprocess.run([sys.executable, "-m", "ixd.daemon.main", "keygen", "bench", "--dir",
                            str(top)], check=True, capture_output=True, cwd=PROJECT)
            credentials = write_credentials(top / "credentials")
            common = ["--trusted-key", str(top / "bench.public"), "--cache-credentials",
                      str(credentials)]
            root = top / "ix"
            url = s3.url(BUCKET, "main")
            if not args.skip_builds:
                _builds(s3, root, url, args.packages, common, top)
            _lookups(s3.url(BUCKET, "lookup"), str(root / "store"), credentials, top,
                     args.nodes)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
        shutil.rmtree(top, ignore_errors=True)
    return 0


def _builds(s3: object, root: Path, url: str, packages: list[str], common: list[str],
            top: Path) -> None:
    from tests.s3server import S3Server

    assert isinstance(s3, S3Server)
    daemon = start_daemon(root, overlays=(PKGS,))
    try:
        plain = _mut(daemon, packages)
    finally:
        daemon.stop()
    _fresh(root)
    push = ["--push", url, "--signing-key", str(top / "bench.secret"), *common]
    daemon = start_daemon(root, overlays=(PKGS,), extra=push)
    try:
        with_push = _mut(daemon, packages)
        switched = time.monotonic()
        built = {str(r["uid"]) for r in _rows(daemon) if r["state"] == "valid"}

        def landed() -> bool:
            keys = {k.rsplit("/", 1)[-1] for k in s3.keys(BUCKET, "main/")}
            return all(fmt.index_key(uid) in keys for uid in built)

        wait_for(landed, "the pushes", deadline=1800)
        upload = time.monotonic() - switched
    finally:
        daemon.stop()
    print(f"build  {', '.join(packages)}: {len(built)} entries built")
    print(f"  without push   {plain:8.1f} s")
    print(f"  with --push    {with_push:8.1f} s  (overhead {with_push - plain:+.1f} s, "
          f"{(with_push - plain) / plain * 100:+.1f} %; last index landed "
          f"{upload:.1f} s after the build)")
    _fresh(root)
    daemon = start_daemon(root, overlays=(PKGS,), extra=["--cache", url, *common])
    try:
        substituted = _mut(daemon, packages)
        rows = _rows(daemon)
    finally:
        daemon.stop()
    states = {str(r["state"]) for r in rows}
    archive = content = 0
    client = s3.client()
    for row in rows:
        text = client.get_object(Bucket=BUCKET, Key=f"main/{fmt.index_key(str(row['uid']))}")[
            "Body"].read().decode()
        entry = fmt.parse_entry(str(row["uid"]), text, str(root / "store"))
        archive += entry.file_size
        content += entry.content_size
    print(f"substitute: {len(rows)} entries ({', '.join(sorted(states))}), "
          f"{archive / 1e6:.1f} MB of archives, {content / 1e6:.1f} MB unpacked")
    print(f"  wall           {substituted:8.1f} s  ({archive / 1e6 / substituted:.1f} MB/s "
          f"compressed, {content / 1e6 / substituted:.1f} MB/s unpacked)")
    print(f"  ratio to build {substituted / plain:8.3f}  (goal <= 0.1)")
    _fresh(root)


def _lookups(url: str, store_dir: str, credentials: Path, top: Path, nodes: int) -> None:
    key = fmt.generate_key("bench")
    creds = read_credentials(credentials)
    writer = BinaryCache(open_store(url, creds), store_dir, {"bench": key.public()}, key)
    writer.ensure_info()
    uids = [secrets.token_hex(16) for _ in range(nodes)]
    archive = top / "empty"
    archive.write_bytes(b"")
    present = uids[::2]
    started = time.monotonic()
    for uid in present:  # the index only: look-ups never read archives
        entry = fmt.Entry(uid, f"{store_dir}/{uid}-bin-x", "0" * 64, 0, "0" * 64, 0)
        writer.store.put(fmt.index_key(uid), fmt.sign(entry, key).serialise().encode())
    print(f"look-up: {len(present)} signed indexes written in "
          f"{time.monotonic() - started:.1f} s (sequential puts)")
    reader = BinaryCache(open_store(url, creds), store_dir, {"bench": key.public()})
    started = time.monotonic()
    found = reader.lookup(uids)
    cold = time.monotonic() - started
    started = time.monotonic()
    again = reader.lookup(uids)
    warm = time.monotonic() - started
    assert len(found) == len(again) == len(present)
    print(f"  {nodes} nodes cold {cold:8.3f} s  (goal <= 1 s; {len(found)} hits, "
          f"{nodes - len(found)} misses, signatures checked)")
    print(f"  {nodes} nodes warm {warm:8.4f} s")


if __name__ == "__main__":
    sys.exit(main())
