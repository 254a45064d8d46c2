"""Binary cache stores: where cache objects live, behind one small blocking interface.

Two backends: an S3-compatible object store (boto3; path-style addressing, so any
S3-compatible server works) and a plain folder (one host, or an NFS share). Every call
blocks: the daemon calls them from worker threads, and a separate worker process (issue 15)
can use them as they are. `BinaryCache` adds the format on top: look-ups (batched, memoised),
archive downloads bounded by the size the signed index names, and pushes in commit order
(references, archive, then index).

    s3://BUCKET/PREFIX?endpoint=http://HOST:PORT&region=R&timeout=S
    file:///srv/ix-cache
"""

from __future__ import annotations

import concurrent.futures
import configparser
import contextlib
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from ixd.cache import format as fmt
from ixd.wire.errors import (
    CacheArchiveMissing,
    CacheBadUrl,
    CacheError,
    CacheFormatError,
    CacheHashMismatch,
    CacheNoBucket,
    CacheRefused,
    CacheUnavailable,
)

log = logging.getLogger("ixd.cache")

_CHUNK = 1 << 20
#: concurrent requests of one batched look-up
LOOKUP_THREADS = 32
#: a batch of at least this many look-ups lists the cache's indexes first (one request per
#: 1,000 of them) and reads only those there: most of a big plan's look-ups are misses
LIST_AT = 64
#: how long a miss is believed (an entry may be pushed meanwhile); hits are kept for good
NEGATIVE_TTL = 60.0


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


# --- the cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    cache: BinaryCache
    entry: fmt.Entry


class BinaryCache:
    """One cache: look-ups memoised (hits for good, misses for NEGATIVE_TTL), archives
    downloaded and checked against their signed index, pushes in commit order. Thread-safe;
    every method blocks."""

    def __init__(self, store: ObjectStore, store_dir: str,
                 trusted: Mapping[str, fmt.PublicKey] | None = None,
                 signing_key: fmt.SecretKey | None = None, priority: int = 50) -> None:
        self.store = store
        self.url = store.url
        self.store_dir = store_dir
        self.trusted = dict(trusted or {})
        self.signing_key = signing_key
        self.priority = priority
        self._lock = threading.Lock()
        self._hits: dict[str, fmt.Entry] = {}
        self._misses: dict[str, float] = {}
        self._checked_info = False

    # --- reading ---

    def check_info(self) -> fmt.CacheInfo | None:
        """The cache's ix-cache-info; CacheRefused if it serves another store dir."""
        data = self.store.get(fmt.INFO_KEY, fmt.MAX_INDEX_BYTES)
        if data is None:
            return None
        info = fmt.parse_info(data.decode(errors="replace"), f"{self.url}/{fmt.INFO_KEY}")
        if info.store_dir != self.store_dir:
            raise CacheRefused(f"cache {self.url} holds entries for the store "
                               f"{info.store_dir}, not {self.store_dir}: their paths would "
                               f"be wrong here; use a cache of this store dir")
        self.priority = info.priority
        return info

    def lookup(self, uids: Iterable[str]) -> dict[str, fmt.Entry]:
        """The entries of `uids` this cache has and a trusted key signed; uids it lacks are
        left out, and so is an index that does not check out (logged, with its reason).
        CacheUnavailable if the server cannot be asked."""
        if not self._checked_info:
            self.check_info()
            self._checked_info = True
        now = time.monotonic()
        found: dict[str, fmt.Entry] = {}
        ask = []
        with self._lock:
            for uid in dict.fromkeys(uids):
                if uid in self._hits:
                    found[uid] = self._hits[uid]
                elif self._misses.get(uid, 0.0) <= now:
                    ask.append(uid)
        if not ask:
            return found
        fetched = self._fetch_indexes(ask)
        with self._lock:
            for uid in ask:
                outcome = fetched.get(uid)
                if isinstance(outcome, fmt.Entry):
                    self._hits[uid] = found[uid] = outcome
                else:
                    self._misses[uid] = now + NEGATIVE_TTL
        return found

    def ask_again(self, uid: str) -> None:
        """Drop the remembered miss of `uid` (a remote build has just pushed it)."""
        with self._lock:
            self._misses.pop(uid, None)

    def forget(self, uid: str) -> None:
        """Drop what is known of `uid` (its entry was refused on download)."""
        with self._lock:
            self._hits.pop(uid, None)
            self._misses[uid] = time.monotonic() + NEGATIVE_TTL

    def _fetch_indexes(self, uids: list[str]) -> dict[str, fmt.Entry | CacheError | None]:
        if len(uids) >= LIST_AT:
            listed = self.store.top_keys()
            uids = [u for u in uids if fmt.index_key(u) in listed]
        if len(uids) <= 1:
            return {u: self._fetch_index(u) for u in uids}
        with concurrent.futures.ThreadPoolExecutor(min(LOOKUP_THREADS, len(uids))) as pool:
            return dict(zip(uids, pool.map(self._fetch_index, uids), strict=True))

    def _fetch_index(self, uid: str) -> fmt.Entry | CacheError | None:
        data = self.store.get(fmt.index_key(uid), fmt.MAX_INDEX_BYTES)
        if data is None:
            return None
        try:
            entry = fmt.parse_entry(uid, data.decode(errors="replace"), self.store_dir)
            fmt.check_signature(entry, self.trusted, f"cache {self.url}")
        except CacheRefused as exc:
            log.warning("%s", exc)
            return exc
        return entry

    def download(self, entry: fmt.Entry, into: BinaryIO) -> None:
        """The archive of `entry` into `into`, its size and sha256 checked against the
        (signed) index; CacheArchiveMissing / CacheHashMismatch otherwise."""
        checked = _Hashing(into)
        if not self.store.download(entry.url, checked, entry.file_size):
            raise CacheArchiveMissing(
                f"cache {self.url}: the archive {entry.url} of {entry.uid} is missing though "
                f"its index is there; refused (push it again with ixc push)")
        if checked.size != entry.file_size or checked.digest.hexdigest() != entry.file_hash:
            raise CacheHashMismatch(
                f"cache {self.url}: the archive {entry.url} of {entry.uid} is "
                f"{checked.size} bytes with sha256 {checked.digest.hexdigest()}, its signed "
                f"index says {entry.file_size} bytes, {entry.file_hash}: it was tampered "
                f"with or damaged; refused")

    # --- writing ---

    def has_index(self, uid: str) -> bool:
        return self.store.exists(fmt.index_key(uid))

    def initialise(self) -> tuple[bool, fmt.CacheInfo]:
        """Make the cache's bucket (or folder) and its ix-cache-info (`ixd cache-init`):
        whether the bucket was made, and the info it now holds. CacheRefused if it is
        there already for another store dir."""
        made = self.store.create()
        self.ensure_info()
        info = self.check_info()
        assert info is not None, "ix-cache-info was just written"
        return made, info

    def ensure_info(self) -> None:
        if self.store.get(fmt.INFO_KEY, fmt.MAX_INDEX_BYTES) is None:
            self.store.put(fmt.INFO_KEY, fmt.CacheInfo(self.store_dir,
                                                       self.priority).serialise().encode())
        else:
            self.check_info()

    def publish(self, entry: fmt.Entry, archive: Path) -> fmt.Entry:
        """Upload `archive`, then `entry`'s index, signed: the index last, as the commit
        marker (a crash in between leaves an archive nobody points at, never an index
        pointing at nothing). The caller pushed the references first."""
        if self.signing_key is None:
            raise CacheError(f"cache {self.url}: pushing needs a signing key (ixd "
                             f"--signing-key FILE, made by ixd keygen)")
        signed = fmt.sign(entry, self.signing_key)
        if not self.store.exists(signed.url):
            self.store.upload(signed.url, archive)
        self.store.put(fmt.index_key(entry.uid), signed.serialise().encode())
        with self._lock:
            self._hits[entry.uid] = signed
            self._misses.pop(entry.uid, None)
        return signed


class _Hashing:
    """A writable file that hashes and counts what goes through it."""

    def __init__(self, into: Writable) -> None:
        self.into = into
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.into.write(data)
