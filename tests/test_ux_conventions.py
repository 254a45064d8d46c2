"""The conventions people expect (issue 23): versions, help that lists everything, shell
completion and manual pages written from the command tables, a daemon that runs from `pip
install .` without extras, and docs that can be followed as written (README's selectors
quoted, the mirror before the first `mut`, an uninstall that leaves what others share)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.commands import COMMANDS
from client.manpage import manual
from ixd import __version__
from tests.daemon_harness import (
    HOST_TOOLS,
    PKGS,
    PROJECT,
    RunningDaemon,
    make_reachable,
    public_daemon,
    wait_until_serving,
)


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    with public_daemon("ix-ux-conventions-") as running:
        running.ixc("mut", "+bin/wave")
        yield running


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, cwd="/",
                          env=env or {"PATH": os.environ["PATH"], "PYTHONPATH": str(PROJECT)})


# --- versions and help ------------------------------------------------------------------------


def test_both_commands_say_their_version_and_ixd_lists_its_subcommands() -> None:
    assert _run(sys.executable, "-m", "client.main", "--version").stdout == (
        f"ixc {__version__}\n")
    assert _run(sys.executable, "-m", "ixd.daemon.main", "--version").stdout == (
        f"ixd {__version__}\n")
    shown = _run(sys.executable, "-m", "ixd.daemon.main", "--help").stdout
    for sub in ("verify", "keygen", "manpage"):
        assert re.search(rf"^  ixd {sub} ", shown, re.MULTILINE), shown


def test_the_manual_pages_hold_every_command_and_option() -> None:
    page = manual()
    for cmd in COMMANDS.values():
        assert f".B ixc {cmd.synopsis.replace('-', chr(92) + '-')}" in page, cmd.name
    ixd = _run(sys.executable, "-m", "ixd.daemon.main", "manpage").stdout
    for option in ("--root", "--keep-build-inputs", "--min-free", "--cache", "--dask"):
        assert f".B {option.replace('-', chr(92) + '-')}" in ixd, option
    rendered = subprocess.run(["man", "-l", "-"], input=page, capture_output=True, text=True,
                              env={"MANWIDTH": "120", "PATH": "/usr/bin:/bin"}, check=True)
    assert "ixc why PKG [REALM]" in rendered.stdout and not rendered.stderr


# --- completion -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ixc_on_path(daemon: RunningDaemon) -> Iterator[dict[str, str]]:
    """An environment whose PATH has an `ixc` talking to the module's daemon."""
    folder = Path(tempfile.mkdtemp(prefix="ix-ux-bin-"))
    (folder / "ixc").write_text(f"#!/bin/sh\nexec {sys.executable} -m client.main \"$@\"\n")
    (folder / "ixc").chmod(0o755)
    yield {"PATH": f"{folder}:{os.environ['PATH']}", "PYTHONPATH": str(PROJECT),
           "IX_SOCKET": str(daemon.socket)}
    shutil.rmtree(folder)


def _bash_completes(env: dict[str, str], *words: str) -> list[str]:
    script = _run(sys.executable, "-m", "client.main", "completion", "bash").stdout
    words_text = " ".join(f"'{w}'" for w in words)
    probe = (f"{script}\nCOMP_WORDS=({words_text}); COMP_CWORD={len(words) - 1}; _ixc; "
             f"printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, env=env,
                          timeout=60, check=True)
    return done.stdout.split()


def test_bash_completes_commands_options_packages_and_realms(
        ixc_on_path: dict[str, str]) -> None:
    assert {"mut", "search", "why", "diff"} <= set(_bash_completes(ixc_on_path, "ixc", ""))
    assert _bash_completes(ixc_on_path, "ixc", "mut", "+bin/he") == ["+bin/hello"]
    assert _bash_completes(ixc_on_path, "ixc", "mut", "-bin/wa") == ["-bin/wave"]
    assert "lib/c" in _bash_completes(ixc_on_path, "ixc", "show", "lib/")
    assert _bash_completes(ixc_on_path, "ixc", "mut", "--st") == ["--strict"]
    assert "root" in _bash_completes(ixc_on_path, "ixc", "generations", "")
    assert _bash_completes(ixc_on_path, "ixc", "help", "sea") == ["search"]


def test_zsh_completes_the_same_words(ixc_on_path: dict[str, str]) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (.ci/setup installs it)")
    script = _run(sys.executable, "-m", "client.main", "completion", "zsh").stdout
    assert _run("zsh", "-n", "-c", script).returncode == 0
    # compadd and _describe stand in for zsh's completion system: what they are given
    stubs = ("compadd() { while [[ $1 == -* ]]; do [[ $1 == -P ]] && { p=$2; shift; }; "
             "shift; done; for w in \"$@\"; do print -r -- \"$p$w\"; done; p=; }\n"
             "_describe() { print -l -- ${(P)3%%:*} }\n")
    probe = stubs + "words=(ixc mut +bin/he); CURRENT=3\n" + script
    done = subprocess.run(["zsh", "-f", "-c", probe], capture_output=True, text=True,
                          env=ixc_on_path, timeout=60)
    assert done.stdout.split() == ["+bin/hello"], (done.stdout, done.stderr)


# --- pip install . without extras -------------------------------------------------------------


def _not_sources(folder: str, names: list[str]) -> set[str]:
    """What a copy of the checkout leaves out: caches, the virtualenv, a build folder."""
    left = {".venv", ".git", "__pycache__", ".mypy_cache", ".ruff_cache"}
    if Path(folder) == PROJECT:
        left |= {"build", "dist"}
    return {n for n in names if n in left or n.endswith(".egg-info")}


@pytest.fixture(scope="module")
def core_venv() -> Iterator[Path]:
    """A virtualenv made as a user would: `pip install .` of this checkout, no extras (its
    core dependencies come from the package registry, as .ci/setup's do)."""
    top = Path(tempfile.mkdtemp(prefix="ix-ux-venv-", dir="/var/tmp"))
    venv = top / "venv"
    subprocess.run([sys.base_prefix + "/bin/python3", "-m", "venv", str(venv)], check=True)
    source = top / "ix"
    shutil.copytree(PROJECT, source, ignore=_not_sources)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(source)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    yield venv
    subprocess.run(["rm", "-rf", str(top)], check=False)


def test_ixd_from_pip_install_without_extras_serves_and_builds(core_venv: Path) -> None:
    python = str(core_venv / "bin" / "python")
    for extra_module in ("cryptography", "boto3", "zstandard", "distributed"):
        assert _run(python, "-c", f"import {extra_module}", env={}).returncode != 0
    top = Path(tempfile.mkdtemp(prefix="ix-ux-core-", dir="/var/tmp"))
    root = top / "root"
    root.mkdir()
    make_reachable(root)
    log = top / "ixd.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(core_venv / "bin" / "ixd"), "--root", str(root),
                                    "--overlay", str(PKGS), *HOST_TOOLS], stdout=out,
                                   stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin"},
                                   cwd="/")
    try:
        wait_until_serving(root / "var" / "ixd.sock", process, log)
        env = {"PATH": "/usr/bin:/bin", "IX_SOCKET": str(root / "var" / "ixd.sock")}
        done = _run(str(core_venv / "bin" / "ixc"), "mut", "+bin/wave", env=env)
        assert done.returncode == 0, done.stderr
        assert (root / "realm" / "root" / "bin" / "wave").exists()
        assert "bin/wave" in _run(str(core_venv / "bin" / "ixc"), "search", "wave",
                                  env=env).stdout
    finally:
        process.terminate()
        process.wait(timeout=60)
        subprocess.run(["rm", "-rf", str(top)], check=False)
    # an option that needs an extra says which, at start
    refused = _run(str(core_venv / "bin" / "ixd"), "--root", str(top / "other"), "--cache",
                   "file:///nonexistent", "--trusted-key", "k:" + "A" * 43 + "=", env={})
    assert refused.returncode == 1 and "[E_MISSING_EXTRA]" in refused.stderr, refused.stderr
    assert "pip install 'ix[cache]'" in refused.stderr
    assert "Traceback" not in refused.stderr


# --- docs that can be followed ------------------------------------------------------------


def _shell_lines(markdown: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", markdown, re.DOTALL)
    return [re.split(r"\s#\s", line)[0] for block in blocks for line in block.splitlines()]


def test_readme_quotes_every_selector_and_lists_every_command() -> None:
    readme = (PROJECT / "README.md").read_text()
    for line in _shell_lines(readme):
        if line.lstrip().startswith("ixc "):
            unquoted = re.sub(r"'[^']*'", "''", line)
            assert "(" not in unquoted, f"an unquoted selector: {line}"
    listed = {m.group(1) for line in _shell_lines(readme)
              for m in re.finditer(r"\bixc (?:--[a-z-]+ )*([a-z]+)", line)}
    assert set(COMMANDS) - {"version"} <= listed, set(COMMANDS) - listed


def test_admin_guide_sets_up_sources_before_the_first_change_and_uninstalls_cleanly() -> None:
    admin = (PROJECT / "docs" / "admin.md").read_text()
    first_change = admin.index("ixc mut ")
    assert admin.index("tests.seed --mirror") < first_change
    assert admin.index("install.sh --mirror") < first_change
    removing = admin[admin.index("## Removing it"):]
    assert "ix-session-" in removing and "/run/ix" in removing
    commands = "\n".join(_shell_lines(removing))
    assert "userdel" not in commands and "groupdel" not in commands  # maybe another's


def test_the_demo_installs_real_software_and_shows_the_commands() -> None:
    demo = (PROJECT / ".ci" / "demo").read_text()
    for needed in ("+bin/hello", "+bin/lua", "ixc search", "ixc show", "ixc why", "ixc diff",
                   "ixc rollback", "bin/hello", "bin/lua"):
        assert needed in demo, needed
    assert "set/greetings" not in demo
