"""One realm change end to end: a real ixd process, the real ixc command, real builds."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import RunningDaemon, wait_for
from tests.seeded_store import SeededRoot


@pytest.fixture(scope="module")
def daemon(lib_c_root: SeededRoot) -> Iterator[RunningDaemon]:
    # lib/c comes prebuilt (the root is not under /tmp: a build's /tmp is its own scratch,
    # which would hold the mount points of a root under /tmp; see
    # test_build_cannot_write_outside_its_output); everything else is built here
    with lib_c_root.daemon() as running:
        yield running


def run_in_realm(realm: Path, program: str, *args: str) -> str:
    return subprocess.run([str(realm / "bin" / program), *args], check=True,
                          capture_output=True, text=True).stdout


def realm_target(daemon: RunningDaemon, name: str) -> str:
    return os.readlink(daemon.realm(name))


def test_install_flags_remove_purge(daemon: RunningDaemon) -> None:
    done = daemon.ixc("mut", "e2e", "+bin/greet")
    assert "realm e2e: generation 1" in done.stdout
    assert "built bin/greet" in done.stderr  # progress shown while building
    assert "built lib/c" not in done.stderr  # the prebuilt entries are valid here
    realm = daemon.realm("e2e")
    assert run_in_realm(realm, "greet") == "Hello, world!\n"
    assert realm_target(daemon, "e2e").startswith("../store/")
    meta = json.loads((realm / "meta.json").read_text())
    assert [p.split("(")[0] for p in meta["packages"]] == ["bin/greet"]

    # a flag on the package
    daemon.ixc("mut", "e2e", "bin/greet", "--greeting=Howdy")
    assert run_in_realm(realm, "greet", "you") == "Howdy, you!\n"
    # a flag on the realm reaches the package and its libraries (lib/greet shouts)
    daemon.ixc("mut", "e2e", "--shout")
    assert run_in_realm(realm, "greet") == "HOWDY, world!\n"
    listing = daemon.ixc("list", "e2e").stdout.splitlines()
    assert listing == ["--shout=1", "bin/greet --greeting=Howdy"]
    # removing the realm flag goes back to the earlier realm
    daemon.ixc("mut", "e2e", "--shout=-")
    assert run_in_realm(realm, "greet") == "Howdy, world!\n"

    daemon.ixc("mut", "e2e", "+set/greetings")
    assert run_in_realm(realm, "wave", "x") == "o/ x\n"
    daemon.ixc("mut", "e2e", "-bin/greet", "-set/greetings", "+bin/wave")
    assert not (realm / "bin" / "greet").exists()
    assert (realm / "bin" / "wave").exists()

    assert "e2e" in daemon.ixc("list").stdout.split()
    daemon.ixc("purge", "e2e")
    assert not os.path.lexists(daemon.realm("e2e"))
    assert "e2e" not in daemon.ixc("list").stdout.split()


def test_realms_share_store_entries(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "share1", "+bin/greet")
    second = daemon.ixc("mut", "share2", "+bin/greet")
    assert "building" not in second.stderr.replace("building realm", "")
    one = json.loads((daemon.realm("share1") / "meta.json").read_text())["store_dirs"]
    two = json.loads((daemon.realm("share2") / "meta.json").read_text())["store_dirs"]
    assert one == two


def test_run_in_an_ephemeral_realm(daemon: RunningDaemon) -> None:
    result = daemon.ixc("run", "bin/wave", "bin/greet", "--", "sh", "-c", "wave run; greet ix")
    assert result.stdout == "o/ run\nHello, ix!\n"
    # stal/IX's `ix run` realm: ephemeral, never linked under realm/
    assert not os.path.lexists(daemon.realm("ephemeral"))
    assert not os.path.lexists(daemon.realm("run"))


def test_finished_builds_leave_nothing_in_build_or_trash(daemon: RunningDaemon) -> None:
    # several builds at once: their scratch folders reach the trash together and go in one
    # batch
    daemon.ixc("mut", "tidy", *(f"+bin/slow(secs=0,tag=tidy{i})" for i in range(6)))
    root = daemon.root
    wait_for(lambda: not any((root / "trash").iterdir()), "the trash to be emptied")
    assert sorted(p.name for p in (root / "build").iterdir()) == [".etc"]
    daemon.ixc("purge", "tidy")


def test_failing_build_leaves_the_realm_as_it_was(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "stable", "+bin/greet")
    before = realm_target(daemon, "stable")
    generations = daemon.ixc("list", "stable", "--json").stdout
    failed = daemon.ixc("mut", "stable", "+bin/fails", "+bin/wave", check=False)
    assert failed.returncode != 0
    assert "bin/fails" in failed.stderr
    assert "the thing is broken on purpose" in failed.stderr  # the log's last lines
    assert "[E_BUILD_FAILED]" in failed.stderr
    assert realm_target(daemon, "stable") == before
    assert daemon.ixc("list", "stable", "--json").stdout == generations
    assert run_in_realm(daemon.realm("stable"), "greet") == "Hello, world!\n"
    # nothing of the failed build is left in the store
    assert not [p for p in (daemon.root / "store").iterdir() if p.name.endswith("-bin-fails")]


def test_build_cannot_write_outside_its_output(daemon: RunningDaemon, tmp_path: Path) -> None:
    markers = tmp_path / "home"
    markers.mkdir()
    markers.chmod(0o777)
    built = daemon.ixc("build", f"bin/escape(marker_dir={markers})")
    out = Path(built.stdout.strip())
    # stal/IX's form of the same flag: the same package
    again = daemon.ixc("build", "bin/escape", "-v", f"--marker_dir={markers}")
    assert Path(again.stdout.strip()) == out
    assert (out / "share" / "escape-result").read_text() == "confined\n"
    log = (daemon.root / "var" / "log" / f"{out.name.split('-')[0]}.log").read_text()
    # /tmp and the store the build sees are its own: writes there stay in its scratch
    private = ("WROTE /tmp/ix-escape-tmp", f"WROTE {out}/../ix-escape-store")
    assert "WROTE" not in functools.reduce(lambda text, w: text.replace(w, ""), private, log)
    for leaked in (out.parent / "ix-escape-store", Path("/tmp/ix-escape-tmp"),
                   Path("/root/ix-escape-home"), Path("/etc/ix-escape-etc"),
                   markers / "ix-escape-marker"):
        assert not leaked.exists(), leaked
    # the output is read-only once valid: no write bit anywhere in it
    for path in (out, out / "share", out / "share" / "escape-result"):
        assert path.stat().st_mode & 0o222 == 0, path


def test_bad_input_gets_clear_errors_and_the_daemon_keeps_serving(
        daemon: RunningDaemon) -> None:
    cases = [
        (["mut", "+../etc/passwd"], "E_BAD_NAME"),
        (["mut", "+bin/nope"], "E_NO_RECIPE"),
        (["mut", "bad!realm", "+bin/greet"], "E_BAD_REALM_NAME"),
        (["mut", "errs", "-bin/greet"], "E_NOT_IN_REALM"),
        (["mut", "errs", "--nothere=-"], "E_NOT_IN_REALM"),
        (["purge", "no-such-realm"], "E_NO_REALM"),
        (["list", "no-such-realm"], "E_NO_REALM"),
        (["frobnicate"], "E_USAGE"),
        (["dep"], "E_USAGE"),
    ]
    for words, code in cases:
        result = daemon.ixc(*words, check=False)
        assert result.returncode != 0, words
        assert f"[{code}]" in result.stderr, (words, result.stderr)
    assert daemon.ixc("dep", "bin/greet").returncode == 0
    assert daemon.process.poll() is None


def test_dep_and_plan(daemon: RunningDaemon) -> None:
    names = daemon.ixc("dep", "bin/greet").stdout.split()
    # built by clang, the default (stage 0's, on ixd's default chain), with lib/c and its
    # runtime library
    assert {"bin/greet", "lib/greet", "lib/shout", "bld/boot/1/clang", "lib/c",
            "lib/compiler_rt/builtins"} <= set(names)
    # stal/IX's order: a package after the packages its build needs
    assert names.index("lib/shout") < names.index("lib/greet") < names.index("bin/greet")
    plan = json.loads(daemon.ixc("plan", "bin/greet").stdout)
    greet = [n for n in plan["nodes"] if n["name"] == "bin/greet"]
    assert len(greet) == 1 and greet[0]["uid"] in plan["targets"]
    assert set(greet[0]) >= {"uid", "inputs", "outputs", "command", "deps"}
    assert "pool" not in greet[0]
    # the nodes came as events (a big plan outgrows one frame); --summary leaves them out
    summary = json.loads(daemon.ixc("plan", "--summary", "bin/greet").stdout)
    assert summary["nodes"] == len(plan["nodes"]) and summary["targets"] == plan["targets"]
    assert "bin/greet" in summary["packages"] and summary["by_kind"]["build"] >= 3


def test_static_policy_refuses_dynamic_programs(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "static", "+bin/wave")
    before = realm_target(daemon, "static")
    refused = daemon.ixc("mut", "static", "+bin/dynamic", check=False)
    assert refused.returncode != 0
    assert "[E_DYNAMIC_BINARY]" in refused.stderr
    assert "bin/dyntrue" in refused.stderr and "ld-linux" in refused.stderr
    assert realm_target(daemon, "static") == before
    # an explicit flag on the package accepts it
    daemon.ixc("mut", "static", "+bin/dynamic", "--allow_dynamic")
    assert run_in_realm(daemon.realm("static"), "dyntrue") == ""
    # every program that the realm got from our own packages is static
    daemon.ixc("mut", "static", "-bin/dynamic", "+bin/greet")
    for program in (daemon.realm("static") / "bin").iterdir():
        assert elf_or_script_is_static(program.resolve()), program


def elf_or_script_is_static(path: Path) -> bool:
    from ixd.store.elf import NotElf, elf_interpreter

    try:
        return elf_interpreter(path) is None
    except NotElf:
        return True
