"""One binary cache over an object store (`ixd.cache.stores`): look-ups (batched,
memoised), archive downloads bounded by the size the signed index names and checked against
it, and pushes in commit order (references, archive, then index). Every method blocks.

May import: `ixd.wire`, `ixd.model`, `ixd.store`, and of `ixd.cache` `format` and `stores`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ixd.cache import format as fmt
from ixd.cache.stores import LOOKUP_THREADS, ObjectStore, Writable
from ixd.wire.errors import (
    CacheArchiveMissing,
    CacheError,
    CacheHashMismatch,
    CacheRefused,
)

log = logging.getLogger("ixd.cache")

#: a batch of at least this many look-ups lists the cache's indexes first (one request per
#: 1,000 of them) and reads only those there: most of a big plan's look-ups are misses
LIST_AT = 64
#: how long a miss is believed (an entry may be pushed meanwhile); hits are kept for good
NEGATIVE_TTL = 60.0


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

    def holds(self, uid: str) -> bool:
        """Whether the cache holds a good entry of `uid` (what a push may skip): an index for
        this store, signed by a key this daemon trusts (or signs with), whose archive is
        there. Anything else (an index planted by whoever can write to the bucket, unsigned
        or signed by another key; an archive deleted since) is logged and pushed over."""
        data = self.store.get(fmt.index_key(uid), fmt.MAX_INDEX_BYTES)
        if data is None:
            return False
        trusted = dict(self.trusted)
        if self.signing_key is not None:
            trusted[self.signing_key.name] = self.signing_key.public()
        try:
            entry = fmt.parse_entry(uid, data.decode(errors="replace"), self.store_dir)
            fmt.check_signature(entry, trusted, f"cache {self.url}")
        except CacheRefused as exc:
            log.warning("%s; pushing over it", exc.message)
            return False
        if not self.store.exists(entry.url):
            log.warning("cache %s: the archive %s of %s is missing; pushing it again",
                        self.url, entry.url, uid)
            return False
        return True

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
        # uploaded even if an object is there: whoever can write to the bucket may have put
        # one under the name a reproducible archive's hash gives, before this push
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
