"""`ixc mut` words → realm patches, and `ixc dep/plan/build/run` words → selectors: every rule
and every error of the lexer."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ixd.model.realm import (
    AddPackage,
    RealmPatch,
    RealmState,
    RemovePackage,
    RemovePackageFlag,
    RemoveRealmFlag,
    SetPackageFlag,
    SetRealmFlag,
    apply_patch,
    patch_from_wire,
    patch_to_wire,
)
from ixd.model.selector import Selector, parse_selector
from ixd.model.words import expand_embeds, lex_mutation, lex_packages
from ixd.wire.errors import BadFlag, BadName, BadRealmName, NotInRealm, UsageError


def lex(*words: str) -> list[RealmPatch]:
    return lex_mutation(list(words), "alice")


def sel(text: str) -> Selector:
    return parse_selector(text)


def test_no_words_no_patches() -> None:
    assert lex() == []


def test_package_without_realm_goes_to_the_default_realm() -> None:
    assert lex("+bin/hello") == [RealmPatch("alice", (AddPackage(sel("bin/hello")),))]


def test_a_package_without_prefix_is_added() -> None:
    assert lex("bin/hello") == lex("+bin/hello")


def test_minus_removes() -> None:
    assert lex("-bin/hello") == [RealmPatch("alice", (RemovePackage(sel("bin/hello")),))]


def test_flags_after_an_added_package_ride_on_its_add() -> None:
    assert lex("+bin/hello", "--opt=1", "--prefix=/usr", "--debug") == [
        RealmPatch(
            "alice",
            (AddPackage(sel("bin/hello"), (("debug", "1"), ("opt", "1"), ("prefix", "/usr"))),),
        )
    ]


def test_a_flag_given_twice_takes_the_later_value() -> None:
    [patch] = lex("+bin/hello", "--opt=1", "--opt=2")
    assert patch.ops == (AddPackage(sel("bin/hello"), (("opt", "2"),)),)


def test_flag_values_may_start_with_a_dash_and_be_empty() -> None:
    [patch] = lex("+bin/hello", "--cflags=-O2", "--empty=")
    assert patch.ops == (AddPackage(sel("bin/hello"), (("cflags", "-O2"), ("empty", ""))),)


@pytest.mark.parametrize(
    ("word", "bad"),
    [("--k=a,b", "','"), ("--k=(", "'('"), ("--k= x", "' '"), ("--k=a=b", "'='"),
     ("--greeting=Hello world", "' '"), ('--wave_style=x";touch /tmp/pwned;echo "y', "'\"'")],
)
def test_flag_values_outside_the_charset_are_bad_flags_naming_the_word(word: str, bad: str
                                                                        ) -> None:
    for words in (("+bin/a", word), (word,)):  # on a package, on the realm
        with pytest.raises(BadFlag) as info:
            lex(*words)
        assert repr(word) in info.value.message and f"contains {bad}" in info.value.message
        assert info.value.code == "E_BAD_FLAG"


@pytest.mark.parametrize("words", [("--kind=lib",), ("+bin/a", "--lib"), ("--native=1",),
                                   ("+bin/a(kind=lib)",), ("bin/a(linux=)",),
                                   ("--target=linux-vax",), ("+bin/a(host=mars)",)])
def test_flags_ix_sets_itself_are_bad_flags(words: tuple[str, ...]) -> None:
    with pytest.raises(BadFlag) as info:
        lex(*words)
    assert repr(words[-1]) in info.value.message


def test_a_known_target_may_be_set_and_old_entries_removed() -> None:
    [patch] = lex("--target=linux-aarch64", "+bin/a(target=host)", "-bin/b(kind=lib)")
    assert patch.ops == (SetRealmFlag("target", "linux-aarch64"),
                         AddPackage(sel("bin/a(target=host)")),
                         RemovePackage(sel("bin/b(kind=lib)")))


def test_flags_before_any_package_go_on_the_realm() -> None:
    assert lex("--opt=1", "--k", "--old=-") == [
        RealmPatch(
            "alice", (SetRealmFlag("opt", "1"), SetRealmFlag("k", "1"), RemoveRealmFlag("old"))
        )
    ]


def test_flags_after_a_realm_word_go_on_that_realm() -> None:
    assert lex("bob", "--opt=1", "+bin/x", "--k=v") == [
        RealmPatch("bob", (SetRealmFlag("opt", "1"), AddPackage(sel("bin/x"), (("k", "v"),))))
    ]


def test_flag_removal_on_a_package() -> None:
    [patch] = lex("+bin/x", "--k=-")
    assert patch.ops == (AddPackage(sel("bin/x")), RemovePackageFlag(sel("bin/x"), "k"))


def test_flags_keep_their_order_around_a_removal() -> None:
    # --k=- then --k=2 must end with k=2: the set cannot fold into the add any more
    [patch] = lex("+bin/x", "--j=1", "--k=-", "--k=2")
    assert patch.ops == (
        AddPackage(sel("bin/x"), (("j", "1"),)),
        RemovePackageFlag(sel("bin/x"), "k"),
        SetPackageFlag(sel("bin/x"), "k", "2"),
    )
    state = RealmState("alice", (), ())
    state = apply_patch(state, RealmPatch("alice", (AddPackage(sel("bin/x"), (("k", "1"),)),)))
    assert apply_patch(state, patch).entries[0].flags == (("j", "1"), ("k", "2"))


def test_selector_form_packages_carry_their_flags_as_identity() -> None:
    [patch] = lex("+bin/foo(k=v)", "--opt=1", "-bin/foo")
    assert patch.ops == (
        AddPackage(Selector("bin/foo", (("k", "v"),)), (("opt", "1"),)),
        RemovePackage(Selector("bin/foo")),
    )


def test_flags_go_to_the_package_named_last() -> None:
    [patch] = lex("+bin/a", "--x=1", "+bin/b", "--y=2")
    assert patch.ops == (
        AddPackage(sel("bin/a"), (("x", "1"),)),
        AddPackage(sel("bin/b"), (("y", "2"),)),
    )


def test_several_realms_in_order() -> None:
    assert lex("+bin/a", "bob", "-bin/b", "carol", "--z=1") == [
        RealmPatch("alice", (AddPackage(sel("bin/a")),)),
        RealmPatch("bob", (RemovePackage(sel("bin/b")),)),
        RealmPatch("carol", (SetRealmFlag("z", "1"),)),
    ]


def test_naming_a_realm_again_continues_its_patch() -> None:
    assert lex("bob", "+bin/a", "carol", "+bin/c", "bob", "+bin/b") == [
        RealmPatch("bob", (AddPackage(sel("bin/a")), AddPackage(sel("bin/b")))),
        RealmPatch("carol", (AddPackage(sel("bin/c")),)),
    ]


def test_the_default_realm_named_explicitly_is_the_same_patch() -> None:
    assert lex("+bin/a", "bob", "alice", "+bin/b") == [
        RealmPatch("alice", (AddPackage(sel("bin/a")), AddPackage(sel("bin/b")))),
        RealmPatch("bob", ()),
    ]


def test_naming_a_realm_again_makes_flags_realm_flags_again() -> None:
    [alice, _bob] = lex("alice", "+bin/a", "bob", "alice", "--x=1")
    assert alice.ops == (AddPackage(sel("bin/a")), SetRealmFlag("x", "1"))


def test_a_realm_word_alone_gives_an_empty_patch() -> None:
    assert lex("bob") == [RealmPatch("bob", ())]


def test_the_default_realm_is_only_checked_when_used() -> None:
    assert lex_mutation(["bob", "+bin/a"], "not a realm!") == [
        RealmPatch("bob", (AddPackage(sel("bin/a")),))
    ]
    with pytest.raises(BadRealmName, match="not a realm!"):
        lex_mutation(["+bin/a"], "not a realm!")
    with pytest.raises(BadRealmName, match="not a realm!"):
        lex_mutation(["--x=1"], "not a realm!")


def test_a_flag_whose_value_has_a_slash_is_still_a_flag() -> None:
    [patch] = lex("--prefix=/usr/local")
    assert patch.ops == (SetRealmFlag("prefix", "/usr/local"),)


def test_a_repeated_package_word_is_a_new_add_and_flags_fold_into_the_last() -> None:
    [patch] = lex("+bin/a", "--x=1", "+bin/a", "--y=2")
    assert patch.ops == (
        AddPackage(sel("bin/a"), (("x", "1"),)),
        AddPackage(sel("bin/a"), (("y", "2"),)),
    )


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "word",
    [
        "-foo",
        "+foo",
        "-",
        "+",
        "---x",
        "--=v",
        "--",
        "--a-b=1",
        "--9=1",
    ],
)
def test_malformed_words_are_usage_errors_naming_the_word(word: str) -> None:
    with pytest.raises(UsageError) as info:
        lex("+bin/a", word)
    assert repr(word) in info.value.message
    assert info.value.code == "E_USAGE"


def test_an_empty_word_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="empty word"):
        lex("+bin/a", "")


def test_a_flag_after_a_removed_package_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"'--k=v' follows -bin/a, which is being removed"):
        lex("-bin/a", "--k=v")
    with pytest.raises(UsageError, match="being removed"):
        lex("-bin/a", "--k=-")


def test_a_flag_after_a_removed_package_is_fine_once_a_realm_is_named() -> None:
    [patch] = lex("alice", "-bin/a", "alice", "--k=v")
    assert patch.ops == (RemovePackage(sel("bin/a")), SetRealmFlag("k", "v"))


@pytest.mark.parametrize("word", ["a!", ".x", "a b", "é", "x" * 65])
def test_bad_realm_words(word: str) -> None:
    with pytest.raises(BadRealmName) as info:
        lex(word)
    assert repr(word[:40]) in info.value.message


@pytest.mark.parametrize(
    "word",
    ["+bin/../x", "-/bin/x", "bin//x", "+bin/x(", "+bin/x(k=v)y", "++bin/x", "+-bin/x", "bin/x/"],
)
def test_bad_package_words_are_bad_names(word: str) -> None:
    with pytest.raises(BadName):
        lex(word)


def test_a_package_needs_a_slash_in_its_name() -> None:
    with pytest.raises(UsageError, match="not a package"):
        lex("+foo(k=a/b)")


def test_an_error_anywhere_fails_the_whole_command() -> None:
    with pytest.raises(UsageError):
        lex("+bin/a", "bob", "+bin/b", "-oops")


# --- what the lexer makes travels and applies ----------------------------------------------


def test_lexed_patches_survive_the_wire() -> None:
    patches = lex(
        "--r=1", "+bin/a(k=v)", "--x", "--y=-", "--y=2", "-bin/b", "bob", "--q=-", "+lib/z"
    )
    assert [patch_from_wire(patch_to_wire(p)) for p in patches] == patches


# --- `ixc dep`, `plan`, `build`, `run`: the packages of stal/IX's ephemeral realm -------------


def test_package_words_take_stalix_flag_forms() -> None:
    # stal/IX's `ix build bin/bash --target=linux-aarch64`: a flag after the package
    assert lex_packages(["bin/bash", "--target=linux-aarch64"]) == [
        "bin/bash(target=linux-aarch64)"]
    # before any package, a flag of the (ephemeral) realm: on every package, under its own
    assert lex_packages(["--target=linux-aarch64", "+bin/bash", "bin/x(y=1)", "--k",
                         "--target=linux-riscv64"]) == [
        "bin/bash(target=linux-aarch64)", "bin/x(k=1,target=linux-riscv64,y=1)"]


def test_package_words_name_another_realm_by_a_bare_word() -> None:
    assert lex_packages(["bin/a", "work", "bin/b"]) == ["bin/a", "bin/b(target_realm=work)"]
    assert lex_packages(["work", "bin/b(target_realm=x)"]) == ["bin/b(target_realm=x)"]


def test_package_words_remove_what_they_added_and_nothing_else() -> None:
    assert lex_packages(["bin/a", "--k=1", "--k=-", "bin/b", "-bin/a"]) == ["bin/b"]
    with pytest.raises(NotInRealm, match="bin/a is not in realm ephemeral"):
        lex_packages(["-bin/a"])
    with pytest.raises(UsageError, match="no package"):
        lex_packages(["--target=linux-aarch64"])


@pytest.mark.parametrize(("words", "error"), [
    (["bin/bash", "--target=mars"], BadFlag),
    (["bin/bash", "--kind=lib"], BadFlag),
    (["bin/bash", "--a b"], UsageError),
    (["+nopackage"], UsageError),
])
def test_package_words_are_checked_as_mut_words(words: list[str], error: type) -> None:
    with pytest.raises(error):
        lex_packages(words)


def test_embed_flags_carry_a_file_in_base64(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"ssh-ed25519 AAAA12")  # 18 bytes: base64 without `=`
    read: list[str] = []

    def reader(path: str) -> bytes:
        read.append(path)
        return Path(path).read_bytes()

    words = expand_embeds(["bin/x", f"--embed:pub={key}", "--", f"--embed:z={key}"], reader)
    assert words == ["bin/x", f"--pub={base64.b64encode(b'ssh-ed25519 AAAA12').decode()}", "--",
                     f"--embed:z={key}"]
    assert read == [str(key)]  # not the command's own words after --
    with pytest.raises(UsageError, match="cannot read"):
        expand_embeds([f"--embed:k={tmp_path / 'missing'}"], reader)
    with pytest.raises(UsageError, match="--embed:k=FILE"):
        expand_embeds(["--embed:k"], reader)
    # the value is a client flag like any other: base64's `=` is outside the charset
    key.write_bytes(b"x")
    with pytest.raises(BadFlag, match=r"--embed:k=.*in base64 cannot be a flag"):
        expand_embeds(["bin/x", f"--embed:k={key}"], reader)
