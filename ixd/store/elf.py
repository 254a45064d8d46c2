"""Just enough ELF to tell a dynamically linked program (does it ask for an interpreter?) and
the machine a file was built for (its `e_machine`, and each member's of an `ar` archive)."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from ixd.store.safeio import open_regular

PT_INTERP = 3
ELF_MAGIC = b"\x7fELF"
#: program headers read at most (real programs have about ten)
MAX_PROGRAM_HEADERS = 256
#: bytes of an interpreter path read at most
MAX_INTERPRETER = 4096
AR_MAGIC = b"!<arch>\n"
#: an `ar` member's header: name, date, owner, group, mode, size (decimal), end mark
AR_HEADER = 60
#: members of one archive looked at at most (musl's libc.a has about 1,700)
MAX_AR_MEMBERS = 1 << 16
#: bytes of an archive's long-name table read at most
MAX_AR_NAMES = 1 << 20

#: `e_machine` by the machine names platforms give (`ixd.model.platforms.elf_machine`)
MACHINES = {"x86_64": 62, "aarch64": 183, "riscv64": 243, "armv7": 40}
#: names for a found `e_machine`, in messages
MACHINE_NAMES = {**{number: name for name, number in MACHINES.items()},
                 3: "i386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390x", 258: "loongarch64"}


class NotElf(Exception):
    """The file is not an ELF file."""

    pass


class MachineMismatch(Exception):
    """A file of a build's output (or a member of an archive there) is for another machine
    than the one its package is built for."""

    def __init__(self, path: str, member: str, found: int, expected: str) -> None:
        self.path, self.member, self.found, self.expected = path, member, found, expected
        where = f"{path} (its member {member})" if member else path
        super().__init__(f"{where} is an ELF file for {machine_name(found)}, not for "
                         f"{expected} (e_machine {MACHINES[expected]})")


def machine_check(expected: str) -> Callable[[int, str], None] | None:
    """A check of each regular file of an output (given open, with its path) that raises
    MachineMismatch for an ELF file, or an archive member, of another machine than
    `expected`; None when `expected` names no machine known here (nothing to check)."""
    number = MACHINES.get(expected)
    if number is None:
        return None

    def check(fd: int, path: str) -> None:
        for member, machine in file_machines(fd):
            if machine != number:
                raise MachineMismatch(path, member, machine, expected)

    return check


def elf_interpreter(path: Path) -> str | None:
    """The program interpreter (PT_INTERP) an ELF file asks for, None if it has none.

    Raises NotElf for anything that is not an ELF file, NotRegularFile (an OSError) for a
    link, FIFO or device: the file was made by a build, so it is opened without following
    links or blocking, and at most a bounded number of headers and bytes is read.
    """
    with os.fdopen(open_regular(path), "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != ELF_MAGIC:
            raise NotElf(str(path))
        bits = {1: 32, 2: 64}.get(ident[4])
        order = {1: "<", 2: ">"}.get(ident[5])
        if bits is None or order is None:
            raise NotElf(f"{path}: unknown ELF class or byte order")
        header = ident + f.read(64 - 16 if bits == 64 else 52 - 16)
        if bits == 64:
            (phoff,) = struct.unpack_from(order + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
        else:
            (phoff,) = struct.unpack_from(order + "I", header, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 42)
        for i in range(min(phnum, MAX_PROGRAM_HEADERS)):
            f.seek(phoff + i * phentsize)
            entry = f.read(phentsize)
            (p_type,) = struct.unpack_from(order + "I", entry, 0)
            if p_type != PT_INTERP:
                continue
            if bits == 64:
                (offset,) = struct.unpack_from(order + "Q", entry, 8)
                (size,) = struct.unpack_from(order + "Q", entry, 32)
            else:
                (offset,) = struct.unpack_from(order + "I", entry, 4)
                (size,) = struct.unpack_from(order + "I", entry, 16)
            f.seek(offset)
            return f.read(min(size, MAX_INTERPRETER)).rstrip(b"\0").decode(errors="replace")
    return None


def machine_name(number: int) -> str:
    """`aarch64 (e_machine 183)`: a found machine, for messages."""
    return f"{MACHINE_NAMES.get(number, 'an unknown machine')} (e_machine {number})"


def file_machines(fd: int) -> Iterator[tuple[str, int]]:
    """The machines an open regular file was built for: its own `e_machine` if it is an ELF
    file, each ELF member's (by name) if it is an `ar` archive (a static library), nothing
    otherwise. Reads headers only, with `pread` (the file's offset stays where it is), and
    at most `MAX_AR_MEMBERS` members: the file was made by a build."""
    head = os.pread(fd, 20, 0)
    if head[:4] == ELF_MAGIC:
        machine = _elf_machine(head)
        if machine is not None:
            yield "", machine
        return
    if head[:8] != AR_MAGIC:
        return
    size = os.fstat(fd).st_size
    offset = len(AR_MAGIC)
    long_names = b""  # GNU's table of the names longer than 15 bytes (member "//")
    for _ in range(MAX_AR_MEMBERS):
        header = os.pread(fd, AR_HEADER, offset)
        if len(header) < AR_HEADER or header[58:60] != b"`\n":
            return  # the end, or no archive we can read further
        field = header[48:58].strip()
        if not field.isdigit():
            return
        member_size = int(field)
        data, following = offset + AR_HEADER, offset + AR_HEADER + member_size + member_size % 2
        name = header[:16].decode("ascii", "replace").rstrip()
        if name == "//":
            long_names = os.pread(fd, min(member_size, MAX_AR_NAMES), data)
        elif name[1:].isdigit() and name.startswith("/"):  # GNU: an offset in that table
            at = int(name[1:])
            name = long_names[at:long_names.find(b"/\n", at)].decode("utf-8", "replace")
        elif name.startswith("#1/"):  # BSD: the name's length here, the name before the data
            skip = int(name[3:]) if name[3:].isdigit() else 0
            if skip > member_size:
                return
            name = os.pread(fd, skip, data).decode("utf-8", "replace").rstrip("\0")
            data += skip
        machine = _elf_machine(os.pread(fd, 20, data))
        if machine is not None:
            yield name.rstrip("/"), machine
        offset = following
        if offset >= size:
            return


def _elf_machine(head: bytes) -> int | None:
    if len(head) < 20 or head[:4] != ELF_MAGIC:
        return None
    order = {1: "<", 2: ">"}.get(head[5])
    if order is None:
        return None
    (machine,) = struct.unpack_from(order + "H", head, 18)
    return int(machine)
