"""The real package set: musl from source, LLVM's runtimes, upstream tarballs, static binaries.

The slow tests (`@pytest.mark.slow`) start a real `ixd` with a local source mirror and build
realms holding every package of the set once (a module-scoped fixture), through the real
`ixc` command: the C packages built by clang (the default), the C++ programs (clang and
libc++), and bin/hello built by gcc beside them. They skip, saying why, only when the mirror
has not been seeded; seed it with `python -m tests.seed --mirror DIR` (DIR from
$IX_TEST_MIRROR, default /var/cache/ix-mirror).

Every program is checked for how it was linked (tests/elfinfo.py: no interpreter, no dynamic
section, the compilers its objects name, libc++'s symbols) and run.

The fast tests check what needs no build: the mirror's checksum refusal, the recipes'
structure (lib/c and compiler-rt's builtins induced everywhere, stage 0's clang the default,
`--cc=gcc`, the C++ check, host versions in the uid) and the seed script's needs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.model.selector import parse_selector
from ixd.recipes.package import walk_closure
from ixd.recipes.packages import PackageGraph
from ixd.recipes.tree import RecipeTree
from ixd.store.elf import NotElf, elf_interpreter
from ixd.store.fetch import fetch_source
from ixd.wire.errors import ChecksumMismatch, RecipeError, RecipeNotFound
from tests.daemon_harness import PKGS, PROJECT, TEST_OVERLAY, RunningDaemon
from tests.elfinfo import ElfInfo, read_elf
from tests.seed import DEBIAN_SOURCES, Needed, needed_sources, seed
from tests.seeded_store import SeededRoot

MIRROR = Path(os.environ.get("IX_TEST_MIRROR", "/var/cache/ix-mirror"))
#: (the daemon's tests start from the run's root with the toolchain prebuilt: lib/c and the
#: LLVM runtimes by clang, lib/c by gcc)
pytestmark = pytest.mark.toolchain_root

C_PACKAGES = ["lib/c", "bin/hello", "lib/lua", "bin/lua", "lib/lzma", "bin/xz",
              "lib/ncurses", "bin/less"]
#: the C++ programs, from upstream sources, and their programs
CXX_PROGRAMS = {"bin/ninja": "ninja", "bin/lzip": "lzip", "bin/gperf": "gperf"}
#: the toolchain's own libraries: the C library, the runtime library, the C++ runtimes
RUNTIMES = ["lib/c", "lib/compiler_rt/builtins", "lib/unwind", "lib/c++abi", "lib/c++"]
PACKAGES = [*C_PACKAGES, *CXX_PROGRAMS]
#: each program and the library package it links
PROGRAM_LIBRARIES = {"bin/lua": "lib/lua", "bin/xz": "lib/lzma", "bin/less": "lib/ncurses"}
REALM = "realset"
#: a realm of programs built by two compilers: hello by gcc, lua by clang
MIXED = "mixed"
#: the whole set on 2 cores takes about 4 minutes
BUILD_TIMEOUT = 1800
#: what clang and lld leave in .comment (and gcc, its libgcc and crt files)
CLANG = "clang version 14.0.6"
LLD = "LLD 14.0.6"
GCC = "GCC: "


# --- ELF --------------------------------------------------------------------------------------


def test_elf_interpreter_sees_the_dynamic_loader_of_a_host_program() -> None:
    host_sh = Path("/bin/sh").resolve()
    interp = elf_interpreter(host_sh)
    assert interp is not None and "ld-" in interp
    with pytest.raises(NotElf):
        elf_interpreter(Path(__file__))


# --- fast: the mirror's bytes are checked -------------------------------------------------------


def test_a_mirror_serving_wrong_bytes_gives_a_checksum_error_and_caches_nothing(
        tmp_path: Path) -> None:
    expected = "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b"  # hello 2.10
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / expected).write_bytes(b"not the hello-2.10 tarball\n" * 100)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatch) as caught:
        fetch_source(
            # the upstream URL is unreachable here (a closed local port): only the mirror counts
            "http://127.0.0.1:9/gnu/hello/hello-2.10.tar.gz",
            expected,
            cache,
            mirrors=[f"{mirror}/{{sha}}"],
            timeout=5,
        )
    message = str(caught.value)
    assert expected in message and "mismatch" in message
    assert str(mirror) in message
    assert not cache.exists() or list(cache.iterdir()) == []


# --- fast: the recipes' structure --------------------------------------------------------------


def _graph(tmp_path: Path) -> PackageGraph:
    return PackageGraph(RecipeTree([PKGS]), tmp_path / "store")


def _closure_names(graph: PackageGraph, selector: str) -> list[str]:
    return [p.display_name for p in walk_closure([graph.load(parse_selector(selector))])]


def _tools(graph: PackageGraph, selector: str) -> list[str]:
    return [t.display_name for t in graph.load(parse_selector(selector)).tools]


def _libs(graph: PackageGraph, selector: str) -> list[str]:
    return [p.name for p in graph.load(parse_selector(selector)).target_libs]


def test_every_package_links_lib_c_and_compiler_rt_builtins(tmp_path: Path) -> None:
    """clang is the default compiler (on ixd's default chain, stage 0's: bld/boot/1/clang):
    it induces lib/c and its runtime library (in place of libgcc) into every package but
    those two, which are built with the bare compiler."""
    graph = _graph(tmp_path)
    assert "bld/boot/1/clang(libc=none)" in _tools(graph, "lib/c")
    assert _libs(graph, "lib/c") == []
    assert "bld/boot/1/clang(libc=none)" in _tools(graph, "lib/compiler_rt/builtins")
    assert _libs(graph, "lib/compiler_rt/builtins") == ["lib/c"]
    for name in [*PACKAGES[1:], "lib/unwind", "lib/c++abi", "lib/c++", "bin/greet"]:
        assert "bld/boot/1/clang" in _tools(graph, name), name
        libs = _libs(graph, name)
        assert "lib/c" in libs and "lib/compiler_rt/builtins" in libs, (name, libs)
        if name in PROGRAM_LIBRARIES:
            assert PROGRAM_LIBRARIES[name] in libs, name
    for name in CXX_PROGRAMS:
        # a C++ package names lib/c++, which brings its ABI library and unwinder
        assert {"lib/c++", "lib/c++abi", "lib/unwind"} <= set(_libs(graph, name)), name
    assert "lib/c++" not in _libs(graph, "bin/hello")


def test_cc_gcc_builds_the_package_and_its_libc_with_gcc(tmp_path: Path) -> None:
    """The host's gcc is the one compiler outside stage 0: its builds see the host (the
    documented exception), the default ones (stage 0's clang) do not."""
    graph = _graph(tmp_path)
    names = _closure_names(graph, "bin/lua(cc=gcc)")
    assert "bld/host/gcc" in names and "bld/host/gcc(libc=none)" in names  # lib/c by gcc too
    assert "lib/c(cc=gcc)" in names and "lib/lua(cc=gcc)" in names
    # gcc's own runtime library (libgcc); stage 0's clang only builds stage 1's tools
    clang_toolchain = ("bld/host/clang", "bld/boot/1/clang", "lib/compiler_rt/builtins")
    assert not [n for n in names if n.split("(")[0] in clang_toolchain], names
    default = graph.load(parse_selector("bin/lua"))
    with_gcc = graph.load(parse_selector("bin/lua(cc=gcc)"))
    assert with_gcc.uid != default.uid
    assert with_gcc.node is not None and with_gcc.node.host_view
    assert default.node is not None and not default.node.host_view
    # clang is the default: naming it changes nothing, nor does a flag no recipe reads
    assert graph.load(parse_selector("bin/lua(cc=clang)")).uid == default.uid
    assert graph.load(parse_selector("bin/lua(unused=1)")).uid == default.uid


@pytest.mark.parametrize(("selector", "said"), [
    ("bin/ninja(cc=gcc)", "it is C++ (it links lib/c++): --cc=gcc cannot build it; the "
                          "compilers that can: clang"),
    ("lib/c++(cc=gcc)", "--cc=gcc cannot build it; the compilers that can: clang"),
    ("lib/compiler_rt/builtins(cc=gcc)", "the compilers that can: clang"),
])
def test_a_compiler_that_cannot_build_a_package_is_refused_by_name(
        tmp_path: Path, selector: str, said: str) -> None:
    with pytest.raises(RecipeError) as caught:
        graph = _graph(tmp_path)
        graph.load(parse_selector(selector))
    assert said in caught.value.message
    assert repr(selector.split("(")[0]) in caught.value.message  # the package, by name


def test_a_compiler_ix_does_not_have_is_a_recipe_no_overlay_holds(tmp_path: Path) -> None:
    """(the daemon then lists the compilers it has: tests/test_ux_errors.py)"""
    with pytest.raises(RecipeNotFound) as caught:
        _graph(tmp_path).load(parse_selector("bin/hello(cc=tcc)"))
    assert caught.value.package == "bld/host/tcc"


def test_host_tool_versions_change_the_uids(tmp_path: Path) -> None:
    """The recipes stamp `host_versions` (tool -> version, from the daemon's render context)
    into every bld/host wrapper's script: a host upgrade rebuilds what depends on it. What
    the default chain builds with stage 0 alone depends on no host tool, only on stage 0's
    captured bytes; the C++ runtimes still use the host's CMake, Ninja and Python."""
    uids = []
    for version in ("Debian clang version 14.0.6", "Debian clang version 14.0.7"):
        versions: defaultdict[str, str] = defaultdict(lambda v=version: v)  # type: ignore[misc]
        graph = _graph(tmp_path)
        graph.host_versions = versions  # type: ignore[assignment]
        clang = graph.load(parse_selector("bld/host/clang"))
        assert version in (clang.descriptor.script_data or "")
        uids.append((clang.uid, graph.load(parse_selector("bin/hello(cc=gcc)")).uid,
                     graph.load(parse_selector("lib/c++")).uid,
                     graph.load(parse_selector("bin/hello")).uid))
    assert uids[0][0] != uids[1][0]
    assert uids[0][1] != uids[1][1]
    assert uids[0][2] != uids[1][2]
    assert uids[0][3] == uids[1][3]


# --- fast: the seed script ---------------------------------------------------------------------


def test_seed_knows_the_checksum_of_every_fetched_source() -> None:
    needs = needed_sources([*PACKAGES, "lib/c++"])
    # with stage 1's BusyBox, dash and GNU make (its musl and ncurses are the set's)
    assert len({n.sha256 for n in needs}) == len(needs) == 13
    by_debian = {n.debian: n.url for n in needs}
    assert set(by_debian) == {*DEBIAN_SOURCES.values(), "llvm-toolchain-14", "lzip", "gperf",
                              "make-dfsg"}
    assert by_debian["musl"] == "https://musl.libc.org/releases/musl-1.2.3.tar.gz"
    assert by_debian["lua5.4"] == "https://www.lua.org/ftp/lua-5.4.4.tar.gz"
    # LLVM's source by its Debian package: Debian's tarball is not the upstream release's
    assert by_debian["llvm-toolchain-14"] == (
        "deb-src://llvm-toolchain-14/1:14.0.6-12/llvm-toolchain-14_14.0.6.orig.tar.xz")


def test_seed_leaves_a_seeded_mirror_alone(tmp_path: Path) -> None:
    """Already present tarballs are checked and kept: no apt, no copy."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    needs = []
    for i, debian in enumerate(("musl", "hello")):
        data = f"tarball {i}".encode()
        sha = hashlib.sha256(data).hexdigest()
        (mirror / sha).write_bytes(data)
        needs.append(Needed(f"pkg/{debian}", debian, f"file:///srv/tarball-{i}", sha))
    said: list[str] = []
    report = seed(mirror, needs, log=said.append)
    assert report.present == needs and report.copied == [] and said == []


# --- slow: the real builds ---------------------------------------------------------------------


def _ixc(socket: Path, *words: str, check: bool = True, timeout: float = 300,
         stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """The real `ixc` command of this checkout, pointed at the daemon with IX_SOCKET."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "PYTHONPATH": str(PROJECT), "IX_SOCKET": str(socket)}
    result = subprocess.run([sys.executable, "-m", "client.main", *words], capture_output=True,
                            text=True, env=env, timeout=timeout, cwd="/")
    if check and result.returncode != 0:
        raise AssertionError(f"ixc {' '.join(words)} exited {result.returncode}\n"
                             f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def _unseeded() -> list[str]:
    try:
        needs = needed_sources(PACKAGES)
    except Exception as exc:  # a recipe error is a failure, not a reason to skip
        raise AssertionError(f"cannot read the recipes' sources: {exc}") from exc
    return [f"{n.url} ({n.sha256})" for n in needs if not (MIRROR / n.sha256).is_file()]


class BuiltSet:
    def __init__(self, daemon: RunningDaemon, realm: Path, times: dict[str, float],
                 cxxrt: Path) -> None:
        self.daemon = daemon
        self.realm = realm
        self.times = times
        #: the store entry of tests/overlay's bin/cxxrt
        self.cxxrt = cxxrt

    def run(self, program: str, *args: str, input: bytes | None = None,
            env: dict[str, str] | None = None, realm: Path | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str((realm or self.realm) / "bin" / program), *args],
                              input=input, capture_output=True, check=True, timeout=60,
                              env=env if env is not None else {"PATH": "/nonexistent"},
                              cwd=cwd)


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> Iterator[BuiltSet]:
    missing = _unseeded()
    if missing:
        pytest.skip(f"the source mirror {MIRROR} is not seeded (IX_TEST_MIRROR): missing "
                    f"{', '.join(missing)}; run `python -m tests.seed --mirror {MIRROR}`")
    # lib/c and the LLVM runtimes come prebuilt, by an ixd of this run at this root path (the
    # history below has their builds); every other package is built here
    seeded: SeededRoot = request.getfixturevalue("toolchain_root")
    with seeded.daemon(overlays=(TEST_OVERLAY, PKGS)) as daemon:
        started = time.monotonic()
        _ixc(daemon.socket, "mut", REALM, *[f"+{p}" for p in PACKAGES],
             MIXED, "+bin/hello(cc=gcc)", "+bin/lua", timeout=BUILD_TIMEOUT)
        total = time.monotonic() - started
        cxxrt = Path(_ixc(daemon.socket, "build", "bin/cxxrt").stdout.split()[-1])
        history = json.loads(_ixc(daemon.socket, "--json", "builds", "--limit", "500").stdout)
        times = {b["name"]: b["duration"] for b in history["builds"]
                 if b["state"] == "valid" and b["duration"] is not None}
        print(f"\nbuilt the package set in {total:.1f}s:")
        for name, seconds in sorted(times.items()):
            print(f"  {seconds:7.1f}s  {name}")
        yield BuiltSet(daemon, daemon.realm(REALM), times, cxxrt)


def _programs(realm: Path) -> dict[str, ElfInfo]:
    """Each ELF program of a realm's bin/, read."""
    found = {}
    for link in sorted((realm / "bin").iterdir()):
        try:
            elf_interpreter(link.resolve())
        except NotElf:
            continue
        found[link.name] = read_elf(link.resolve())
    return found


@pytest.mark.slow
def test_every_package_was_built(built: BuiltSet) -> None:
    for name in [*PACKAGES, *RUNTIMES, "bin/hello(cc=gcc)", "lib/c(cc=gcc)"]:
        assert name in built.times, (name, built.times)
    meta = json.loads((built.realm / "meta.json").read_text())
    assert sorted(p.split("(")[0] for p in meta["packages"]) == sorted(PACKAGES)


@pytest.mark.slow
def test_every_program_is_static_and_built_by_clang_and_lld_alone(built: BuiltSet) -> None:
    """No interpreter, no dynamic section; every object in it compiled by clang and linked by
    lld: nothing of gcc's (its libgcc and crt files would say "GCC:" in .comment), so the
    runtime library and crtbegin/crtend are compiler-rt's."""
    programs = _programs(built.realm)
    assert {"hello", "lua", "xz", "less", *CXX_PROGRAMS.values()} <= set(programs), programs
    for name, elf in programs.items():
        assert elf.static, f"{name} is dynamically linked: {sorted(elf.segments)}"
        assert any(CLANG in c for c in elf.comments), (name, elf.comments)
        assert any(LLD in c for c in elf.comments), (name, elf.comments)
        assert not any(c.startswith(GCC) for c in elf.comments), (name, elf.comments)
        assert "__dso_handle" in elf.symbols, name  # compiler-rt's crtbegin
    # what readelf says agrees
    if shutil.which("readelf"):
        for name in ("hello", "ninja"):
            shown = subprocess.run(["readelf", "-lW", str((built.realm / "bin" / name).resolve())],
                                   capture_output=True, text=True, check=True).stdout
            assert "Type" in shown and "LOAD" in shown, shown
            assert "INTERP" not in shown and "DYNAMIC" not in shown, shown
    # no shared object made it into the realm either
    assert not [p for p in built.realm.rglob("*.so*")]


@pytest.mark.slow
def test_cxx_programs_carry_libcxx_not_libstdcxx(built: BuiltSet) -> None:
    programs = _programs(built.realm)
    for program in CXX_PROGRAMS.values():
        elf = programs[program]
        # operator new, from libc++abi; exceptions thrown through libunwind
        assert {"_Znwm", "__cxa_throw", "__gxx_personality_v0",
                "_Unwind_RaiseException"} <= elf.symbols, program
        assert not elf.has_symbol_prefix("_ZNSt7__cxx11"), program  # libstdc++'s ABI
        assert b"GLIBCXX" not in (built.realm / "bin" / program).resolve().read_bytes()
    for program in ("ninja", "lzip"):  # the standard library itself, libc++'s std::__1
        assert programs[program].has_symbol_prefix("_ZNSt3__1"), program


@pytest.mark.slow
def test_the_cxx_runtime_does_threads_exceptions_and_iostreams(built: BuiltSet) -> None:
    program = built.cxxrt / "bin" / "cxxrt"
    done = subprocess.run([str(program)], capture_output=True, check=True, timeout=60,
                          env={"PATH": "/nonexistent"})
    assert done.stdout.decode().splitlines() == [
        "threads: 8 ran, 4 caught",
        "thread_local destructors: 8",
        "future: St12domain_error division by zero",
        "condition variable: sum 5050",
        "nested: outer <- inner",
        "iostreams: ff 2 1.5 | 24",
        "rtti: 42",
        "int128: 22906492245",
        "static destructor ran",
    ]
    elf = read_elf(program)
    assert elf.static and elf.has_symbol_prefix("_ZNSt3__1")
    # the 128-bit division is compiler-rt's (no gcc object is in the program)
    assert "__divti3" in elf.symbols
    assert not any(c.startswith(GCC) for c in elf.comments), elf.comments


@pytest.mark.slow
def test_ninja_builds(built: BuiltSet, tmp_path: Path) -> None:
    assert built.run("ninja", "--version").stdout == b"1.11.1\n"
    (tmp_path / "in.txt").write_text("from ninja\n")
    (tmp_path / "build.ninja").write_text(
        "rule copy\n  command = cp $in $out\n"
        "build out.txt: copy in.txt\n"
        "rule fail\n  command = false\n"
        "build never: fail\n")
    env = {"PATH": "/usr/bin:/bin"}  # ninja runs its commands through /bin/sh
    done = built.run("ninja", "out.txt", env=env, cwd=tmp_path)
    assert (tmp_path / "out.txt").read_text() == "from ninja\n"
    assert b"[1/1] cp in.txt out.txt" in done.stdout
    again = built.run("ninja", "out.txt", env=env, cwd=tmp_path)
    assert b"no work to do" in again.stdout
    with pytest.raises(subprocess.CalledProcessError) as failed:
        built.run("ninja", "never", env=env, cwd=tmp_path)
    assert b"FAILED: never" in failed.value.stdout


@pytest.mark.slow
def test_lzip_round_trips_data(built: BuiltSet) -> None:
    data = os.urandom(1 << 16) + b"ix " * 100_000
    packed = built.run("lzip", "-c", "-6", input=data).stdout
    assert packed.startswith(b"LZIP") and len(packed) < len(data)
    assert built.run("lzip", "-dc", input=packed).stdout == data
    assert b"lzip 1.23" in built.run("lzip", "--version").stdout
    damaged = packed[:100] + bytes([packed[100] ^ 0xFF]) + packed[101:]
    with pytest.raises(subprocess.CalledProcessError) as failed:
        built.run("lzip", "-dc", input=damaged)
    assert failed.value.returncode == 2 and failed.value.stderr


@pytest.mark.slow
def test_gperf_generates_a_perfect_hash(built: BuiltSet) -> None:
    words = ["if", "else", "while", "for", "return", "switch"]
    out = built.run("gperf", "-L", "ANSI-C", "-N", "is_keyword",
                    input="\n".join(words).encode()).stdout.decode()
    assert "is_keyword (register const char *str, register size_t len)" in out
    assert all(f'"{word}"' in out for word in words)
    assert built.run("gperf", "--version").stdout.startswith(b"GNU gperf 3.1")


@pytest.mark.slow
def test_gcc_and_clang_programs_share_a_realm(built: BuiltSet) -> None:
    """--cc=gcc on one package: hello by gcc (with libgcc), lua by clang, in one realm."""
    mixed = built.daemon.realm(MIXED)
    programs = _programs(mixed)
    hello, lua = programs["hello"], programs["lua"]
    assert hello.static and lua.static
    assert any(c.startswith(GCC) for c in hello.comments), hello.comments
    assert not any(CLANG in c for c in hello.comments), hello.comments
    assert any(CLANG in c for c in lua.comments), lua.comments
    assert not any(c.startswith(GCC) for c in lua.comments), lua.comments
    assert built.run("hello", realm=mixed).stdout == b"Hello, world!\n"
    assert built.run("lua", "-e", "print(6*7)", realm=mixed).stdout == b"42\n"
    meta = json.loads((mixed / "meta.json").read_text())
    packages = sorted(meta["packages"])
    assert [p.split("(")[0] for p in packages] == ["bin/hello", "bin/lua"]
    assert "cc=gcc" in packages[0] and "cc=" not in packages[1], packages
    # the default realm's hello is clang's: two builds of one package, side by side
    assert programs["hello"] != _programs(built.realm)["hello"]


@pytest.mark.slow
def test_hello_greets(built: BuiltSet) -> None:
    assert built.run("hello").stdout == b"Hello, world!\n"
    assert built.run("hello", "--version").stdout.startswith(b"hello (GNU Hello) 2.10\n")


@pytest.mark.slow
def test_lua_computes(built: BuiltSet) -> None:
    assert built.run("lua", "-e", "print(6*7)").stdout == b"42\n"
    assert built.run("lua", "-e", "print(_VERSION)").stdout == b"Lua 5.4\n"


@pytest.mark.slow
def test_xz_round_trips_data(built: BuiltSet) -> None:
    data = os.urandom(1 << 16) + b"ix " * 100_000
    packed = built.run("xz", "-c", "-6", input=data).stdout
    assert packed.startswith(b"\xfd7zXZ\x00") and len(packed) < len(data)
    assert built.run("xz", "-dc", input=packed).stdout == data
    assert built.run("xzcat", input=packed).stdout == data
    assert b"5.4.1" in built.run("xz", "--version").stdout


@pytest.mark.slow
def test_less_runs(built: BuiltSet) -> None:
    assert built.run("less", "-V").stdout.startswith(b"less 590 ")
    # not on a terminal, less copies its input
    assert built.run("less", "-F", input=b"x\n").stdout == b"x\n"


@pytest.mark.slow
def test_less_draws_on_a_terminal_without_any_terminfo_database(
        built: BuiltSet, tmp_path: Path) -> None:
    """The terminal descriptions compiled into lib/ncurses are enough."""
    text = tmp_path / "page.txt"
    text.write_text("".join(f"line {i} of the page\n" for i in range(200)))
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {"PATH": "/nonexistent", "TERM": "xterm-256color", "HOME": str(tmp_path),
           "TERMINFO": str(tmp_path / "none"), "TERMINFO_DIRS": str(tmp_path / "none")}
    process = subprocess.Popen([str(built.realm / "bin" / "less"), str(text)], stdin=secondary,
                               stdout=secondary, stderr=secondary, env=env,
                               start_new_session=True)
    os.close(secondary)
    screen = b""
    try:
        deadline = time.monotonic() + 20
        while b"line 20 of the page" not in screen and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    screen += os.read(primary, 65536)
                except OSError:
                    break
        assert b"line 20 of the page" in screen, screen[-2000:]
        assert b"not fully functional" not in screen
        os.write(primary, b"q")
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)


@pytest.mark.slow
def test_dep_shows_each_programs_library_as_its_own_package(built: BuiltSet) -> None:
    for program, library in PROGRAM_LIBRARIES.items():
        names = _ixc(built.daemon.socket, "dep", program).stdout.split()
        assert names[-1] == program
        assert library in names and "lib/c" in names, (program, names)
        assert names.index(library) < names.index(program)
    less = _ixc(built.daemon.socket, "dep", "bin/less").stdout.split()
    assert "lib/ncurses" in less
