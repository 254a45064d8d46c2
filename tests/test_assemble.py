"""Realm assembly and switching, in-process, on made-up store entries."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ixd.model.nodes import Node
from ixd.store.assemble import assemble_realm, realm_env, switch_realm_link
from ixd.wire.errors import RealmError, StaticPolicyViolation


def package(store: Path, name: str, files: dict[str, str]) -> str:
    """A store entry holding `files` (path -> text)."""
    top = store / name
    for rel, text in files.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(text)
    top.mkdir(exist_ok=True)
    return str(top)


def realm_node(store: Path, inputs: list[str], **meta: object) -> Node:
    return Node(uid="r1", kind="realm", name="realm work", deps=(), inputs=tuple(inputs),
                outputs=(str(store / "r1-realm-work"),), meta={"realm": "work", **meta})


def test_every_file_is_linked_and_the_first_package_wins(tmp_path: Path) -> None:
    a = package(tmp_path, "a-bin-a", {"bin/tool": "a's tool", "share/a/doc": "a",
                                     "env": "export A=1\n", "meta.json": "{}"})
    b = package(tmp_path, "b-bin-b", {"bin/tool": "b's tool", "bin/other": "b",
                                     "share/a/doc": "b", "env": "export B=1\n"})
    node = realm_node(tmp_path, [a, b])
    assemble_realm(node)
    out = Path(node.outputs[0])
    assert os.readlink(out / "bin" / "tool") == f"{a}/bin/tool"
    assert os.readlink(out / "bin" / "other") == f"{b}/bin/other"
    assert os.readlink(out / "share" / "a" / "doc") == f"{a}/share/a/doc"
    assert not (out / "bin").is_symlink()  # folders are merged, not linked
    # a package's own env and meta.json are not the realm's
    meta = json.loads((out / "meta.json").read_text())
    assert meta == {"realm": "work", "store_dirs": [a, b], "uid": "r1"}
    assert (out / "env").read_text() == realm_env(out, [a, b])
    # canonical: nothing in it may be written any more
    assert all(not p.lstat().st_mode & 0o222 for p in [out, *out.rglob("*")]
               if not p.is_symlink())


def test_a_file_of_an_earlier_package_wins_over_a_folder_of_a_later(tmp_path: Path) -> None:
    a = package(tmp_path, "a-bin-a", {"lib/thing": "a file"})
    b = package(tmp_path, "b-bin-b", {"lib/thing/inside": "b", "lib/kept": "b"})
    node = realm_node(tmp_path, [a, b])
    assemble_realm(node)
    out = Path(node.outputs[0])
    assert os.readlink(out / "lib" / "thing") == f"{a}/lib/thing"
    assert os.readlink(out / "lib" / "kept") == f"{b}/lib/kept"


def test_a_symlinked_folder_is_linked_like_a_file(tmp_path: Path) -> None:
    a = package(tmp_path, "a-bin-a", {"share/real/x": "x"})
    os.symlink("real", Path(a) / "share" / "alias")
    node = realm_node(tmp_path, [a])
    assemble_realm(node)
    out = Path(node.outputs[0])
    assert os.readlink(out / "share" / "alias") == f"{a}/share/alias"
    assert (out / "share" / "alias" / "x").read_text() == "x"


def test_the_env_sources_packages_back_to_front_after_the_realms_bin(tmp_path: Path) -> None:
    a = package(tmp_path, "a-bin-a", {"env": "export A=1\n"})
    b = package(tmp_path, "b-bin-b", {"bin/b": "no env here"})
    c = package(tmp_path, "c-bin-c", {"env": "export C=1\n"})
    text = realm_env(tmp_path / "realm", [a, b, c])
    assert text.splitlines()[1:] == [
        f'export IX_REALM="{tmp_path}/realm"',
        f'. "{c}/env"',
        f'. "{a}/env"',
        f'export PATH="{tmp_path}/realm/bin:${{PATH:-/usr/bin:/bin}}"',
    ]


def test_a_dynamically_linked_program_is_refused_unless_allowed(tmp_path: Path) -> None:
    dynamic = package(tmp_path, "d-bin-dyn", {})
    (Path(dynamic) / "bin").mkdir()
    shutil.copy("/bin/true", Path(dynamic) / "bin" / "true")  # Debian's: dynamic
    node = realm_node(tmp_path, [dynamic])
    with pytest.raises(StaticPolicyViolation, match="dynamically linked") as refused:
        assemble_realm(node)
    assert f"{dynamic}/bin/true" in str(refused.value)
    assert not os.path.lexists(node.outputs[0])  # nothing half made is left

    allowed = realm_node(tmp_path, [dynamic], allow_dynamic=[dynamic])
    assemble_realm(allowed)
    assert os.readlink(Path(allowed.outputs[0]) / "bin" / "true") == f"{dynamic}/bin/true"


def test_switching_a_realm_link_is_one_rename_and_a_no_op_when_unchanged(
        tmp_path: Path) -> None:
    store, realms = tmp_path / "store", tmp_path / "realm"
    one, two = store / "r1-realm-work", store / "r2-realm-work"
    one.mkdir(parents=True)
    two.mkdir()
    link = realms / "work"
    switch_realm_link(link, one)
    assert os.readlink(link) == "../store/r1-realm-work"
    switch_realm_link(link, two)
    assert os.readlink(link) == "../store/r2-realm-work"
    before = link.lstat().st_ino
    switch_realm_link(link, two)
    assert link.lstat().st_ino == before  # unchanged: not written again
    assert os.listdir(realms) == ["work"]  # no temporary link left behind
    with pytest.raises(RealmError, match="not a store entry"):
        switch_realm_link(link, store / "r3-realm-work")
    assert os.readlink(link) == "../store/r2-realm-work"
