"""Renders kept across daemon restarts: `ROOT/var/renders.jsonl` (docs/recipes.md, "Rendering
speed").

A render is a function of the files it read and of its context. The store keeps, per package
key (name and flags), the descriptor a render gave, the files it read with what identifies
their content on disk (device, inode, size, modification time: an editor or a checkout writes
a new file or a new time), and whether its templates name `target_realm`. A kept render is
used only while every one of its files is still the file it read; the file as a whole is
dropped when anything else a render depends on changes (`fingerprint`: the daemon's settings,
its host, the code that renders). Renders that asked the host something (`isfile`,
`ix_boot_tool`, `host_versions`) or named another package (`intro`) are never kept.

The file is a header line and one line per render, `KEY<TAB>OWNER<TAB>RENDER` (JSON; the
owner is the uid whose request made it, `-` for the daemon's own), appended; a line of only
a KEY drops that key's render. A restart indexes the keys (renders are read when asked for)
and writes the file anew when most of its lines are stale. It lives in the daemon's `var/`,
which only the daemon's user can write; what it holds is data, checked again by the
descriptor parser.

Clients choose flags, so the store is bounded by bytes: the file never grows past
`max_bytes`, the renders kept (live) take at most half of that, and one owner's at most
`user_share` of those (the daemon's own account is not held to it). A render past a bound
pushes out the least recently used of its owner's, or of all; when the file would outgrow
its bound it is written anew with the live renders only (at most half of it).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import weakref
from collections.abc import Container, Iterable, Mapping
from pathlib import Path
from typing import Any

PackageKey = tuple[str, tuple[tuple[str, str], ...]]
#: who a render (and a package) counts against: the uid whose request made it (None: the
#: daemon's own)
Owner = int | None
#: a file's identity on disk: device, inode, size, modification time (ns)
Identity = tuple[int, int, int, int]
#: a kept render: the raw descriptor (or None, `RenderStore.get`), the files it read,
#: whether it names target_realm, a digest of it
Kept = tuple[dict[str, Any] | None, frozenset[Path], bool, bytes]

#: renders waiting to be written are written once they take this much memory
FLUSH_BYTES = 1 << 20
#: at most this many renders are kept (about 40 times stal/IX's CI set): clients choose
#: flags, so without a bound any user could grow the file (and its index) without end;
#: renders beyond it are made again after a restart
MAX_RENDERS = 200_000
#: the file's bound in bytes (its live renders take at most half: about 15 times stal/IX's
#: CI set), and one owner's share of the live renders
DEFAULT_STORE_BYTES = 192 << 20
DEFAULT_USER_SHARE = 0.25
#: at most this many decoded lines are kept for other keys that kept the same render
MAX_DECODED = 4096
#: the modules whose code decides what a render gives
#: the packages whose code a render depends on: every module of them is hashed
_RENDER_PACKAGES = ("recipes", "model")


def fingerprint(settings: Mapping[str, str], host: str) -> str:
    """What every kept render depends on besides its files and flags."""
    import jinja2

    digest = hashlib.sha256()
    ixd = Path(__file__).resolve().parent.parent
    for package in _RENDER_PACKAGES:
        for module in sorted((ixd / package).glob("*.py")):
            digest.update(module.read_bytes())
    text = json.dumps({"settings": dict(settings), "host": host, "jinja": jinja2.__version__},
                      sort_keys=True)
    digest.update(text.encode())
    return digest.hexdigest()


def _identity(path: Path) -> Identity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class RenderStore:
    """The kept renders of one daemon root. Thread-safe.

    Only the keys stay in memory, each with where its line is in the file and whose it is:
    a render is read when a package asks for it (a store made by a big tree would otherwise
    double the daemon's memory)."""

    def __init__(self, path: Path, fingerprint: str, max_renders: int = MAX_RENDERS,
                 max_bytes: int = DEFAULT_STORE_BYTES,
                 user_share: float = DEFAULT_USER_SHARE, uncapped: Iterable[Owner] = ()
                 ) -> None:
        self.path = path
        self.max_renders = max_renders
        #: the file's bound; the live renders' (half of it); one owner's share of those
        self.max_bytes = max_bytes
        self.live_bytes = max_bytes // 2
        self.user_bytes = int(self.live_bytes * user_share)
        self.uncapped = frozenset(uncapped)
        self._header = (json.dumps({"fingerprint": fingerprint}) + "\n").encode()
        self._lock = threading.Lock()
        #: key -> (offset, length, owner) of its line, least recently used first; lines not
        #: written yet are at offset -1
        self._index: dict[PackageKey, tuple[int, int, Owner]] = {}
        #: the bytes of the kept lines, in all and by owner; each owner's keys (recency)
        self.bytes = 0
        self.owner_bytes: dict[Owner, int] = {}
        self._owned: dict[Owner, dict[PackageKey, None]] = {}
        #: the file's size (with what is pending), stale lines and all
        self.file_bytes = 0
        #: files whose renders were dropped in this run, and the renders kept in this run
        #: by the keys' files (for `forget`)
        self._files_of: dict[PackageKey, tuple[Path, ...]] = {}
        #: each file's identity, looked at once per daemon run (until invalidated)
        self._seen: dict[Path, Identity | None] = {}
        self._pending: list[tuple[PackageKey | None, bytes]] = []
        self._pending_bytes = 0
        #: one Path per file named (sets of them hash and compare by identity)
        self._paths: dict[str, Path] = {}
        #: the files of each render read, by a digest of its line (what follows the key):
        #: the same render kept under several keys
        self._files_of_body: dict[
            bytes, tuple[list[tuple[Path, Identity]], bool, tuple[Path, ...]]] = {}
        #: the renders whose files were found unchanged in this run (until one changes)
        self._verified: set[bytes] = set()
        #: the file, open for reading kept renders (appends do not move what is there)
        self._reader: int | None = None
        self._closer: weakref.finalize[Any, Any] | None = None
        self.used = 0
        #: renders pushed out by the bounds in this run
        self.evicted = 0
        lines = self._read()
        self._bound()
        if lines > 2 * len(self._index) + 1000 or self.file_bytes > self.max_bytes:
            self._rewrite()

    # --- the index and its bounds -----------------------------------------------------------

    def _keep(self, key: PackageKey, offset: int, length: int, owner: Owner) -> None:
        self._drop(key)
        self._index[key] = (offset, length, owner)
        self.bytes += length
        self.owner_bytes[owner] = self.owner_bytes.get(owner, 0) + length
        self._owned.setdefault(owner, {})[key] = None

    def _drop(self, key: PackageKey) -> bool:
        """Forget `key`'s line (it stays in the file, stale, until the file is written
        anew); whether there was one."""
        kept = self._index.pop(key, None)
        if kept is None:
            return False
        _offset, length, owner = kept
        self.bytes -= length
        left = self.owner_bytes[owner] - length
        owned = self._owned[owner]
        del owned[key]
        if owned:
            self.owner_bytes[owner] = left
        else:
            del self.owner_bytes[owner], self._owned[owner]
        self._files_of.pop(key, None)
        return True

    def _touch(self, key: PackageKey) -> None:
        """`key` used now: the last to be pushed out."""
        kept = self._index.pop(key)
        self._index[key] = kept
        owned = self._owned[kept[2]]
        del owned[key]
        owned[key] = None

    def _make_room(self, owner: Owner, size: int) -> None:
        """Push out least recently used renders until `size` more bytes of `owner`'s fit
        its share and the store (lock held)."""
        if owner not in self.uncapped:
            owned = self._owned.get(owner, {})
            while owned and self.owner_bytes.get(owner, 0) + size > self.user_bytes:
                self._evict(next(iter(owned)))
        while self._index and (self.bytes + size > self.live_bytes
                               or len(self._index) >= self.max_renders):
            self._evict(next(iter(self._index)))

    def _evict(self, key: PackageKey) -> None:
        self._drop(key)
        self._pending = [(k, line) for k, line in self._pending if k != key]
        self.evicted += 1

    def _bound(self) -> None:
        """The bounds on what a restart found (lock held or not yet shared)."""
        for owner in list(self._owned):
            if owner not in self.uncapped:
                owned = self._owned.get(owner, {})
                while owned and self.owner_bytes.get(owner, 0) > self.user_bytes:
                    self._evict(next(iter(owned)))
        while self._index and (self.bytes > self.live_bytes
                               or len(self._index) > self.max_renders):
            self._evict(next(iter(self._index)))

    # --- the file -------------------------------------------------------------------------

    def _read(self) -> int:
        """Index the file (a missing, foreign or damaged file is an empty store); the number
        of its lines. The file is read a piece at a time: it may be a few hundred MiB."""
        try:
            stream = open(self.path, "rb")
        except OSError:
            return 1 << 30
        with stream:
            if stream.read(len(self._header)) != self._header:
                return 1 << 30  # rewrite: made by other code or settings
            offset, count = len(self._header), 1
            carry = b""
            while chunk := stream.read(1 << 20):
                data = carry + chunk
                start = 0
                while (end := data.find(b"\n", start)) >= 0:
                    self._index_line(data, start, end, offset + start)
                    count += 1
                    start = end + 1
                offset += start
                carry = data[start:]
            self.file_bytes = offset  # a line cut short by a crash is not counted
        return count

    def _index_line(self, data: bytes, start: int, end: int, offset: int) -> None:
        tab = data.find(b"\t", start, end)
        try:
            key = _key(json.loads(data[start:tab if tab >= 0 else end]))
            owner: Owner = None
            if tab >= 0:
                second = data.find(b"\t", tab + 1, end)
                if second < 0:
                    raise ValueError("no owner")
                word = data[tab + 1:second]
                owner = None if word == b"-" else int(word)
        except (ValueError, TypeError):
            return
        if tab < 0:  # dropped: a file it read changed meanwhile
            self._drop(key)
        else:
            self._keep(key, offset, end - start, owner)

    def _rewrite(self) -> None:
        """The file anew: its header and the lines of the renders still kept, copied one by
        one (never the whole file in memory), those not written yet among them."""
        waiting = {k: line for k, line in self._pending if k is not None}
        self._pending, self._pending_bytes = [], 0
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            index: dict[PackageKey, tuple[int, int, Owner]] = {}
            try:
                source = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                source = -1
            try:
                with open(tmp, "wb") as out:
                    out.write(self._header)
                    for key, (offset, length, owner) in self._index.items():
                        if offset < 0:
                            line = waiting.get(key, b"")
                        else:
                            line = os.pread(source, length + 1, offset) if source >= 0 else b""
                        if len(line) != length + 1 or not line.endswith(b"\n"):
                            continue  # gone (a damaged file): made again when asked for
                        index[key] = (out.tell(), length, owner)
                        out.write(line)
                    size = out.tell()
            finally:
                if source >= 0:
                    os.close(source)
            os.replace(tmp, self.path)
            self._close_reader()
            for key in [k for k in self._index if k not in index]:
                self._drop(key)
            self._index = index
            self.file_bytes = size
        except OSError:
            tmp.unlink(missing_ok=True)
            for key in list(self._index):
                self._drop(key)
            self.file_bytes = self.max_bytes  # written anew at the next flush

    def _close_reader(self) -> None:
        if self._closer is not None:
            self._closer()
        self._reader = self._closer = None

    def close(self) -> None:
        with self._lock:
            self._close_reader()

    def _now(self, path: Path) -> Identity | None:
        """The file's identity, looked at once per daemon run (lock held)."""
        if path in self._seen:
            return self._seen[path]
        identity = self._seen[path] = _identity(path)
        return identity

    def get(self, key: PackageKey, known: Container[bytes] = ()) -> Kept | None:
        """The kept render of `key`, if every file it read is still the one it read: its
        raw descriptor (None if it is one the caller has from another key: its digest is in
        `known`), the files, whether it names target_realm, the digest of the render."""
        with self._lock:
            where = self._index.get(key)
            if where is None or where[0] < 0:
                return None
            try:
                if self._reader is None:
                    self._reader = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                    self._closer = weakref.finalize(self, os.close, self._reader)
                line = os.pread(self._reader, where[1], where[0])
                # a line: key, owner, render
                body = line[line.index(b"\t", line.index(b"\t") + 1) + 1:]
                # flag sets that render alike are kept alike: a render the caller has from
                # another key (`known`) is not decoded again, only its files
                digest = hashlib.blake2b(body, digest_size=16).digest()
                files_of = self._files_of_body.get(digest)
                raw: dict[str, Any] | None = None
                if files_of is None or digest not in known:
                    raw, files, reads_realm = json.loads(body)
                    if not isinstance(raw, dict):
                        raise TypeError("not a descriptor")
                    paths = self._paths
                    identified = [(paths.get(p) or paths.setdefault(p, Path(p)), (d, i, n, m))
                                  for p, d, i, n, m in files]
                    files_of = (identified, bool(reads_realm),
                                tuple(p for p, _ in identified))
                    if len(self._files_of_body) >= MAX_DECODED:
                        self._files_of_body.clear()
                        self._verified.clear()
                    self._files_of_body[digest] = files_of
                identified, reads_realm, read = files_of
            except (OSError, ValueError, TypeError):
                self._drop(key)
                return None
            if digest not in self._verified:  # its files looked at once per run
                for path, identity in identified:
                    if self._now(path) != identity:
                        self._drop(key)
                        return None
                self._verified.add(digest)
            self._touch(key)
            self._files_of[key] = read
            self.used += 1
            return raw, frozenset(read), reads_realm, digest

    def put(self, key: PackageKey, raw: dict[str, Any], text: str, files: Iterable[Path],
            reads_realm: bool, owner: Owner = None) -> None:
        """Keep a render made now for `owner`: `raw` its descriptor, `text` the same as JSON
        (written by the next `flush`)."""
        with self._lock:
            identified = []
            for path in files:
                identity = self._now(path)
                if identity is None:  # gone already: nothing to check it against
                    return
                identified.append((path, identity))
            # the text as it came, not encoded again (JSON has line breaks and tabs only
            # between tokens: spaces there read the same)
            flat = text.replace("\n", " ").replace("\t", " ")
            read = ",".join(f"[{_string(str(p))},{d},{i},{n},{m}]"
                            for p, (d, i, n, m) in identified)
            word = "-" if owner is None else str(int(owner))
            line = (f"{_key_json(key)}\t{word}\t[{flat},[{read}],"
                    f"{'true' if reads_realm else 'false'}]\n").encode()
            size = len(line) - 1
            if size > self.user_bytes and owner not in self.uncapped:
                return  # one render larger than a share: made again after a restart
            self._make_room(owner, size)
            self._keep(key, -1, size, owner)
            self._pending.append((key, line))
            self._pending_bytes += len(line)
            self._files_of[key] = tuple(p for p, _ in identified)
            if self._pending_bytes > FLUSH_BYTES:  # a big tree's first load: not all at once
                self._flush()

    def flush(self) -> None:
        """Append the renders kept and dropped since the last flush (a failure only costs a
        restart those renders)."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self.file_bytes + self._pending_bytes > self.max_bytes:
            self._rewrite()  # the live lines (the pending ones too): at most half the bound
            return
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        try:
            with open(self.path, "ab") as stream:
                if stream.tell() == 0:  # a new file: not the one being read
                    self._close_reader()
                    stream.write(self._header)
                for key, line in pending:
                    offset = stream.tell()
                    stream.write(line)
                    if key is not None and key in self._index:
                        _old, length, owner = self._index[key]
                        self._index[key] = (offset, length, owner)
                self.file_bytes = stream.tell()
        except OSError:
            for key, _line in pending:
                if key is not None and self._index.get(key, (0,))[0] < 0:
                    self._drop(key)

    def forget(self, paths: Iterable[Path]) -> None:
        """Files changed: look at them again, and drop the renders that read them (a render
        kept just as its file changed may hold the old text under the new identity)."""
        with self._lock:
            changed = {Path(p) for p in paths}
            self._verified.clear()
            for path in changed:
                self._seen.pop(path, None)
            for key, files in list(self._files_of.items()):
                if not changed.isdisjoint(files):
                    self._drop(key)
                    self._pending = [(k, line) for k, line in self._pending if k != key]
                    line = f"{_key_json(key)}\n".encode()
                    self._pending.append((None, line))
                    self._pending_bytes += len(line)


def _key(item: Any) -> PackageKey:
    name, flags = item
    if not isinstance(name, str):
        raise TypeError("not a package name")
    return name, tuple((str(k), str(v)) for k, v in flags)


def _key_json(key: PackageKey) -> str:
    flags = ",".join(f"[{_string(k)},{_string(v)}]" for k, v in key[1])
    return f"[{_string(key[0])},[{flags}]]"


#: a string as JSON (ensure_ascii: no line break can end up in a line)
_string = json.encoder.encode_basestring_ascii
