"""The real package set: musl from source, upstream tarballs, static binaries.

The slow tests (`@pytest.mark.slow`) start a real `ixd` with a local source mirror and build a
realm holding every package of the set once (a module-scoped fixture), through the real `ixc`
command. They skip, saying why, only when the mirror has not been seeded; seed it with
`python -m tests.seed --mirror DIR` (DIR from $IX_TEST_MIRROR, default /var/cache/ix-mirror).

The fast tests check what needs no build: the mirror's checksum refusal, the recipes'
structure (lib/c induced everywhere, `--cc=gcc`, host versions in the uid) and the seed
script's deb-src derivation.
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
from ixd.recipes.packages import PackageGraph, walk_closure
from ixd.recipes.tree import RecipeTree
from ixd.store.elf import NotElf, elf_interpreter
from ixd.store.fetch import fetch_source
from ixd.wire.errors import ChecksumMismatch
from tests.daemon_harness import PKGS, PROJECT, RunningDaemon
from tests.seed import (
    DEBIAN_SOURCES,
    Needed,
    derive_deb_src,
    needed_sources,
    parse_deb822,
    seed,
)
from tests.seeded_store import SeededRoot

MIRROR = Path(os.environ.get("IX_TEST_MIRROR", "/var/cache/ix-mirror"))
#: (the daemon's tests start from the run's root with lib/c prebuilt, by stage 0's clang and
#: by gcc)
pytestmark = pytest.mark.lib_c_gcc_root

PACKAGES = ["lib/c", "bin/hello", "lib/lua", "bin/lua", "lib/lzma", "bin/xz",
            "lib/ncurses", "bin/less"]
#: each program and the library package it links
PROGRAM_LIBRARIES = {"bin/lua": "lib/lua", "bin/xz": "lib/lzma", "bin/less": "lib/ncurses"}
REALM = "realset"
#: the whole set on 2 cores takes about 2 minutes
BUILD_TIMEOUT = 1800



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


def test_every_c_package_links_lib_c_and_its_own_library(tmp_path: Path) -> None:
    graph = _graph(tmp_path)
    for name in PACKAGES:
        package = graph.load(parse_selector(name))
        libs = [p.name for p in package.target_libs]
        if name == "lib/c":
            assert libs == []
            assert [t.display_name for t in package.tools if "cc" in t.name] == [
                "bld/boot/1/cc(libc=none)"]
        else:
            assert "lib/c" in libs, name
        if name in PROGRAM_LIBRARIES:
            assert PROGRAM_LIBRARIES[name] in libs, name
    # the demo packages keep building on the same toolchain
    assert "lib/c" in [p.name for p in graph.load(parse_selector("bin/greet")).target_libs]


def test_cc_gcc_selects_the_hosts_gcc_for_the_package_and_its_libc(tmp_path: Path) -> None:
    """The host's gcc is the one compiler outside stage 0: its builds see the host (the
    documented exception), the default ones (stage 0's clang) do not."""
    graph = _graph(tmp_path)
    names = _closure_names(graph, "bin/lua(cc=gcc)")
    assert "bld/host/gcc" in names and "bld/boot/1/cc" not in names
    assert "bld/host/gcc(libc=none)" in names  # lib/c built by gcc too
    assert "lib/c(cc=gcc)" in names and "lib/lua(cc=gcc)" in names
    default = graph.load(parse_selector("bin/lua"))
    with_gcc = graph.load(parse_selector("bin/lua(cc=gcc)"))
    assert with_gcc.uid != default.uid
    assert with_gcc.node is not None and with_gcc.node.host_view
    assert default.node is not None and not default.node.host_view
    # clang is the default; a flag the recipe does not read changes nothing
    assert graph.load(parse_selector("bin/lua(cc=clang)")).uid == default.uid
    assert graph.load(parse_selector("bin/lua(unused=1)")).uid == default.uid


def test_host_tool_versions_change_the_uids(tmp_path: Path) -> None:
    """The recipes stamp `host_versions` (tool -> version, from the daemon's render context)
    into every bld/host wrapper's script: a host upgrade rebuilds what depends on it. What
    the default chain builds depends on no host tool but stage 0's captured bytes."""
    uids = []
    for version in ("gcc (Debian 12.2.0-14) 12.2.0", "gcc (Debian 12.2.0-15) 12.2.0"):
        versions: defaultdict[str, str] = defaultdict(lambda v=version: v)  # type: ignore[misc]
        graph = _graph(tmp_path)
        graph.host_versions = versions  # type: ignore[assignment]
        cc = graph.load(parse_selector("bld/host/cc"))
        assert version in (cc.descriptor.script_data or "")
        uids.append((cc.uid, graph.load(parse_selector("bin/hello(cc=gcc)")).uid,
                     graph.load(parse_selector("bin/hello")).uid))
    assert uids[0][0] != uids[1][0]
    assert uids[0][1] != uids[1][1]
    assert uids[0][2] == uids[1][2]


# --- fast: the seed script ---------------------------------------------------------------------


def test_seed_knows_the_checksum_of_every_fetched_source() -> None:
    needs = needed_sources(list(DEBIAN_SOURCES))
    assert sorted({n.debian for n in needs}) == sorted(set(DEBIAN_SOURCES.values()))
    # the set's six, and stage 1's BusyBox, dash and GNU make (musl and ncurses are shared)
    assert len({n.sha256 for n in needs}) == len(needs) == 9
    by_debian = {n.debian: n.url for n in needs}
    assert by_debian["musl"] == "https://musl.libc.org/releases/musl-1.2.3.tar.gz"
    assert by_debian["lua5.4"] == "https://www.lua.org/ftp/lua-5.4.4.tar.gz"


def test_seed_derives_a_deb_src_entry_from_the_machines_own(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "distro.sources").write_text(
        "Types: deb\n"
        "# a comment the derived entry does not need\n"
        "URIs: file:///srv/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: file:///srv/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main contrib\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "Architectures: amd64\n"
    )
    (sources / "third-party.sources").write_text(
        "Types: deb\nURIs: file:///srv/other\nSuites: nodistro\nComponents: main\n")
    (sources / "old.list").write_text("deb file:///srv/ignored bookworm main\n")
    own = sources / "ix-deb-src.sources"
    text = derive_deb_src(sources, own, codename="bookworm")
    assert text is not None
    stanzas = parse_deb822(text)
    assert stanzas == [
        {"Types": "deb-src", "URIs": "file:///srv/debian", "Suites": "bookworm bookworm-updates",
         "Components": "main",
         "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg"},
        {"Types": "deb-src", "URIs": "file:///srv/debian-security",
         "Suites": "bookworm-security", "Components": "main contrib",
         "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg"},
    ]
    # once the machine has deb-src entries for them, nothing more is needed
    (sources / "src.sources").write_text(text)
    assert derive_deb_src(sources, own, codename="bookworm") is None


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
    def __init__(self, daemon: RunningDaemon, realm: Path, times: dict[str, float]) -> None:
        self.daemon = daemon
        self.realm = realm
        self.times = times

    def run(self, program: str, *args: str, input: bytes | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(self.realm / "bin" / program), *args], input=input,
                              capture_output=True, check=True, timeout=60,
                              env=env if env is not None else {"PATH": "/nonexistent"})


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> Iterator[BuiltSet]:
    missing = _unseeded()
    if missing:
        pytest.skip(f"the source mirror {MIRROR} is not seeded (IX_TEST_MIRROR): missing "
                    f"{', '.join(missing)}; run `python -m tests.seed --mirror {MIRROR}`")
    # lib/c comes prebuilt, by an ixd of this run at this root path (the history below has
    # its build); every other package is built here
    seeded: SeededRoot = request.getfixturevalue("lib_c_gcc_root")
    with seeded.daemon(overlays=(PKGS,)) as daemon:
        started = time.monotonic()
        _ixc(daemon.socket, "mut", REALM, *[f"+{p}" for p in PACKAGES],
             timeout=BUILD_TIMEOUT)
        total = time.monotonic() - started
        history = json.loads(_ixc(daemon.socket, "--json", "builds", "--limit", "500").stdout)
        times = {b["name"]: b["duration"] for b in history["builds"]
                 if b["state"] == "valid" and b["duration"] is not None}
        print(f"\nbuilt the package set in {total:.1f}s:")
        for name, seconds in sorted(times.items()):
            print(f"  {seconds:7.1f}s  {name}")
        yield BuiltSet(daemon, daemon.realm(REALM), times)


@pytest.mark.slow
def test_every_package_was_built(built: BuiltSet) -> None:
    for name in PACKAGES:
        assert name in built.times, (name, built.times)
    meta = json.loads((built.realm / "meta.json").read_text())
    assert sorted(p.split("(")[0] for p in meta["packages"]) == sorted(PACKAGES)


@pytest.mark.slow
def test_every_binary_in_the_realm_is_static(built: BuiltSet) -> None:
    programs = sorted((built.realm / "bin").iterdir())
    names = {p.name for p in programs}
    assert {"hello", "lua", "xz", "unxz", "xzcat", "less"} <= names, names
    checked = []
    for link in programs:
        path = link.resolve()
        try:
            interp = elf_interpreter(path)
        except NotElf:
            continue
        assert interp is None, f"{link.name} is dynamically linked (interpreter {interp})"
        checked.append(link.name)
    assert {"hello", "lua", "xz", "less"} <= set(checked)
    # no shared object made it into the realm either
    assert not [p for p in built.realm.rglob("*.so*")]


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


@pytest.mark.slow
def test_the_set_is_built_by_stage_0s_clang(built: BuiltSet) -> None:
    for program in ("hello", "lua", "xz", "less"):
        comment = _comment(built.realm / "bin" / program)
        assert "clang" in comment and "GCC" not in comment, (program, comment)


def _comment(program: Path) -> str:
    """The compilers and linker that made `program` (its ELF .comment section)."""
    return subprocess.run(["llvm-readelf", "-p", ".comment", str(program.resolve())],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed here")
def test_cc_gcc_builds_with_gcc(built: BuiltSet) -> None:
    out = Path(_ixc(built.daemon.socket, "build", "bin/hello(cc=gcc)",
                    timeout=BUILD_TIMEOUT).stdout.split()[-1])
    hello = out / "bin" / "hello"
    assert elf_interpreter(hello) is None
    assert "GCC" in _comment(hello)
    assert subprocess.run([str(hello)], capture_output=True, check=True).stdout == (
        b"Hello, world!\n")
