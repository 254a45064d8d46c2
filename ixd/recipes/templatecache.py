"""Compiled templates kept across daemon runs: the root's own folder (`ROOT/var/jinja`) and a
folder every daemon of the machine shares (`ixd --template-cache`, default
`/var/cache/ix/templates` for a daemon run as root), docs/recipes.md "Rendering speed".

Compiling a template costs more than rendering it several times over, and a new root (a
test, a reinstall, a second daemon) would otherwise compile the whole tree again. In the
shared folder a compiled template is kept under a hash of everything it was compiled from:
its name, its file, its text (includes expanded), Jinja's version and the interpreter's
bytecode tag. So any daemon compiling the same text the same way may take it, whatever its
root, and a changed file is simply another entry.

What is loaded from these folders runs as the daemon's code, so only folders (and files)
owned by the daemon's user or by root and writable by nobody else are read, files are
opened without following links, and entries are written whole under a temporary name and
renamed. A daemon may read a shared folder it cannot write (a personal daemon reading root's).
"""

from __future__ import annotations

import hashlib
import io
import marshal
import os
import pickle
import secrets
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from types import CodeType

import jinja2
import jinja2.bccache

from ixd.recipes.templateindex import TemplateIndex

#: the shared folder of a daemon run as root
DEFAULT_SHARED = Path("/var/cache/ix/templates")
#: the first bytes of an entry of the shared folder (its format's version)
_SHARED_MAGIC = b"ix-template 1\n"
#: an entry larger than this is not read (a compiled template is tens of KiB)
_MAX_ENTRY = 16 << 20


class TemplateCache(jinja2.BytecodeCache):
    """The root's folder of compiled templates, in front of the machine's shared one."""

    def __init__(self, own: Path | None, shared: Path | None = None) -> None:
        self._own = _OwnFolder(own) if own is not None else None
        self._shared = shared if shared is not None and _trusted_folder(shared) else None
        self._shared_writable = self._shared is not None and os.access(self._shared, os.W_OK)
        #: entries taken from the shared folder (a test's and the benchmark's figure)
        self.shared_hits = 0

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if self._own is not None:
            self._own.load_bytecode(bucket)
            if bucket.code is not None:
                return
        if self._shared is None:
            return
        code = self.load_entry(_shared_name(bucket))
        if code is not None:
            bucket.code = code

    def load_entry(self, name: str) -> CodeType | None:
        """The compiled template of the shared folder's entry `name`, if there is one."""
        if self._shared is None:
            return None
        code = _read_shared(os.path.join(self._shared, name))
        if code is not None:
            self.shared_hits += 1
        return code

    def shared_entry(self, bucket: jinja2.bccache.Bucket) -> str | None:
        """The shared folder's entry for the code in `bucket`, if it is there (taken from it,
        or written there by this daemon)."""
        if self._shared is None or bucket.code is None:
            return None
        name = _shared_name(bucket)
        return name if self._shared_writable or (self._shared / name).exists() else None

    def index(self, overlays: Sequence[Path]) -> TemplateIndex | None:
        """The shared folder's index of the templates of `overlays`
        (`ixd.recipes.templateindex`), if there is a shared folder."""
        if self._shared is None:
            return None
        return TemplateIndex(self._shared, overlays, self._shared_writable, read_trusted,
                             write_whole)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        """Into the shared folder if this daemon may write it (the next run finds it there
        too), else into its own."""
        if self._shared_writable and bucket.code is not None:
            assert self._shared is not None
            write_whole(self._shared / _shared_name(bucket),
                         _SHARED_MAGIC + marshal.dumps(bucket.code))
        elif self._own is not None:
            self._own.dump_bytecode(bucket)


class _OwnFolder(jinja2.FileSystemBytecodeCache):
    """Jinja's folder of compiled templates, each file read whole and unmarshalled from
    bytes: Jinja's own `marshal.load` from a file object reads it in small pieces, which
    costs more than the whole render of the template (the same files, the same format)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        super().__init__(str(folder))
        #: the entries there: a new root's folder is empty (and stays so while the daemon
        #: writes the shared one), and a look for each template would fail to open hundreds
        self._names = set(os.listdir(folder))

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        path = self._get_cache_filename(bucket)
        if os.path.basename(path) not in self._names:
            return
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except OSError:
            return
        magic = jinja2.bccache.bc_magic
        if not data.startswith(magic):
            return
        header = io.BytesIO(data)
        header.seek(len(magic))
        try:
            if pickle.load(header) != bucket.checksum:  # the source changed since
                return
            bucket.code = marshal.loads(memoryview(data)[header.tell():])
        except (EOFError, ValueError, TypeError, pickle.UnpicklingError):
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        super().dump_bytecode(bucket)
        self._names.add(os.path.basename(self._get_cache_filename(bucket)))


def shared_folder(folder: Path | None) -> Path | None:
    """The shared folder to use: made if missing (by root, readable by all), or None if it
    cannot be trusted or made."""
    if folder is None:
        return None
    try:
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if _trusted_folder(folder) else None


def _shared_name(bucket: jinja2.bccache.Bucket) -> str:
    """The entry's name: everything the compiled code depends on. `bucket.key` hashes the
    template's name and file, `bucket.checksum` its text."""
    digest = hashlib.sha256()
    for part in (_SHARED_MAGIC.decode(), jinja2.__version__, sys.implementation.cache_tag,
                 bucket.key, bucket.checksum):
        digest.update(f"{part}\0".encode())
    return digest.hexdigest()


def _owners() -> tuple[int, ...]:
    return (os.geteuid(), 0)


def _trusted_folder(folder: Path) -> bool:
    """A folder (and its parent) owned by us or root, that nobody else may write to."""
    for path in (folder, folder.parent):
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if (not stat.S_ISDIR(st.st_mode) or st.st_uid not in _owners()
                or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            return False
    return True


def open_trusted(path: str | Path, max_bytes: int | None = None) -> int | None:
    """A regular file of ours or root's that nobody else may write, of at most `max_bytes`
    (if given), opened for reading without following a link; None otherwise."""
    opened = _open_trusted(path, max_bytes)
    return None if opened is None else opened[0]


def _open_trusted(path: str | Path, max_bytes: int | None) -> tuple[int, int] | None:
    """`open_trusted`, with the file's size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (stat.S_ISREG(st.st_mode) and st.st_uid in _owners()
                and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
                and (max_bytes is None or st.st_size <= max_bytes)):
            return fd, st.st_size
    except OSError:
        pass
    os.close(fd)
    return None


def read_trusted(path: str | Path, max_bytes: int) -> bytes | None:
    """The bytes of a file `open_trusted` opens, of at most `max_bytes`; None otherwise."""
    opened = _open_trusted(path, max_bytes)
    if opened is None:
        return None
    fd, size = opened
    try:
        return os.read(fd, size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_shared(path: str | Path) -> CodeType | None:
    data = read_trusted(path, _MAX_ENTRY)
    if data is None or not data.startswith(_SHARED_MAGIC):
        return None
    try:
        code = marshal.loads(memoryview(data)[len(_SHARED_MAGIC):])
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, CodeType) else None


def write_whole(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """`data` at `path`, never seen half written (a failure leaves nothing); whether it
    was written."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True
