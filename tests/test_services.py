"""The session side of runit: `services/` keeps a user's service tree in step with the
services of their realm.

First the pure decisions (`services.model`), then the reconciler against a file system laid
out like a daemon's root (no daemon, no runsv), then the whole thing for real: a real ixd,
a test account that changes its realm with the real `ixc`, and its session started by a
real runsvdir from `runit/session` — services come up with `ixc mut +bin/beacon/runit`, go
with the package, and come back with `ixc rollback`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ixd.wire.errors import UsageError
from services import model, session, tree
from services.model import (
    MARKER,
    Create,
    LeaveAlone,
    Present,
    Restart,
    Retire,
    ServiceFile,
    ServiceSpec,
    Update,
    plan,
    restart_for,
)
from services.reconcile import REAP_MIN_AGE, Reconciler
from tests.daemon_harness import PROJECT, RunningDaemon, public_daemon, wait_for
from tests.seeded_store import SeededRoot
from tests.test_runit import (
    SYSTEM_PYTHON,
    Runsvdir,
    needs_runit,
    public_copy,
    public_tmpdir,
    service_pid,
    throwaway_account,
)

#: (the daemon's tests start from the run's root with lib/c prebuilt)
pytestmark = pytest.mark.lib_c_root

# --- the pure part ---------------------------------------------------------------------------


def spec(name: str, **files: str) -> ServiceSpec:
    """A service from keyword files: `run="..."`, `log_run="..."` (`_` → `/`)."""
    return ServiceSpec.of(name, [ServiceFile(k.replace("_", "/"), v.encode(),
                                             k.endswith("run") or k == "finish")
                                 for k, v in files.items()])


def mine(s: ServiceSpec) -> Present:
    return Present(s.name, mine=True, files=s.file_digests)


def test_plan_creates_what_is_new_and_retires_what_went() -> None:
    a, b = spec("a", run="A"), spec("b", run="B")
    old = spec("old", run="O")
    actions = plan({"a": a, "b": b}, {"b": mine(b), "old": mine(old)})
    assert actions == [Retire("old"), Create(a)]


def test_plan_retires_before_it_creates_and_is_sorted() -> None:
    wanted = {n: spec(n, run=n) for n in ("z", "m", "a")}
    present = {n: mine(spec(n, run=n)) for n in ("y", "b")}
    actions = plan(wanted, present)
    assert actions == [Retire("b"), Retire("y"), Create(wanted["a"]), Create(wanted["m"]),
                       Create(wanted["z"])]


def test_plan_updates_a_changed_service_in_place() -> None:
    before, after = spec("a", run="v1"), spec("a", run="v2")
    assert plan({"a": after}, {"a": mine(before)}) == [Update(after, mine(before))]
    assert plan({"a": after}, {"a": mine(after)}) == []


def test_plan_never_touches_folders_it_did_not_create() -> None:
    theirs = Present("theirs", mine=False)
    taken = Present("a", mine=False)
    actions = plan({"a": spec("a", run="A")}, {"theirs": theirs, "a": taken})
    assert len(actions) == 1 and isinstance(actions[0], LeaveAlone)
    assert actions[0].name == "a"
    assert plan({}, {"theirs": theirs}) == []


def test_plan_for_an_empty_realm_retires_only_ours() -> None:
    ours = mine(spec("ours", run="x"))
    assert plan({}, {"ours": ours, "theirs": Present("theirs", mine=False)}) == [
        Retire("ours")]


def test_a_missing_file_counts_as_a_change() -> None:
    s = spec("a", run="A", finish="F")
    damaged = Present("a", mine=True, files={"run": s.file_digests["run"]})
    assert plan({"a": s}, {"a": damaged}) == [Update(s, damaged)]


def test_the_executable_bit_is_part_of_a_file() -> None:
    plain = ServiceFile("run", b"x", False)
    exe = ServiceFile("run", b"x", True)
    assert plain.digest != exe.digest
    assert ServiceSpec.of("a", [plain]).digest != ServiceSpec.of("a", [exe]).digest


def test_restart_for_run_log_and_log_appearing() -> None:
    v1 = spec("a", run="1", log_run="L")
    assert restart_for(v1.file_digests, spec("a", run="2", log_run="L")) == Restart(main=True)
    assert restart_for(v1.file_digests, spec("a", run="1", log_run="M")) == Restart(log=True)
    assert restart_for(v1.file_digests, spec("a", run="2", log_run="M")) == Restart(
        main=True, log=True)
    assert restart_for(v1.file_digests, spec("a", run="1")) == Restart(runsv=True)
    assert restart_for(spec("a", run="1").file_digests, v1) == Restart(runsv=True)
    assert not restart_for(v1.file_digests, v1).needed


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "tab\there", "x" * 201])
def test_bad_service_names(name: str) -> None:
    assert model.service_name_problem(name) is not None


@pytest.mark.parametrize("name", ["beacon", "sshd", "a.b-c_d", "x" * 200])
def test_good_service_names(name: str) -> None:
    assert model.service_name_problem(name) is None


@pytest.mark.parametrize("path", ["supervise/pid", "log/supervise/lock", MARKER, "../run",
                                  "a//b", "/abs"])
def test_files_never_copied(path: str) -> None:
    assert model.file_path_problem(path) is not None


def test_markers_name_their_realm() -> None:
    s = spec("a", run="A")
    text = model.marker_json("alice", s)
    assert model.parse_marker(text, "alice", "a") == s.file_digests
    assert model.parse_marker(text, "bob", "a") is None
    assert model.parse_marker(text, "alice", "a-copy") is None
    assert model.parse_marker("not json", "alice", "a") is None
    bad = json.dumps({"realm": "alice", "service": "a", "files": [1]})
    assert model.parse_marker(bad, "alice", "a") is None


def test_service_of_folder() -> None:
    assert model.service_of_folder("beacon") == "beacon"
    assert model.service_of_folder(".ix-new.beacon.ab12") == "beacon"
    assert model.service_of_folder(".ix-retired.a.b.c.ab12") == "a.b.c"


# --- the reconciler on a file system ------------------------------------------------------


@dataclass
class FakeRoot:
    """A daemon root as far as a session sees it: store entries, realm links."""

    root: Path
    count: int = 0

    #: whether the (stand-in) daemon says realm alice is ours
    ours: bool = True

    @property
    def link(self) -> Path:
        return self.root / "realm" / "alice"

    def locate(self) -> str | None:
        """What the daemon answers a session for realm alice (the stand-in for
        `session.DaemonRealm`): the generation its link names, if the realm is ours; no realm
        folder stands for a daemon that cannot be asked."""
        if not self.link.parent.is_dir():
            raise tree.RealmUnreadable(f"{self.link.parent} is not a folder")
        try:
            os.readlink(self.link)
        except FileNotFoundError:
            return None
        if not self.ours:
            raise tree.RealmNotOurs("ixd says realm alice belongs to mallory (uid 4242)")
        return os.path.realpath(self.link)

    def generation(self, services: dict[str, dict[str, str]]) -> Path:
        """A package holding the files, and a realm entry of symlinks to them (as assembly
        makes), then the realm link switched to it."""
        self.count += 1
        package = self.root / "store" / f"pkg{self.count}"
        realm = self.root / "store" / f"{self.count}-rlm-alice"
        for name, files in services.items():
            for rel, text in files.items():
                src = package / "etc" / "services" / name / rel
                src.parent.mkdir(parents=True, exist_ok=True)
                src.write_text(text)
                src.chmod(0o555 if rel.endswith("run") or rel == "finish" else 0o444)
                dst = realm / "etc" / "services" / name / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src)
        realm.mkdir(parents=True, exist_ok=True)
        self.switch(realm)
        return realm

    def switch(self, target: Path | None) -> None:
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(".alice.tmp")
        if target is None:
            self.link.unlink(missing_ok=True)
            return
        tmp.symlink_to(os.path.relpath(target, self.link.parent))
        os.replace(tmp, self.link)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tree_names(svdir: Path) -> list[str]:
    """What the service tree holds besides the session's link to the realm generation."""
    return sorted(p.name for p in svdir.iterdir() if p.name != model.REALM_LINK)


@pytest.fixture
def fake(tmp_path: Path) -> FakeRoot:
    return FakeRoot(tmp_path / "root")


@pytest.fixture
def svdir(tmp_path: Path) -> Path:
    path = tmp_path / "service"
    path.mkdir()
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rec(fake: FakeRoot, svdir: Path, clock: Clock) -> Reconciler:
    return Reconciler(svdir, "alice", fake.locate, clock=clock)


BEACON = {"run": "#!/bin/sh\nexec beacon\n", "finish": "#!/bin/sh\necho end\n",
          "log/run": "#!/bin/sh\nexec svlogd ./main\n", "conf/beacon.conf": "port=1\n"}


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (p.read_text() if p.is_file() else "",
                                         p.stat().st_mode)
            for p in sorted(folder.rglob("*"))}


def test_sync_copies_a_realm_service_into_a_writable_folder(
        fake: FakeRoot, svdir: Path, rec: Reconciler) -> None:
    fake.generation({"beacon": BEACON})
    summary = rec.sync()
    assert summary.created == ["beacon"]
    folder = svdir / "beacon"
    for rel, text in BEACON.items():
        path = folder / rel
        assert path.read_text() == text
        assert not path.is_symlink()
        assert path.stat().st_mode & 0o777 == (0o644 if rel.endswith(".conf") else 0o755)
    assert os.access(folder, os.W_OK) and os.access(folder / "log", os.W_OK)
    marker = json.loads((folder / MARKER).read_text())
    assert marker["realm"] == "alice" and sorted(marker["files"]) == sorted(BEACON)
    assert rec.sync().changed is False  # nothing to do the second time


def test_sync_leaves_folders_it_did_not_create_alone(
        fake: FakeRoot, svdir: Path, rec: Reconciler, caplog: pytest.LogCaptureFixture) -> None:
    theirs = svdir / "theirs"
    (theirs / "log").mkdir(parents=True)
    (theirs / "run").write_text("#!/bin/sh\nexec sleep 1\n")
    taken = svdir / "beacon"  # a folder of the user's own, named like a realm service
    taken.mkdir()
    (taken / "notes").write_text("mine\n")
    other_realm = svdir / "other"
    other_realm.mkdir()
    (other_realm / MARKER).write_text(model.marker_json("bob", spec("other", run="x")))
    copied = svdir / "beacon2"  # the user copied a folder of ours to make their own
    copied.mkdir()
    (copied / MARKER).write_text(model.marker_json("alice", spec("beacon", run="x")))
    (svdir / "link").symlink_to(theirs)
    (svdir / "file").write_text("x")
    before = {p: snapshot(p) for p in (theirs, taken, other_realm, copied)}

    fake.generation({"beacon": BEACON})
    summary = rec.sync()
    assert summary.created == [] and summary.left_alone == ["beacon"]
    assert "not installed" in caplog.text and "beacon" in caplog.text
    fake.switch(None)  # the realm is purged: still nothing of theirs goes
    assert rec.sync().retired == []
    assert {p: snapshot(p) for p in (theirs, taken, other_realm, copied)} == before
    assert (svdir / "link").is_symlink() and (svdir / "file").read_text() == "x"

    # once the user moves their folder away, the realm's service goes in
    fake.generation({"beacon": BEACON})
    taken.rename(svdir / "beacon.mine")
    assert rec.sync().created == ["beacon"]


def test_a_switch_updates_in_place_and_keeps_runsvs_state(
        fake: FakeRoot, svdir: Path, rec: Reconciler) -> None:
    fake.generation({"beacon": BEACON})
    rec.sync()
    folder = svdir / "beacon"
    (folder / "supervise").mkdir()  # as runsv would
    (folder / "supervise" / "stat").write_text("run\n")
    (folder / "log" / "main").mkdir()  # svlogd's files
    (folder / "log" / "main" / "current").write_text("a line\n")
    inode = folder.stat().st_ino

    changed = {**BEACON, "run": "#!/bin/sh\nexec beacon --v2\n"}
    del changed["conf/beacon.conf"]
    fake.generation({"beacon": changed})
    summary = rec.sync()
    assert summary.updated == ["beacon"]
    assert folder.stat().st_ino == inode
    assert (folder / "run").read_text() == changed["run"]
    assert not (folder / "conf").exists()  # a file the realm dropped goes, its folder too
    assert (folder / "supervise" / "stat").read_text() == "run\n"
    assert (folder / "log" / "main" / "current").read_text() == "a line\n"


def test_a_file_changed_by_hand_is_written_again(
        fake: FakeRoot, svdir: Path, rec: Reconciler) -> None:
    fake.generation({"beacon": BEACON})
    rec.sync()
    (svdir / "beacon" / "run").write_text("broken")
    (svdir / "beacon" / "finish").unlink()
    assert rec.sync().updated == ["beacon"]
    assert (svdir / "beacon" / "run").read_text() == BEACON["run"]
    assert (svdir / "beacon" / "finish").read_text() == BEACON["finish"]


def test_a_service_that_goes_is_retired_then_removed(
        fake: FakeRoot, svdir: Path, rec: Reconciler, clock: Clock) -> None:
    fake.generation({"beacon": BEACON, "other": {"run": "#!/bin/sh\n"}})
    rec.sync()
    fake.generation({"other": {"run": "#!/bin/sh\n"}})
    assert rec.sync().retired == ["beacon"]
    assert not (svdir / "beacon").exists()
    retired = [p.name for p in svdir.iterdir() if p.name.startswith(model.RETIRED_PREFIX)]
    assert len(retired) == 1  # a dot-name: runsvdir no longer sees it
    assert rec.reap() == 1  # not yet: a runsv starting just now must be seen first
    clock.now += REAP_MIN_AGE
    assert rec.reap() == 0  # no runsv supervises it: removed
    assert tree_names(svdir) == ["other"]


def test_a_retired_folder_waits_for_its_runsv(
        fake: FakeRoot, svdir: Path, rec: Reconciler, clock: Clock) -> None:
    fake.generation({"beacon": BEACON})
    rec.sync()
    supervise = svdir / "beacon" / "supervise"
    supervise.mkdir()
    os.mkfifo(supervise / "ok")
    os.mkfifo(supervise / "control")
    ok = os.open(supervise / "ok", os.O_RDONLY | os.O_NONBLOCK)  # "runsv" is there
    control = os.open(supervise / "control", os.O_RDONLY | os.O_NONBLOCK)
    try:
        fake.switch(None)
        assert rec.sync().retired == ["beacon"]
        assert os.read(control, 10) == b"dx"  # told: service down, then exit
        clock.now += 1
        assert rec.reap() == 1
        clock.now += 10
        assert rec.reap() == 1
        assert os.read(control, 10) == b"k"  # it did not stop on TERM: KILL
    finally:
        os.close(ok)
        os.close(control)
    assert rec.reap() == 0
    assert list(svdir.iterdir()) == []


def test_leftovers_of_a_dead_session_are_cleaned(
        fake: FakeRoot, svdir: Path, rec: Reconciler, clock: Clock) -> None:
    fake.generation({"beacon": BEACON})
    s = spec("beacon", run="x")
    for prefix in (model.NEW_PREFIX, model.RETIRED_PREFIX):
        half = svdir / f"{prefix}beacon.1234"
        half.mkdir()
        (half / MARKER).write_text(model.marker_json("alice", s))
    foreign = svdir / f"{model.NEW_PREFIX}theirs"
    foreign.mkdir()
    rec.sync()
    clock.now += REAP_MIN_AGE
    rec.reap()
    assert tree_names(svdir) == sorted(["beacon", foreign.name])


def test_a_removed_tree_is_made_again(fake: FakeRoot, svdir: Path, rec: Reconciler) -> None:
    fake.generation({"beacon": BEACON})
    rec.sync()
    shutil.rmtree(svdir)
    assert rec.sync().created == ["beacon"]
    assert (svdir / "beacon" / "run").read_text() == BEACON["run"]


def test_no_realm_folder_means_hands_off(
        fake: FakeRoot, svdir: Path, rec: Reconciler) -> None:
    fake.generation({"beacon": BEACON})
    rec.sync()
    os.rename(fake.root / "realm", fake.root / "elsewhere")
    summary = rec.sync()
    assert summary.unreadable and not summary.changed
    assert (svdir / "beacon" / "run").exists()


def test_unusable_services_are_skipped_with_a_warning(
        fake: FakeRoot, svdir: Path, rec: Reconciler, caplog: pytest.LogCaptureFixture) -> None:
    fake.generation({"norun": {"finish": "#!/bin/sh\n"}, ".dot": {"run": "#!/bin/sh\n"},
                     "ok": {"run": "#!/bin/sh\n"}})
    assert rec.sync().created == ["ok"]
    assert "'norun'" in caplog.text and "no `run`" in caplog.text
    assert "'.dot'" in caplog.text


def test_rename_noreplace_refuses_an_empty_folder(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    with pytest.raises(FileExistsError):
        tree.rename_noreplace(src, dst)
    dst.rmdir()
    tree.rename_noreplace(src, dst)
    assert dst.is_dir() and not src.exists()


def test_a_realm_that_changes_hands_stops_its_services(
        fake: FakeRoot, svdir: Path, rec: Reconciler, clock: Clock,
        caplog: pytest.LogCaptureFixture) -> None:
    fake.generation({"beacon": BEACON})
    assert rec.sync().created == ["beacon"]
    assert os.readlink(svdir / model.REALM_LINK) == os.path.realpath(fake.link)
    fake.ours = False  # purged, and the name taken by another user
    summary = rec.sync()
    assert summary.retired == ["beacon"] and not summary.created
    assert "belongs to mallory" in caplog.text and "none of its services run" in caplog.text
    assert not os.path.lexists(svdir / model.REALM_LINK)  # the services' PATH leads nowhere
    clock.now += REAP_MIN_AGE
    rec.reap()
    assert list(svdir.iterdir()) == []


@pytest.mark.parametrize("argv", [[], ["--svdir"], ["--svdir", "x", "--bogus"],
                                  ["--svdir", "x", "--interval", "0"]])
def test_session_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        session.main(argv, socket="/nonexistent")


def test_session_checks_the_realm_name(tmp_path: Path) -> None:
    from ixd.wire.errors import BadRealmName

    with pytest.raises(BadRealmName):
        session.main(["--svdir", str(tmp_path), "--root", str(tmp_path), "--realm", "../x",
                      "--once"], socket="/nonexistent")


def test_importing_the_session_leaves_ixc_light() -> None:
    code = ("import sys, services.session; "
            "print(sorted(m for m in ('pyinotify', 'trio', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PROJECT).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def shell_daemon() -> Iterator[RunningDaemon]:
    """A real daemon for sessions of root, whose service package is shell alone
    (tests/overlay's bin/svc/runit: nothing to compile)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with public_daemon("ix-svc-") as running:
        yield running


def test_the_session_follows_switches_through_inotify(
        shell_daemon: RunningDaemon, tmp_path: Path) -> None:
    """The foreground loop, as a process against a real ixd: a switch is followed at once
    (the periodic pass is an hour away), HUP makes a pass, TERM ends it."""
    daemon = shell_daemon
    svdir = tmp_path / "service"
    log = tmp_path / "session.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.session", "--socket", str(daemon.socket),
             "--svdir", str(svdir), "--realm", "svcroot", "--interval", "3600"],
            stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT,
            env={**os.environ, "PYTHONPATH": str(PROJECT)})
    try:
        wait_for(lambda: "provides no services" in log.read_text(), "the first pass", 10)
        daemon.ixc("mut", "svcroot", "+bin/svc/runit(tag=a)")
        run = svdir / "svc-a" / "run"
        wait_for(run.exists, "the service to be added", 10)
        generation = os.readlink(svdir / model.REALM_LINK)
        assert generation == os.path.realpath(daemon.realm("svcroot"))
        daemon.ixc("mut", "svcroot", "-bin/svc/runit(tag=a)")
        wait_for(lambda: not (svdir / "svc-a").exists(), "the service to be removed", 10)
        wait_for(lambda: [p.name for p in svdir.iterdir()] == [model.REALM_LINK],
                 "the retired folder to be removed", 10)

        daemon.ixc("rollback", "svcroot")
        wait_for(run.exists, "the service to be back", 10)
        assert os.readlink(svdir / model.REALM_LINK) == generation
        run.write_text("changed by hand")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: run.read_text().startswith("#!/bin/sh"), "HUP to make a pass", 10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- for real: ixd, a user's realm, their session under runsvdir ----------------------------

@dataclass
class Stack:
    daemon: RunningDaemon
    user: str
    home: Path
    svdir: Path
    prefix: Path
    session_dir: Path

    def ixc(self, *words: str) -> subprocess.CompletedProcess[str]:
        """The real `ixc`, as the user, with the system interpreter."""
        argv = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", self.user, "--",
                SYSTEM_PYTHON, "-m", "client.main",
                "--socket", str(self.daemon.socket), *words]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(self.prefix)}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300,
                              cwd="/")
        assert done.returncode == 0, f"ixc {' '.join(words)}: {done.stderr}"
        return done

    def session_log(self) -> str:
        current = self.session_dir / "log" / "main" / "current"
        return current.read_text() if current.exists() else "(no session log)"


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    # bin/beacon is a C program: its daemon starts with lib/c prebuilt
    lib_c_root: SeededRoot = request.getfixturevalue("lib_c_root")
    with public_tmpdir("ix-services-") as base, lib_c_root.daemon() as daemon:
        prefix = public_copy(base / "opt")
        with throwaway_account(base / "home") as user:
            svdir = base / "home" / "service"  # the default: ~/service
            # the user's own service, made by hand before the session ever ran
            mine = svdir / "mine"
            mine.mkdir(parents=True)
            (mine / "run").write_text("#!/bin/sh\nexec sleep 3600\n")
            (mine / "run").chmod(0o755)
            (mine / "down").write_text("")  # not started: it only has to be left alone
            (mine / "notes").write_text("hands off\n")
            subprocess.run(["chown", "-R", f"{user}:{user}", str(svdir)], check=True)
            done = subprocess.run(
                ["sh", str(prefix / "runit" / "enable-session.sh"), user,
                 "--socket", str(daemon.socket), "--prefix", str(prefix),
                 "--sv-dir", str(base / "sv"), "--service-dir", str(base / "service")],
                capture_output=True, text=True, check=True)
            assert "enabled" in done.stdout
            runsvdir = Runsvdir(base / "service")
            try:
                yield Stack(daemon, user, base / "home", svdir, prefix,
                            base / "sv" / f"ix-session-{user}")
            finally:
                runsvdir.stop()


def beacon_says(sock: Path) -> str | None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(sock))
            return s.recv(200).decode()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@needs_runit
def test_realm_services_follow_mut_remove_and_rollback(stack: Stack) -> None:
    folder = stack.svdir / "beacon"
    sock = folder / "beacon.sock"
    uid = int(subprocess.run(["id", "-u", stack.user], capture_output=True, text=True,
                             check=True).stdout)

    # the session is up: it ran its pass and created nothing, as the realm does not exist
    wait_for(lambda: "session of" in stack.session_log(), "the session to start", 20)

    stack.ixc("mut", "+bin/beacon/runit")
    answer = wait_for(lambda: beacon_says(sock), "beacon to answer", 20)
    assert answer.startswith("beacon beacon pid ")
    pid = int(answer.split()[3])
    assert os.stat(f"/proc/{pid}").st_uid == uid  # the user's service, run as the user
    assert folder.stat().st_uid == uid and (folder / MARKER).is_file()
    assert (folder / "supervise").is_dir()  # runsv writes there
    log = folder / "log" / "main" / "current"
    wait_for(lambda: log.exists() and "listening on" in log.read_text(),
             "svlogd to write the service's log", 10)

    stack.ixc("mut", "-bin/beacon/runit")
    wait_for(lambda: not folder.exists(), "the service folder to go", 10)
    wait_for(lambda: not _alive(pid), "beacon to stop", 10)
    wait_for(lambda: not any(p.name.startswith(".ix-") and p.name != model.REALM_LINK
                             for p in stack.svdir.iterdir()),
             "the retired folder to be removed", 10)

    stack.ixc("rollback", stack.user)
    answer = wait_for(lambda: beacon_says(sock), "beacon to answer after the rollback", 20)
    assert int(answer.split()[3]) != pid
    assert service_pid(folder) == int(answer.split()[3])

    text = stack.session_log()
    assert "service beacon added" in text and "service beacon removed" in text, text


@needs_runit
def test_folders_the_session_did_not_create_are_left_alone(stack: Stack) -> None:
    mine = stack.svdir / "mine"
    assert (mine / "notes").read_text() == "hands off\n"
    assert (mine / "run").read_text() == "#!/bin/sh\nexec sleep 3600\n"
    assert (mine / "down").exists() and not (mine / MARKER).exists()
    assert "mine" not in stack.session_log()
