"""The machine of what a build made (ixd/store/elf.py): an ELF file's `e_machine`, each ELF
member's of an `ar` archive, read from headers only, whatever the build wrote."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from ixd.model import platforms
from ixd.store.elf import MACHINES, MachineMismatch, file_machines, machine_check


def elf_header(machine: int, *, big: bool = False) -> bytes:
    order = ">" if big else "<"
    ident = b"\x7fELF" + bytes([2, 2 if big else 1, 1]) + bytes(9)
    return ident + struct.pack(order + "HHI", 1, machine, 1) + bytes(40)


def ar_member(name: str, data: bytes, *, bsd: bool = False) -> bytes:
    """An `ar` member: `name` as it stands in the header (GNU's `/N` and `//` as they are,
    other names with GNU's closing `/`), or in BSD's way."""
    if bsd:  # the name's length in the header, the name before the data
        raw = name.encode()
        header = f"#1/{len(raw)}".ljust(16) + "0".ljust(12) + "0".ljust(6) * 2 + "644".ljust(8)
        body = raw + data
    else:
        shown = name if name.startswith("/") else f"{name}/"
        header = shown.ljust(16) + "0".ljust(12) + "0".ljust(6) * 2 + "644".ljust(8)
        body = data
    member = (header + str(len(body)).ljust(10) + "`\n").encode() + body
    return member + (b"\n" if len(body) % 2 else b"")


def machines_of(path: Path, content: bytes) -> list[tuple[str, int]]:
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(file_machines(fd))
    finally:
        os.close(fd)


def test_an_elf_file_gives_its_machine_in_either_byte_order(tmp_path: Path) -> None:
    assert machines_of(tmp_path / "a", elf_header(183)) == [("", 183)]
    assert machines_of(tmp_path / "b", elf_header(22, big=True)) == [("", 22)]


def test_an_archive_gives_each_elf_member(tmp_path: Path) -> None:
    names = b"a-long-name-of-a-member.o/\nanother-long-name.o/\n"
    archive = (b"!<arch>\n" + ar_member("/", b"symbols") + ar_member("//", names)
               + ar_member("a.o", elf_header(243)) + ar_member("odd.txt", b"not an object")
               + ar_member("b.o", elf_header(62)) + ar_member("/27", elf_header(8))
               + ar_member("odd", elf_header(22), bsd=True)  # an odd length, padded
               + ar_member("long-name-of-a-member.o", elf_header(183), bsd=True))
    assert machines_of(tmp_path / "lib.a", archive) == [
        ("a.o", 243), ("b.o", 62), ("another-long-name.o", 8), ("odd", 22),
        ("long-name-of-a-member.o", 183)]


@pytest.mark.parametrize("content", [
    b"", b"#!/bin/sh\n", b"\x7fELF", b"\x7fELF" + bytes([2, 9]) + bytes(20),
    b"!<arch>\n" + b"garbage" * 20,
    b"!<arch>\n" + ar_member("a.o", elf_header(62))[:70],  # cut short
    b"!<arch>\n" + ar_member("a.o", elf_header(62)).replace(b"`\n", b"xx", 1),
    b"!<arch>\n" + ar_member("a.o", elf_header(62)).replace(b"64   ", b"-64  ", 1),
    b"!<arch>\n" + ar_member("a.o", elf_header(62), bsd=True).replace(b"#1/3", b"#1/9", 1),
], ids=["empty", "script", "short", "bad-order", "no-header", "cut", "no-end-mark", "negative",
        "long-name"])
def test_what_is_no_elf_or_no_archive_gives_nothing(tmp_path: Path, content: bytes) -> None:
    found = machines_of(tmp_path / "f", content)
    assert all(machine == 62 for _, machine in found)  # at most what precedes the damage


def test_the_check_names_the_file_the_member_and_both_machines(tmp_path: Path) -> None:
    check = machine_check("aarch64")
    assert check is not None
    path = tmp_path / "lib.a"
    path.write_bytes(b"!<arch>\n" + ar_member("ok.o", elf_header(183))
                     + ar_member("host.o", elf_header(62)))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(MachineMismatch) as info:
            check(fd, "lib/lib.a")
    finally:
        os.close(fd)
    assert str(info.value) == ("lib/lib.a (its member host.o) is an ELF file for x86_64 "
                               "(e_machine 62), not for aarch64 (e_machine 183)")
    assert machine_check("") is None  # a platform that is not ELF: nothing to check


def test_every_elf_platform_names_a_machine_the_check_knows() -> None:
    for name in platforms.KNOWN:
        if platforms.describe(name)["obj_fmt"] != "elf":
            continue
        assert platforms.elf_machine(platforms.describe(name)) in MACHINES, name
    assert platforms.elf_machine(platforms.describe("linux-aarch64")) == "aarch64"
    assert platforms.elf_machine(platforms.describe("linux-riscv64")) == "riscv64"
    for other in ("darwin-arm64", "mingw-w64-x86_64", "wasi-wasm32"):
        assert platforms.elf_machine(platforms.describe(other)) == ""
