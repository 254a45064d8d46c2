"""`ixc` stays cheap to start: the modules the light commands import, fixed (issue 13).

Each case runs the real `ixc` in a fresh interpreter against a real daemon and compares the
modules it imported with the list below. A new import on the way to the socket fails here;
add it to the list only if the command cannot do without it (and say why).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import PROJECT, RunningDaemon, start_daemon

#: every module `ixc ping|status|list` may import beyond the interpreter's own start-up
#: (the venv's interpreter; the system one differs only in what it preloads)
LIGHT_IMPORTS = frozenset({
    # ixc itself
    "client", "client.main", "client.commands", "client.context", "client.progress",
    "ixd.wire.transport",
    "ixd", "ixd.wire", "ixd.wire.errors", "ixd.wire.frames", "ixd.wire.packing",
    "ixd.wire.record",
    # the event kinds `client.progress` tells apart
    "ixd.wire.events",
    # `from __future__ import annotations` is an import too
    "__future__",
    # the socket's C core (the `socket` module would add enum, selectors, ...)
    "_socket",
    # `ixd.wire.record`'s field getters (C)
    "_operator",
    # `ixd.wire.packing` reads a float (a reply's times) with it
    "struct", "_struct",
    # the launcher keeps the collector off while ixc loads (built in: nothing to load)
    "gc",
})
#: `ixc mut` and `ixc let` send their words: ixd lexes them (ixd.model.words), so ixc loads
#: no realm model and looks no login up
MUT_IMPORTS = LIGHT_IMPORTS
#: `ixc dep`, `plan`, `build` and `run` read their words as `mut`'s (stal/IX's forms), in
#: the realm `ephemeral`: the words, the realm model, selectors (with the platform names a
#: flag may hold)
PACKAGE_IMPORTS = LIGHT_IMPORTS | {"ixd.model.words", "ixd.model", "ixd.model.realm",
                                   "ixd.model.selector", "ixd.model.platforms"}
#: what must never be on the way to the socket (the list above already excludes them; this
#: names the reason when one comes back)
HEAVY = ("typing", "dataclasses", "enum", "re", "json", "inspect", "argparse", "socket",
         "trio", "jinja2", "subprocess", "pathlib",
         # small frames are packed and unpacked by `ixd.wire.packing`: msgpack's import (with
         # datetime and collections) was a quarter of `ixc status`
         "msgpack", "datetime",
         # `collections.abc` (with `collections`) cost `ixc mut` ~1 ms: the model's types
         # are for mypy only
         "collections")

def beyond(modules: set[str], allowed: frozenset[str]) -> list[str]:
    """The modules of `modules` the list `allowed` does not hold, sorted."""
    return sorted(modules - allowed)


#: run `ixc WORDS` in this interpreter and report the modules it added, on stderr's last line
PROBE = """
import sys
before = set(sys.modules)
from client.main import main
status = main(sys.argv[1:])
sys.stdout.flush()
print(" ".join(sorted(set(sys.modules) - before)), file=sys.stderr)
sys.exit(status)
"""


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    top = Path(tempfile.mkdtemp(prefix="ix-imports-"))
    running = start_daemon(top / "root")
    try:
        yield running
    finally:
        running.stop()
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
        subprocess.run(["rm", "-rf", str(top)], check=False)


def imported_by(daemon: RunningDaemon, *words: str) -> tuple[set[str], str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "PYTHONPATH": str(PROJECT)}
    result = subprocess.run([sys.executable, "-c", PROBE, "--socket", str(daemon.socket),
                             *words], capture_output=True, text=True, env=env, cwd="/",
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stderr.strip().splitlines()[-1].split()), result.stdout


SLOW = "+bin/slow(secs=0,tag=imports)"


@pytest.mark.parametrize(("words", "allowed"), [
    (["ping"], LIGHT_IMPORTS),
    (["status"], LIGHT_IMPORTS),
    (["list"], LIGHT_IMPORTS),
    (["dep", "bin/greet", "--k=v"], PACKAGE_IMPORTS),
    (["mut", "imports", SLOW, "--k=v"], MUT_IMPORTS),
    (["let", "imports", SLOW], MUT_IMPORTS),
])
def test_light_commands_import_only_the_fixed_list(daemon: RunningDaemon, words: list[str],
                                                    allowed: frozenset[str]) -> None:
    modules, out = imported_by(daemon, *words)
    assert out or words == ["list"]  # the command did its work (no realms: no lines)
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"`ixc {' '.join(words)}` imports {heavy}"
    extra = beyond(modules, allowed)
    assert not extra, (f"`ixc {' '.join(words)}` imports modules beyond the fixed list: "
                       f"{extra}; keep them lazy or add them to LIGHT_IMPORTS with a reason")


def launcher_modules(daemon: RunningDaemon, launcher: Path, *options: str) -> set[str]:
    """The modules the launcher file `launcher` adds running `ixc ping` in an interpreter
    started with `options` (its first line is not read here: the probe runs the rest)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "PYTHONPATH": str(PROJECT)}
    # the launcher leaves by os._exit (no teardown): the probe reports the modules there
    probe = ("import os, sys; before = set(sys.modules); sys.argv = ['ixc', '--socket', "
             f"{str(daemon.socket)!r}, 'ping']\n"
             "leave = os._exit\n"
             "def report(status):\n"
             "    print(' '.join(sorted(set(sys.modules) - before)), file=sys.stderr)\n"
             "    sys.stderr.flush()\n"
             "    leave(status)\n"
             "os._exit = report\n"
             f"exec(compile(open({str(launcher)!r}).read(), 'ixc', 'exec'))\n")
    result = subprocess.run([sys.executable, *options, "-c", probe], capture_output=True,
                            text=True, env=env, cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "answers" in result.stdout
    return set(result.stderr.strip().splitlines()[-1].split())


def test_the_launcher_imports_no_more_than_the_module(daemon: RunningDaemon) -> None:
    """client/ixc (pip's `ixc`, see pyproject's script-files) is a plain script: no
    console-script shim importing `re` or `importlib.metadata` first."""
    launcher = PROJECT / "client" / "ixc"
    assert launcher.read_text().startswith("#!python\n")
    assert not beyond(launcher_modules(daemon, launcher), LIGHT_IMPORTS)


def test_the_written_launcher_skips_site_and_names_its_folders(daemon: RunningDaemon,
                                                                 tmp_path: Path) -> None:
    """`python -m client.launcher` (.ci/setup's and runit/install.sh's `ixc`): the
    interpreter without `site` (-S, with -E for the system's), ix's folder first on the path
    and the site folders after the standard library's: a real `ixc` answers through it, and
    loads no more than the module does."""
    for options, first_line in (([], f"#!{sys.executable} -S\n"),
                                (["--ignore-environment"], f"#!{sys.executable} -ES\n")):
        launcher = tmp_path / "ixc"
        subprocess.run([sys.executable, "-m", "client.launcher", str(launcher), *options],
                       check=True, cwd=PROJECT)
        assert launcher.read_text().startswith(first_line)
        answered = subprocess.run([str(launcher), "--socket", str(daemon.socket), "ping"],
                                  capture_output=True, text=True, timeout=60,
                                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                                  cwd="/")
        assert answered.returncode == 0 and "answers" in answered.stdout, answered.stderr
    modules = launcher_modules(daemon, launcher, "-S")
    assert "site" not in modules
    assert not beyond(modules, LIGHT_IMPORTS)


def test_the_launcher_writer_refuses_a_folder_without_ix(tmp_path: Path) -> None:
    refused = subprocess.run([sys.executable, "-m", "client.launcher", str(tmp_path / "ixc"),
                              "--prefix", str(tmp_path)], capture_output=True, text=True,
                             cwd=PROJECT)
    assert refused.returncode == 2 and "holds no client/main.py" in refused.stderr
    assert not (tmp_path / "ixc").exists()
