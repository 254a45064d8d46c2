"""Which compiled template a tree file is, found without reading it (docs/recipes.md,
"Rendering speed").

The machine's folder of compiled templates (`ixd.recipes.templatecache`) names each entry by
a hash of the template's text, so finding it means reading the template and every file it
includes, expanding the include lines and hashing the whole: on a new root, more than the
entry's own loading. This index, kept in that folder beside the entries (one file per list
of overlays), remembers for each template name the entry its text was compiled to, with the
identity on disk of every file that text came from (device, inode, size, modification and
change times) and the paths that must still not exist for the name to resolve to the same
files (an earlier overlay's copy, a mount). A template is taken from the index only while
every file still has that identity and every such path is still missing; any difference
means reading and hashing again, as without the index.

A file changed within the same tick of the file system's clock as it was read could keep
its identity, so a file modified or changed in the last seconds is never indexed (git's
"racy" files). The index is read as the entries are: a regular file of the daemon's user or
root that nobody else may write, opened without following a link; it is written whole, and
only by a daemon that may write the folder. A damaged or foreign index is an empty one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jinja2

#: the first bytes of an index file (its format's version)
_MAGIC = b"ix-template-index 2\n"
#: an index larger than this is not read; names past MAX_NAMES are not indexed
_MAX_BYTES = 32 << 20
MAX_NAMES = 50_000
#: a file modified or changed this recently is not indexed (seconds)
RACY_SECONDS = 2.0

#: a file's identity: device, inode, size, modification and change times (ns)
Identity = tuple[int, int, int, int, int]
#: an entry: the compiled template's name in the folder, whether its text names
#: target_realm, its files with their identities, the paths that must not exist
Entry = tuple[str, bool, tuple[tuple[str, Identity], ...], tuple[str, ...]]


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def look(path: Path | str) -> Identity | None:
    """A file's identity now (None: missing or not to be looked at)."""
    try:
        return identity(os.stat(path))
    except (OSError, ValueError):
        return None


class TemplateIndex:
    """The index of one list of overlays in a folder of compiled templates."""

    def __init__(self, folder: Path, overlays: Sequence[Path], writable: bool,
                 read: Callable[[Path, int], bytes | None],
                 write: Callable[[Path, bytes], object]) -> None:
        """`read`: a trusted file's bytes (at most so many) or None; `write`: a file whole
        (`ixd.recipes.templatecache`'s, as for its entries)."""
        digest = hashlib.sha256()
        for part in (_MAGIC.decode(), jinja2.__version__, sys.implementation.cache_tag,
                     *map(str, overlays)):
            digest.update(f"{part}\0".encode())
        self.path = folder / f"index-{digest.hexdigest()[:32]}"
        self._writable = writable
        self._read = read
        self._write = write
        self._lock = threading.Lock()
        #: each name's entry as its line holds it (JSON, decoded when looked up: a big tree
        #: indexes thousands of templates, and a run looks up only those it loads)
        self._entries: dict[str, str] | None = None  # read on first use
        self._changed = False
        #: templates found through the index (a test's figure)
        self.hits = 0
        #: one Path per file named (a Path is slow to make; the templates of a tree read
        #: the same few hundred files)
        self._paths: dict[str, Path] = {}

    def lookup(self, name: str) -> tuple[str, bool, frozenset[Path]] | None:
        """The entry, whether it names target_realm and the files of `name`, if every file
        is still the one indexed and every absent path still absent."""
        with self._lock:
            if self._entries is None:
                self._entries = self._read_index()
            line = self._entries.get(name)
        if line is None:
            return None
        try:
            entry, realm, files, absent = json.loads(line)
            paths = []
            known = self._paths
            for path, ident in files:
                if identity(os.stat(path)) != tuple(ident):
                    return None
                paths.append(known.get(path) or known.setdefault(path, Path(path)))
            for path in absent:
                try:
                    os.stat(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                return None
            if not isinstance(entry, str) or not paths:
                return None
        except (OSError, ValueError, TypeError):
            return None
        self.hits += 1
        return entry, bool(realm), frozenset(paths)

    def note(self, name: str, entry: str, reads_realm: bool,
             files: dict[Path, Identity | None], absent: Sequence[Path]) -> None:
        """Index `name` as compiled to `entry` from `files` (their identities when read;
        None: not a plain file) while `absent` stay absent, unless a file is racy."""
        if not self._writable or "\t" in name or "\n" in name:
            return
        recent = (time.time() - RACY_SECONDS) * 1e9
        if any(i is None or max(i[3], i[4]) >= recent for i in files.values()):
            return
        value = json.dumps([entry, reads_realm,
                            [[str(p), list(i)] for p, i in sorted(files.items())
                             if i is not None], sorted(map(str, absent))],
                           separators=(",", ":"))
        with self._lock:
            if self._entries is None:
                self._entries = self._read_index()
            if self._entries.get(name) == value:
                return
            if name not in self._entries and len(self._entries) >= MAX_NAMES:
                return
            self._entries[name] = value
            self._changed = True

    def flush(self) -> None:
        """Write the index if this run added to it."""
        with self._lock:
            if not self._changed or self._entries is None:
                return
            self._changed = False
            data = _MAGIC + "".join(f"{name}\t{line}\n"
                                    for name, line in self._entries.items()).encode()
        if len(data) <= _MAX_BYTES:
            self._write(self.path, data)

    def _read_index(self) -> dict[str, str]:
        """The index file's lines, `NAME<TAB>ENTRY` (a damaged one: an empty index)."""
        data = self._read(self.path, _MAX_BYTES)
        if data is None or not data.startswith(_MAGIC):
            return {}
        try:
            text = data[len(_MAGIC):].decode()
        except UnicodeDecodeError:
            return {}
        entries = {}
        for line in text.split("\n"):
            name, tab, entry = line.partition("\t")
            if tab:
                entries[name] = entry
        return entries
