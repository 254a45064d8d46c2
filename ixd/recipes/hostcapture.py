"""Stage 0: what a capture of host programs copies (docs/recipes.md, "Stage 0").

The only input ix takes from the host is its compiler: `pkgs/bld/boot/0/*` copy chosen host
programs into the store, with exactly the shared libraries and the loader they need (found
from their ELF dependencies, as the loader finds them) and the folders the recipe names (a
compiler's resource folder). `host_capture(programs, folders)`, in the render context, says
what that is: one line per file, link and program, with each file's sha256, so the capture's
script copies exactly those bytes and its uid changes with any of them.

Everything keeps its host path below the entry (`$out/usr/lib/llvm-14/bin/clang`): programs
that find their files from their own location (clang's resource folder, gcc's `cc1`) find
the copies. Paths are real paths (folders that are links, such as `/lib` on a merged-/usr
host, resolved); links on the way to a program or library are kept as links (absolute
targets made relative, so they point into the entry).

Hashing the ~250 MB of a compiler at every plan is not an option: sha256s are kept in a file
of the daemon (`var/host-capture.json`) and reused while a file is the one hashed (the same
real path, device, inode, size and modification time), as `hosttools` does for versions.
Host files are trusted here (they are the host's own system files, read by the daemon).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ixd.recipes.hostfiles import find_program, read_kept, write_kept
from ixd.wire.errors import RecipeError

#: what a captured host path may hold: it is pasted into a shell script
SAFE_PATH = re.compile(r"/[A-Za-z0-9._+@,=/-]*")
#: how many ELF program headers and dynamic entries are read at most
MAX_HEADERS = 4096
#: where the loader looks after an object's own RPATH/RUNPATH: /etc/ld.so.conf's folders,
#: then these (glibc's trusted folders, for the common multiarch layouts)
DEFAULT_LIBRARY_DIRS = (
    "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
    "/lib/riscv64-linux-gnu", "/usr/lib/riscv64-linux-gnu",
    "/lib64", "/usr/lib64", "/lib", "/usr/lib",
)
LD_SO_CONF = "/etc/ld.so.conf"

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 15, 29


class CaptureError(RecipeError):
    """A capture cannot be made: a program or library is missing, or a path is unusable."""


# --- ELF -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ElfInfo:
    """What the loader needs to know of an ELF file."""

    #: (class, byte order, machine): a library must match the program it serves
    kind: tuple[int, int, int]
    interpreter: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]


def read_elf(path: str) -> ElfInfo | None:
    """The loader's view of `path`, None if it is not an ELF file."""
    try:
        with open(path, "rb") as f:
            return _read_elf(f)
    except (OSError, struct.error, UnicodeDecodeError):
        return None


def _read_elf(f: BinaryIO) -> ElfInfo | None:
    ident = f.read(16)
    if len(ident) < 16 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) \
            or ident[5] not in (1, 2):
        return None
    wide = ident[4] == 2
    order = "<" if ident[5] == 1 else ">"
    header = f.read(48 if wide else 36)
    (machine,) = struct.unpack_from(order + "H", header, 2)
    if wide:
        (phoff,) = struct.unpack_from(order + "Q", header, 16)
        phentsize, phnum = struct.unpack_from(order + "HH", header, 38)
        ph_format, dyn_format = order + "IIQQQQQQ", order + "qQ"
    else:
        (phoff,) = struct.unpack_from(order + "I", header, 12)
        phentsize, phnum = struct.unpack_from(order + "HH", header, 26)
        ph_format, dyn_format = order + "IIIIIIII", order + "iI"
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    interpreter = None
    dynamic: tuple[int, int] | None = None
    f.seek(phoff)
    table = f.read(phentsize * min(phnum, MAX_HEADERS))
    for i in range(min(phnum, MAX_HEADERS)):
        fields = struct.unpack_from(ph_format, table, i * phentsize)
        if wide:
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = fields[:6]
        else:
            p_type, p_offset, p_vaddr, _paddr, p_filesz = fields[:5]
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_INTERP:
            f.seek(p_offset)
            interpreter = f.read(min(p_filesz, 4096)).rstrip(b"\0").decode()
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    needed: list[int] = []
    rpath: list[int] = []
    runpath: list[int] = []
    strtab = strsz = None
    if dynamic is not None:
        f.seek(dynamic[0])
        size = struct.calcsize(dyn_format)
        data = f.read(min(dynamic[1], size * MAX_HEADERS))
        for offset in range(0, len(data) - size + 1, size):
            tag, value = struct.unpack_from(dyn_format, data, offset)
            if tag == DT_NULL:
                break
            {DT_NEEDED: needed, DT_RPATH: rpath, DT_RUNPATH: runpath}.get(tag, []).append(value)
            if tag == DT_STRTAB:
                strtab = value
            elif tag == DT_STRSZ:
                strsz = value

    def string(offset: int) -> str:
        assert strtab is not None
        base = _file_offset(loads, strtab)
        if base is None or (strsz is not None and offset >= strsz):
            raise ValueError(f"dynamic string {offset} is outside the string table")
        f.seek(base + offset)
        raw = f.read(4096)
        return raw.split(b"\0", 1)[0].decode()

    def paths(values: list[int]) -> tuple[str, ...]:
        return tuple(p for v in values for p in string(v).split(":") if p)

    if strtab is None:
        needed, rpath, runpath = [], [], []
    try:
        return ElfInfo(kind=(ident[4], ident[5], machine), interpreter=interpreter,
                       needed=tuple(string(v) for v in needed), rpath=paths(rpath),
                       runpath=paths(runpath))
    except ValueError:
        return None


def _file_offset(loads: Sequence[tuple[int, int, int]], vaddr: int) -> int | None:
    for start, offset, size in loads:
        if start <= vaddr < start + size:
            return offset + vaddr - start
    return None


# --- where things are ------------------------------------------------------------------------


def library_dirs(conf: str = LD_SO_CONF) -> list[str]:
    """The folders the loader searches after an object's own: /etc/ld.so.conf's (with its
    `include`s) then DEFAULT_LIBRARY_DIRS."""
    found: list[str] = []
    seen: set[str] = set()

    def read(path: str, depth: int) -> None:
        if depth > 8 or path in seen:
            return
        seen.add(path)
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError):
            return
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("include "):
                pattern = line.split(None, 1)[1]
                if not pattern.startswith("/"):
                    pattern = os.path.join(os.path.dirname(path), pattern)
                for included in sorted(glob.glob(pattern)):
                    read(included, depth + 1)
            elif line.startswith("/"):
                found.append(line)

    read(conf, 0)
    return list(dict.fromkeys([*found, *DEFAULT_LIBRARY_DIRS]))


def _real_dir(path: str) -> str:
    """`path` with its folder's links resolved, not its own last component."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


# --- the capture ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    """What a capture copies, for its script (`lines`) and its uid."""

    #: the manifest, one entry a line, in the order the script makes them:
    #: `F MODE SHA256 PATH` a file, `X SHA256 PATH` a dynamically linked program (copied to
    #: DIR/.ix-real/NAME, the launcher in its place), `L TARGET PATH` a link,
    #: `B NAME PATH` the entry's bin/NAME, a link to PATH
    lines: tuple[str, ...]
    #: the folders holding the libraries, in the order the loader is to search them
    library_dirs: tuple[str, ...]
    #: the loader (its real path), None if no program needs one
    loader: str | None
    #: sha256 of the manifest: what the capture's bytes are
    digest: str
    #: each program's host path, as found
    programs: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return "\n".join(self.lines)


class HostCapture:
    """Makes `Captured` manifests, with the sha256 of each host file kept in `cache_file`
    (if given) while the file stays the one hashed."""

    def __init__(self, cache_file: Path | None = None, ld_so_conf: str = LD_SO_CONF) -> None:
        self._cache_file = cache_file
        self._ld_so_conf = ld_so_conf
        self._lock = threading.Lock()
        self._sums: dict[str, list[Any]] = read_kept(cache_file, 5) if cache_file else {}
        self._dirty = False
        #: files hashed since this object was made (not found in the cache)
        self.hashed = 0

    def capture(self, programs: Iterable[str], folders: Iterable[str] = (),
                search: Sequence[str] = ()) -> Captured:
        """The manifest of `programs` (names found on `search`, or absolute paths) with
        their libraries and loader, and of every file below `folders`."""
        with self._lock:
            try:
                return _Walk(self, library_dirs(self._ld_so_conf)).run(
                    list(programs), list(folders), search)
            finally:
                if self._dirty and self._cache_file is not None:
                    write_kept(self._cache_file, self._sums)
                    self._dirty = False

    def sha256(self, real: str, st: os.stat_result) -> str:
        """The sha256 of the host file `real` (a real path), from the cache if it is the
        file hashed then (lock held)."""
        identity = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
        kept = self._sums.get(real)
        if kept is not None and kept[:4] == identity:
            return str(kept[4])
        with open(real, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        self.hashed += 1
        self._sums[real] = [*identity, digest]
        self._dirty = True
        return digest


class _Walk:
    """One capture's walk over the host (lock held)."""

    def __init__(self, owner: HostCapture, system_dirs: Sequence[str]) -> None:
        self.owner = owner
        self.system_dirs = system_dirs
        self.lines: dict[str, str] = {}  # path -> its line: each path once, first wins
        self.lib_dirs: dict[str, None] = {}
        self.loaders: dict[str, None] = {}
        self.objects: dict[str, None] = {}  # real paths of ELF files whose needs are taken

    def run(self, programs: list[str], folders: list[str], search: Sequence[str]) -> Captured:
        found: dict[str, str] = {}
        bins: list[str] = []
        for name in programs:
            path = find_program(name, search)
            if path is None:
                where = "" if name.startswith("/") else f" on {':'.join(search)}"
                raise CaptureError(f"cannot capture {name}: no such program{where}; install "
                                   f"it on the host or take it out of the recipe")
            found[name] = path
            first = _real_dir(path)
            self.program(first)
            bins.append(f"B {os.path.basename(name)} {_checked(first)}")
        for folder in folders:
            self.folder(folder)
        loaders = list(self.loaders)
        if len(loaders) > 1:
            raise CaptureError(f"the captured programs ask for different loaders "
                               f"({', '.join(loaders)}): capture them apart")
        # files and links first: a program's line copies the loader, made by then
        lines = list(self.lines.values())
        manifest = [*(x for x in lines if x[0] != "X"), *(x for x in lines if x[0] == "X"),
                    *bins]
        return Captured(
            lines=tuple(manifest),
            library_dirs=tuple(self.lib_dirs),
            loader=loaders[0] if loaders else None,
            digest=hashlib.sha256("\n".join(manifest).encode()).hexdigest(),
            programs=found,
        )

    # links, files, programs

    def chain(self, path: str) -> str:
        """Mirror the links from `path` (its folder resolved) to the real file; that file's
        real path."""
        for _ in range(40):
            path = _real_dir(path)
            try:
                st = os.lstat(path)
            except OSError as exc:
                raise CaptureError(f"cannot capture {path}: {exc.strerror}") from None
            if not stat.S_ISLNK(st.st_mode):
                if not stat.S_ISREG(st.st_mode):
                    raise CaptureError(f"cannot capture {path}: not a regular file")
                return path
            target = os.readlink(path)
            if target.startswith("/"):  # into the entry, wherever it is
                target = os.path.relpath(target, os.path.dirname(path))
            self.add(path, f"L {_checked(target, relative=True)} {_checked(path)}")
            path = os.path.normpath(os.path.join(os.path.dirname(path), target))
        raise CaptureError(f"cannot capture {path}: too many levels of links")

    def add(self, path: str, line: str) -> None:
        self.lines.setdefault(path, line)

    def file(self, real: str, st: os.stat_result | None = None) -> None:
        if real in self.lines:
            return
        st = st or os.stat(real)
        mode = "755" if st.st_mode & 0o111 else "644"
        self.add(real, f"F {mode} {self.owner.sha256(real, st)} {_checked(real)}")

    def program(self, path: str) -> None:
        real = self.chain(path)
        info = read_elf(real)
        if info is None or info.interpreter is None:  # a script or a static program
            self.file(real)
            return
        self.loaders[self.library(info.interpreter, kind=None)] = None
        self.needs(real, info)
        self.lines.pop(real, None)  # a program wins over the same file seen as a plain one
        self.add(real, f"X {self.owner.sha256(real, os.stat(real))} {_checked(real)}")

    def library(self, path: str, kind: tuple[int, int, int] | None) -> str:
        real = self.chain(path)
        info = read_elf(real)
        if info is None or (kind is not None and info.kind != kind):
            raise CaptureError(f"cannot capture {path}: not an ELF library of the right kind")
        self.file(real)
        self.needs(real, info)
        return real

    def needs(self, real: str, info: ElfInfo) -> None:
        """Capture the libraries `real` needs, found as the loader finds them."""
        if real in self.objects:
            return
        self.objects[real] = None
        origin = os.path.dirname(real)
        own = info.runpath or info.rpath
        dirs = [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in own]
        for name in info.needed:
            path = self.find_library(name, [*dirs, *self.system_dirs], info.kind)
            if path is None:
                where = ":".join([*dirs, "the system folders"])
                raise CaptureError(f"cannot capture {real}: it needs {name}, which the "
                                   f"loader would not find in {where}")
            self.lib_dirs[os.path.dirname(_real_dir(path))] = None
            self.library(path, info.kind)

    def find_library(self, name: str, dirs: Sequence[str], kind: tuple[int, int, int]
                     ) -> str | None:
        if "/" in name:
            return name if os.path.isfile(name) else None
        for folder in dirs:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                info = read_elf(os.path.realpath(path))
                if info is not None and info.kind == kind:
                    return path
        return None

    def folder(self, top: str) -> None:
        real_top = os.path.realpath(top)
        if not os.path.isdir(real_top):
            raise CaptureError(f"cannot capture the folder {top}: it does not exist")
        for here, dirs, files in os.walk(real_top):
            dirs.sort()
            linked = [d for d in dirs if os.path.islink(os.path.join(here, d))]
            for name in sorted([*files, *linked]):
                path = os.path.join(here, name)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    target = os.readlink(path)
                    if target.startswith("/"):
                        target = os.path.relpath(target, here)
                    self.add(path, f"L {_checked(target, relative=True)} {_checked(path)}")
                elif stat.S_ISREG(st.st_mode):
                    self.file(path, st)


def _checked(path: str, relative: bool = False) -> str:
    if not (SAFE_PATH.fullmatch(path) or (relative and SAFE_PATH.fullmatch("/" + path))):
        raise CaptureError(f"cannot capture {path!r}: a path of the capture may hold only "
                           f"letters, digits and . _ + @ , = / -")
    return path
