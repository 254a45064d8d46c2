"""The daemon's cache of account look-ups: answers kept, dropped when the files change."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from ixd.daemon.identity import AccountCache
from tests.test_services import Clock


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every getpwnam/getpwuid call that reaches NSS, by argument."""
    calls: list[str] = []
    real_nam, real_uid = pwd.getpwnam, pwd.getpwuid

    def getpwnam(name: str) -> pwd.struct_passwd:
        calls.append(name)
        return real_nam(name)

    def getpwuid(uid: int) -> pwd.struct_passwd:
        calls.append(str(uid))
        return real_uid(uid)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(pwd, "getpwuid", getpwuid)
    return calls


def test_answers_are_kept_until_a_file_changes(tmp_path: Path, counted: list[str]) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("one\n")
    clock = Clock()
    cache = AccountCache(files=(str(passwd),), max_age=60, clock=clock)
    for _ in range(3):
        assert cache.uid_of("root") == 0
        assert cache.uid_of("no-such-login-ix") is None
        assert cache.login_of(0) == "root"
    assert counted == ["root", "no-such-login-ix", "0"]
    passwd.write_text("one\ntwo\n")  # an account added: every answer is asked again
    clock.now += 0.02  # (once the files are looked at again)
    assert cache.uid_of("no-such-login-ix") is None
    assert cache.login_of(0) == "root"
    assert counted[3:] == ["no-such-login-ix", "0"]


def test_answers_expire_for_other_sources(tmp_path: Path, counted: list[str]) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("one\n")
    clock = Clock()
    cache = AccountCache(files=(str(passwd),), max_age=2.0, clock=clock)
    assert cache.uid_of("root") == 0
    clock.now += 1.5
    assert cache.uid_of("root") == 0
    assert counted == ["root"]
    clock.now += 1.0
    assert cache.uid_of("root") == 0
    assert counted == ["root", "root"]


def test_a_missing_file_and_bad_names_are_answers_too(tmp_path: Path) -> None:
    cache = AccountCache(files=(str(tmp_path / "absent"),), clock=Clock())
    assert cache.uid_of("a\0b") is None
    assert cache.login_of(2**40) is None
    assert cache.in_group("root", 0, "no-such-group-ix") is False
    assert cache.in_group("root", 0, "root") is True
