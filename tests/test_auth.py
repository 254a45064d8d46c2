"""Who may change which realm: the pure decisions of `ixd.daemon.auth`, with made-up accounts."""

from __future__ import annotations

import pytest

from ixd.daemon import auth
from ixd.daemon.auth import ROOT, Claim, Identity
from ixd.wire.errors import PermissionDenied

#: the accounts of these tests: login -> uid
LOGINS = {"root": 0, "toor": 0, "alice": 1001, "bob": 1002, "carol": 1003}

ALICE = Identity(1001, "alice", admin=False)
BOB = Identity(1002, "bob", admin=False)
CAROL = Identity(1003, "carol", admin=True)  # in the admin group
ROOT_ID = Identity(0, "root", admin=True)
DAVE = Identity(1004, "dave", admin=False)


def uid_of(login: str) -> int | None:
    return LOGINS.get(login)


def with_dave(login: str) -> int | None:
    """The accounts once dave's has been created."""
    return 1004 if login == "dave" else LOGINS.get(login)


def login_of(uid: int) -> str:
    return next((name for name, u in LOGINS.items() if u == uid), f"uid {uid}")


def may(realm: str, owner: int, who: Identity, lookup: auth.UidOf = uid_of) -> bool:
    return auth.may_change(realm, owner, who, lookup)


# --- new realms ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("realm", "creator", "owner"),
    [
        ("alice", BOB, 1001),  # named after a login: that login's, whoever creates it
        ("system", ALICE, ROOT),
        ("work", ALICE, 1001),  # any other name: its creator's
        ("dave", ALICE, 1001),  # no such login (yet): its creator's
        ("root", CAROL, ROOT),
    ],
)
def test_owner_of_a_new_realm(realm: str, creator: Identity, owner: int) -> None:
    assert auth.owner_of_new_realm(realm, creator, uid_of) == owner
    assert auth.claim(realm, None, creator, uid_of) == Claim(owner, exists=False)


# --- squatting -------------------------------------------------------------------------


def test_a_realm_claimed_before_its_login_existed_goes_to_the_login() -> None:
    # alice creates "dave" while there is no account dave: hers, for now
    assert auth.claim("dave", None, ALICE, uid_of).owner == 1001
    assert auth.claim("dave", 1001, ALICE, uid_of) == Claim(1001, exists=True)
    assert not auth.is_squatted("dave", 1001, uid_of)
    # the account dave is created: the record is void, for everybody who asks
    assert auth.is_squatted("dave", 1001, with_dave)
    for who in (ALICE, DAVE, BOB, ROOT_ID):
        assert auth.claim("dave", 1001, who, with_dave) == Claim(1004, exists=False,
                                                                 squatted=True)
    # alice may no longer change it; dave may, as a new realm
    assert not may("dave", 1004, ALICE, with_dave)
    assert may("dave", 1004, DAVE, with_dave)
    with pytest.raises(PermissionDenied, match="alice may not change realm 'dave': it "
                                               "belongs to dave"):
        auth.check_may_change("dave", 1004, ALICE, "change", login_of=lambda u: "dave",
                              uid_of=with_dave)


def test_a_realm_squatted_by_root_goes_to_the_login_too() -> None:
    assert auth.is_squatted("dave", ROOT, with_dave)
    assert auth.claim("dave", ROOT, CAROL, with_dave).owner == 1004


@pytest.mark.parametrize(
    ("realm", "recorded"),
    [
        ("alice", 1001),  # the login's own
        ("work", 1002),  # no login of that name
        ("system", ROOT),  # root's whatever logins there are
        ("root", ROOT),
        ("toor", ROOT),  # another login of uid 0
    ],
)
def test_records_that_stand(realm: str, recorded: int) -> None:
    assert not auth.is_squatted(realm, recorded, uid_of)
    assert auth.claim(realm, recorded, BOB, uid_of) == Claim(recorded, exists=True)


def test_a_login_recreated_with_another_uid_gets_its_realm_new() -> None:
    assert auth.is_squatted("alice", 999, uid_of)  # recorded under the old account's uid
    assert auth.claim("alice", 999, ALICE, uid_of) == Claim(1001, exists=False, squatted=True)


def test_a_lookup_that_knows_nobody_keeps_the_record() -> None:
    assert not auth.is_squatted("dave", 1001, lambda login: None)


# --- who may change what ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("realm", "owner", "who", "allowed"),
    [
        ("alice", 1001, ALICE, True),
        ("alice", 1001, BOB, False),
        ("alice", 1001, CAROL, False),  # the admin group has root's realms, not users'
        ("alice", 1001, ROOT_ID, True),  # root has every realm
        ("system", ROOT, CAROL, True),
        ("system", ROOT, BOB, False),
        ("tools", ROOT, CAROL, True),  # any other realm root owns
        ("root", ROOT, CAROL, False),  # but not root's personal realm
        ("toor", ROOT, CAROL, False),  # (any login of uid 0)
        ("root", ROOT, ROOT_ID, True),
        ("root", ROOT, BOB, False),
    ],
)
def test_may_change(realm: str, owner: int, who: Identity, allowed: bool) -> None:
    assert may(realm, owner, who) is allowed


def test_refusals_name_who_asked_the_realm_and_its_owner() -> None:
    with pytest.raises(PermissionDenied, match="carol may not purge realm 'root': it belongs "
                                               "to root alone") as info:
        auth.check_may_change("root", ROOT, CAROL, "purge", login_of, uid_of)
    assert info.value.code == "E_PERMISSION"
    with pytest.raises(PermissionDenied, match="belongs to root and the admin group"):
        auth.check_may_change("system", ROOT, BOB, "change", login_of, uid_of)
    with pytest.raises(PermissionDenied, match="bob may not roll back realm 'alice': it "
                                               "belongs to alice"):
        auth.check_may_change("alice", 1001, BOB, "roll back", login_of, uid_of)
    auth.check_may_change("system", ROOT, CAROL, "change", login_of, uid_of)
