"""The binary cache's pure parts: index format, signatures, archive member checks, the plan
narrowed by cache hits; and archives packed and unpacked on a real folder cache."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ixd.cache import archive as cachearchive
from ixd.cache import format as fmt
from ixd.cache.binarycache import BinaryCache
from ixd.cache.stores import DirectoryStore, open_store
from ixd.cache.substitute import load_trusted_keys, narrow_plan
from ixd.model.nodes import Node, Plan
from ixd.wire.errors import (
    CacheArchiveMissing,
    CacheBadUrl,
    CacheFormatError,
    CacheHashMismatch,
    CacheKeyError,
    CacheRefused,
    CacheSignatureInvalid,
)

STORE = "/ix/store"
UID = "0123456789abcdef0123456789abcdef"
DEP = "fedcba9876543210fedcba9876543210"


def _entry(**changes: object) -> fmt.Entry:
    values: dict[str, object] = dict(
        uid=UID, store_path=f"{STORE}/{UID}-bin-hello", file_hash="a" * 64, file_size=10,
        content_hash="b" * 64, content_size=20, references=(DEP,))
    values.update(changes)
    return fmt.Entry(**values)  # type: ignore[arg-type]


# --- index format ---------------------------------------------------------------------------


def test_an_index_parses_back_to_the_entry_it_was_made_from() -> None:
    key = fmt.generate_key("test-1")
    entry = fmt.sign(_entry(), key)
    text = entry.serialise()
    assert f"URL: nar/{'a' * 64}.tar.zst" in text
    assert fmt.parse_entry(UID, text, STORE) == entry


@pytest.mark.parametrize(("change", "needle"), [
    (lambda t: t.replace(f"StorePath: {STORE}/{UID}", f"StorePath: /elsewhere/{UID}"),
     "StorePath"),
    (lambda t: t.replace(f"StorePath: {STORE}/{UID}", f"StorePath: {STORE}/{DEP}"),
     "StorePath"),
    (lambda t: t.replace("Compression: zstd", "Compression: xz"), "compression"),
    (lambda t: t.replace(f"URL: nar/{'a' * 64}", f"URL: nar/{'c' * 64}"), "URL"),
    (lambda t: t.replace("FileSize: 10", "FileSize: -1"), "size"),
    (lambda t: t.replace("ContentHash: sha256:", "ContentHash: md5:"), "ContentHash"),
    (lambda t: t.replace(f"References: {DEP}", f"References: {UID}"), "References"),
    (lambda t: t.replace(f"References: {DEP}", "References: ../../etc"), "References"),
    (lambda t: t + "Deriver: x\n", "Deriver"),
    (lambda t: t + "FileSize: 11\n", "twice"),
    (lambda t: t.replace("FileSize: 10\n", ""), "lacks FileSize"),
])
def test_a_damaged_index_is_refused_naming_what_is_wrong(change: object, needle: str) -> None:
    text = change(_entry().serialise())  # type: ignore[operator]
    with pytest.raises(CacheFormatError, match=needle):
        fmt.parse_entry(UID, text, STORE)


def test_cache_info_round_trips_and_needs_a_store_dir() -> None:
    info = fmt.CacheInfo("/ix/store", 30)
    assert fmt.parse_info(info.serialise(), "x") == info
    with pytest.raises(CacheFormatError, match="StoreDir"):
        fmt.parse_info("Priority: 1\n", "x")


# --- signatures -----------------------------------------------------------------------------


def test_a_signature_by_a_trusted_key_verifies_and_any_change_breaks_it() -> None:
    key = fmt.generate_key("builder-1")
    trusted = {"builder-1": key.public()}
    signed = fmt.sign(_entry(), key)
    assert fmt.check_signature(signed, trusted, "c") == "builder-1"
    for changed in (_entry(content_hash="c" * 64), _entry(references=()),
                    _entry(file_size=11), _entry(store_path=f"{STORE}/{UID}-bin-other")):
        forged = fmt.Entry(changed.uid, changed.store_path, changed.file_hash,
                           changed.file_size, changed.content_hash, changed.content_size,
                           changed.references, signed.signatures)
        with pytest.raises(CacheSignatureInvalid, match="does not match"):
            fmt.check_signature(forged, trusted, "c")


def test_an_unknown_key_or_no_signature_is_refused_naming_the_keys() -> None:
    signed = fmt.sign(_entry(), fmt.generate_key("stranger"))
    trusted = {"builder-1": fmt.generate_key("builder-1").public()}
    with pytest.raises(CacheSignatureInvalid, match=r"stranger.*trusted: builder-1"):
        fmt.check_signature(signed, trusted, "c")
    with pytest.raises(CacheSignatureInvalid, match="no key"):
        fmt.check_signature(_entry(), trusted, "c")


def test_a_key_of_the_trusted_name_but_other_bytes_does_not_verify() -> None:
    impostor = fmt.sign(_entry(), fmt.generate_key("builder-1"))
    trusted = {"builder-1": fmt.generate_key("builder-1").public()}
    with pytest.raises(CacheSignatureInvalid):
        fmt.check_signature(impostor, trusted, "c")


def test_keys_round_trip_as_text_and_bad_ones_are_refused(tmp_path: Path) -> None:
    key = fmt.generate_key("k-1")
    again = fmt.parse_secret_key(key.serialise(), "secret")
    assert again.public().serialise() == key.public().serialise()
    public_file = tmp_path / "k.public"
    public_file.write_text(key.public().serialise())
    inline = key.public().serialise().strip()
    assert set(load_trusted_keys([str(public_file), inline])) == {"k-1"}
    for bad in ("nocolon", "k-1:!!!", "k-1:" + "QUFB", "bad name:QUFB"):
        with pytest.raises(CacheKeyError):
            fmt.parse_public_key(bad, "x")


# --- narrowing a plan -----------------------------------------------------------------------


def _node(uid: str, deps: tuple[str, ...] = (), kind: str = "build") -> Node:
    return Node(uid=uid, kind=kind, name=uid, deps=deps, inputs=(),  # type: ignore[arg-type]
                outputs=(f"{STORE}/{uid}-bin-{uid}",))


def test_a_hit_needs_only_its_references_not_its_build_inputs() -> None:
    # toolchain <- lib <- app; realm needs app and lib; app and lib are in a cache
    plan = Plan((_node("src", kind="fetch"), _node("tool", ("src",)), _node("lib", ("tool",)),
                 _node("app", ("tool", "lib")), _node("rlm", ("app", "lib"), kind="realm")),
                ("rlm",))
    narrowed = narrow_plan(plan, {"app": ("lib",), "lib": ()}, lambda n: False)
    kinds = {n.uid: (n.kind, n.deps) for n in narrowed.nodes}
    assert kinds == {"lib": ("substitute", ()), "app": ("substitute", ("lib",)),
                     "rlm": ("realm", ("app", "lib"))}


def test_a_miss_keeps_its_inputs_and_a_hit_with_unknown_references_is_built() -> None:
    plan = Plan((_node("tool"), _node("lib", ("tool",)), _node("app", ("lib",))), ("app",))
    narrowed = narrow_plan(plan, {"app": ("elsewhere",)}, lambda n: n.uid == "tool")
    assert [(n.uid, n.kind) for n in narrowed.nodes] == [
        ("tool", "build"), ("lib", "build"), ("app", "build")]
    assert narrow_plan(plan, {}, lambda n: False) == plan


# --- a folder cache: pack, publish, look up, download, unpack -------------------------------


def _tree(top: Path) -> Path:
    (top / "bin").mkdir(parents=True)
    (top / "bin" / "hello").write_bytes(b"#!/bin/sh\necho hi\n")
    (top / "bin" / "hello").chmod(0o555)
    (top / "share").mkdir()
    (top / "share" / "doc").write_text(f"see {STORE}/{DEP}-lib-c/include\n")
    os.symlink("../bin/hello", top / "share" / "hi")
    return top


def test_an_entry_goes_through_a_folder_cache_and_tar_unpacks_the_same_tree(
        tmp_path: Path) -> None:
    from ixd.store.treehash import tree_hash

    entry_dir = _tree(tmp_path / f"{UID}-bin-hello")
    archive = tmp_path / "a.tar.zst"
    packed = cachearchive.pack(entry_dir, archive)
    assert cachearchive.pack(entry_dir, tmp_path / "b.tar.zst") == packed  # reproducible
    assert cachearchive.scan_references(entry_dir, STORE, {DEP, UID}, UID) == (DEP,)
    key = fmt.generate_key("k")
    cache = BinaryCache(open_store(f"file://{tmp_path}/cache"), STORE, {"k": key.public()},
                        key)
    cache.ensure_info()
    entry = fmt.Entry(UID, f"{STORE}/{UID}-bin-hello", packed.file_hash, packed.file_size,
                      tree_hash(entry_dir), packed.content_size, (DEP,))
    cache.publish(entry, archive)
    reader = BinaryCache(DirectoryStore("r", tmp_path / "cache"), STORE, {"k": key.public()})
    found = reader.lookup([UID, DEP])
    assert list(found) == [UID]
    fetched = tmp_path / "fetched"
    with open(fetched, "wb") as handle:
        reader.download(found[UID], handle)
    out = tmp_path / "out"
    out.mkdir()
    # GNU tar reads it as ixd's sandboxed unpack does (tests/test_unpack.py runs that)
    subprocess.run(["tar", "--zstd", "-x", "-f", str(fetched), "-C", str(out)], check=True)
    assert tree_hash(out) == tree_hash(entry_dir)
    assert os.readlink(out / "share" / "hi") == "../bin/hello"

    (tmp_path / "cache" / entry.url).write_bytes(b"x" * packed.file_size)
    with pytest.raises(CacheHashMismatch, match="tampered"), open(fetched, "wb") as handle:
        reader.download(found[UID], handle)
    (tmp_path / "cache" / entry.url).unlink()
    with pytest.raises(CacheArchiveMissing, match="missing"), open(fetched, "wb") as handle:
        reader.download(found[UID], handle)


def test_a_cache_of_another_store_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / fmt.INFO_KEY).write_text(fmt.CacheInfo("/nix/store").serialise())
    cache = BinaryCache(DirectoryStore("c", tmp_path), STORE, {})
    with pytest.raises(CacheRefused, match="/nix/store"):
        cache.lookup([UID])


def test_bad_cache_urls_say_what_is_expected() -> None:
    for url in ("http://x/y", "s3:///nobucket", "s3://b/p?endpont=x", "file://host/x",
                "s3://b?timeout=soon", "s3://b/p?endpoint=nohost"):
        with pytest.raises(CacheBadUrl):
            open_store(url)


def test_a_big_batch_lists_the_indexes_and_reads_only_those_there(tmp_path: Path) -> None:
    key = fmt.generate_key("k")
    store = DirectoryStore("c", tmp_path)
    uids = [f"{n:032x}" for n in range(200)]
    for uid in uids[:3]:
        entry = fmt.Entry(uid, f"{STORE}/{uid}-bin-x", "0" * 64, 0, "0" * 64, 0)
        store.put(fmt.index_key(uid), fmt.sign(entry, key).serialise().encode())
    read: list[str] = []
    get = store.get
    store.get = lambda k, m: read.append(k) or get(k, m)  # type: ignore[method-assign]
    reader = BinaryCache(store, STORE, {"k": key.public()})
    assert sorted(reader.lookup(uids)) == uids[:3]
    assert sorted(read) == sorted([fmt.INFO_KEY, *(fmt.index_key(u) for u in uids[:3])])
    read.clear()
    assert sorted(reader.lookup(uids)) == uids[:3]  # hits kept, misses believed for a while
    assert read == []
