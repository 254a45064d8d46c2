"""Substitution and pushing: store entries fetched from binary caches instead of built, and
entries this daemon built uploaded to one.

`narrow_plan` (pure) decides: a build node a trusted cache holds becomes a `substitute` node
that waits only for its run-time references, and whatever was needed only to build it leaves
the plan. `Substituter.fetch` (blocking, in a worker thread) downloads the archive into the
source cache, checked against the signed index; the runner then unpacks it as a build node
(`ixd.cache.unpack`: tar as a build user in the sandbox), canonicalised like any build output, and
only a tree of the signed content hash is renamed into the store. `Pusher` uploads built entries
after they are registered, off the realm switch's way, retrying.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ixd.cache import archive as cachearchive
from ixd.cache import format as fmt
from ixd.cache.binarycache import BinaryCache, Hit
from ixd.cache.settings import CacheSettings
from ixd.cache.stores import open_store, read_credentials
from ixd.model.layout import Layout
from ixd.model.nodes import Node, Plan, needed_plan
from ixd.store.db import BuildDatabase
from ixd.store.treehash import tree_hash
from ixd.wire.errors import (
    CacheError,
    CacheKeyError,
    CacheRefused,
    CacheUnavailable,
    CacheUnsafeArchive,
)

log = logging.getLogger("ixd.cache.substitute")

#: how long a cache whose server failed is left alone before it is asked again
DOWN_FOR = 30.0
#: attempts of one queued push, and the wait before the first retry (doubling)
PUSH_ATTEMPTS = 5
PUSH_BACKOFF = 2.0


def narrow_plan(plan: Plan, hits: Mapping[str, Sequence[str]],
                is_valid: Callable[[Node], bool]) -> Plan:
    """The plan with every build node in `hits` (uid → its run-time references) turned into
    a substitute node, and the nodes nothing needs any more left out (`needed_plan`). A hit
    whose references are not all in the plan is built as planned."""
    return needed_plan(plan, is_valid, hits)


def load_trusted_keys(specs: Iterable[str]) -> dict[str, fmt.PublicKey]:
    """`--trusted-key` values: a public key file, or NAME:BASE64 itself."""
    keys: dict[str, fmt.PublicKey] = {}
    for spec in specs:
        if os.path.exists(spec):
            try:
                text = Path(spec).read_text()
            except OSError as exc:
                raise CacheKeyError(f"cannot read the trusted key {spec}: {exc}") from exc
            key = fmt.parse_public_key(text, spec)
        else:
            key = fmt.parse_public_key(spec, "--trusted-key value")
        keys[key.name] = key
    return keys


def load_signing_key(path: Path) -> fmt.SecretKey:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CacheKeyError(f"cannot read the signing key {path}: {exc}; make one with "
                            f"`ixd keygen NAME`") from exc
    return fmt.parse_secret_key(text, str(path))


def open_caches(settings: CacheSettings, store_dir: str
                ) -> tuple[list[BinaryCache], BinaryCache | None]:
    """The caches to substitute from (in the order given) and the one to push to."""
    credentials = read_credentials(settings.credentials) if settings.credentials else None
    trusted = load_trusted_keys(settings.trusted_keys)
    if settings.caches and not trusted:
        raise CacheKeyError("--cache needs at least one --trusted-key: ix substitutes only "
                            "entries signed by a key the administrator trusts")
    caches = [BinaryCache(open_store(url, credentials), store_dir, trusted)
              for url in settings.caches]
    push = None
    if settings.push:
        if settings.signing_key is None:
            raise CacheKeyError("--push needs --signing-key FILE (made by `ixd keygen NAME`)")
        push = BinaryCache(open_store(settings.push, credentials), store_dir, trusted,
                           load_signing_key(settings.signing_key))
    return caches, push


class Substituter:
    """Looks nodes up in the caches and fetches what they hold. `lookup` and `fetch` block
    (worker threads); `narrow` is their trio face for the scheduler."""

    def __init__(self, caches: Sequence[BinaryCache], layout: Layout, max_size: int) -> None:
        self.caches = list(caches)
        self.layout = layout
        self.max_size = max_size
        self._lock = threading.Lock()
        self._hits: dict[str, Hit] = {}
        #: uids whose substitute was refused: built here from now on
        self._refused: set[str] = set()
        self._down_until: dict[str, float] = {}

    async def narrow(self, plan: Plan, is_valid: Callable[[Node], bool]) -> Plan:
        wanted = [n.uid for n in plan.nodes
                  if n.kind == "build" and n.uid not in self._refused and not is_valid(n)]
        if not wanted:
            return plan
        hits = await trio.to_thread.run_sync(self.lookup, wanted)
        return narrow_plan(plan, {uid: hit.entry.references for uid, hit in hits.items()},
                           is_valid)

    def lookup(self, uids: Sequence[str]) -> dict[str, Hit]:
        """What the caches hold of `uids`, the first cache (by priority) that has each."""
        found: dict[str, Hit] = {}
        for cache in sorted(self.caches, key=lambda c: c.priority):
            left = [u for u in uids if u not in found]
            if not left or self._down_until.get(cache.url, 0.0) > time.monotonic():
                continue
            try:
                entries = cache.lookup(left)
            except Exception as exc:  # down, slow, for another store (or a bug): build here
                if isinstance(exc, CacheError):
                    log.warning("cache %s not used for %d nodes: %s", cache.url, len(left),
                                exc)
                else:
                    log.exception("cache %s not used for %d nodes", cache.url, len(left))
                self._down_until[cache.url] = time.monotonic() + DOWN_FOR
                continue
            for uid, entry in entries.items():
                found[uid] = Hit(cache, entry)
        with self._lock:
            self._hits.update(found)
        return found

    def lookup_fresh(self, uids: Sequence[str]) -> dict[str, Hit]:
        """`lookup`, asking the caches again about what they were found not to hold (a
        remote build has just pushed it). An entry this daemon refused stays refused: it is
        no hit (the node is built here)."""
        for cache in self.caches:
            for uid in uids:
                cache.ask_again(uid)
        with self._lock:
            wanted = [u for u in uids if u not in self._refused]
        return self.lookup(wanted) if wanted else {}

    def fetch(self, node: Node) -> Hit:
        """Download `node`'s archive into the source cache, its size and hash checked
        against the signed index (blocking): what `unpack_node` then unpacks, in the
        sandbox. A refusal is remembered (`refuse`)."""
        with self._lock:
            hit = self._hits.get(node.uid)
        if hit is None:
            raise CacheUnavailable(f"no cache holds {node.name} ({node.uid}) any more")
        try:
            try:
                self._fetch(hit, node)
            except OSError as exc:  # a disk full, a name the file system refuses: build here
                raise CacheRefused(f"cache {hit.cache.url}: {node.name} ({node.uid}) could "
                                   f"not be fetched: {exc}; refused") from exc
        except CacheError as exc:
            raise self.refuse(node, hit, exc) from None
        return hit

    def refuse(self, node: Node, hit: Hit, error: CacheError) -> CacheError:
        """Remember that `node`'s substitute was refused (it is built here from now on);
        `error`, to raise."""
        with self._lock:
            self._refused.add(node.uid)
            self._hits.pop(node.uid, None)
        hit.cache.forget(node.uid)
        log.warning("substitute of %s (%s) refused: %s", node.name, node.uid, error)
        return error

    def _fetch(self, hit: Hit, node: Node) -> None:
        entry = hit.entry
        store_path = Path(node.outputs[0])
        if entry.store_path != str(store_path):
            raise CacheRefused(f"cache {hit.cache.url}: {node.uid} is {entry.store_path} "
                               f"there, {store_path} here; refused")
        if entry.content_size > self.max_size:
            raise CacheUnsafeArchive(f"cache {hit.cache.url}: {node.name} holds "
                                     f"{entry.content_size} bytes, more than the "
                                     f"--max-output-size of {self.max_size}; refused")
        target = self.layout.source_path(entry.file_hash)
        # a dot name until checked: recovery deletes what a crash leaves half written
        partial = target.with_name(f".{entry.file_hash}.{secrets.token_hex(4)}")
        try:
            with open(partial, "xb") as handle:
                hit.cache.download(entry, handle)
            os.chmod(partial, 0o644)  # build users read their sources
            os.rename(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)


@dataclass
class PushReport:
    pushed: list[str] = dataclasses.field(default_factory=list)
    present: int = 0


class StoreRows:
    """The store's entries that may be pushed (realms are per-machine), looked up by uid as a
    push meets them: a push reads the rows of the closure it uploads, not the whole store
    table (tens of thousands of rows, for each entry pushed)."""

    def __init__(self, db: BuildDatabase) -> None:
        self._db = db
        self._rows: dict[str, dict[str, Any] | None] = {}

    def get(self, uid: str) -> dict[str, Any] | None:
        if uid not in self._rows:
            row = self._db.store_entry(uid)
            self._rows[uid] = row if row is not None and row["kind"] != "rlm" else None
        return self._rows[uid]

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, str) and self.get(uid) is not None


class Pusher:
    """Uploads store entries to the push cache: each built entry as it is registered
    (queued, retried, never in the way of a realm switch) and whole closures on request."""

    def __init__(self, cache: BinaryCache, db: BuildDatabase, layout: Layout) -> None:
        self.cache = cache
        self.db = db
        self.layout = layout
        self._send, self._queued = trio.open_memory_channel[str](math.inf)
        self._lock = threading.Lock()  # one push at a time: the closure walk is shared state

    def submit(self, uid: str) -> None:
        """Queue `uid` (just registered) for upload; returns at once."""
        self._send.send_nowait(uid)

    async def serve(self) -> None:
        try:  # what a crash or a long outage left unpushed goes first
            missing = await trio.to_thread.run_sync(self.unpushed)
        except CacheError as exc:
            log.warning("cannot tell what %s lacks, nothing queued from before: %s",
                        self.cache.url, exc)
        else:
            if missing:
                log.info("%d entries built here are not in %s yet: queued", len(missing),
                         self.cache.url)
            for uid in missing:
                self.submit(uid)
        async for uid in self._queued:
            wait = PUSH_BACKOFF
            for attempt in range(1, PUSH_ATTEMPTS + 1):
                try:
                    report = await trio.to_thread.run_sync(self.push, [uid])
                    log.info("pushed %s to %s (%d entries uploaded)", uid, self.cache.url,
                             len(report.pushed))
                    break
                except (CacheError, OSError) as exc:
                    log.warning("push of %s to %s failed (attempt %d of %d): %s", uid,
                                self.cache.url, attempt, PUSH_ATTEMPTS, exc)
                    if attempt < PUSH_ATTEMPTS:
                        await trio.sleep(wait)
                        wait *= 2
                except Exception:  # a bug: logged, the daemon and the other pushes go on
                    log.exception("push of %s to %s failed", uid, self.cache.url)
                    break

    def unpushed(self) -> list[str]:
        """The entries this daemon built whose index the push cache lacks (one listing)."""
        there = self.cache.store.top_keys()
        return sorted(u for u in self.db.built_valid_uids() if fmt.index_key(u) not in there)

    def push(self, uids: Sequence[str]) -> PushReport:
        """Upload `uids` and their references, references first (blocking)."""
        with self._lock:
            self.cache.ensure_info()
            entries = StoreRows(self.db)
            report = PushReport()
            done: set[str] = set()
            for uid in uids:
                self._push_one(uid, entries, done, report)
            return report

    def _push_one(self, uid: str, entries: StoreRows, done: set[str],
                  report: PushReport) -> None:
        if uid in done:
            return
        done.add(uid)
        row = entries.get(uid)
        if row is None:
            raise CacheError(f"{uid} is not a valid store entry here: nothing to push")
        if self.cache.holds(uid):  # a bad or half entry is pushed over, not skipped
            report.present += 1
            return
        path = Path(row["path"])
        references = cachearchive.scan_references(path, str(self.layout.store), entries, uid)
        for reference in references:  # references first: an index never points at nothing
            self._push_one(reference, entries, done, report)
        if row["hash"] and tree_hash(path) != row["hash"]:
            raise CacheError(f"{path} changed since it was registered (ixd verify): not "
                             f"pushed")
        with tempfile.TemporaryDirectory(dir=self.layout.build, prefix=".push.") as folder:
            archive = Path(folder) / "archive"
            packed = cachearchive.pack(path, archive)
            entry = fmt.Entry(uid, str(path), packed.file_hash, packed.file_size,
                              row["hash"] or tree_hash(path), packed.content_size, references)
            self.cache.publish(entry, archive)
        report.pushed.append(uid)
