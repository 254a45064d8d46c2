"""Cache archives unpacked as build nodes: by tar, as a build user, in the sandbox; only the
signed tree reaches the store."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from ixd.cache.unpack import unpack_limits, unpack_node
from ixd.model.layout import Layout
from ixd.store.builder import BuildLimits
from ixd.store.canonical import canonicalise
from ixd.store.scratch import ContentMismatch
from ixd.store.treehash import tree_hash
from ixd.wire.errors import BuildFailed, BuildLimitExceeded
from tests.test_builder import assert_cleaned_up, build, layout, needs_bwrap

__all__ = ["layout"]  # the fixture

pytestmark = needs_bwrap
UID = "0123456789abcdef0123456789abcdef"
#: the tar stream an unpack reads at most (the runner gives it the unpack's output bound)
MAX_STREAM = 1 << 30


def entry_tree(top: Path) -> Path:
    """A store entry as a builder makes one: files, a program, a link, a folder."""
    tree = top / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    (tree / "bin" / "hello").chmod(0o755)
    (tree / "share").mkdir()
    (tree / "share" / "data").write_bytes(bytes(range(256)) * 64)
    (tree / "bin" / "hi").symlink_to("hello")
    return tree


def seed_archive(layout: Layout, data: bytes) -> str:
    """Put `data` in the source cache (where a download lands once its hash checks out)."""
    sha = hashlib.sha256(data).hexdigest()
    layout.source_path(sha).write_bytes(data)
    return sha


def zstd(tar: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=tar, capture_output=True,
                          check=True).stdout


def pack(tree: Path) -> bytes:
    return subprocess.run(["tar", "--zstd", "-c", "-f", "-", "-C", str(tree), "."],
                          capture_output=True, check=True).stdout


def canonical_hash(tree: Path, top: Path) -> str:
    copy = top / "canonical"
    shutil.copytree(tree, copy, symlinks=True)
    canonicalise(copy)
    return tree_hash(copy)


def store_path(layout: Layout) -> Path:
    return layout.store_dir(UID, "bin", "hello")


async def test_an_archive_unpacks_to_the_signed_tree(layout: Layout, tmp_path: Path) -> None:
    tree = entry_tree(tmp_path)
    expected = canonical_hash(tree, tmp_path)
    sha = seed_archive(layout, pack(tree))
    node = unpack_node(UID, "bin/hello", store_path(layout), sha, "s3://c/nar/x.tar.zst",
                       MAX_STREAM)
    built = await build(node, layout, confine=True, expect_hash=expected)
    out = store_path(layout)
    assert built.content_hash == expected == tree_hash(out)
    assert (out / "bin" / "hello").read_text() == "#!/bin/sh\necho hello\n"
    assert os.readlink(out / "bin" / "hi") == "hello"
    assert os.stat(out / "bin" / "hello").st_mode & 0o7777 == 0o555
    assert os.stat(out / "share" / "data").st_uid == 0  # canonical: root's, read-only


async def test_an_archive_of_other_content_never_reaches_the_store(layout: Layout,
                                                                   tmp_path: Path) -> None:
    tree = entry_tree(tmp_path)
    expected = canonical_hash(tree, tmp_path)
    (tree / "share" / "data").write_bytes(b"not what was signed")
    sha = seed_archive(layout, pack(tree))
    node = unpack_node(UID, "bin/hello", store_path(layout), sha, "s3://c/nar/x.tar.zst",
                       MAX_STREAM)
    with pytest.raises(BuildFailed, match="not the expected") as info:
        await build(node, layout, confine=True, expect_hash=expected)
    assert isinstance(info.value.__cause__, ContentMismatch)
    assert_cleaned_up(layout, node)


def hostile_tar() -> bytes:
    """Members that try to leave the entry: `..`, an absolute path, a file through a link
    to a folder outside, a setuid file and a device node."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name: str, data: bytes = b"x", **fields: object) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in fields.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)

        add("./ok", b"fine")
        add("../escape-ix-test")
        add("/tmp/absolute-ix-test")
        add("./up", type=tarfile.SYMTYPE, linkname="../..")
        add("./up/through-link-ix-test")
        add("./suid", mode=0o4755)
        add("./null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
    return buffer.getvalue()


async def test_a_hostile_archive_writes_nothing_outside_and_is_refused(
        layout: Layout, tmp_path: Path) -> None:
    sha = seed_archive(layout, zstd(hostile_tar()))
    node = unpack_node(UID, "bin/hello", store_path(layout), sha, "s3://c/nar/x.tar.zst",
                       MAX_STREAM)
    with pytest.raises(BuildFailed):
        # whatever tar made of it, it is not the tree of this hash
        await build(node, layout, confine=True, expect_hash="sha256:" + "0" * 64)
    assert_cleaned_up(layout, node)
    assert escaped(layout.root.parent) == []


def escaped(top: Path) -> list[str]:
    """What of the hostile archive's members landed outside the build's output."""
    found = [str(p) for name in ("escape-ix-test", "through-link-ix-test")
             for p in top.rglob(name)]
    return found + [p for p in ["/tmp/absolute-ix-test"] if os.path.lexists(p)]


async def test_a_compression_bomb_stops_at_what_the_index_names(layout: Layout) -> None:
    big = io.BytesIO()
    with tarfile.open(fileobj=big, mode="w") as tar:
        info = tarfile.TarInfo("./zeros")
        info.size = 200 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    archive = zstd(big.getvalue())
    assert len(archive) < 1 << 20
    sha = seed_archive(layout, archive)
    limits = unpack_limits(BuildLimits(), content_size=10)
    node = unpack_node(UID, "bin/hello", store_path(layout), sha, "s3://c/nar/x.tar.zst",
                       limits.max_output_size)
    assert limits.max_output_size == 20 + (64 << 20)
    with pytest.raises(BuildLimitExceeded, match="--max-output-size") as info:
        await build(node, layout, confine=True, limits=limits,
                    expect_hash="sha256:" + "0" * 64)
    assert info.value.code == "E_BUILD_LIMIT"
    # the stream is cut at the bound, and no file may be larger: a few blocks of folders past
    assert held(info.value.message) <= 1.01 * limits.max_output_size
    assert_cleaned_up(layout, node)


def held(message: str) -> int:
    """The bytes a build killed for its output held when it stopped (its error says)."""
    found = re.search(r"(?:it held|wrote) (\d+) bytes", message)
    assert found, message
    return int(found.group(1)) if "it held" not in message else int(
        re.search(r"it held (\d+) bytes", message).group(1))  # type: ignore[union-attr]


async def test_a_bomb_of_many_files_stops_within_a_quarter_past_the_bound(
        layout: Layout) -> None:
    """Issue 21, row 7 of the first table: a zstd bomb that fills the disk in many files of
    zeros, each below the bound, is stopped at most 1.25 times past it."""
    big = io.BytesIO()
    with tarfile.open(fileobj=big, mode="w") as tar:
        for n in range(64):
            info = tarfile.TarInfo(f"./zeros{n}")
            info.size = 8 << 20
            tar.addfile(info, io.BytesIO(bytes(info.size)))
    archive = zstd(big.getvalue())
    assert len(archive) < 1 << 20  # 512 MiB in under one
    sha = seed_archive(layout, archive)
    limits = unpack_limits(BuildLimits(), content_size=10)
    node = unpack_node(UID, "bin/hello", store_path(layout), sha, "s3://c/nar/x.tar.zst",
                       limits.max_output_size)
    with pytest.raises(BuildLimitExceeded, match="--max-output-size") as info:
        await build(node, layout, confine=True, limits=limits,
                    expect_hash="sha256:" + "0" * 64)
    assert held(info.value.message) <= 1.25 * limits.max_output_size, info.value.message
    assert_cleaned_up(layout, node)
