"""Package names, selectors, flags and how flags pass along dependency edges."""

from __future__ import annotations

import shlex
import string
import subprocess
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ixd.model import platforms
from ixd.model.selector import (
    ENGINE_NAMES,
    FLAG_VALUE_CHARS,
    ONE_LEVEL_FLAGS,
    EdgeKind,
    Selector,
    check_client_flags,
    child_flags,
    kind_of,
    merge_flags,
    normalize_flags,
    parse_selector,
    validate_flag_key,
    validate_flag_value,
    validate_package_name,
    validate_realm_name,
)
from ixd.wire.errors import BadFlag, BadName, BadRealmName

# --- strategies ----------------------------------------------------------------------------

_NAME_CHARS = string.ascii_letters + string.digits + "_.+-"
_components = st.text(alphabet=_NAME_CHARS, min_size=1, max_size=12).filter(
    lambda part: part not in (".", "..")
)
package_names = (
    st.lists(_components, min_size=1, max_size=4)
    .map("/".join)
    .filter(lambda name: name[0] in string.ascii_letters + string.digits + "_" and len(name) <= 200)
)
flag_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
flag_values = st.text(alphabet=sorted(FLAG_VALUE_CHARS), max_size=12)
flag_maps = st.dictionaries(flag_keys, flag_values, max_size=5)
selectors = st.builds(
    lambda name, flags: Selector(name, tuple(flags.items())), package_names, flag_maps
)


# --- package names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["bin/hello", "bin/foo/t.sh", "lib/c++", "bld/python/3.11", "a", "set/x_y-z", "0/a.b+c"],
)
def test_valid_package_names_are_returned(name: str) -> None:
    assert validate_package_name(name) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "empty"),
        ("bin/../etc", "'..' path component"),
        ("..", "'..' path component"),
        ("bin/..", "'..' path component"),
        ("bin/./x", "'.' path component"),
        ("/bin/hello", "starts with '/'"),
        ("bin//hello", "contains '//'"),
        ("bin/hello/", "ends with '/'"),
        ("bin/hel lo", "contains ' '"),
        ("bin/hello;rm", "contains ';'"),
        ("bin/h\u00e9llo", "contains"),
        ("bin/hello\n", "contains '\\n'"),
        ("bin/x(k=v)", "contains '('"),
        ("-bin/x", "must start with"),
        ("+bin/x", "must start with"),
        (".bin/x", "must start with"),
    ],
)
def test_bad_package_names_are_refused_with_value_and_rule(name: str, rule: str) -> None:
    with pytest.raises(BadName) as info:
        validate_package_name(name)
    assert rule in info.value.message
    if name:
        assert repr(name) in info.value.message
    assert info.value.code == "E_BAD_NAME"


def test_package_name_length_limit() -> None:
    name = "bin/" + "x" * 196
    assert validate_package_name(name) == name
    with pytest.raises(BadName, match="201 characters long; the limit is 200"):
        validate_package_name(name + "x")


def test_package_name_must_be_a_string() -> None:
    with pytest.raises(BadName, match="not a string"):
        validate_package_name(42)  # type: ignore[arg-type]


# --- realm names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "_x", "0day", "a.b-c_d", "A", "x" * 64])
def test_valid_realm_names(name: str) -> None:
    assert validate_realm_name(name) == name


@pytest.mark.parametrize("name", ["", ".alice", "-alice", "al ice", "a/b", "a+b", "é", "x" * 65])
def test_bad_realm_names(name: str) -> None:
    with pytest.raises(BadRealmName) as info:
        validate_realm_name(name)
    assert repr(name[:40]) in info.value.message
    assert info.value.code == "E_BAD_REALM_NAME"


@pytest.mark.parametrize("name", ["uid0", "uid1001", "uid4294967295"])
def test_realm_names_standing_for_a_uid_are_refused(name: str) -> None:
    with pytest.raises(BadRealmName, match="a realm is an account's only through its login"):
        validate_realm_name(name)


@pytest.mark.parametrize("name", ["uid", "uidx", "uid1a", "Uid12", "xuid12", "uid-1"])
def test_names_merely_like_a_uid_are_realm_names(name: str) -> None:
    assert validate_realm_name(name) == name


# --- flags ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["k", "_", "opt_2", "K9", "show_script"])
def test_valid_flag_keys(key: str) -> None:
    assert validate_flag_key(key) == key


@pytest.mark.parametrize("key", ["", "9k", "-k", "a-b", "a.b", "k=v", "a b", "é"])
def test_bad_flag_keys(key: str) -> None:
    with pytest.raises(BadName, match="flag name") as info:
        validate_flag_key(key)
    assert repr(key) in info.value.message


@pytest.mark.parametrize(
    "value",
    ["", "1", "/usr/local", "-", "a+b", "-O2", "user@host:/x", "50%", "1.2.3_rc-1", "x" * 256],
)
def test_valid_flag_values(value: str) -> None:
    assert validate_flag_value(value) == value


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("a,b", "','"),
        ("a(", r"'\('"),
        (")", r"'\)'"),
        ("a=b", "'='"),
        ("x y", "' '"),
        (" a", "' '"),
        ("é", "'é'"),
        ("a+b;c", "';'"),
        ('x";touch /tmp/pwned;echo "y', "'\"'"),
        ("$(id)", r"'\$'"),
        ("`id`", "'`'"),
        ("a'b", '"\'"'),
        ("~root", "'~'"),
        ("a*", r"'\*'"),
        ("a\\b", r"'\\\\'"),
        ("a\nb", r"'\\n'"),
        ("\x00", r"'\\x00'"),
        ("a\x7f", r"'\\x7f'"),
        ("a\u2028b", r"'\\u2028'"),
        ("a\t", r"'\\t'"),
        ("a\u00a0", r"'\\xa0'"),
    ],
)
def test_bad_flag_values_name_the_flag_and_the_character(value: str, bad: str) -> None:
    with pytest.raises(BadFlag, match=f"contains {bad}; a flag value may hold only") as info:
        validate_flag_value(value, "opt")
    assert "'opt'" in info.value.message
    assert info.value.code == "E_BAD_FLAG"
    assert isinstance(info.value, BadName)  # handled wherever bad names are


def test_flag_values_have_a_length_limit() -> None:
    with pytest.raises(BadFlag, match="257 characters long; the limit is 256") as info:
        validate_flag_value("x" * 257, "opt")
    assert "'opt'" in info.value.message


@given(st.text(max_size=20))
def test_every_accepted_value_is_a_plain_shell_word(value: str) -> None:
    """Whatever gets through needs no quoting anywhere in a shell script."""
    try:
        validate_flag_value(value)
    except BadFlag:
        assert set(value) - FLAG_VALUE_CHARS or len(value) > 256
        return
    assert value == "" or shlex.quote(value) == value


def test_a_raw_flag_in_a_script_stays_one_literal_word() -> None:
    value = validate_flag_value("a-b_c.d+e:f/g@h%i")
    for script in (f"printf '%s|' {value}", f'printf "%s|" "{value}"'):
        ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
        assert ran.stdout == f"{value}|"


# --- flags a client may set ----------------------------------------------------------------


def test_engine_names_are_what_every_render_context_sets() -> None:
    assert {"host", "target", "name", "basename", "uniq_id", "native", "tool", "kind",
            "host_versions", "bin", "lib", "aux", "set", "linux", "x86_64",
            "aarch64"} <= ENGINE_NAMES


@pytest.mark.parametrize("key", sorted(ENGINE_NAMES - {"target", "host"}))
def test_clients_cannot_set_engine_names(key: str) -> None:
    with pytest.raises(BadFlag, match=f"flag {key!r} cannot be set") as info:
        check_client_flags([("opt", "1"), (key, "1")])
    assert info.value.code == "E_BAD_FLAG"


@pytest.mark.parametrize("key", ["target", "host"])
def test_target_and_host_only_name_known_platforms(key: str) -> None:
    for good in ("host", *platforms.KNOWN):
        check_client_flags([(key, good)])
    with pytest.raises(BadFlag, match=r"known platforms: host .*linux-x86_64") as info:
        check_client_flags([(key, "linux-vax")])
    assert f"{key}='linux-vax'" in info.value.message


def test_other_flags_are_a_clients_to_set() -> None:
    check_client_flags([("shout", "1"), ("cc", "clang"), ("greeting", "Howdy"), ("kinds", "")])


def test_normalize_flags_sorts_and_refuses_duplicates() -> None:
    assert normalize_flags({"b": "1", "a": "2"}) == (("a", "2"), ("b", "1"))
    assert normalize_flags([("b", "1"), ("a", "2")]) == (("a", "2"), ("b", "1"))
    with pytest.raises(BadName, match="given twice"):
        normalize_flags([("a", "1"), ("a", "2")])
    with pytest.raises(BadName, match="flag name"):
        normalize_flags({"a-b": "1"})
    with pytest.raises(BadName, match="pair"):
        normalize_flags([("a", "1", "2")])  # type: ignore[list-item]


def test_merge_flags_later_layer_wins() -> None:
    assert merge_flags({"a": "1", "b": "1"}, (("b", "2"),), {"c": "3"}) == {
        "a": "1",
        "b": "2",
        "c": "3",
    }


# --- selectors -----------------------------------------------------------------------------


def test_selector_sorts_flags_and_validates() -> None:
    selector = Selector("bin/x", (("z", "1"), ("a", "2")))
    assert selector.flags == (("a", "2"), ("z", "1"))
    assert selector == Selector("bin/x", (("a", "2"), ("z", "1")))
    assert hash(selector) == hash(Selector("bin/x", (("a", "2"), ("z", "1"))))
    assert selector.flags_dict == {"a": "2", "z": "1"}
    with pytest.raises(BadName):
        Selector("bin/../x")
    with pytest.raises(BadName, match="given twice"):
        Selector("bin/x", (("a", "1"), ("a", "2")))
    with pytest.raises(BadFlag, match=r"contains ','"):
        Selector("bin/x", (("a", "1,2"),))


def test_selector_str() -> None:
    assert str(Selector("bin/x")) == "bin/x"
    assert str(Selector("bin/x", (("b", "2"), ("a", "")))) == "bin/x(a=,b=2)"


def test_with_flags_merges_on_top() -> None:
    base = Selector("bin/x", (("a", "1"), ("b", "1")))
    assert base.with_flags({"b": "2"}) == Selector("bin/x", (("a", "1"), ("b", "2")))
    assert base.with_flags(c="3") == Selector("bin/x", (("a", "1"), ("b", "1"), ("c", "3")))
    assert base.with_flags({"b": "2"}, b="3").flags_dict == {"a": "1", "b": "3"}
    assert base.with_flags() == base
    with pytest.raises(BadName):
        base.with_flags({"bad-key": "1"})


@pytest.mark.parametrize(
    ("text", "name", "flags"),
    [
        ("bin/x", "bin/x", {}),
        ("bin/x()", "bin/x", {}),
        ("bin/x(k=v)", "bin/x", {"k": "v"}),
        ("bin/x(b=2,a=1)", "bin/x", {"a": "1", "b": "2"}),
        ("bin/x(k)", "bin/x", {"k": "1"}),
        ("bin/x( k , j = v )", "bin/x", {"k": "1", "j": "v"}),
        ("bin/x(\tk\t,j=v )", "bin/x", {"k": "1", "j": "v"}),
        ("bin/x(k=1,k=2)", "bin/x", {"k": "2"}),
        ("bin/x(k=)", "bin/x", {"k": ""}),
        ("bin/x(prefix=/usr/local)", "bin/x", {"prefix": "/usr/local"}),
        ("bin/x(k=-O2,at=a@b:c)", "bin/x", {"k": "-O2", "at": "a@b:c"}),
    ],
)
def test_parse_selector(text: str, name: str, flags: dict[str, str]) -> None:
    selector = parse_selector(text)
    assert selector.name == name
    assert selector.flags_dict == flags


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bin/x(",
        "bin/x)",
        "bin/x(k=v",
        "bin/x(k=v))",
        "bin/x((k=v))",
        "bin/x(k=(v))",
        "bin/x(k=v)y",
        "bin/x(k=v)(j=w)",
        "(k=v)",
        "bin/x (k=v)",
        " bin/x",
        "bin/x(=v)",
        "bin/x(,)",
        "bin/x(k=v,)",
        "bin/x(a-b=1)",
        "bin/x(k=\n)",
        "bin/x(k=a\nb)",
        "bin/x(\nk)",
        "/bin/x",
        "bin/../x",
    ],
)
def test_parse_selector_refuses_garbage_naming_the_text(text: str) -> None:
    with pytest.raises(BadName) as info:
        parse_selector(text)
    assert repr(text) in info.value.message


@pytest.mark.parametrize("text", ["bin/x(k=a=b)", "bin/x(k=a b)",
                                  'bin/wave(wave_style=x";touch /tmp/pwned;echo "y)'])
def test_parse_selector_refuses_bad_flag_values_as_bad_flags(text: str) -> None:
    with pytest.raises(BadFlag) as info:
        parse_selector(text)
    assert repr(text) in info.value.message and "a flag value may hold only" in info.value.message


def test_parse_selector_refuses_non_strings() -> None:
    with pytest.raises(BadName, match="not a string"):
        parse_selector(["bin/x"])  # type: ignore[arg-type]


@given(selectors)
def test_str_parse_round_trip(selector: Selector) -> None:
    assert parse_selector(str(selector)) == selector


@given(package_names, st.lists(st.tuples(flag_keys, flag_values), max_size=6))
def test_parse_is_canonicalised_by_str(name: str, items: list[tuple[str, str]]) -> None:
    text = f"{name}({','.join(f'{k}={v}' for k, v in items)})" if items else name
    selector = parse_selector(text)
    assert selector.flags_dict == dict(items)
    assert str(parse_selector(str(selector))) == str(selector)


# --- kinds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("bin/hello", "bin"),
        ("bld/make", "bin"),
        ("etc/services/x", "bin"),
        ("lib/z", "lib"),
        ("aux/tzdata", "aux"),
        ("set/base", "set"),
        ("bin", "bin"),
        ("pip/pygments", "pip"),
        ("org/x/y", "org"),
    ],
)
def test_kind_of(name: str, kind: str) -> None:
    assert kind_of(name) == kind


def test_kind_of_refuses_an_empty_name() -> None:
    with pytest.raises(BadName, match="has no kind"):
        kind_of("")


def test_one_level_flags() -> None:
    assert (
        frozenset(
            {
                "setx",
                "help",
                "verbose",
                "stage",
                "rebuild",
                "nostrip",
                "show_script",
                "simulate_failure",
                "molot",
                "skipsrc_one",
            }
        )
        == ONE_LEVEL_FLAGS
    )


# --- flag propagation ----------------------------------------------------------------------

HOST = "linux-x86_64"
PARENT = {"target": "linux-aarch64", "opt": "1", "kind": "bin", "verbose": "1", "setx": "1"}


def _child(
    edge: EdgeKind, hub: bool = False, written: dict[str, str] | None = None, **kw: Any
) -> dict[str, str]:
    parent = kw.get("parent", PARENT)
    return child_flags(edge, parent, hub, written or {}, HOST)


@pytest.mark.parametrize("edge", ["target_lib", "lib_dep"])
@pytest.mark.parametrize("hub", [False, True])
def test_target_libraries_get_all_parent_flags_as_lib(edge: EdgeKind, hub: bool) -> None:
    assert _child(edge, hub) == {"target": "linux-aarch64", "opt": "1", "kind": "lib"}


def test_build_tool_of_buildable_parent_gets_only_host_target() -> None:
    assert _child("bld_tool") == {"target": HOST, "kind": "bin"}


def test_build_tool_of_hub_also_gets_the_hubs_flags() -> None:
    assert _child("bld_tool", hub=True) == {"target": HOST, "opt": "1", "kind": "bin"}


@pytest.mark.parametrize("hub", [False, True])
def test_host_library(hub: bool) -> None:
    assert _child("host_lib", hub) == {"target": HOST, "kind": "lib"}


@pytest.mark.parametrize("hub", [False, True])
def test_data(hub: bool) -> None:
    assert _child("data", hub) == {"target": HOST, "kind": "aux"}


def test_run_dep_of_buildable_parent_gets_only_its_target() -> None:
    assert _child("run_dep") == {"target": "linux-aarch64", "kind": "bin"}


def test_run_dep_of_buildable_parent_without_target_gets_none() -> None:
    assert _child("run_dep", parent={"opt": "1"}) == {"kind": "bin"}


def test_run_dep_of_hub_gets_all_the_hubs_flags() -> None:
    assert _child("run_dep", hub=True) == {"target": "linux-aarch64", "opt": "1", "kind": "bin"}


@pytest.mark.parametrize(
    "edge", ["target_lib", "lib_dep", "bld_tool", "host_lib", "data", "run_dep"]
)
@pytest.mark.parametrize("hub", [False, True])
def test_written_flags_win_and_one_level_flags_stay(edge: EdgeKind, hub: bool) -> None:
    written = {"kind": "aux", "target": "other", "opt": "9", "verbose": "2"}
    flags = _child(edge, hub, written)
    assert {k: flags[k] for k in written} == written
    assert "setx" not in flags
    assert "setx" in PARENT  # the parent's dict was not changed
    assert PARENT == {
        "target": "linux-aarch64",
        "opt": "1",
        "kind": "bin",
        "verbose": "1",
        "setx": "1",
    }


@given(
    st.sampled_from(["target_lib", "lib_dep", "bld_tool", "host_lib", "data", "run_dep"]),
    st.booleans(),
    st.dictionaries(st.sampled_from(sorted(ONE_LEVEL_FLAGS | {"a", "target"})), flag_values),
)
def test_one_level_flags_never_pass_on(edge: EdgeKind, hub: bool, parent: dict[str, str]) -> None:
    flags = child_flags(edge, parent, hub, {}, HOST)
    assert not ONE_LEVEL_FLAGS & flags.keys()
    assert flags["kind"] in ("lib", "bin", "aux")


def test_unknown_edge_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown edge"):
        child_flags("nope", {}, False, {}, HOST)  # type: ignore[arg-type]


def test_the_daemons_memo_of_client_selectors_stays_bounded_and_keeps_only_good_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-sent selector is parsed once (the memo), but clients cannot grow the memo past
    its bound, long texts are never kept, and a bad text is refused every time."""
    from ixd.model import selector as module

    memo: dict[str, Selector] = {}
    monkeypatch.setattr(module, "_client_selectors", memo)
    monkeypatch.setattr(module, "CLIENT_MEMO_MAX", 8)
    first = parse_selector("bin/x(a=1)")
    assert parse_selector("bin/x(a=1)") is first and memo == {"bin/x(a=1)": first}
    for n in range(20):
        assert parse_selector(f"bin/x(n={n})").flags == (("n", str(n)),)
        assert len(memo) <= 8
    long_text = f"bin/x(v={'y' * module.CLIENT_MEMO_TEXT})"
    assert parse_selector(long_text).name == "bin/x" and long_text not in memo
    for _ in range(2):
        with pytest.raises(BadName, match="unbalanced"):
            parse_selector("bin/x(a=1")
    # a recipe's selector (looser flag charset) is never answered from the client's memo
    assert parse_selector("bin/x(bins=a;b)", from_recipe=True).flags == (("bins", "a;b"),)
    with pytest.raises(BadFlag):
        parse_selector("bin/x(bins=a;b)")
