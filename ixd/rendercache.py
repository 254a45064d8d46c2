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

The file is a header line and one JSON line per render, appended; a restart reads it whole
and writes it anew when most of its lines are stale. It lives in the daemon's `var/`, which
only the daemon's user can write; what it holds is data, checked again by the descriptor
parser.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PackageKey = tuple[str, tuple[tuple[str, str], ...]]
#: a file's identity on disk: device, inode, size, modification time (ns)
Identity = tuple[int, int, int, int]
#: a kept render: the raw descriptor, the files it read, whether it names target_realm
Kept = tuple[dict[str, Any], frozenset[Path], bool]

#: the modules whose code decides what a render gives
_RENDER_CODE = ("recipes", "filters", "packages", "platforms", "mounts", "selector",
                "hosttools", "rendercache")


def fingerprint(settings: Mapping[str, str], host: str) -> str:
    """What every kept render depends on besides its files and flags."""
    import jinja2

    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for module in _RENDER_CODE:
        digest.update((here / f"{module}.py").read_bytes())
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
    """The kept renders of one daemon root. Thread-safe."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self._fingerprint = fingerprint
        self._lock = threading.Lock()
        #: key -> (raw descriptor, [(file, identity)], reads_realm)
        self._entries: dict[PackageKey, tuple[dict[str, Any], tuple[tuple[Path, Identity], ...],
                                              bool]] = {}
        #: each file's identity, looked at once per daemon run (until invalidated)
        self._seen: dict[Path, Identity | None] = {}
        self._pending: list[str] = []
        self.used = 0
        lines = self._read()
        if lines > 2 * len(self._entries) + 1000:
            self._rewrite()

    def _read(self) -> int:
        """Load the file (a missing, foreign or damaged file is an empty store); the number
        of its lines."""
        try:
            with open(self.path, encoding="utf-8") as stream:
                header = stream.readline()
                if json.loads(header or "null") != {"fingerprint": self._fingerprint}:
                    return 1 << 30  # rewrite: made by other code or settings
                count = 1
                for line in stream:
                    count += 1
                    try:
                        item = json.loads(line)
                        key = (item[0], tuple((k, v) for k, v in item[1]))
                        if len(item) == 2:  # dropped: a file it read changed meanwhile
                            self._entries.pop(key, None)
                            continue
                        _, _, raw, files, reads_realm = item
                        self._entries[key] = (raw, tuple((Path(p), (d, i, s, m))
                                                         for p, d, i, s, m in files),
                                              bool(reads_realm))
                    except (ValueError, TypeError):
                        continue  # a line cut short by a crash
                return count
        except (OSError, ValueError):
            return 1 << 30

    def _rewrite(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as stream:
                stream.write(json.dumps({"fingerprint": self._fingerprint}) + "\n")
                for key, (raw, files, reads_realm) in self._entries.items():
                    stream.write(_line(key, raw, files, reads_realm))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)

    def get(self, key: PackageKey) -> Kept | None:
        """The kept render of `key`, if every file it read is still the one it read."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            raw, files, reads_realm = entry
            for path, identity in files:
                if self._now(path) != identity:
                    del self._entries[key]
                    return None
            self.used += 1
            return raw, frozenset(p for p, _ in files), reads_realm

    def _now(self, path: Path) -> Identity | None:
        """The file's identity, looked at once per daemon run (lock held)."""
        if path in self._seen:
            return self._seen[path]
        identity = self._seen[path] = _identity(path)
        return identity

    def put(self, key: PackageKey, raw: dict[str, Any], text: str, files: Iterable[Path],
            reads_realm: bool) -> None:
        """Keep a render made now: `raw` its descriptor, `text` the same as JSON (written by
        the next `flush`)."""
        with self._lock:
            identified = []
            for path in files:
                identity = self._now(path)
                if identity is None:  # gone already: nothing to check it against
                    return
                identified.append((path, identity))
            # the text as it came (JSON has no line break but between tokens): not encoded
            # again, and read back with the rest of the line
            flags = ",".join(f"[{_string(k)},{_string(v)}]" for k, v in key[1])
            read = ",".join(f"[{_string(str(p))},{d},{i},{n},{m}]"
                            for p, (d, i, n, m) in identified)
            self._pending.append(f"[{_string(key[0])},[{flags}],{text.replace(chr(10), ' ')},"
                                 f"[{read}],{'true' if reads_realm else 'false'}]\n")
            self._entries[key] = (raw, tuple(identified), reads_realm)

    def flush(self) -> None:
        """Append the renders kept since the last flush (a failure only costs a restart
        those renders)."""
        with self._lock:
            if not self._pending:
                return
            text = "".join(self._pending)
            self._pending.clear()
            try:
                new = not self.path.exists()
                with open(self.path, "a", encoding="utf-8") as stream:
                    if new:
                        stream.write(json.dumps({"fingerprint": self._fingerprint}) + "\n")
                    stream.write(text)
            except OSError:
                pass

    def forget(self, paths: Iterable[Path]) -> None:
        """Files changed: look at them again, and drop the renders that read them (a render
        kept just as its file changed may hold the old text under the new identity)."""
        with self._lock:
            changed = {Path(p) for p in paths}
            for path in changed:
                self._seen.pop(path, None)
            for key, (_, files, _) in list(self._entries.items()):
                if any(path in changed for path, _ in files):
                    del self._entries[key]
                    self._pending.append(json.dumps([key[0], [list(kv) for kv in key[1]]],
                                                    separators=(",", ":")) + "\n")


#: a string as JSON (ensure_ascii: no line break can end up in a line)
_string = json.encoder.encode_basestring_ascii


def _line(key: PackageKey, raw: dict[str, Any],
          files: tuple[tuple[Path, Identity], ...], reads_realm: bool) -> str:
    return json.dumps([key[0], [list(kv) for kv in key[1]], raw,
                       [[str(p), *identity] for p, identity in files], reads_realm],
                      separators=(",", ":")) + "\n"
