"""`ixc export`'s tarball (client/export.py) from a store laid out as ixd lays it out: what it
holds, that the same closure gives the same bytes, and what it refuses. (tests/test_cross.py
exports a real cross-built realm through ixd and runs it, unpacked, under qemu.)"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.export import write_export
from ixd.wire.errors import ExportError, UsageError

ENTRY = "0123456789abcdef0123456789abcdef-bin-hello"
REALM_ENTRY = "fedcba9876543210fedcba9876543210-rlm-xa"


def make_root(top: Path) -> dict[str, Any]:
    """A root with one package entry and a realm entry linking it, as `op export` names it."""
    root = top / "ix"
    package = root / "store" / ENTRY
    (package / "bin").mkdir(parents=True)
    (package / "bin" / "hello").write_bytes(b"\x7fELF program")
    (package / "bin" / "hello").chmod(0o555)
    (package / "env").write_text("export PATH\n")
    realm = root / "store" / REALM_ENTRY
    (realm / "bin").mkdir(parents=True)
    (realm / "bin" / "hello").symlink_to(package / "bin" / "hello")
    (root / "realm").mkdir()
    (root / "realm" / "xa").symlink_to(f"../store/{REALM_ENTRY}")
    for path in (package, realm, package / "bin", realm / "bin"):
        path.chmod(0o555)
    return {"realm": "xa", "generation": 1, "root": str(root),
            "link": str(root / "realm" / "xa"), "store_dirs": [str(realm), str(package)]}


@pytest.fixture
def answer(tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield make_root(tmp_path / "top")
    for top, folders, _files in os.walk(tmp_path):  # read-only, as the store: made writable
        for folder in folders:
            os.chmod(os.path.join(top, folder), 0o755)


@pytest.mark.parametrize("name", ["xa.tar", "xa.tar.gz", "xa.tgz", "xa.tar.xz"])
def test_the_same_closure_gives_the_same_bytes(tmp_path: Path, answer: dict[str, Any],
                                               name: str) -> None:
    first, second = tmp_path / "one" / name, tmp_path / "two" / name
    first.parent.mkdir()
    second.parent.mkdir()
    written = write_export(answer, str(first), io.BytesIO())
    assert written == {"realm": "xa", "file": str(first), "entries": 2, "files": 2,
                       "bytes": len(b"\x7fELF program") + len("export PATH\n")}
    os.utime(Path(answer["root"]) / "store" / ENTRY / "env", (12345, 12345))  # a touch
    write_export(answer, str(second), io.BytesIO())
    assert first.read_bytes() == second.read_bytes()
    assert [p.name for p in first.parent.iterdir()] == [name]  # nothing partial left


def test_it_holds_the_entries_and_the_realm_link_below_the_root(tmp_path: Path,
                                                                answer: dict[str, Any]) -> None:
    out = io.BytesIO()
    write_export(answer, "-", out)
    root = answer["root"].lstrip("/")
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = tar.getmembers()
        # in path order, from the root down (nothing above it: unpacking at / changes no
        # folder that is there already)
        assert [m.name for m in members] == [
            root, f"{root}/realm", f"{root}/store", f"{root}/realm/xa",
            f"{root}/store/{ENTRY}", f"{root}/store/{ENTRY}/bin",
            f"{root}/store/{ENTRY}/bin/hello", f"{root}/store/{ENTRY}/env",
            f"{root}/store/{REALM_ENTRY}", f"{root}/store/{REALM_ENTRY}/bin",
            f"{root}/store/{REALM_ENTRY}/bin/hello"]
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 1 for m in members)
        link = tar.getmember(f"{root}/realm/xa")
        assert link.issym() and link.linkname == f"../store/{REALM_ENTRY}"
        program = tar.getmember(f"{root}/store/{ENTRY}/bin/hello")
        assert program.mode == 0o555 and tar.extractfile(program).read() == b"\x7fELF program"
        into_store = tar.getmember(f"{root}/store/{REALM_ENTRY}/bin/hello")
        assert into_store.issym()
        assert into_store.linkname == f"{answer['root']}/store/{ENTRY}/bin/hello"
        assert tar.getmember(f"{root}/store/{ENTRY}").mode == 0o555


def test_what_cannot_be_written_or_read_is_an_error_that_leaves_nothing(
        tmp_path: Path, answer: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match=r"end it in \.tar, \.tar\.gz"):
        write_export(answer, str(tmp_path / "xa.zip"), io.BytesIO())
    with pytest.raises(ExportError, match=r"cannot write .*/no/such/folder/xa\.tar"):
        write_export(answer, str(tmp_path / "no" / "such" / "folder" / "xa.tar"), io.BytesIO())
    gone = {**answer, "store_dirs": [*answer["store_dirs"], answer["root"] + "/store/x-gone"]}
    with pytest.raises(ExportError, match="x-gone went away while it was exported") as info:
        write_export(gone, str(tmp_path / "xa.tar"), io.BytesIO())
    assert info.value.code == "E_EXPORT"
    assert list(tmp_path.iterdir()) == [tmp_path / "top"]  # no tarball, nothing partial
