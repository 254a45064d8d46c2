"""Binary cache stores: where cache objects live, behind one small blocking interface.

Two backends: an S3-compatible object store (boto3; path-style addressing, so any
S3-compatible server works) and a plain folder (one host, or an NFS share). Every call
blocks: the daemon calls them from worker threads, and a separate worker process (issue 15)
can use them as they are. `ixd.cache.binarycache` adds the format on top.

    s3://BUCKET/PREFIX?endpoint=http://HOST:PORT&region=R&timeout=S
    file:///srv/ix-cache
"""

from __future__ import annotations

import configparser
import contextlib
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from ixd.wire.errors import (
    CacheBadUrl,
    CacheFormatError,
    CacheHashMismatch,
    CacheNoBucket,
    CacheUnavailable,
)

_CHUNK = 1 << 20
#: concurrent requests of one batched look-up (`ixd.cache.binarycache`): an S3 store keeps
#: as many connections
LOOKUP_THREADS = 32


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class ObjectStore(Protocol):
    """Named byte objects. Missing objects are None/False; anything else going wrong raises
    CacheUnavailable naming the store."""

    url: str

    def get(self, key: str, max_bytes: int) -> bytes | None: ...

    def exists(self, key: str) -> bool: ...

    def download(self, key: str, into: Writable, max_bytes: int) -> bool: ...

    def put(self, key: str, data: bytes) -> None: ...

    def upload(self, key: str, path: Path) -> None: ...

    def top_keys(self) -> set[str]:
        """The names of the objects at the top (not under `nar/`): the indexes."""
        ...

    def create(self) -> bool:
        """Make the bucket (or folder) the objects go in: True if it was made, False if it
        was there already (`ixd cache-init`)."""
        ...



# --- a folder ------------------------------------------------------------------------------


class DirectoryStore:
    """Objects as files under a folder; written to a temporary name, then renamed, so a
    reader never sees half an object."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str, max_bytes: int) -> bytes | None:
        try:
            with open(self._path(key), "rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheUnavailable(f"cache {self.url}: cannot read {key}: {exc}") from exc
        if len(data) > max_bytes:
            raise CacheFormatError(f"cache {self.url}: {key} is larger than {max_bytes} bytes")
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def download(self, key: str, into: Writable, max_bytes: int) -> bool:
        try:
            with open(self._path(key), "rb") as handle:
                _copy_bounded(handle, into, max_bytes, f"{self.url}/{key}")
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise CacheUnavailable(f"cache {self.url}: cannot read {key}: {exc}") from exc
        return True

    def put(self, key: str, data: bytes) -> None:
        self._write(key, lambda handle: handle.write(data))

    def upload(self, key: str, path: Path) -> None:
        def copy(handle: BinaryIO) -> None:
            with open(path, "rb") as source:
                while chunk := source.read(_CHUNK):
                    handle.write(chunk)

        self._write(key, copy)

    def _write(self, key: str, fill: Any) -> None:
        target = self._path(key)
        staging = target.with_name(f".{target.name}.{secrets.token_hex(6)}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(staging, "wb") as handle:
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(staging, 0o644)
            os.rename(staging, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                staging.unlink()
            raise CacheUnavailable(f"cache {self.url}: cannot write {key}: {exc}") from exc


    def create(self) -> bool:
        try:
            self.root.mkdir(parents=True)
        except FileExistsError:
            if not self.root.is_dir():
                raise CacheUnavailable(f"cache {self.url}: {self.root} is not a folder") from None
            return False
        except OSError as exc:
            raise CacheUnavailable(f"cache {self.url}: cannot make {self.root}: {exc}") from exc
        self.root.chmod(0o755)
        return True

    def top_keys(self) -> set[str]:
        try:
            return {e.name for e in os.scandir(self.root)
                    if e.is_file() and not e.name.startswith(".")}
        except FileNotFoundError:
            return set()
        except OSError as exc:
            raise CacheUnavailable(f"cache {self.url}: cannot list it: {exc}") from exc


# --- S3 ------------------------------------------------------------------------------------


class S3Store:
    """Objects in a bucket of an S3-compatible server, under a prefix."""

    def __init__(self, url: str, bucket: str, prefix: str, *, endpoint: str | None,
                 region: str, timeout: float, credentials: Mapping[str, str] | None) -> None:
        import boto3  # imported here: ixd without caches does not load boto3
        import botocore.config
        from botocore import UNSIGNED

        self.url = url
        self.bucket = bucket
        self.prefix = prefix
        options: dict[str, Any] = dict(
            s3={"addressing_style": "path"}, connect_timeout=timeout, read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=LOOKUP_THREADS)
        session = boto3.session.Session(
            aws_access_key_id=(credentials or {}).get("aws_access_key_id"),
            aws_secret_access_key=(credentials or {}).get("aws_secret_access_key"),
            aws_session_token=(credentials or {}).get("aws_session_token"),
            region_name=region)
        if session.get_credentials() is None:  # a public cache: read without signing
            options["signature_version"] = UNSIGNED
        try:
            self._client = session.client("s3", endpoint_url=endpoint,
                                          config=botocore.config.Config(**options))
        except ValueError as exc:  # botocore's word for a bad endpoint or region
            raise CacheBadUrl(f"cache URL {url!r}: {exc}") from exc

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            if code == "NoSuchBucket":
                raise CacheNoBucket(f"cache {self.url}: {what} failed: the bucket "
                                    f"{self.bucket!r} does not exist; the administrator "
                                    f"makes it once with `ixd cache-init {self.url}`") from exc
            raise CacheUnavailable(f"cache {self.url}: {what} failed: {code} "
                                   f"({exc}); check the bucket, the credentials and the "
                                   f"server") from exc
        except (BotoCoreError, OSError) as exc:
            raise CacheUnavailable(f"cache {self.url}: {what} failed: {exc}; is the server "
                                   f"up and reachable?") from exc

    @staticmethod
    def _missing(exc: Exception) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(exc, ClientError) and exc.response.get("Error", {}).get(
            "Code") in ("404", "NoSuchKey", "NotFound")

    def _body(self, key: str) -> Any:
        """The streaming body of an object, None if there is none (inside `_errors`)."""
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except Exception as exc:
            if self._missing(exc):
                return None
            raise

    def get(self, key: str, max_bytes: int) -> bytes | None:
        with self._errors(f"reading {key}"):
            body = self._body(key)
            if body is None:
                return None
            try:
                data: bytes = body.read(max_bytes + 1)
            finally:
                body.close()
        if len(data) > max_bytes:
            raise CacheFormatError(f"cache {self.url}: {key} is larger than {max_bytes} bytes")
        return data

    def exists(self, key: str) -> bool:
        with self._errors(f"looking up {key}"):
            try:
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            except Exception as exc:
                if self._missing(exc):
                    return False
                raise
        return True

    def download(self, key: str, into: Writable, max_bytes: int) -> bool:
        with self._errors(f"downloading {key}"):
            body = self._body(key)
            if body is None:
                return False
            try:
                _copy_bounded(body, into, max_bytes, f"{self.url}/{key}")
            finally:
                body.close()
        return True

    def put(self, key: str, data: bytes) -> None:
        with self._errors(f"writing {key}"):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def upload(self, key: str, path: Path) -> None:
        with self._errors(f"uploading {key}"), open(path, "rb") as handle:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=handle)


    def create(self) -> bool:
        from botocore.exceptions import ClientError

        with self._errors(f"making the bucket {self.bucket!r}"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return False
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket",
                                                                     "NotFound"):
                    raise
            region = self._client.meta.region_name
            place = ({} if region in (None, "us-east-1")
                     else {"CreateBucketConfiguration": {"LocationConstraint": region}})
            try:
                self._client.create_bucket(Bucket=self.bucket, **place)
            except ClientError as exc:  # made by someone else meanwhile
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise
                return False
        return True

    def top_keys(self) -> set[str]:
        strip = len(self._key(""))
        with self._errors("listing the indexes"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(""), Delimiter="/")
            return {item["Key"][strip:] for page in pages for item in page.get("Contents", [])}


def _copy_bounded(source: Any, into: Writable, max_bytes: int, what: str) -> None:
    copied = 0
    while chunk := source.read(_CHUNK):
        copied += len(chunk)
        if copied > max_bytes:
            raise CacheHashMismatch(f"{what} is larger than the {max_bytes} bytes its index "
                                    f"names; refused")
        into.write(chunk)


def read_credentials(path: Path) -> dict[str, str]:
    """An AWS shared-credentials file's [default] section (aws_access_key_id, ...)."""
    parser = configparser.ConfigParser()
    try:
        with open(path) as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error) as exc:
        raise CacheBadUrl(f"cannot read the cache credentials {path}: {exc}") from exc
    section = parser["default"] if parser.has_section("default") else None
    if section is None or "aws_access_key_id" not in section:
        raise CacheBadUrl(f"{path} has no [default] section with aws_access_key_id and "
                          f"aws_secret_access_key")
    return dict(section)


def open_store(url: str, credentials: Mapping[str, str] | None = None) -> ObjectStore:
    """The store a cache URL names; CacheBadUrl saying what is wrong with it."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/") or query:
            raise CacheBadUrl(f"cache URL {url!r}: a folder cache is file:///ABSOLUTE/PATH")
        return DirectoryStore(url, Path(unquote(parts.path)))
    if parts.scheme == "s3":
        unknown = set(query) - {"endpoint", "region", "timeout"}
        if not parts.netloc or unknown:
            raise CacheBadUrl(f"cache URL {url!r}: expected s3://BUCKET/PREFIX?endpoint="
                              f"http://HOST:PORT&region=R&timeout=SECONDS"
                              + (f" (unknown {', '.join(sorted(unknown))})" if unknown else ""))
        try:
            timeout = float(query.get("timeout", "20"))
        except ValueError:
            raise CacheBadUrl(f"cache URL {url!r}: timeout {query['timeout']!r} is not a "
                              f"number of seconds") from None
        return S3Store(url, parts.netloc, parts.path.strip("/"),
                       endpoint=query.get("endpoint"), region=query.get("region", "us-east-1"),
                       timeout=timeout, credentials=credentials)
    raise CacheBadUrl(f"cache URL {url!r}: ix knows s3://BUCKET/PREFIX?endpoint=... and "
                      f"file:///PATH")
