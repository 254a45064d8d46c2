"""What the tests read from a built program's ELF file: its program headers, section names,
the compilers and linkers its `.comment` section names, and its symbols (`.symtab`).

Enough to say how a program was linked: statically (no PT_INTERP, no PT_DYNAMIC, no
`.dynamic`), by which compilers (every object file leaves its compiler's identification in
`.comment`: gcc's libgcc and crt files say "GCC: ..."), and with which C++ library (libc++'s
symbols live in the namespace `std::__1`, mangled `_ZNSt3__1`; libstdc++'s in
`std::__cxx11` and versioned GLIBCXX).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

PT_INTERP = 3
PT_DYNAMIC = 2
SHT_SYMTAB = 2


@dataclass(frozen=True)
class ElfInfo:
    machine: int
    segments: frozenset[int]
    sections: frozenset[str]
    comments: tuple[str, ...]
    symbols: frozenset[str]

    @property
    def static(self) -> bool:
        """No program interpreter, no dynamic section."""
        return (not {PT_INTERP, PT_DYNAMIC} & self.segments
                and not {".interp", ".dynamic", ".dynsym"} & self.sections)

    def has_symbol_prefix(self, prefix: str) -> bool:
        return any(name.startswith(prefix) for name in self.symbols)


def read_elf(path: Path) -> ElfInfo:
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    wide = data[4] == 2
    order = "<" if data[5] == 1 else ">"
    if wide:
        phoff, shoff = struct.unpack_from(order + "QQ", data, 32)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(order + "HHHHH",
                                                                            data, 54)
    else:
        phoff, shoff = struct.unpack_from(order + "II", data, 28)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(order + "HHHHH",
                                                                            data, 42)
    (machine,) = struct.unpack_from(order + "H", data, 18)
    segments = frozenset(struct.unpack_from(order + "I", data, phoff + i * phentsize)[0]
                         for i in range(phnum))
    headers = [_section(data, order, wide, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][3] if headers else 0
    named = {_string(data, names_at + h[0]): h for h in headers}
    comments: tuple[str, ...] = ()
    if ".comment" in named:
        _, _, _, offset, size, _, _ = named[".comment"]
        comments = tuple(s.decode(errors="replace")
                         for s in data[offset:offset + size].split(b"\0") if s)
    symbols: set[str] = set()
    for _, kind, _, offset, size, link, entsize in headers:
        if kind != SHT_SYMTAB or not entsize:
            continue
        strings_at = headers[link][3]
        for at in range(offset, offset + size, entsize):
            (name,) = struct.unpack_from(order + "I", data, at)
            if name:
                symbols.add(_string(data, strings_at + name))
    return ElfInfo(machine, segments, frozenset(named), comments, frozenset(symbols))


def _section(data: bytes, order: str, wide: bool,
             at: int) -> tuple[int, int, int, int, int, int, int]:
    """(name, type, flags, offset, size, link, entsize) of a section header."""
    if wide:
        name, kind, flags, _, offset, size, link, _, _, entsize = struct.unpack_from(
            order + "IIQQQQIIQQ", data, at)
    else:
        name, kind, flags, _, offset, size, link, _, _, entsize = struct.unpack_from(
            order + "IIIIIIIIII", data, at)
    return name, kind, flags, offset, size, link, entsize


def _string(data: bytes, at: int) -> str:
    end = data.index(b"\0", at)
    return data[at:end].decode(errors="replace")
