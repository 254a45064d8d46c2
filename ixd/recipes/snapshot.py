"""The loaded package graph kept across daemon restarts: `ROOT/var/graph.snapshot`
(docs/recipes.md, "Rendering speed").

A restart otherwise loads every package again from the kept renders (`ixd.recipes.rendercache`):
each render read, checked, parsed, and each package's closures, uid and build node made anew.
The snapshot keeps what those loads made (the packages, with their closures and nodes, whose
they are and what they cost), so a restarted daemon's first request finds them loaded.

A package is a function of the files its render (and its dependencies' renders) read, of
what those renders asked the host, and of what every render depends on (the settings, the
host, the code: `rendercache.fingerprint`, and the overlays). So the snapshot keeps, beside
the packages, every file they read with its identity on disk when it was read (device,
inode, size, modification and change times: a file replaced with the same size and time has
another inode or change time), the paths that must still be missing for the names to
resolve to those files (an earlier overlay's copy, a mount), and every question the renders
asked the host with its answer. A restart takes (`stale`) exactly the packages none of whose
files changed, and drops the others with every package depending on them (their renders are
in the render store: loaded again, they are rendered only if a file they read changed); if
the host answers any question otherwise, or the fingerprint differs, nothing is taken. A
package whose render captured host programs, or that read a file changed in the last seconds
(git's "racy" files: an edit within the same tick of the clock keeps the identity), is not
kept, nor is any package depending on it.

Derived data the daemon wrote: the file is read only if it is a regular file of the daemon's
user or root that nobody else may write, opened without following a link, at most
`MAX_BYTES`, with the digest its header names; anything else (damaged, foreign, another
format) is an empty snapshot. It is unpickled with only the package graph's own classes
allowed: no other code can be named by it. It is written whole under a temporary name, mode
0600, and renamed.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ixd.recipes.mounts import MOUNT_SCRIPT
from ixd.recipes.owned import Owner
from ixd.recipes.package import Package
from ixd.recipes.rendercache import Asked
from ixd.recipes.templatecache import read_trusted, write_whole
from ixd.recipes.templateindex import RACY_SECONDS, Identity, look

#: the first bytes of a snapshot (its format's version)
MAGIC = b"ix-graph-snapshot 1\n"
#: a snapshot larger than this is neither written nor read (the CI set's: about 70 MB)
MAX_BYTES = 384 << 20
_DIGEST_BYTES = 32
#: what a snapshot may name: the package graph's values and nothing else
_ALLOWED = frozenset({
    ("ixd.recipes.snapshot", "Snapshot"),
    ("ixd.recipes.package", "Package"),
    ("ixd.recipes.descriptor", "Descriptor"),
    ("ixd.recipes.descriptor", "Fetch"),
    ("ixd.model.nodes", "Node"),
    ("ixd.model.nodes", "Source"),
    ("ixd.model.selector", "Selector"),
    ("pathlib", "PosixPath"),
    ("builtins", "frozenset"),
    ("builtins", "set"),
})

#: a file as a load read it: its identity, and when that was looked at (ns since the epoch)
Seen = tuple[Identity, int]


@dataclass
class Snapshot:
    """What a graph held: its packages (least recently used first), each one's owner and
    size (`package_bytes`), every file they read as it was read, the paths that must stay
    missing (each with the files it would shadow), every question asked of the host."""

    packages: list[Package]
    owners: list[Owner]
    sizes: list[int]
    files: dict[str, Seen]
    absent: dict[str, list[str]]
    asked: list[Asked]


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a package graph")
        return super().find_class(module, name)


def _header(fingerprint: str, overlays: Sequence[Path]) -> bytes:
    """What a snapshot was made for, in its first line: the fingerprint and the overlays."""
    made_for = hashlib.sha256("\0".join([fingerprint, *map(str, overlays)]).encode())
    return MAGIC + made_for.hexdigest().encode() + b"\n"


def encode(snapshot: Snapshot) -> bytes:
    """The snapshot as its file holds it, but the header (what `write` takes)."""
    return pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)


def write(path: Path, fingerprint: str, overlays: Sequence[Path], payload: bytes) -> bool:
    """Keep a snapshot (`encode`d) at `path`, written whole, mode 0600; whether it was."""
    header = _header(fingerprint, overlays)
    digest = hashlib.blake2b(payload, digest_size=_DIGEST_BYTES).digest()
    if len(header) + len(digest) + len(payload) > MAX_BYTES:
        remove(path)  # an older one would be taken for this graph
        return False
    return write_whole(path, header + digest + payload, mode=0o600)


def read(path: Path, fingerprint: str, overlays: Sequence[Path]) -> Snapshot | None:
    """The snapshot at `path`, if it is the daemon's, whole, and made for this fingerprint
    and these overlays."""
    data = read_trusted(path, MAX_BYTES)
    header = _header(fingerprint, overlays)
    if data is None or not data.startswith(header):
        return None
    start = len(header) + _DIGEST_BYTES
    view = memoryview(data)
    if hashlib.blake2b(view[start:], digest_size=_DIGEST_BYTES).digest() != view[len(header):start]:
        return None
    stream = io.BytesIO(data)  # the bytes themselves, not a copy
    stream.seek(start)
    try:
        snapshot = _Unpickler(stream).load()
    except Exception:  # damaged past its digest (or made by other code): an empty one
        return None
    return snapshot if _well_formed(snapshot) else None


def remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _well_formed(snapshot: Any) -> bool:
    if not isinstance(snapshot, Snapshot):
        return False
    lists = (snapshot.packages, snapshot.owners, snapshot.sizes, snapshot.asked)
    return (all(isinstance(x, list) for x in lists)
            and len(snapshot.packages) == len(snapshot.owners) == len(snapshot.sizes)
            and isinstance(snapshot.files, dict) and isinstance(snapshot.absent, dict)
            and all(isinstance(p, Package) for p in snapshot.packages))


def _missing(path: str) -> bool:
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except (OSError, ValueError):
        return False
    return False


def changed_files(snapshot: Snapshot) -> set[str]:
    """The files of `snapshot` that are not the files its packages read: changed or gone
    (`shadowed_files` are the others)."""
    return {p for p, (ident, _) in snapshot.files.items() if look(Path(p)) != tuple(ident)}


def shadowed_files(snapshot: Snapshot) -> set[str]:
    """The files of `snapshot` that their names no longer resolve to: a path that was
    missing is there now (an earlier overlay's copy, a mount)."""
    shadowed: set[str] = set()
    for path, files in snapshot.absent.items():
        if not _missing(path):
            shadowed.update(files)
    return shadowed


def shadowing(files: Iterable[str], overlays: Sequence[Path]) -> dict[str, list[str]]:
    """The paths that must stay missing for `files` to be what their names resolve to: for
    a file of an overlay, the same name in every earlier overlay, and the mount script of
    its first folder there (`ixd.recipes.tree.OverlayLoader.read`)."""
    roots = [str(o) + "/" for o in overlays]
    absent: dict[str, list[str]] = {}
    for path in files:
        for k, root in enumerate(roots):
            if not path.startswith(root):
                continue
            name = path[len(root):]
            first = name.partition("/")[0]
            for earlier in roots[:k]:
                for missing in (earlier + name, f"{earlier}{first}/{MOUNT_SCRIPT}"):
                    absent.setdefault(missing, []).append(path)
            break
    return absent


def racy(seen: Seen) -> bool:
    """Whether a file was changed so shortly before it was looked at that a change within
    the same tick of the clock could have kept its identity."""
    ident, at = seen
    return max(ident[3], ident[4]) >= at - int(RACY_SECONDS * 1e9)


def unsafe_keys(packages: Sequence[Package], seen: Mapping[Path, Seen | None],
                volatile: Iterable[tuple[str, tuple[tuple[str, str], ...]]]
                ) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """The keys of `packages` not to be kept: those whose render is `volatile`, read a file
    not looked at or racy, or depend on such a package."""
    bad_files = {p for p, s in seen.items() if s is None or racy(s)}
    unsafe = set(volatile)
    for package in packages:
        if not package.files.isdisjoint(bad_files) or any(p not in seen for p in package.files):
            unsafe.add(package.key)
    return dependents_closure(packages, unsafe)


def dependents_closure(packages: Sequence[Package],
                       keys: set[tuple[str, tuple[tuple[str, str], ...]]]
                       ) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """`keys` and the keys of every package of `packages` depending on one, directly or
    not."""
    if not keys:
        return keys
    dependents: dict[tuple[str, tuple[tuple[str, str], ...]],
                     list[tuple[str, tuple[tuple[str, str], ...]]]] = {}
    for package in packages:
        for dep in package.deps:
            dependents.setdefault(dep, []).append(package.key)
    found = set(keys)
    todo = list(keys)
    while todo:
        for dependent in dependents.get(todo.pop(), ()):
            if dependent not in found:
                found.add(dependent)
                todo.append(dependent)
    return found
