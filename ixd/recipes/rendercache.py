"""Renders kept across daemon restarts: `ROOT/var/renders.jsonl` (docs/recipes.md, "Rendering
speed").

A render is a function of the files it read and of its context. The store keeps, per package
key (name and flags), the descriptor a render gave, the files it read with what identifies
their content on disk (device, inode, size, modification and change times: an editor or a
checkout writes a new file or a new time, and a file written in place with its old size and
modification time put back still has a new change time), and whether its templates name
`target_realm`. A kept render is used only while every one of its files is still the file it
read; the file as a whole is dropped when anything else a render depends on changes
(`fingerprint`: the daemon's settings, its host, the code that renders). A render that asked
the host something (`isfile`, `ix_boot_tool`, `host_program`, `host_versions`) keeps the
questions and answers, for the package graph to ask again (`rendercontext.answers_hold`);
one that captured host programs or named another package (`intro`) is never kept.

Most flag sets of a package render alike (stal/IX's CI set: 27,416 packages, 4,361 renders),
so a render is kept once, under a digest of its text, and each key names it: the file is a
header line and one line per key, `KEY<TAB>OWNER<TAB>DIGEST`, the first line naming a render
followed by `<TAB>RENDER` (JSON; the owner is the uid whose request made it, `-` for the
daemon's own), appended; a line of only a KEY drops that key's render. A restart indexes the
lines by their keys' bytes, decoding nothing (a render is read, and checked against its
digest, when asked for), and writes the file anew when most of its lines are stale. It lives
in the daemon's `var/`, which only the daemon's user can write; what it holds is data,
checked again by the descriptor parser; a damaged render is dropped and made again. It is read
only if it is a regular file of the daemon's user or root that nobody else may write, not
through a link (else it is written anew).

Clients choose flags, so the store is bounded by bytes: the file never grows past
`max_bytes`, the renders kept (live) take at most half of that, and one owner's at most
`user_share` of those (the daemon's own account is not held to it). A key's line counts
against its owner, a render's text against the owner of one key naming it (another's when
that key goes). A render past a bound pushes out the least recently used keys of its owner,
or of all (a render goes with the last key naming it); when the file would outgrow its bound
it is written anew with the live renders only (at most half of it).

One unit though long: the file's lines, the index of keys to renders and the byte accounts
are kept in step by every write (`put`, `alias`, `forget`, the rewrite), and
`check_invariants` checks them together.
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

from ixd.recipes.owned import OwnedBytes, Owner
from ixd.recipes.templatecache import open_trusted
from ixd.recipes.templateindex import Identity, look

PackageKey = tuple[str, tuple[tuple[str, str], ...]]
#: bytes (within `RenderStore`, whose `bytes` is its count of them)
Data = bytes
#: what a render asked the host: the probe's name, its arguments, the answer
Asked = tuple[str, tuple[Any, ...], Any]
#: a kept render: the raw descriptor (or None, `RenderStore.get`), the files it read,
#: whether it names target_realm, a digest of it, what it asked the host
Kept = tuple[dict[str, Any] | None, frozenset[Path], bool, bytes, tuple[Asked, ...]]

#: a kept render found unchanged: the files it read, whether it names target_realm, what it
#: asked the host
Checked = tuple[frozenset[Path], bool, tuple[Asked, ...]]

__all__ = ["DEFAULT_STORE_BYTES", "DEFAULT_USER_SHARE", "Asked", "Kept", "Owner", "RenderStore",
           "fingerprint"]

#: renders waiting to be written are written once they take this much memory
FLUSH_BYTES = 1 << 20
#: at most this many keys are kept (about 7 times stal/IX's CI set): clients choose
#: flags, so without a bound any user could grow the file (and its index) without end;
#: renders beyond it are made again after a restart
MAX_RENDERS = 200_000
#: the file's bound in bytes (its live renders take at most half), and one owner's share of
#: the live renders
DEFAULT_STORE_BYTES = 192 << 20
DEFAULT_USER_SHARE = 0.25
#: the packages whose code a render depends on: every module of them is hashed
_RENDER_PACKAGES = ("recipes", "model")
#: the file's format (in its header: a file of another format is an empty store)
_FORMAT = 4
DIGEST_BYTES = 16


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


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest()


class _Body:
    """A kept render's text: where it is in the file (-1: not written yet, `text` holds it),
    the keys naming it (in order), the key whose owner it counts against."""

    __slots__ = ("length", "offset", "payer", "refs", "text")

    def __init__(self, offset: int, length: int, text: bytes | None = None) -> None:
        self.offset = offset
        self.length = length
        self.text = text
        self.refs: dict[bytes, None] = {}
        self.payer = b""


class RenderStore:
    """The kept renders of one daemon root. Thread-safe.

    Only the keys and where each render is stay in memory: a render is read when a package
    asks for it (a store made by a big tree would otherwise double the daemon's memory)."""

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
        self._header = (json.dumps({"fingerprint": fingerprint, "format": _FORMAT})
                        + "\n").encode()
        self._lock = threading.Lock()
        #: each key's (its JSON's Data) render digest, least recently used first
        self._index: dict[Data, Data] = {}
        #: the kept renders by digest
        self._bodies: dict[Data, _Body] = {}
        #: the Data of the keys' lines (but the renders) and of the renders, by owner
        self._key_bytes: OwnedBytes[Data] = OwnedBytes()
        self._body_bytes: OwnedBytes[Data] = OwnedBytes()
        #: the file's size (with what is pending), stale lines and all
        self.file_bytes = 0
        #: each file's identity, looked at once per daemon run (until invalidated)
        self._seen: dict[Path, Identity | None] = {}
        #: keys to write at the next flush (their line as it is then), or to drop (None)
        self._pending: list[tuple[Data, bool]] = []
        self._pending_bytes = 0
        #: one Path per file named, one set per set of files (sets hash and compare by
        #: identity once shared)
        self._paths: dict[str, Path] = {}
        self._file_sets: dict[frozenset[Path], frozenset[Path]] = {}
        #: the text of each set of files a kept render read (`_files_text`), while none of
        #: them changed
        self._files_texts: dict[frozenset[Path], tuple[str, frozenset[Path]]] = {}
        #: each file's part of those texts (sets of a family share most of their files)
        self._path_texts: dict[Path, str] = {}
        #: the renders read or kept in this run whose files were found unchanged (until one
        #: changes): their files and whether they name target_realm
        self._checked: dict[Data, Checked] = {}
        #: the file, open for reading kept renders (appends do not move what is there)
        self._reader: int | None = None
        self._closer: weakref.finalize[Any, Any] | None = None
        self.used = 0
        #: keys pushed out by the bounds in this run
        self.evicted = 0
        lines = self._read()
        self._bound()
        if lines > 2 * len(self._index) + 1000 or self.file_bytes > self.max_bytes:
            self._rewrite()

    # --- the accounts and their bounds ------------------------------------------------------

    @property
    def bytes(self) -> int:
        """The Data of the kept renders and their keys' lines."""
        return self._key_bytes.total + self._body_bytes.total

    @property
    def owner_bytes(self) -> dict[Owner, int]:
        """`bytes` by owner."""
        totals = dict(self._key_bytes.by_owner)
        for owner, size in self._body_bytes.by_owner.items():
            totals[owner] = totals.get(owner, 0) + size
        return totals

    def _of(self, owner: Owner) -> int:
        return self._key_bytes.of(owner) + self._body_bytes.of(owner)

    def _keep(self, kb: Data, digest: Data, key_size: int, owner: Owner) -> None:
        """`kb` names the kept render `digest` (lock held or not yet shared)."""
        self._drop(kb)
        body = self._bodies[digest]
        self._index[kb] = digest
        self._key_bytes.charge(kb, key_size, owner)
        if not body.refs:
            body.payer = kb
            self._body_bytes.charge(digest, body.length + 1, owner)
        body.refs[kb] = None

    def _drop(self, kb: Data) -> bool:
        """Forget `kb`'s line (it stays in the file, stale, until the file is written anew)
        and its render with the last key naming it; whether there was one."""
        digest = self._index.pop(kb, None)
        if digest is None:
            return False
        self._key_bytes.discharge(kb)
        body = self._bodies[digest]
        del body.refs[kb]
        if not body.refs:
            self._drop_body(digest)
        elif body.payer == kb:  # its Data count against the owner of a key still naming it
            body.payer = next(iter(body.refs))
            self._body_bytes.discharge(digest)
            self._body_bytes.charge(digest, body.length + 1, self._key_bytes.owner(body.payer))
        return True

    def _drop_body(self, digest: Data) -> list[Data]:
        """Forget a render and every key naming it; those keys."""
        body = self._bodies.pop(digest)
        for kb in body.refs:
            self._index.pop(kb)
            self._key_bytes.discharge(kb)
        self._body_bytes.discharge(digest)
        self._checked.pop(digest, None)
        return list(body.refs)

    def _touch(self, kb: Data) -> None:
        """`kb` used now: the last to be pushed out."""
        self._index[kb] = self._index.pop(kb)
        self._key_bytes.touch(kb)

    def _make_room(self, owner: Owner, size: int) -> None:
        """Push out least recently used keys until `size` more Data of `owner`'s fit its
        share and the store (lock held)."""
        if owner not in self.uncapped:
            while (owned := self._key_bytes.owned(owner)) and \
                    self._of(owner) + size > self.user_bytes:
                self._evict(next(iter(owned)))
        while self._index and (self.bytes + size > self.live_bytes
                               or len(self._index) >= self.max_renders):
            self._evict(next(iter(self._index)))

    def _evict(self, kb: Data) -> None:
        self._drop(kb)
        self.evicted += 1

    def _bound(self) -> None:
        """The bounds on what a restart found (lock held or not yet shared)."""
        for owner in self._key_bytes.owners():
            if owner not in self.uncapped:
                while (owned := self._key_bytes.owned(owner)) and \
                        self._of(owner) > self.user_bytes:
                    self._evict(next(iter(owned)))
        while self._index and (self.bytes > self.live_bytes
                               or len(self._index) > self.max_renders):
            self._evict(next(iter(self._index)))

    # --- the file -------------------------------------------------------------------------

    def _read(self) -> int:
        """Index the file (a missing, foreign or damaged file is an empty store); the number
        of its lines. The file is read a piece at a time: it may be a few hundred MiB."""
        fd = open_trusted(self.path)
        if fd is None:
            return 1 << 30
        stream = open(os.dup(fd), "rb")
        self._reader = fd  # the file indexed: its renders are read from it
        self._closer = weakref.finalize(self, os.close, fd)
        #: key -> (digest, the Data of its line but the render, owner), in the file's order
        keys: dict[Data, tuple[Data, int, Owner]] = {}
        found: dict[Data, tuple[int, int]] = {}  # the renders' places
        with stream:
            if stream.read(len(self._header)) != self._header:
                return 1 << 30  # rewrite: made by other code or settings
            offset, count = len(self._header), 1
            carry = b""
            while chunk := stream.read(1 << 20):
                data = carry + chunk
                start = 0
                while (end := data.find(b"\n", start)) >= 0:
                    self._index_line(data, start, end, offset + start, keys, found)
                    count += 1
                    start = end + 1
                offset += start
                carry = data[start:]
            self.file_bytes = offset  # a line cut short by a crash is not counted
        for kb, (digest, key_size, owner) in keys.items():
            body = self._bodies.get(digest)
            if body is None:
                place = found.get(digest)
                if place is None:
                    continue  # its render's line was lost
                body = self._bodies[digest] = _Body(*place)
            self._keep(kb, digest, key_size, owner)
        return count

    @staticmethod
    def _index_line(data: Data, start: int, end: int, offset: int,
                    keys: dict[Data, tuple[Data, int, Owner]],
                    found: dict[Data, tuple[int, int]]) -> None:
        """One line: the key's Data as they are (decoding them would cost a restart a
        tenth of a millisecond a key)."""
        tab = data.find(b"\t", start, end)
        if tab < 0:  # dropped: a file it read changed meanwhile
            keys.pop(data[start:end], None)
            return
        kb = data[start:tab]
        second = data.find(b"\t", tab + 1, end)
        if second < 0:
            return
        third = data.find(b"\t", second + 1, end)
        hex_end = end if third < 0 else third
        try:
            word = data[tab + 1:second]
            owner: Owner = None if word == b"-" else int(word)
            digest = bytes.fromhex(data[second + 1:hex_end].decode("ascii"))
        except ValueError:
            return
        if len(digest) != DIGEST_BYTES:
            return
        keys.pop(kb, None)  # the last line of a key says where it is in the use order
        keys[kb] = (digest, hex_end - start, owner)
        if third >= 0 and digest not in found:
            found[digest] = (offset + third + 1 - start, end - third - 1)

    def _head(self, kb: Data) -> Data:
        """A key's line but its render: the key, its owner, the render's digest."""
        return b"%s\t%s\t%s" % (kb, _word(self._key_bytes.owner(kb)),
                                 self._index[kb].hex().encode())

    def _rewrite(self) -> None:
        """The file anew: its header and the lines of the keys still kept, each render with
        the first key naming it, copied one by one (never the whole file in memory)."""
        self._pending, self._pending_bytes = [], 0
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            placed: dict[Data, int] = {}
            lost: list[Data] = []
            try:
                source = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                source = -1
            try:
                with open(tmp, "wb") as out:
                    out.write(self._header)
                    for kb, digest in self._index.items():
                        if digest in placed:
                            out.write(self._head(kb) + b"\n")
                            continue
                        body = self._bodies[digest]
                        text = body.text
                        if text is None:
                            text = (os.pread(source, body.length, body.offset)
                                    if source >= 0 else b"")
                        if len(text) != body.length:
                            lost.append(digest)  # gone (a damaged file): made again
                            placed[digest] = -1
                            continue
                        out.write(self._head(kb) + b"\t")
                        placed[digest] = out.tell()
                        out.write(text + b"\n")
                    size = out.tell()
            finally:
                if source >= 0:
                    os.close(source)
            os.replace(tmp, self.path)
            self._close_reader()
            for digest in lost:
                self._drop_body(digest)
            for digest, body in self._bodies.items():
                body.offset, body.text = placed[digest], None
            self.file_bytes = size
        except OSError:
            tmp.unlink(missing_ok=True)
            for digest in list(self._bodies):
                self._drop_body(digest)
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
        identity = self._seen[path] = look(path)
        return identity

    def saw(self, path: Path, identity: Identity | None) -> None:
        """A render read `path` when it was `identity` (looked at by the caller): a render
        kept later that read it is kept with this identity, unless the file was looked at
        before in this run."""
        with self._lock:
            self._seen.setdefault(path, identity)

    def get(self, key: PackageKey, known: Container[Data] = ()) -> Kept | None:
        """The kept render of `key`, if every file it read is still the one it read: its
        raw descriptor (None if it is one the caller has from another key: its digest is in
        `known`), the files, whether it names target_realm, the digest of the render."""
        if not self._index:  # a new root's: no key to make (twice a package)
            return None
        kb = _key_json(key).encode()
        with self._lock:
            digest = self._index.get(kb)
            if digest is None:
                return None
            checked = self._checked.get(digest)
            raw: dict[str, Any] | None = None
            if checked is None or digest not in known:
                try:
                    raw, checked = self._decode(digest)
                except (OSError, ValueError, TypeError):
                    self._drop_body(digest)
                    return None
                if checked is None:  # a file it read changed
                    self._drop_body(digest)
                    return None
            self._touch(kb)
            self.used += 1
            return raw, checked[0], checked[1], digest, checked[2]

    def _decode(self, digest: Data) -> tuple[dict[str, Any], Checked | None]:
        """A kept render read (and checked against its digest), and its files, whether it
        names target_realm and what it asked the host, if its files are still the files it
        read (lock held)."""
        body = self._bodies[digest]
        text = body.text
        if text is None:
            if self._reader is None:
                self._reader = open_trusted(self.path)
                if self._reader is None:
                    raise OSError(f"{self.path} is not the daemon's")
                self._closer = weakref.finalize(self, os.close, self._reader)
            text = os.pread(self._reader, body.length, body.offset)
            if _digest(text) != digest:
                raise ValueError("a damaged render")
        raw, files, reads_realm, asked = json.loads(text)
        if not isinstance(raw, dict):
            raise TypeError("not a descriptor")
        checked = self._checked.get(digest)
        if checked is not None:
            return raw, checked
        paths = self._paths
        read = []
        for p, d, i, n, m, c in files:
            path = paths.get(p) or paths.setdefault(p, Path(p))
            if self._now(path) != (d, i, n, m, c):
                return raw, None
            read.append(path)
        fileset = frozenset(read)
        questions = tuple((str(name), tuple(args), answer) for name, args, answer in asked)
        checked = self._checked[digest] = (self._file_sets.setdefault(fileset, fileset),
                                           bool(reads_realm), questions)
        return raw, checked

    def put(self, key: PackageKey, raw: dict[str, Any], text: str, files: Iterable[Path],
            reads_realm: bool, owner: Owner = None, asked: tuple[Asked, ...] = ()
            ) -> Data | None:
        """Keep a render made now for `owner`: `raw` its descriptor, `text` the same as JSON
        (written by the next `flush`), what it `asked` the host (used after a restart only
        while the host answers alike). Its digest (for `alias`), or None if not kept."""
        with self._lock:
            found = self._files_text(files)
            if found is None:  # a file gone already: nothing to check it against
                return None
            read, fileset = found
            # the text as it came, not encoded again (JSON has line breaks and tabs only
            # between tokens: spaces there read the same)
            flat = text.replace("\n", " ").replace("\t", " ")
            questions = json.dumps([[name, list(args), answer] for name, args, answer in asked],
                                   ensure_ascii=True)
            body = (f"[{flat},[{read}],{'true' if reads_realm else 'false'},{questions}]"
                    ).encode()
            digest = _digest(body)
            if digest not in self._bodies:
                self._bodies[digest] = _Body(-1, len(body), body)
                self._checked[digest] = (fileset, reads_realm, asked)
                self._pending_bytes += len(body)
                if not self._name(key, digest, owner, len(body) + 1):
                    self._bodies.pop(digest)
                    self._checked.pop(digest)
                    return None
                return digest
            return digest if self._name(key, digest, owner, 0) else None

    def _files_text(self, files: Iterable[Path]) -> tuple[str, frozenset[Path]] | None:
        """The files a render read as its line names them, with their identities, and their
        one set; None if one is gone (lock held). Made once a run for each set: the renders
        of a template family read one."""
        fileset = frozenset(files)
        found = self._files_texts.get(fileset)
        if found is None:
            texts = self._path_texts
            parts = []
            for path in fileset:
                part = texts.get(path)
                if part is None:
                    identity = self._now(path)
                    if identity is None:
                        return None
                    d, i, n, m, c = identity
                    part = texts[path] = f"[{_string(str(path))},{d},{i},{n},{m},{c}]"
                parts.append(part)
            found = self._files_texts[fileset] = (
                ",".join(parts), self._file_sets.setdefault(fileset, fileset))
        return found

    def alias(self, key: PackageKey, digest: Data, owner: Owner = None) -> bool:
        """Keep `key` as naming the render `put` kept as `digest` (another flag set that
        renders alike); False if that render is no longer kept."""
        with self._lock:
            return digest in self._bodies and self._name(key, digest, owner, 0)

    def _name(self, key: PackageKey, digest: Data, owner: Owner, new_body: int) -> bool:
        """`key` names the render `digest` from now on (lock held); `new_body`: its Data
        if no key names it yet. False if it does not fit one owner's share."""
        kb = _key_json(key).encode()
        if self._index.get(kb) == digest:
            self._touch(kb)
            return True
        self._drop(kb)
        key_size = len(kb) + 2 + len(_word(owner)) + 2 * DIGEST_BYTES  # as `_head` writes it
        size = key_size + new_body
        if size > self.user_bytes and owner not in self.uncapped:
            return False  # one render larger than a share: made again after a restart
        self._make_room(owner, size)
        if digest not in self._bodies:  # pushed out making room: the caller keeps it again
            return False
        self._keep(kb, digest, key_size, owner)
        self._pending.append((kb, True))
        self._pending_bytes += key_size + 1
        if self._pending_bytes > FLUSH_BYTES:  # a big tree's first load: not all at once
            self._flush()
        return True

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
        written: list[_Body] = []
        try:
            with open(self.path, "ab") as stream:
                if stream.tell() == 0:  # a new file: not the one being read
                    self._close_reader()
                    stream.write(self._header)
                for kb, kept in pending:
                    if not kept:
                        stream.write(kb + b"\n")
                        continue
                    if kb not in self._index:
                        continue  # pushed out since: nothing to write
                    body = self._bodies[self._index[kb]]
                    if body.offset >= 0:
                        stream.write(self._head(kb) + b"\n")
                        continue
                    stream.write(self._head(kb) + b"\t")
                    body.offset = stream.tell()
                    written.append(body)
                    assert body.text is not None
                    stream.write(body.text + b"\n")
                self.file_bytes = stream.tell()
            for body in written:
                body.text = None
        except OSError:
            for body in written:  # not (all) there: kept in memory, written anew later
                body.offset = -1
            self.file_bytes = self.max_bytes

    def forget(self, paths: Iterable[Path]) -> None:
        """Files changed: look at them again, and drop the renders that read them (a render
        kept just as its file changed may hold the old text under the new identity)."""
        with self._lock:
            changed = {Path(p) for p in paths}
            for path in changed:
                self._seen.pop(path, None)
                self._path_texts.pop(path, None)
            self._files_texts = {fs: t for fs, t in self._files_texts.items()
                                 if changed.isdisjoint(fs)}
            stale = [d for d, (files, _, _) in self._checked.items()
                     if not changed.isdisjoint(files)]
            for digest in stale:
                for kb in self._drop_body(digest):
                    self._pending.append((kb, False))
                    self._pending_bytes += len(kb) + 1

    def distrust(self, paths: Iterable[Path]) -> None:
        """Files unchanged that a name no longer resolves to (a file of an earlier overlay
        shadows them, found by the graph's snapshot): no kept render that read them is
        served in this run, nor is one kept."""
        with self._lock:
            for path in paths:
                self._seen[Path(path)] = None
                self._path_texts.pop(Path(path), None)
            self._files_texts.clear()

    def check_invariants(self) -> None:
        """The accounts match the keys and renders kept (raises AssertionError)."""
        with self._lock:
            self._key_bytes.check_invariants()
            self._body_bytes.check_invariants()
            assert set(self._key_bytes) == set(self._index)
            assert set(self._body_bytes) == set(self._bodies)
            for digest, body in self._bodies.items():
                assert body.refs and body.payer in body.refs, digest
                assert self._body_bytes.owner(digest) == self._key_bytes.owner(body.payer)
                assert all(self._index[kb] == digest for kb in body.refs)
            assert sum(len(b.refs) for b in self._bodies.values()) == len(self._index)


def _word(owner: Owner) -> bytes:
    """An owner in a line."""
    return b"-" if owner is None else str(int(owner)).encode()


def _key_json(key: PackageKey) -> str:
    flags = ",".join(f"[{_string(k)},{_string(v)}]" for k, v in key[1])
    return f"[{_string(key[0])},[{flags}]]"


#: a string as JSON (ensure_ascii: no line break can end up in a line)
_string = json.encoder.encode_basestring_ascii
