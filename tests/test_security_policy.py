"""The daemon's security policy: flags are data, realms belong to who they should, a user's
lock and service tree are theirs. In-process checks first, then attacks by real accounts
through a real `ixd` (`accounts` fixture: ixtalice, ixtbob, ixtcarol in ixtadmins)."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ixd.daemon import identity
from ixd.daemon.core import Config, Daemon
from ixd.daemon.emit import Relay, discard
from ixd.daemon.identity import AccountCache, AccountSource, Caller
from ixd.model.realm import patch_from_wire
from ixd.model.selector import Selector, parse_selector
from ixd.recipes.packages import PackageGraph
from ixd.recipes.tree import RecipeTree
from ixd.store import db as dbmod
from ixd.store.db import BuildDatabase
from ixd.wire.errors import BadFlag, UnsafeServiceDir
from ixd.wire.ops import check_request
from services import session
from tests.daemon_harness import (
    SYSTEM_PYTHON,
    RunningDaemon,
    public_daemon,
    readable_client,
    wait_for,
)

PROJECT = Path(__file__).resolve().parent.parent
PKGS = PROJECT / "pkgs"
HOST = "linux-x86_64"
HOSTILE = 'x";touch /tmp/pwned;echo "y'
PWNED = Path("/tmp/pwned")


# --- flags are data (in process) -------------------------------------------------------


def wave_graph(tmp_path: Path) -> PackageGraph:
    return PackageGraph(RecipeTree([PKGS]), tmp_path / "store", host=HOST)


def test_pkgs_bin_wave_with_a_hostile_flag_is_a_bad_flag(tmp_path: Path) -> None:
    graph = wave_graph(tmp_path)
    with pytest.raises(BadFlag) as info:
        graph.load(parse_selector(f"bin/wave(wave_style={HOSTILE})"))
    assert info.value.code == "E_BAD_FLAG" and "'wave_style'" in info.value.message
    assert "contains '\"'" in info.value.message
    # a selector made without its checks still never reaches the template
    forged = object.__new__(Selector)
    object.__setattr__(forged, "name", "bin/wave")
    object.__setattr__(forged, "flags", (("wave_style", HOSTILE),))
    with pytest.raises(BadFlag, match="'wave_style'"):
        graph.load(forged)
    assert graph.renders == 0 and len(graph) == 0
    # a value of the charset renders, as it is
    fancy = graph.load(parse_selector("bin/wave(wave_style=fancy-2.0)"))
    assert 'echo "fancy-2.0" > "$out/share/wave/style"' in fancy.descriptor.script_data


def test_a_raw_flag_in_a_recipe_is_one_literal_word_to_the_shell(tmp_path: Path) -> None:
    """A recipe that writes `{{ v }}` unquoted: whatever value gets through stays a word."""
    overlay = tmp_path / "overlay"
    (overlay / "bin" / "raw").mkdir(parents=True)
    (overlay / "bin" / "raw" / "ix.sh").write_text(json.dumps(
        {"bld": {"script": {"exec": ["/bin/sh", "-s"], "data": "printf '[%s]' {{ v }}"}}}))
    graph = PackageGraph(RecipeTree([overlay]), tmp_path / "store", host=HOST)
    for value in ["-n", "%s%n", "a:b@c/d", "../..", "x+y.z_w", "100%", "-e"]:
        script = graph.load(Selector("bin/raw", (("v", value),))).descriptor.script_data
        ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                             cwd=tmp_path)
        assert ran.stdout == f"[{value}]"


def test_a_realm_recorded_with_a_flag_now_refused_says_how_to_go_on(tmp_path: Path) -> None:
    (tmp_path / "overlay").mkdir()
    daemon = Daemon(Config(root=tmp_path / "root", overlays=(tmp_path / "overlay", PKGS / "die"),
                           confine=False))  # plans only: nothing is built
    try:
        old = {"name": "old", "entries": [], "flags": {"greeting": "Hello world"}}
        daemon.db.add_generation("old", "/nonexistent/x-rlm-old", old, by=0, owner=0)
        patch = patch_from_wire({"realm": "old", "ops": [
            {"op": "set_realm_flag", "key": "shout", "value": "1"}]})
        root = Caller(uid=0, gid=0, pid=1)
        with pytest.raises(BadFlag, match=r"realm 'old' \(generation 1\) holds a flag ix no "
                                          r"longer accepts: .*'greeting'.*`ixc let old ...`"):
            daemon.changes.prepare("old", [patch], root, fresh=False)
        fresh = daemon.changes.prepare("old", [patch], root, fresh=True)
        assert fresh.state.flags == (("shout", "1"),)
    finally:
        daemon.db.close()


# --- a squatter's realm is dropped at the account's first request (in process) ----------


async def test_an_accounts_first_request_even_a_ping_drops_a_squatters_realm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logins = {"alice": 1001}
    source = AccountSource(logins.get, lambda uid: {v: k for k, v in logins.items()}.get(uid),
                           lambda login, gid, group: False)
    monkeypatch.setattr(identity, "ACCOUNTS", AccountCache(source=source))
    (tmp_path / "overlay").mkdir()
    daemon = Daemon(Config(root=tmp_path / "root", overlays=(tmp_path / "overlay",
                                                             PKGS / "die"), confine=False))
    try:
        # alice claimed `dave` before there was a dave, with a generation and its link
        entry = daemon.layout.store / "x-rlm-dave"
        entry.mkdir(parents=True)
        daemon.db.add_generation("dave", str(entry), {"name": "dave"}, by=1001, owner=1001)
        daemon.layout.realm_link("dave").symlink_to(entry)
        await daemon.handle("ping", check_request("ping", {}), Caller(uid=1001, gid=1001, pid=1),
                            Relay(discard))
        assert daemon.db.realm("dave") is not None  # alice's pings change nothing
        logins["dave"] = 2002  # the account appears
        monkeypatch.setattr(identity, "ACCOUNTS", AccountCache(source=source))
        answer = await daemon.handle("ping", check_request("ping", {}),
                                     Caller(uid=2002, gid=2002, pid=2), Relay(discard))
        assert answer["login"] == "dave"
        assert daemon.db.realm("dave") is None and daemon.db.generations("dave") == []
        assert not daemon.layout.realm_link("dave").is_symlink()
    finally:
        daemon.db.close()


# --- purged generations go with the realm (in process) ---------------------------------


def test_a_purged_realms_generations_go_with_it(tmp_path: Path) -> None:
    db = BuildDatabase(tmp_path / "ixd.sqlite")
    db.add_generation("work", "/s/a-rlm-work", {"n": 1}, by=1001, owner=1001)
    db.add_generation("work", "/s/b-rlm-work", {"n": 2}, by=1001, owner=1001)
    db.drop_realm("work")
    assert db.generations("work") == [] and db.all_generations() == []
    # whoever creates the name again starts at 1, with nothing to roll back to
    fresh = db.add_generation("work", "/s/c-rlm-work", {"n": 3}, by=1002, owner=1002)
    assert fresh.number == 1
    assert [g.path for g in db.generations("work")] == ["/s/c-rlm-work"]
    assert db.realm("work") is not None and db.realm("work")["owner"] == 1002  # type: ignore
    with pytest.raises(KeyError):
        db.set_current("work", 2)


def test_schema_3_drops_generations_left_by_earlier_purges(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as old:  # a database as schema 2 left it
        old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        for schema in (dbmod._SCHEMA_V1, dbmod._SCHEMA_V2):
            for statement in schema.split(";"):
                if statement.strip():
                    old.execute(statement)
        old.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        old.execute("INSERT INTO realms VALUES ('kept', 1001, 1, 0)")
        for realm, number in (("kept", 1), ("purged", 1), ("purged", 2)):
            old.execute("INSERT INTO generations VALUES (?, ?, ?, '{}', 0, 1001)",
                        [realm, number, f"/s/{realm}{number}"])
    db = BuildDatabase(path)
    assert [(g.realm, g.number) for g in db.all_generations()] == [("kept", 1)]
    assert db.add_generation("purged", "/s/new", {}, by=1002, owner=1002).number == 1


# --- the service tree is the caller's own (in process) ---------------------------------


def test_a_service_tree_others_could_write_is_refused(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir(mode=0o755)
    own.chmod(0o755)
    session.check_service_dir(own)  # fine
    cases: list[tuple[Path, str]] = []
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o775)
    cases.append((group, "writable by its group or others (mode 775)"))
    world = tmp_path / "world"
    world.mkdir()
    world.chmod(0o1777)
    cases.append((world, "writable by its group or others (mode 1777)"))
    link = tmp_path / "link"
    link.symlink_to(own)
    cases.append((link, "is a symlink"))
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    cases.append((dangling, "is a symlink"))
    plain = tmp_path / "file"
    plain.write_text("")
    cases.append((plain, "is not a folder"))
    for path, problem in cases:
        with pytest.raises(UnsafeServiceDir, match=re.escape(problem)) as info:
            session.check_service_dir(path)
        assert info.value.code == "E_UNSAFE_SVDIR"
        with pytest.raises(UnsafeServiceDir, match=re.escape(problem)):  # before any use
            session.main(["--svdir", str(path), "--root", str(tmp_path), "--realm", "alice",
                          "--once"], socket="/nonexistent")
    assert not (dangling.resolve()).exists()  # not made through the link
    with pytest.raises(UnsafeServiceDir, match=r"belongs to .*, not to "):
        session.check_service_dir(own, uid=os.getuid() + 4242)


# --- real accounts, a real daemon ------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(accounts: dict[str, int]) -> Iterator[RunningDaemon]:
    with public_daemon("ix-sec-", ["--admin-group", "ixtadmins", "--jobs", "2"]) as running:
        yield running


@contextmanager
def late_account(name: str) -> Iterator[int]:
    """An account created now (after realms were named like it), removed afterwards."""
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
    try:
        yield int(subprocess.run(["id", "-u", name], capture_output=True, text=True,
                                 check=True).stdout)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def refused(daemon: RunningDaemon, user: str | None, *words: str, code: str) -> str:
    result = daemon.ixc(*words, user=user, check=False)
    assert result.returncode != 0, (user, words, result.stdout)
    assert f"[{code}]" in result.stderr, (user, words, result.stderr)
    return result.stderr


def raw_requests(daemon: RunningDaemon, user: str,
                 requests: list[tuple[str, dict[str, Any]]]) -> list[dict[str, str]]:
    """Send requests as `user` straight over the socket, past `ixc`'s own checks."""
    code = textwrap.dedent("""
        import json, sys
        from ixd.wire.transport import Client
        from ixd.wire.errors import IxError
        out = []
        with Client.connect(sys.argv[1]) as client:
            for op, args in json.loads(sys.argv[2]):
                try:
                    out.append({"ok": json.dumps(client.request(op, args))})
                except IxError as exc:
                    out.append({"code": exc.code, "message": exc.message})
        print(json.dumps(out))
    """)
    done = subprocess.run(
        [shutil.which("runuser") or "/usr/sbin/runuser", "-u", user, "--", SYSTEM_PYTHON,
         "-c", code, str(daemon.socket),
         json.dumps(requests)],
        capture_output=True, text=True, timeout=120, cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
             "PYTHONPATH": str(readable_client())})
    assert done.returncode == 0, done.stderr
    answers: list[dict[str, str]] = json.loads(done.stdout)
    return answers


def generations(daemon: RunningDaemon, realm: str, user: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(
        daemon.ixc("generations", realm, "--json", user=user).stdout)
    return value


def test_a_hostile_flag_value_is_refused_and_runs_nothing(daemon: RunningDaemon) -> None:
    PWNED.unlink(missing_ok=True)
    stderr = refused(daemon, "ixtalice", "mut", f"+bin/wave(wave_style={HOSTILE})",
                     code="E_BAD_FLAG")
    assert "wave_style" in stderr and "contains '\"'" in stderr
    refused(daemon, "ixtalice", "mut", "+bin/wave", f"--wave_style={HOSTILE}",
            code="E_BAD_FLAG")
    refused(daemon, "ixtalice", "build", f"bin/wave(wave_style={HOSTILE})", code="E_BAD_FLAG")
    # past ixc, straight to the daemon: the same refusals
    add = {"op": "add", "selector": "bin/wave", "flags": {"wave_style": HOSTILE}}
    answers = raw_requests(daemon, "ixtalice", [
        ("mut", {"patches": [{"realm": "ixtalice", "ops": [add]}]}),
        ("mut", {"patches": [{"realm": "ixtalice", "ops": [
            {"op": "add", "selector": "bin/wave", "flags": {}},
            {"op": "set_realm_flag", "key": "wave_style", "value": HOSTILE}]}]}),
        ("build", {"packages": [f"bin/wave(wave_style={HOSTILE})"]}),
        ("dep", {"packages": ["bin/wave(wave_style=`touch${IFS}/tmp/pwned`)"]}),
        ("build", {"packages": ["bin/wave(wave_style=" + "x" * 300 + ")"]}),
    ])
    assert [a.get("code") for a in answers] == ["E_BAD_FLAG"] * 5, answers
    assert "'wave_style'" in answers[0]["message"]
    assert "the limit is 256" in answers[4]["message"]
    assert not PWNED.exists()
    assert not os.path.lexists(daemon.realm("ixtalice")) or "wave" not in json.dumps(
        json.loads(daemon.ixc("list", "ixtalice", "--json").stdout))


def test_flags_ix_sets_itself_are_refused_from_clients(daemon: RunningDaemon) -> None:
    refused(daemon, "ixtalice", "mut", "flagtest", "--kind=lib", code="E_BAD_FLAG")
    refused(daemon, "ixtalice", "mut", "flagtest", "+bin/wave(lib=1)", code="E_BAD_FLAG")
    answers = raw_requests(daemon, "ixtalice", [
        ("mut", {"patches": [{"realm": "flagtest", "ops": [
            {"op": "set_realm_flag", "key": "kind", "value": "lib"}]}]}),
        ("mut", {"patches": [{"realm": "flagtest", "ops": [
            {"op": "add", "selector": "bin/wave(linux=)", "flags": {}}]}]}),
        ("dep", {"packages": ["bin/wave(native=1)"]}),
        ("dep", {"packages": ["bin/wave(target=linux-vax)"]}),
        ("dep", {"packages": ["bin/wave(host=mars)"]}),
    ])
    assert [a.get("code") for a in answers] == ["E_BAD_FLAG"] * 5, answers
    assert "known platforms: host (the daemon's own), linux-x86_64" in answers[3]["message"]
    # a known platform is fine
    ok = raw_requests(daemon, "ixtalice", [("dep", {"packages": ["bin/wave(target=host)"]})])
    assert "ok" in ok[0], ok


def test_a_flag_of_the_charset_builds_for_an_unprivileged_user(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "waves", "+bin/wave(wave_style=fancy)", user="ixtalice")
    style = daemon.realm("waves") / "share" / "wave" / "style"
    assert style.read_text() == "fancy\n"


def test_permission_is_checked_before_waiting_for_the_realms_lock(daemon: RunningDaemon
                                                                  ) -> None:
    daemon.ixc("mut", "ixtalice", "+bin/slow(secs=0,tag=before)", user="ixtalice")
    name = "bin/slow(secs=30,tag=locked)"
    argv, env = daemon.ixc_argv("mut", "ixtalice", f"+{name}", user="ixtalice")
    holder = subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not any(b["name"] == name and b["state"] == "running" for b in json.loads(
                daemon.ixc("status", "--json").stdout)["builds"]):
            assert time.monotonic() < deadline, "alice's build did not start"
            assert holder.poll() is None, holder.communicate()
            time.sleep(0.05)
        # alice holds her realm's lock for 30 s; bob is refused at once, not after it
        started = time.monotonic()
        for words in (["mut", "ixtalice", "+bin/slow(secs=0,tag=bob)"], ["purge", "ixtalice"],
                      ["rollback", "ixtalice"]):
            refused(daemon, "ixtbob", *words, code="E_PERMISSION")
        # and reading it waits for nobody either
        listing = json.loads(daemon.ixc("list", "ixtalice", "--json", user="ixtbob").stdout)
        assert listing["owner"] == "ixtalice" and listing["generation"] == 1
        assert generations(daemon, "ixtalice", "ixtbob")["current"] == 1
        assert time.monotonic() - started < 15
        assert holder.poll() is None  # still building, still holding the lock
    finally:
        os.killpg(holder.pid, 9)
        holder.communicate()


def test_a_purged_name_taken_by_another_user_starts_afresh(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "handover", "+bin/slow(secs=0,tag=h1)", user="ixtalice")
    daemon.ixc("mut", "handover", "+bin/slow(secs=0,tag=h2)", user="ixtalice")
    daemon.ixc("purge", "handover", user="ixtalice")
    refused(daemon, "ixtbob", "generations", "handover", code="E_NO_REALM")
    daemon.ixc("mut", "handover", "+bin/slow(secs=0,tag=bob)", user="ixtbob")
    gens = generations(daemon, "handover", "ixtbob")
    assert [g["number"] for g in gens["generations"]] == [1]
    assert [g["by"] for g in gens["generations"]] == ["ixtbob"]
    stderr = refused(daemon, "ixtbob", "rollback", "handover", code="E_REALM")
    assert "first generation" in stderr
    refused(daemon, "ixtbob", "rollback", "handover", "--to", "2", code="E_REALM")
    with sqlite3.connect(daemon.root / "var" / "ixd.sqlite") as db:
        rows = db.execute("SELECT created_by FROM generations WHERE realm = 'handover'")
        assert [r[0] for r in rows] == [int(subprocess.run(
            ["id", "-u", "ixtbob"], capture_output=True, text=True).stdout)]


def test_the_admin_group_does_not_get_roots_own_realm(daemon: RunningDaemon) -> None:
    stderr = refused(daemon, "ixtcarol", "mut", "root", "+bin/slow(secs=0,tag=carol)",
                     code="E_PERMISSION")
    assert "root alone" in stderr
    refused(daemon, "ixtcarol", "purge", "root", code="E_PERMISSION")
    daemon.ixc("mut", "root", "+bin/slow(secs=0,tag=rootown)")  # root itself
    refused(daemon, "ixtcarol", "rollback", "root", code="E_PERMISSION")
    daemon.ixc("mut", "system", "+bin/slow(secs=0,tag=carolsys)", user="ixtcarol")


def test_a_realm_squatted_before_its_account_existed_goes_to_the_account(
        daemon: RunningDaemon) -> None:
    # no account ixtdave yet: alice may claim the name, and fill it
    daemon.ixc("mut", "ixtdave", "+bin/slow(secs=0,tag=squat1)", user="ixtalice")
    daemon.ixc("mut", "ixtdave", "+bin/slow(secs=0,tag=squat2)", user="ixtalice")
    assert (daemon.realm("ixtdave") / "bin" / "slow-squat2").exists()
    with late_account("ixtdave") as dave_uid:
        # the account exists: alice can no longer change, roll back or purge it
        for words in (["mut", "ixtdave", "+bin/slow(secs=0,tag=squat3)"],
                      ["rollback", "ixtdave"], ["purge", "ixtdave"]):
            stderr = refused(daemon, "ixtalice", *words, code="E_PERMISSION")
            assert "belongs to ixtdave" in stderr
        # dave's first change finds the realm new: nothing of alice's is inherited
        daemon.ixc("mut", "+bin/slow(secs=0,tag=dave)", user="ixtdave")
        gens = generations(daemon, "ixtdave", "ixtdave")
        assert [g["number"] for g in gens["generations"]] == [1]
        entries = [e["selector"] for e in gens["generations"][0]["state"]["entries"]]
        assert entries == ["bin/slow(secs=0,tag=dave)"]
        assert sorted(p.name for p in (daemon.realm("ixtdave") / "bin").iterdir()) == [
            "slow-dave"]
        stderr = refused(daemon, "ixtdave", "rollback", code="E_REALM")
        assert "first generation" in stderr
        listing = json.loads(daemon.ixc("list", "ixtdave", "--json", user="ixtbob").stdout)
        assert listing["owner"] == "ixtdave"
        refused(daemon, "ixtalice", "mut", "ixtdave", "-bin/slow(secs=0,tag=dave)",
                code="E_PERMISSION")
        assert dave_uid > 0


def test_a_squatted_realm_is_dropped_as_soon_as_anyone_looks(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "ixterin", "+bin/slow(secs=0,tag=squat)", user="ixtbob")
    assert os.path.lexists(daemon.realm("ixterin"))
    with late_account("ixterin"):
        # someone lists the realms: the void record and its link go, before erin asks
        names = [r["name"] for r in json.loads(
            daemon.ixc("list", "--json", user="ixtalice").stdout)["realms"]]
        assert "ixterin" not in names
        assert not os.path.lexists(daemon.realm("ixterin"))
        refused(daemon, "ixterin", "generations", code="E_NO_REALM")
        refused(daemon, "ixtbob", "list", "ixterin", code="E_NO_REALM")


@contextmanager
def public_folder() -> Iterator[Path]:
    """A folder under /tmp every account may pass through (0755), removed afterwards."""
    top = Path(subprocess.run(["mktemp", "-d", "/tmp/ix-svdir-XXXXXX"], capture_output=True,
                              text=True, check=True).stdout.strip())
    try:
        top.chmod(0o755)
        yield top
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


@contextmanager
def service_dir(owner: str) -> Iterator[Path]:
    """An empty service tree of `owner`'s (0755), removed afterwards."""
    with public_folder() as top:
        svdir = top / "service"
        svdir.mkdir(mode=0o755)
        subprocess.run(["chown", owner, str(svdir)], check=True)
        yield svdir


def test_a_service_realm_claimed_before_its_account_existed_never_runs_as_it(
        daemon: RunningDaemon) -> None:
    """Issue 21, row 2: `ixc mut FUTURELOGIN +SERVICE_PKG` before the account exists; the
    account is made, pings, runs `ixc session`: nothing of the squatter's runs as it."""
    name = "ixtfuture"
    daemon.ixc("mut", name, "+bin/svc/runit(tag=squat)", user="ixtalice")
    squatted = daemon.realm(name) / "etc" / "services" / "svc-squat" / "run"
    assert squatted.exists()
    with late_account(name) as uid:
        # its first request, of any kind: the squatter's realm is gone before it answers
        # (ixd also drops it within a second of the account files changing)
        assert f"answers {name} (uid {uid})" in daemon.ixc("ping", user=name).stdout
        assert not os.path.lexists(daemon.realm(name))
        refused(daemon, name, "generations", code="E_NO_REALM")
        with service_dir(name) as svdir:
            daemon.ixc("session", "--svdir", str(svdir), "--once", user=name)
            assert os.listdir(svdir) == []  # no service of alice's, no link to her realm
            # a realm of another user's is refused, whatever its name or link say
            stderr = refused(daemon, name, "session", "--svdir", str(svdir), "--realm",
                             "waves", "--once", code="E_PERMISSION")
            assert "belongs to ixtalice" in stderr
            # the account's own realm: its own services, run from the generation ixd names
            daemon.ixc("mut", "+bin/svc/runit(tag=own)", user=name)
            daemon.ixc("session", "--svdir", str(svdir), "--once", user=name)
            assert sorted(os.listdir(svdir)) == [".ix-realm", "svc-own"]
            assert os.readlink(svdir / ".ix-realm") == os.path.realpath(daemon.realm(name))
        refused(daemon, "ixtalice", "mut", name, "+bin/svc/runit(tag=back)",
                code="E_PERMISSION")


def test_a_squatted_login_realm_goes_when_the_account_appears(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "ixtlater", "+bin/svc/runit(tag=early)", user="ixtbob")
    assert os.path.lexists(daemon.realm("ixtlater"))
    with late_account("ixtlater"):  # no request of the account at all
        wait_for(lambda: not os.path.lexists(daemon.realm("ixtlater")),
                 "the squatted realm link to go", 10)


def test_realm_names_of_the_form_uidN_are_refused(daemon: RunningDaemon) -> None:
    """Issue 21, row 2: realm `uidNNNN` for a uid with no account."""
    uid = next(u for u in range(47001, 48000) if not _has_account(u))
    stderr = refused(daemon, "ixtalice", "mut", f"uid{uid}", "+bin/svc/runit(tag=uidsquat)",
                     code="E_BAD_REALM_NAME")
    assert f"'uid{uid}' is refused" in stderr
    answers = raw_requests(daemon, "ixtalice", [("mut", {"patches": [
        {"realm": f"uid{uid}", "ops": [{"op": "add", "selector": "bin/svc/runit(tag=u)",
                                        "flags": {}}]}]})])
    assert answers[0].get("code") == "E_BAD_REALM_NAME", answers
    assert not os.path.lexists(daemon.realm(f"uid{uid}"))
    # that uid, without an account: no realm of its own, no session of one
    for words, code in ((["list", "--json"], None), (["mut", "+bin/svc/runit"],
                                                     "E_BAD_REALM_NAME"),
                        (["generations"], "E_BAD_REALM_NAME"),
                        (["session", "--svdir", "/nonexistent", "--once"], "E_BAD_REALM_NAME")):
        done = as_uid(daemon, uid, *words)
        if code is None:
            assert done.returncode == 0, done.stderr
        else:
            assert done.returncode != 0 and f"[{code}]" in done.stderr, (words, done.stderr)
            assert "uid" in done.stderr


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def as_uid(daemon: RunningDaemon, uid: int, *words: str) -> subprocess.CompletedProcess[str]:
    """`ixc WORDS` as a uid without an account."""
    argv, env = daemon.ixc_argv(*words, user="ixtalice")
    python_and_rest = argv[argv.index("--") + 1:]
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "--", *python_and_rest], capture_output=True, text=True, env=env,
                          cwd="/", timeout=120, check=False)


def test_ixc_session_refuses_a_service_tree_of_another_user(daemon: RunningDaemon,
                                                            tmp_path: Path) -> None:
    with public_folder() as top:
        bobs = top / "bobs"
        bobs.mkdir(mode=0o755)
        shared = top / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        alices = top / "alices"
        alices.mkdir(mode=0o755)
        subprocess.run(["chown", "ixtbob", str(bobs)], check=True)
        subprocess.run(["chown", "ixtalice", str(shared), str(alices)], check=True)
        link = top / "link"
        link.symlink_to(alices)
        for svdir, problem in ((bobs, "belongs to ixtbob, not to ixtalice"),
                               (shared, "writable by its group or others"),
                               (link, "is a symlink")):
            stderr = refused(daemon, "ixtalice", "session", "--svdir", str(svdir), "--root",
                             str(daemon.root), "--once", code="E_UNSAFE_SVDIR")
            assert problem in stderr
        assert os.listdir(bobs) == [] and os.listdir(shared) == []
        daemon.ixc("session", "--svdir", str(alices), "--root", str(daemon.root), "--once",
                   user="ixtalice")
