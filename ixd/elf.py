"""Just enough ELF to tell a dynamically linked program: does it ask for an interpreter?"""

from __future__ import annotations

import struct
from pathlib import Path

PT_INTERP = 3
ELF_MAGIC = b"\x7fELF"


class NotElf(Exception):
    """The file is not an ELF file."""

    pass


def elf_interpreter(path: Path) -> str | None:
    """The program interpreter (PT_INTERP) an ELF file asks for, None if it has none.

    Raises NotElf for anything that is not an ELF file.
    """
    with open(path, "rb") as f:
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
        for i in range(phnum):
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
            return f.read(size).rstrip(b"\0").decode(errors="replace")
    return None
