"""Cross targets built for real and run under qemu user-mode emulation (Debian's
qemu-user-static): one ixd builds bin/hello, bin/lua (running a Lua script) and bin/lzip (C++,
libc++) for linux-aarch64 and bin/hello and bin/lua for linux-riscv64, in two realms, one
with the realm flag `--target=linux-aarch64`, the other with `(target=linux-riscv64)` on each
package. Each target's musl, builtins (and aarch64's C++ runtimes) come prebuilt with the run
(`cross_root`, tests/seeded_store.py); every program is built here. Then the aarch64 realm is
exported (`ixc export`), unpacked into a fresh folder and run there, chrooted.

tests/test_cross_plan.py checks what needs no build (uids per target, E_WRONG_MACHINE).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ixd.store.elf import MACHINES
from ixd.store.fstree import remove_tree
from tests.daemon_harness import PKGS, TEST_OVERLAY, RunningDaemon
from tests.elfinfo import read_elf
from tests.seeded_store import SeededRoot

pytestmark = pytest.mark.cross_root

#: the realms: name → (target, its machine, the words of `ixc mut` after the realm name)
REALMS = {
    "xa": ("linux-aarch64", "aarch64",
           ["--target=linux-aarch64", "+bin/hello", "+bin/lua", "+bin/lzip"]),
    "xr": ("linux-riscv64", "riscv64",
           ["+bin/hello(target=linux-riscv64)", "+bin/lua(target=linux-riscv64)"]),
}
#: the programs of each realm
PROGRAMS = {"xa": ["hello", "lua", "lzip"], "xr": ["hello", "lua"]}
LUA_SCRIPT = """
local squares = {}
for i = 1, 5 do squares[#squares + 1] = i * i end
print(table.concat(squares, ","), string.format("%.3f", math.pi), #arg, arg[1])
"""
LUA_SAYS = b"1,4,9,16,25\t3.142\t1\tcross\n"
BUILD_TIMEOUT = 1800
#: (the programs run with an empty PATH)
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def qemu(machine: str) -> str:
    found = shutil.which(f"qemu-{machine}-static")
    if found is None:
        pytest.skip(f"qemu-{machine}-static is not installed (apt-get install "
                    f"qemu-user-static; .ci/setup does)")
    return found


@dataclass
class Built:
    daemon: RunningDaemon
    times: dict[str, float]


@pytest.fixture(scope="module")
def built(cross_root: SeededRoot) -> Iterator[Built]:
    with cross_root.daemon(overlays=(TEST_OVERLAY, PKGS)) as daemon:
        started = time.monotonic()
        for realm, (_target, _machine, words) in REALMS.items():
            daemon.ixc("mut", realm, *words, timeout=BUILD_TIMEOUT)
        total = time.monotonic() - started
        history = json.loads(daemon.ixc("--json", "builds", "--limit", "500").stdout)
        times = {f"{b['name']} {b['uid'][:8]}": b["duration"] for b in history["builds"]
                 if b["state"] == "valid" and b["duration"] is not None}
        print(f"\nbuilt the cross realms in {total:.1f}s:")
        for name, seconds in sorted(times.items()):
            print(f"  {seconds:7.1f}s  {name}")
        yield Built(daemon, times)


def run(argv: list[str], *, input: bytes | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=input, capture_output=True, check=True, timeout=120,
                          env={"PATH": "/nonexistent"}, cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize("realm", list(REALMS))
def test_every_program_is_static_and_for_its_target(built: Built, realm: str) -> None:
    _target, machine, _words = REALMS[realm]
    for program in PROGRAMS[realm]:
        elf = read_elf((built.daemon.realm(realm) / "bin" / program).resolve())
        assert elf.machine == MACHINES[machine], (program, elf.machine)
        assert elf.static, (program, sorted(elf.segments))
    if realm == "xa":  # the C++ program links aarch64's libc++
        lzip = read_elf((built.daemon.realm(realm) / "bin" / "lzip").resolve())
        assert lzip.has_symbol_prefix("_ZNSt3__1"), "no libc++ symbols in lzip"


@pytest.mark.slow
@pytest.mark.parametrize("realm", list(REALMS))
def test_the_programs_run_under_qemu(built: Built, realm: str, tmp_path: Path) -> None:
    _target, machine, _words = REALMS[realm]
    emulator = qemu(machine)
    bin_dir = built.daemon.realm(realm) / "bin"
    assert run([emulator, str(bin_dir / "hello")]).stdout == b"Hello, world!\n"
    (tmp_path / "squares.lua").write_text(LUA_SCRIPT)
    said = run([emulator, str(bin_dir / "lua"), "squares.lua", "cross"], cwd=tmp_path)
    assert said.stdout == LUA_SAYS
    if "lzip" in PROGRAMS[realm]:  # C++: a round trip through the .lz format
        text = b"cross-built by ix\n" * 1000
        packed = run([emulator, str(bin_dir / "lzip"), "-c"], input=text).stdout
        assert packed.startswith(b"LZIP") and len(packed) < len(text) // 10
        assert run([emulator, str(bin_dir / "lzip"), "-dc"], input=packed).stdout == text


@pytest.mark.slow
def test_each_target_has_its_own_builds_and_the_host_tools_are_shared(built: Built) -> None:
    store_dirs = {realm: json.loads((built.daemon.realm(realm) / "meta.json").read_text())
                  ["store_dirs"] for realm in REALMS}
    hellos = {realm: [d for d in dirs if d.endswith("-bin-hello")]
              for realm, dirs in store_dirs.items()}
    assert len(hellos["xa"]) == len(hellos["xr"]) == 1 and hellos["xa"] != hellos["xr"]
    # one clang wrapper for every target's builds (and for the root's prebuilt libraries)
    # (named with the flags it was first asked for with: `(libc=none)` where lib/c's own
    # build asked first)
    wrappers = [name for name in built.times if name.startswith(("bld/boot/1/clang ",
                                                                 "bld/boot/1/clang("))]
    assert len(wrappers) == 1, (wrappers, sorted(built.times))
    assert len(list((built.daemon.root / "store").glob("*-bin-boot-1-clang"))) == 1


@pytest.mark.slow
def test_an_exported_realm_runs_from_a_fresh_folder_alone(built: Built, tmp_path: Path) -> None:
    """The tarball unpacks at the daemon's root path inside a fresh folder that is then the
    root of the file system (chroot): only what it holds (and the emulator) is there."""
    emulator = qemu("aarch64")
    first, second = tmp_path / "xa.tar.gz", tmp_path / "again.tar.gz"
    said = built.daemon.ixc("export", "xa", "-o", str(first)).stdout
    assert said.startswith("exported realm xa: 4 store entries")  # the realm and 3 packages
    built.daemon.ixc("export", "xa", "-o", str(second))
    assert first.read_bytes() == second.read_bytes()
    top = Path(tempfile.mkdtemp(prefix="ix-unpacked-", dir="/var/tmp"))
    try:
        subprocess.run(["tar", "-xzf", str(first), "-C", str(top)], check=True)
        shutil.copy(emulator, top / "qemu")
        realm = built.daemon.realm("xa")
        assert (top / str(realm).lstrip("/")).is_symlink()
        hello = run([CHROOT, str(top), "/qemu", f"{realm}/bin/hello"])
        assert hello.stdout == b"Hello, world!\n"
        (top / "squares.lua").write_text(LUA_SCRIPT)
        lua = run([CHROOT, str(top), "/qemu", f"{realm}/bin/lua", "/squares.lua", "cross"])
        assert lua.stdout == LUA_SAYS
    finally:
        remove_tree(top)
    refused = built.daemon.ixc("export", "nosuchrealm", "-o", str(tmp_path / "x.tar"),
                               check=False)
    assert refused.returncode != 0 and "[E_NO_REALM]" in refused.stderr
    assert not (tmp_path / "x.tar").exists()
