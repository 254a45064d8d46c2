"""The builder runs real build scripts, confined by real bubblewrap."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio

from ixd.model.layout import Layout
from ixd.model.nodes import Node, Source
from ixd.store import cgroup, space
from ixd.store.builder import BuildLimits, run_build
from ixd.store.buildusers import DEFAULT_GROUP, BuildUserPool, load_pool
from ixd.store.confine import confinement_argv, probe_confinement
from ixd.store.fstree import remove_tree
from ixd.store.process import SETUP_NICE
from ixd.store.scratch import Built, ContentMismatch
from ixd.wire.errors import BuildFailed, BuildLimitExceeded, WrongMachine
from tests.daemon_harness import make_reachable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}
SET_BY_BUILDER = {"out", "tmp", "src", "uid", "make_thrs"}

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")
both_modes = pytest.mark.parametrize(
    "confine",
    [pytest.param(True, marks=needs_bwrap, id="confined"), pytest.param(False, id="bare")],
)


@pytest.fixture
def layout() -> Iterator[Layout]:
    # Not under /tmp: a confined build's /tmp is its own scratch, and a root under /tmp would
    # have the sandbox's mount points show up in there.
    top = Path(tempfile.mkdtemp(prefix="ix-builder-", dir="/var/tmp"))
    layout = Layout(top / "ix")
    layout.ensure()
    make_reachable(layout.root)  # build users must pass through to the store
    yield layout
    remove_tree(top)


async def build(node: Node, layout: Layout, *, confine: bool, make_thrs: int = 1,
                on_log_line: Callable[[str], None] | None = None,
                limits: BuildLimits | None = None, expect_hash: str | None = None) -> Built:
    """run_build, confined as a build user of the machine's pool (as ixd runs it); the
    lines it hands the event loop to `on_log_line`."""
    def on_log(items: list[str | int], end: int) -> None:
        if on_log_line is not None:
            for item in items:
                assert isinstance(item, str), f"{item} lines left out live"
                on_log_line(item)

    if not confine:
        return await run_build(node, layout, confine=False, make_thrs=make_thrs,
                               on_log=on_log, limits=limits, expect_hash=expect_hash)
    async with BuildUserPool(load_pool(DEFAULT_GROUP)).take() as user:
        return await run_build(node, layout, confine=True, make_thrs=make_thrs,
                               on_log=on_log, limits=limits, user=user,
                               expect_hash=expect_hash)


def make_node(
    layout: Layout,
    script: str,
    *,
    stdin: bool = False,
    net: bool = False,
    sources: tuple[Source, ...] = (),
    env: dict[str, str] | None = None,
) -> Node:
    uid = uuid.uuid4().hex
    command = ("/bin/sh", "-e", "-s") if stdin else ("/bin/sh", "-ec", script)
    return Node(
        uid=uid,
        kind="build",
        name="bin/test",
        deps=(),
        inputs=(),
        outputs=(str(layout.store_dir(uid, "bin", "test")),),
        command=command,
        stdin=script if stdin else "",
        env=dict(BUILD_ENV if env is None else env),
        net=net,
        sources=sources,
    )


def out_of(node: Node) -> Path:
    return Path(node.outputs[0])


def log_of(layout: Layout, node: Node) -> str:
    return layout.log_path(node.uid).read_text(errors="replace")


def assert_cleaned_up(layout: Layout, node: Node) -> None:
    assert not out_of(node).exists()
    assert not layout.scratch(node.uid).exists()


# --- success and failure -------------------------------------------------------------------


@both_modes
async def test_a_script_larger_than_a_pipe_reaches_the_command_whole(
        layout: Layout, confine: bool) -> None:
    # what the pipe takes is written when the build starts, the rest by a task of the loop
    padding = "".join(f": line {i} of padding\n" for i in range(20000))  # ~450 KB
    script = padding + 'mkdir -p "$out"; echo "$((1 + 1))" > "$out/last"\n'
    node = make_node(layout, script, stdin=True)
    await build(node, layout, confine=confine, make_thrs=1)
    assert (out_of(node) / "last").read_text() == "2\n"


@both_modes
async def test_success_writes_a_read_only_output(layout: Layout, confine: bool) -> None:
    script = """
        echo "hello from the build"
        echo "to stderr" >&2
        mkdir -p "$out/bin"
        printf '#!/bin/sh\\necho x\\n' > "$out/bin/x"
        chmod 755 "$out/bin/x"
        echo data > "$out/data"
        ln -s bin/x "$out/link"
        tr '\\0' '\\n' < /proc/$$/environ > "$out/env.txt"
        pwd > "$out/pwd.txt"
    """
    node = make_node(layout, script, stdin=True, env={**BUILD_ENV, "out": "/ignored"})
    lines: list[str] = []
    await build(node, layout, confine=confine, make_thrs=7, on_log_line=lines.append)

    out = out_of(node)
    assert (out / "bin" / "x").read_text() == "#!/bin/sh\necho x\n"
    assert not layout.scratch(node.uid).exists()
    # read-only, exec bits kept, the symlink left alone
    assert stat.S_IMODE(out.stat().st_mode) == 0o555
    assert stat.S_IMODE((out / "bin").stat().st_mode) == 0o555
    assert stat.S_IMODE((out / "bin" / "x").stat().st_mode) == 0o555
    assert stat.S_IMODE((out / "data").stat().st_mode) == 0o444
    assert os.readlink(out / "link") == "bin/x"
    # the log and the callback both get stdout and stderr
    log = log_of(layout, node)
    assert "hello from the build" in log
    assert "to stderr" in log
    assert "hello from the build" in lines
    assert "to stderr" in lines
    # exactly the node's environment plus what the builder sets; ours win
    env = dict(line.split("=", 1) for line in (out / "env.txt").read_text().splitlines() if line)
    assert set(env) == set(BUILD_ENV) | SET_BY_BUILDER
    assert env["out"] == str(out)
    assert env["tmp"] == str(layout.scratch(node.uid) / "tmp")
    assert env["src"] == str(layout.scratch(node.uid) / "src")
    assert env["uid"] == node.uid
    assert env["make_thrs"] == "7"
    assert (out / "pwd.txt").read_text().strip() == env["tmp"]


@both_modes
async def test_failure_raises_with_the_log_tail_and_cleans_up(
    layout: Layout, confine: bool
) -> None:
    script = """
        mkdir -p "$out/bin"; echo half > "$out/bin/half"
        i=1; while [ $i -le 30 ]; do echo "line$i"; i=$((i + 1)); done
        exit 3
    """
    node = make_node(layout, script)
    with pytest.raises(BuildFailed) as caught:
        await build(node, layout, confine=confine, make_thrs=1)
    err = caught.value
    assert err.code == "E_BUILD_FAILED"
    assert "bin/test" in err.message
    assert node.uid in err.message
    assert "exit status 3" in err.message
    assert str(layout.log_path(node.uid)) in err.message
    quoted = [line.strip() for line in err.message.splitlines()]
    assert "line30" in quoted
    assert "line11" in quoted
    assert "line10" not in quoted  # only the last 20 lines
    assert_cleaned_up(layout, node)


@both_modes
async def test_missing_command_is_a_build_failure(layout: Layout, confine: bool) -> None:
    node = dataclasses.replace(make_node(layout, ""), command=("/nonexistent/ix-no-such-tool",))
    with pytest.raises(BuildFailed, match="bin/test"):
        await build(node, layout, confine=confine, make_thrs=1)
    assert_cleaned_up(layout, node)


@both_modes
async def test_stale_output_and_scratch_are_replaced(layout: Layout, confine: bool) -> None:
    node = make_node(layout, 'echo new > "$out/file"; ls "$tmp" > "$out/tmp-listing"')
    stale = out_of(node)
    (stale / "old").mkdir(parents=True)
    (stale / "old" / "file").write_text("stale")
    stale.chmod(0o555)
    junk = layout.scratch(node.uid) / "tmp" / "junk"
    junk.parent.mkdir(parents=True)
    junk.write_text("junk")

    await build(node, layout, confine=confine, make_thrs=1)
    assert sorted(p.name for p in stale.iterdir()) == ["file", "tmp-listing"]
    # (a root under /tmp, as here, shows the sandbox's mount points in /tmp = $tmp)
    assert "junk" not in (stale / "tmp-listing").read_text()


@both_modes
async def test_background_process_does_not_keep_the_build_alive(
    layout: Layout, confine: bool
) -> None:
    node = make_node(layout, 'sleep 1000 & echo "left $!"; echo ok > "$out/ok"')
    with trio.fail_after(4):  # well below the 1000 s the background sleep would hold stdout
        await build(node, layout, confine=confine, make_thrs=1)
    assert (out_of(node) / "ok").exists()
    assert processes_of(node) == []


#: the thread that started each process, by the process's argv (see `_record_starter`)
_STARTERS: dict[str, threading.Thread] = {}


def _record_starter(event: str, args: tuple[object, ...]) -> None:
    """An audit hook (they stay for the process's life): which thread starts each process."""
    if event == "subprocess.Popen":
        _STARTERS[repr(args[1])] = threading.current_thread()


def starter_of(node: Node) -> threading.Thread:
    found = [thread for argv, thread in _STARTERS.items() if node.uid in argv]
    assert len(found) == 1, (node.uid, list(_STARTERS))
    return found[0]


@needs_bwrap
async def test_builds_are_started_by_one_thread_that_outlives_trios_workers(
    layout: Layout
) -> None:
    # bwrap --die-with-parent uses PR_SET_PDEATHSIG, which fires when the *thread* that
    # forked bwrap exits. Spawned from one of trio's worker threads, which retire after 10 s
    # idle, a build was SIGKILLed then. So every build is started by one thread that stays:
    # not the event loop's, not the worker thread a request may come from.
    if not _STARTERS:
        sys.addaudithook(_record_starter)
    slow = make_node(layout, 'sleep 0.5; echo survived > "$out/ok"')
    await build(slow, layout, confine=True, make_thrs=1)
    assert (out_of(slow) / "ok").read_text() == "survived\n"

    def build_from_a_worker_thread() -> threading.Thread:
        trio.from_thread.run(functools.partial(build, other, layout, confine=True))
        return threading.current_thread()

    other = make_node(layout, 'echo other > "$out/ok"')
    asking = await trio.to_thread.run_sync(build_from_a_worker_thread)
    starter = starter_of(slow)
    assert starter_of(other) is starter and starter.is_alive()
    assert starter not in (threading.current_thread(), asking, *await trio_workers(8))


async def trio_workers(count: int) -> set[threading.Thread]:
    """`count` of trio's worker threads at once: the idle ones first (then new ones)."""
    together = threading.Barrier(count)
    found: set[threading.Thread] = set()

    def meet() -> None:
        together.wait(timeout=30)
        found.add(threading.current_thread())

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(trio.to_thread.run_sync, meet)
    assert len(found) == count
    return found


DAEMON = """
import json, sys, trio
from pathlib import Path
from ixd.store.builder import run_build
from ixd.store.buildusers import DEFAULT_GROUP, BuildUserPool, load_pool
from ixd.model.layout import Layout
from ixd.model.nodes import Node
node, layout = Node.from_json(json.loads(sys.argv[1])), Layout(Path(sys.argv[2]))

async def main():
    async with BuildUserPool(load_pool(DEFAULT_GROUP)).take() as user:
        await run_build(node, layout, confine=True, make_thrs=1, user=user)

trio.run(main)
"""


@needs_bwrap
async def test_confined_build_dies_with_the_daemon(layout: Layout) -> None:
    node = make_node(layout, "echo started; sleep 1000")
    argv = [sys.executable, "-c", DAEMON, json.dumps(node.to_json()), str(layout.root)]
    daemon = await trio.lowlevel.open_process(argv, cwd=PROJECT_ROOT)
    try:
        await wait_for_log_line(layout.log_path(node.uid), "started")
        assert processes_of(node)
    finally:
        daemon.kill()
        await daemon.wait()
    with trio.fail_after(10):
        while True:
            if not processes_of(node):
                break
            await trio.sleep(0.01)


# --- confinement ---------------------------------------------------------------------------


@needs_bwrap
def test_probe_confinement_works_here() -> None:
    assert probe_confinement() is None


@needs_bwrap
async def test_build_cannot_write_outside_out_and_scratch(layout: Layout) -> None:
    tag = uuid.uuid4().hex
    targets = {
        "sources": layout.sources / f"evil-{tag}",
        "etc": Path(f"/etc/ix-evil-{tag}"),
        "root": Path(f"/root/ix-evil-{tag}"),
        "home": Path.home() / f"ix-evil-{tag}",
    }
    targets["var"] = layout.var / f"evil-{tag}"  # the daemon's var/ is not even there
    # /tmp and the store the build sees are its own: writes succeed, and vanish with it
    harmless = {"tmp": Path(f"/tmp/ix-evil-{tag}"), "store": layout.store / f"evil-{tag}"}
    checks = [f'try_write "$out/../evil-{tag}-beside" beside']
    checks += [f'try_write "{path}" {key}' for key, path in {**targets, **harmless}.items()]
    script = (
        """
        try_write() {
            if ( echo evil > "$1" ) 2>/dev/null; then echo "WROTE $2"; else echo "DENIED $2"; fi
        }
        """
        + "\n".join(checks)
        + '\necho fine > "$out/ok"\nexit 0\n'
    )
    node = make_node(layout, script)
    await build(node, layout, confine=True, make_thrs=1)

    log = log_of(layout, node).splitlines()
    for key in targets:
        assert f"DENIED {key}" in log
    assert "WROTE tmp" in log and "WROTE store" in log and "WROTE beside" in log
    for path in [*targets.values(), *harmless.values(), layout.store / f"evil-{tag}-beside"]:
        assert not path.exists(), path
    assert (out_of(node) / "ok").read_text() == "fine\n"


@both_modes
async def test_a_build_may_remove_and_make_its_output_again(layout: Layout,
                                                            confine: bool) -> None:
    """stal/IX's scripts begin with `rm -rf ${out}; mkdir ${out}`."""
    node = make_node(layout, 'rm -rf "$out"; mkdir "$out"; echo again > "$out/x"')
    await build(node, layout, confine=confine)
    assert (out_of(node) / "x").read_text() == "again\n"


@needs_bwrap
async def test_inputs_stay_read_only_in_the_store_the_build_sees(layout: Layout) -> None:
    first = make_node(layout, 'mkdir -p "$out"; echo input > "$out/data"')
    await build(first, layout, confine=True)
    script = f"""
        rm -rf "{out_of(first)}" 2>/dev/null && echo REMOVED || echo KEPT
        ( echo evil > "{out_of(first)}/data" ) 2>/dev/null && echo WROTE || echo DENIED
        echo done > "$out/done"
    """
    second = dataclasses.replace(make_node(layout, script), inputs=(str(out_of(first)),))
    await build(second, layout, confine=True)
    log = log_of(layout, second).splitlines()
    assert "KEPT" in log and "DENIED" in log
    assert (out_of(first) / "data").read_text() == "input\n"


@both_modes
@pytest.mark.parametrize("left", ["nothing", "a link", "a file"])
async def test_an_output_that_is_not_a_folder_is_refused(layout: Layout, confine: bool,
                                                         left: str) -> None:
    make = {"nothing": 'rm -rf "$out"', "a link": 'rm -rf "$out"; ln -s / "$out"',
            "a file": 'rm -rf "$out"; echo x > "$out"'}[left]
    node = make_node(layout, make)
    with pytest.raises(BuildFailed, match="could not be finished"):
        await build(node, layout, confine=confine)
    assert_cleaned_up(layout, node)


@needs_bwrap
@pytest.mark.parametrize("net", [False, True])
async def test_network_only_when_the_node_asks(layout: Layout, net: bool) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        script = (
            "python3 -c 'import socket; "
            f'socket.create_connection(("127.0.0.1", {port}), timeout=5)\' '
            "&& echo NET-OK || echo NET-DENIED"
        )
        node = make_node(layout, script, net=net)
        await build(node, layout, confine=True, make_thrs=1)
        log = log_of(layout, node)
        if net:
            assert "NET-OK" in log
            listener.accept()[0].close()
        else:
            assert "NET-DENIED" in log
            with pytest.raises(BlockingIOError):
                listener.accept()


@needs_bwrap
async def test_daemon_socket_is_hidden(layout: Layout) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(layout.socket))
        server.listen(1)
        server.setblocking(False)
        script = (
            "python3 -c 'import socket, sys; "
            "socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "
            f'"{layout.socket}" && echo SOCKET-OK || echo SOCKET-HIDDEN'
        )
        node = make_node(layout, script)
        await build(node, layout, confine=True, make_thrs=1)
        assert "SOCKET-HIDDEN" in log_of(layout, node)
        with pytest.raises(BlockingIOError):
            server.accept()


@both_modes
async def test_an_output_of_another_content_than_expected_never_reaches_the_store(
        layout: Layout, confine: bool) -> None:
    script = 'echo one > "$out/file"'
    first = await build(make_node(layout, script), layout, confine=confine)
    # the same content is accepted; another is refused, naming both hashes
    same = make_node(layout, script)
    assert (await build(same, layout, confine=confine,
                        expect_hash=first.content_hash)).content_hash == first.content_hash
    other = make_node(layout, 'echo two > "$out/file"')
    with pytest.raises(BuildFailed, match=f"not the expected {first.content_hash}") as info:
        await build(other, layout, confine=confine, expect_hash=first.content_hash)
    assert isinstance(info.value.__cause__, ContentMismatch)
    assert_cleaned_up(layout, other)


# --- the machine of what a build makes -------------------------------------------------------

#: the host's machine, and another one (a program for the host claims to be for it)
HOST_MACHINE = {"x86_64": "x86_64", "aarch64": "aarch64", "riscv64": "riscv64"}[
    os.uname().machine]
OTHER_MACHINE = "riscv64" if HOST_MACHINE != "riscv64" else "aarch64"
#: a program of the host's, and a static library of a host object (an ELF member)
HOST_PROGRAM = 'mkdir -p "$out/bin"; cp /bin/true "$out/bin/true"'
HOST_ARCHIVE = ('mkdir -p "$out/lib"; cp /bin/true "$tmp/true.o"; '
                'ar rc "$out/lib/libtrue.a" "$tmp/true.o"')


@both_modes
@pytest.mark.parametrize("script, where", [
    pytest.param(HOST_PROGRAM, "bin/true", id="program"),
    pytest.param(HOST_ARCHIVE, "lib/libtrue.a (its member true.o)", id="archive")])
async def test_an_output_for_another_machine_never_reaches_the_store(
        layout: Layout, confine: bool, script: str, where: str) -> None:
    node = dataclasses.replace(make_node(layout, script), elf_machine=OTHER_MACHINE)
    with pytest.raises(WrongMachine) as info:
        await build(node, layout, confine=confine)
    # both machines named, and where the file is
    message = info.value.message
    assert f"{where} is an ELF file for {HOST_MACHINE} (e_machine " in message
    assert f"not for {OTHER_MACHINE} (e_machine " in message
    assert f"bin/test is built for {OTHER_MACHINE}" in message
    assert info.value.code == "E_WRONG_MACHINE"
    assert_cleaned_up(layout, node)
    # for its own machine, or with no machine to check, the same output is accepted
    for machine in (HOST_MACHINE, ""):
        same = dataclasses.replace(make_node(layout, script), elf_machine=machine)
        await build(same, layout, confine=confine)
        assert out_of(same).is_dir()


# --- sources -------------------------------------------------------------------------------


@both_modes
@pytest.mark.parametrize("path", ["/usr/bin:/bin", "/nonexistent"])
async def test_sources_are_linked_into_src(layout: Layout, confine: bool, path: str) -> None:
    # (a build's PATH may name no host folder, as the real packages' PATH names store dirs)
    sha = "ab" * 32
    layout.source_path(sha).write_bytes(b"tarball bytes\n")
    sources = (
        Source(url="https://example.invalid/hello-1.0.tar.gz", sha256=sha, filename="hello.tgz"),
        Source(url="https://example.invalid/hello.tgz.sig", sha256=sha, filename="a b -- $x"),
    )
    node = make_node(
        layout, '/bin/ls "$src" > "$out/names"; /bin/cat "$src/hello.tgz" > "$out/copy"',
        sources=sources, env={"PATH": path, "LANG": "C"})
    await build(node, layout, confine=confine, make_thrs=1)
    assert (out_of(node) / "names").read_text() == "a b -- $x\nhello.tgz\n"
    assert (out_of(node) / "copy").read_bytes() == b"tarball bytes\n"


async def test_bad_source_file_name_is_refused(layout: Layout) -> None:
    source = Source(url="https://example.invalid/x", sha256="cd" * 32, filename="../escape")
    node = make_node(layout, "true", sources=(source,))
    with pytest.raises(BuildFailed, match="escape"):
        await build(node, layout, confine=False, make_thrs=1)
    assert_cleaned_up(layout, node)


# --- cancellation --------------------------------------------------------------------------


def processes_of(node: Node) -> list[int]:
    """Live host processes whose environment carries this node's uid (a build's processes)."""
    needle = f"\0uid={node.uid}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if needle in b"\0" + environ and is_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def find_line(path: Path, prefix: str) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    return next((line for line in text.splitlines() if line.startswith(prefix)), None)


async def wait_for_log_line(path: Path, prefix: str) -> str:
    """Poll the log (with a deadline) until a line starts with prefix."""
    with trio.fail_after(10):
        while True:
            line = find_line(path, prefix)
            if line is not None:
                return line
            await trio.sleep(0.01)


@both_modes
async def test_cancellation_kills_the_build_and_cleans_up(layout: Layout, confine: bool) -> None:
    script = 'mkdir -p "$out/partial"; sleep 1000 & echo "started $$ $!"; wait'
    node = make_node(layout, script)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: build(node, layout, confine=confine, make_thrs=1))
        started = await wait_for_log_line(layout.log_path(node.uid), "started ")
        assert processes_of(node), "the build's processes should be running"
        nursery.cancel_scope.cancel()

    assert processes_of(node) == []
    if not confine:  # inside the sandbox, $$ and $! are pids of its own pid namespace
        for pid in map(int, started.split()[1:]):
            assert not is_alive(pid)
    assert_cleaned_up(layout, node)


async def build_behind_gate(node: Node, layout: Layout, *, confine: bool,
                            gate: Callable[[], Awaitable[None]]) -> Built:
    """`build`, its command held until `gate()` returns (as a build slot holds it)."""
    if not confine:
        return await run_build(node, layout, confine=False, make_thrs=1, gate=gate)
    async with BuildUserPool(load_pool(DEFAULT_GROUP)).take() as user:
        return await run_build(node, layout, confine=True, make_thrs=1, user=user, gate=gate)


def waits_at_its_gate(node: Node) -> bool:
    """Whether the node's sandbox is set up and waiting: its bwrap blocked reading a pipe
    (the --block-fd; nothing else of bwrap reads one)."""
    for pid in processes_of(node):
        with contextlib.suppress(OSError):
            if (Path(f"/proc/{pid}/comm").read_text().strip() == "bwrap"
                    and "pipe_read" in Path(f"/proc/{pid}/wchan").read_text()):
                return True
    return False


async def sandbox_set_up(node: Node) -> None:
    """Wait (with a deadline) until the node's sandbox waits at its gate."""
    with trio.fail_after(10):
        while True:
            if waits_at_its_gate(node):
                return
            await trio.sleep(0.01)


async def held_at_gate(nursery: trio.Nursery, node: Node, layout: Layout, *, confine: bool,
                       release: trio.Event) -> list[int]:
    """Start the node's build behind a gate that opens on `release`; once it is held there
    (a confined one's sandbox set up), the build's processes."""
    at_gate = trio.Event()
    seen: list[int] = []

    async def gate() -> None:
        if confine:
            await sandbox_set_up(node)
        seen.extend(processes_of(node))
        at_gate.set()
        await release.wait()

    nursery.start_soon(functools.partial(build_behind_gate, node, layout, confine=confine,
                                         gate=gate))
    await at_gate.wait()
    return seen


@both_modes
async def test_the_command_runs_only_once_its_gate_opens(layout: Layout, confine: bool) -> None:
    """The build slot's wait: a confined build's sandbox is set up before its slot is
    granted, its command not; a bare build starts nothing before."""
    node = make_node(layout, 'echo "command ran"; touch "$tmp/ran"; mkdir -p "$out"')
    ran = layout.scratch(node.uid) / "tmp" / "ran"
    opened = trio.Event()
    async with trio.open_nursery() as nursery:
        processes = await held_at_gate(nursery, node, layout, confine=confine, release=opened)
        assert bool(processes) == confine  # bwrap waits; a bare build is not started yet
        assert not ran.exists()
        opened.set()
    assert "command ran" in log_of(layout, node)
    assert out_of(node).is_dir()


def autogroup_nice(pid: int) -> str | None:
    """The priority of the session (autogroup) of process `pid`; None without autogroups."""
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().split()[-1]
    except FileNotFoundError:
        return None


@needs_bwrap
async def test_a_sandbox_set_up_ahead_yields_the_processor_its_command_does_not(
        layout: Layout) -> None:
    """A sandbox set up while its build waits for its slot runs at SETUP_NICE (its session
    too, where the kernel shares the processor between sessions first): the builds running
    meanwhile go first. Its command runs at the normal priority."""
    if os.geteuid() != 0:
        pytest.skip("only root gives a set-up its priority back")
    node = make_node(layout, 'mkdir -p "$out"; nice > "$out/nice"; '
                             'cat /proc/self/autogroup > "$out/autogroup" || true')
    opened = trio.Event()
    async with trio.open_nursery() as nursery:
        processes = await held_at_gate(nursery, node, layout, confine=True, release=opened)
        assert processes
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in processes} == {SETUP_NICE}
        assert {autogroup_nice(pid) for pid in processes} <= {str(SETUP_NICE), None}
        opened.set()
    assert (out_of(node) / "nice").read_text() == "0\n"
    group = (out_of(node) / "autogroup").read_text()
    assert not group or group.split()[-1] == "0", group


@needs_bwrap
async def test_a_build_cancelled_at_its_gate_leaves_nothing(layout: Layout) -> None:
    """A sandbox waiting for its slot is killed whole when its build is cancelled (its
    gate's end is closed only then: bwrap reads a closed gate as "run it")."""
    node = make_node(layout, 'mkdir -p "$out"; sleep 1000')
    async with trio.open_nursery() as nursery:
        assert await held_at_gate(nursery, node, layout, confine=True, release=trio.Event())
        nursery.cancel_scope.cancel()
    assert processes_of(node) == []
    assert_cleaned_up(layout, node)


@needs_bwrap
@pytest.mark.parametrize("room", [True, False], ids=["room", "tight"])
async def test_a_slot_is_handed_on_as_the_sandbox_ends_its_work_deleted_first_only_if_tight(
        layout: Layout, room: bool) -> None:
    """A build that ended well hands its slot on once its sandbox is gone, before its output
    is settled (nobody is told it succeeded until then). Where the file system has room for
    another whole build (--max-output-size free), its work waits in the trash; where it has
    not, the work is deleted before the slot's next build may start."""
    node = make_node(layout, 'mkdir -p "$out" "$tmp/w"; echo work > "$tmp/w/file"')
    free = space.free_bytes(layout.build)[0]
    limits = BuildLimits(max_output_size=free // 2 if room else free * 2)
    work = layout.scratch(node.uid) / "tmp" / "w"
    seen: dict[str, object] = {}

    def on_exit() -> None:
        seen.update(work=work.exists(), settled=out_of(node).exists(),
                    processes=processes_of(node))

    async with BuildUserPool(load_pool(DEFAULT_GROUP)).take() as user:
        await run_build(node, layout, confine=True, make_thrs=1, user=user, limits=limits,
                        on_exit=on_exit)
    assert seen == {"work": room, "settled": False, "processes": []}
    assert out_of(node).is_dir()
    assert not layout.scratch(node.uid).exists()


@needs_bwrap
async def test_a_build_that_exits_well_after_the_oom_killer_ended_a_process_fails(
        layout: Layout) -> None:
    """A script that goes on after the OOM killer ended a process of it (`|| true`) still
    broke --max-memory: the build fails naming the bound, its output never in the store."""
    cgroups, why = cgroup.probe(layout.root)
    if cgroups is None:
        pytest.skip(f"this machine gives ixd no cgroup: {why}")
    node = make_node(layout, "awk 'BEGIN { s = \"x\"; while (length(s) < 256 * 1048576) "
                             "s = s s }' || true; mkdir -p \"$out\"")
    try:
        async with BuildUserPool(load_pool(DEFAULT_GROUP)).take() as user:
            with pytest.raises(BuildLimitExceeded, match="used more than its --max-memory"):
                await run_build(node, layout, confine=True, make_thrs=1, user=user,
                                limits=BuildLimits(max_memory=64 << 20), cgroups=cgroups,
                                on_exit=lambda: None)
    finally:
        cgroups.close()
    assert_cleaned_up(layout, node)


# --- unprivileged daemon -------------------------------------------------------------------

BUILD_USER = "ixtestbuild"


@pytest.fixture(scope="module")
def login_user() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("creating a throwaway account needs root")
    subprocess.run(["userdel", BUILD_USER], capture_output=True, check=False)  # a leftover
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", BUILD_USER],
                   check=True)
    try:
        yield BUILD_USER
    finally:
        subprocess.run(["userdel", BUILD_USER], check=False)


def test_an_unprivileged_daemon_refuses_to_build_as_itself(login_user: str) -> None:
    # A daemon that is not root cannot switch builds to build users: a build would run as the
    # daemon's own account and could rewrite the store. It refuses unless --no-confine.
    base = Path(tempfile.mkdtemp(prefix="ix-unpriv-", dir="/tmp"))
    try:
        shutil.chown(base, login_user, login_user)
        done = subprocess.run(
            ["runuser", "-u", login_user, "--", "/usr/bin/python3", "-m", "ixd.daemon.main",
             "--root", str(base / "root")],
            capture_output=True, text=True, check=False, cwd=PROJECT_ROOT, timeout=60,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(PROJECT_ROOT)})
        assert done.returncode == 1, done.stderr
        assert "E_NO_CONFINEMENT" in done.stderr
        assert "need a daemon running as root" in done.stderr
        assert "--no-confine" in done.stderr
    finally:
        shutil.rmtree(base)


# --- helpers -------------------------------------------------------------------------------


def test_remove_tree_never_follows_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not ours")
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "file").write_text("data")
    (tree / "a").chmod(0o555)
    (tree / "link-out").symlink_to(outside)
    (tree / "a" / "link-file").symlink_to(outside / "keep")
    remove_tree(tree)
    assert not tree.exists()
    assert (outside / "keep").read_text() == "not ours"
    remove_tree(tree)  # missing is fine
    link = tmp_path / "top-link"
    link.symlink_to(outside)
    remove_tree(link)  # a link is removed itself
    assert not link.exists() and (outside / "keep").exists()


def test_remove_tree_handles_unreadable_dirs_and_files(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "locked" / "inner").mkdir(parents=True)
    (tree / "locked" / "inner" / "f").write_text("x")
    (tree / "locked" / "inner").chmod(0)
    (tree / "locked").chmod(0)
    remove_tree(tree)
    assert not tree.exists()

    single = tmp_path / "single"
    single.write_text("x")
    single.chmod(0o444)
    remove_tree(single)
    assert not single.exists()


def test_confinement_argv_shape(tmp_path: Path) -> None:
    out, store_path = tmp_path / "build" / "out", tmp_path / "store" / "x-bin-y"
    argv = confinement_argv(net=False, inputs=[tmp_path / "store" / "dep"],
                            binds=[(out, store_path)], tmp=tmp_path / "tmp")
    assert Path(argv[0]).name == "bwrap"
    assert argv[-1] == "--"
    assert "--share-net" not in argv
    assert ["--cap-drop", "ALL"] == argv[argv.index("--cap-drop") : argv.index("--cap-drop") + 2]
    # an allow-list: the host's root is never bound whole, /etc only piecewise
    pairs = {(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv)
             if a in ("--ro-bind", "--ro-bind-try", "--bind")}
    assert ("/", "/") not in pairs and ("/etc", "/etc") not in pairs
    assert ("/usr", "/usr") in pairs
    assert not [p for p in pairs if "shadow" in p[0] or p[0].startswith(("/root", "/home"))]
    assert (str(tmp_path / "store" / "dep"),) * 2 in pairs
    bind = argv.index("--bind", argv.index("--proc"))
    assert (str(out), str(store_path)) in pairs
    assert argv[argv.index("--uid") + 1] == "1000"
    # the sandbox's root is made read-only after every mount point is in place
    assert argv.index("--remount-ro", bind) > bind
    assert "--share-net" in confinement_argv(net=True)


def test_probe_reports_missing_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = probe_confinement()
    assert reason is not None
    assert "not installed" in reason


def test_probe_reports_bwrap_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    reason = probe_confinement()
    assert reason is not None
    assert "No permissions to create new namespace" in reason
    assert "exit status 1" in reason


def test_a_finished_builds_work_is_deleted_small_in_the_daemon_large_by_rm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small work goes without a process (the slot's next build waits for it), a large one
    by `rm -rf`; either way links in it are removed, never followed, and the output stays."""
    from ixd.store import scratch

    if os.geteuid() != 0:
        pytest.skip("the daemon's deletion by rm runs as root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not the build's")
    spawned: list[list[str]] = []
    real_run = subprocess.run

    def run(argv: list[str], **kwargs: object) -> object:
        spawned.append(argv)
        return real_run(argv, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(scratch.subprocess, "run", run)
    for files, by_rm in ((3, False), (scratch.SMALL_WORK + 1, True)):
        root = tmp_path / f"scratch-{files}"
        work = type("Work", (), {"tmp": root / "tmp", "src": root / "src"})()
        (root / "tmp" / "w" / "deep").mkdir(parents=True)
        (root / "src").mkdir()
        (root / "out").mkdir()
        (root / "tmp" / "w" / "link").symlink_to(outside)
        (root / "src" / "link").symlink_to(outside / "keep")
        for n in range(files):
            (root / "tmp" / "w" / "deep" / f"f{n}").write_text("x")
        spawned.clear()
        scratch.clear_work(work, None)  # type: ignore[arg-type]
        assert not (root / "tmp").exists() and not (root / "src").exists()
        assert (root / "out").is_dir()
        assert (outside / "keep").read_text() == "not the build's"
        assert bool(spawned) == by_rm, spawned


def test_counting_a_work_stops_once_past_the_bound(tmp_path: Path) -> None:
    from ixd.store.scratch import holds_at_most

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c").write_text("")
    (tmp_path / "up").symlink_to(tmp_path)  # a loop, were links followed
    assert holds_at_most([tmp_path], 4)  # a, a/b, a/b/c, up
    assert not holds_at_most([tmp_path], 3)
    assert holds_at_most([tmp_path / "missing", tmp_path / "a" / "b" / "c"], 0)
