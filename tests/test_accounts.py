"""The daemon's cache of account look-ups: answers kept, dropped when the files change."""

from __future__ import annotations

from pathlib import Path

import pytest

from ixd.daemon.identity import NSS, AccountCache, AccountSource
from tests.test_services import Clock


class Counted:
    """The system's answers, with every question that reached it, by argument."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.source = AccountSource(self._uid_of, self._login_of, self._in_group)

    def _uid_of(self, login: str) -> int | None:
        self.calls.append(login)
        return NSS.uid_of(login)

    def _login_of(self, uid: int) -> str | None:
        self.calls.append(str(uid))
        return NSS.login_of(uid)

    def _in_group(self, login: str, gid: int, group: str) -> bool:
        self.calls.append(f"{login}@{group}")
        return NSS.in_group(login, gid, group)


@pytest.fixture
def counted() -> Counted:
    return Counted()


def test_answers_are_kept_until_a_file_changes(tmp_path: Path, counted: Counted) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("one\n")
    clock = Clock()
    cache = AccountCache(files=(str(passwd),), max_age=60, clock=clock, source=counted.source)
    for _ in range(3):
        assert cache.uid_of("root") == 0
        assert cache.uid_of("no-such-login-ix") is None
        assert cache.login_of(0) == "root"
        assert cache.in_group("root", 0, "root") is True
    assert counted.calls == ["root", "no-such-login-ix", "0", "root@root"]
    passwd.write_text("one\ntwo\n")  # an account added: every answer is asked again
    clock.now += 0.02  # (once the files are looked at again)
    assert cache.uid_of("no-such-login-ix") is None
    assert cache.login_of(0) == "root"
    assert cache.in_group("root", 0, "root") is True
    assert counted.calls[4:] == ["no-such-login-ix", "0", "root@root"]


def test_answers_expire_for_other_sources(tmp_path: Path, counted: Counted) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("one\n")
    clock = Clock()
    cache = AccountCache(files=(str(passwd),), max_age=2.0, clock=clock, source=counted.source)
    assert cache.uid_of("root") == 0
    clock.now += 1.5
    assert cache.uid_of("root") == 0
    assert counted.calls == ["root"]
    clock.now += 1.0
    assert cache.uid_of("root") == 0
    assert counted.calls == ["root", "root"]


def test_made_up_accounts_are_answered_and_kept_like_the_systems(tmp_path: Path) -> None:
    """What the daemon asks comes from its source: tests need no real accounts."""
    logins = {"alice": 1001}
    admins = {"alice"}
    asked: list[str] = []

    def in_group(login: str, gid: int, group: str) -> bool:
        asked.append(login)
        return group == "admins" and login in admins

    source = AccountSource(logins.get, lambda uid: {1001: "alice"}.get(uid), in_group)
    cache = AccountCache(files=(str(tmp_path / "absent"),), clock=Clock(), source=source)
    assert cache.uid_of("alice") == 1001 and cache.uid_of("root") is None
    assert cache.login_of(1001) == "alice" and cache.login_of(0) is None
    assert cache.in_group("alice", 1001, "admins") and not cache.in_group("alice", 1001, "x")
    admins.clear()  # kept: asked again only once the files change or answers expire
    assert cache.in_group("alice", 1001, "admins")
    assert asked == ["alice", "alice"]


def test_a_missing_file_and_bad_names_are_answers_too(tmp_path: Path) -> None:
    cache = AccountCache(files=(str(tmp_path / "absent"),), clock=Clock())
    assert cache.uid_of("a\0b") is None
    assert cache.login_of(2**40) is None
    assert cache.in_group("root", 0, "no-such-group-ix") is False
    assert cache.in_group("root", 0, "root") is True
