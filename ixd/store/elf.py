"""Just enough ELF to tell a dynamically linked program: does it ask for an interpreter?"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ixd.store.safeio import open_regular

PT_INTERP = 3
ELF_MAGIC = b"\x7fELF"
#: program headers read at most (real programs have about ten)
MAX_PROGRAM_HEADERS = 256
#: bytes of an interpreter path read at most
MAX_INTERPRETER = 4096


class NotElf(Exception):
    """The file is not an ELF file."""

    pass


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
