"""The binary cache's format, pure: index entries, signing keys, archive member checks.

A cache holds `ix-cache-info` (the store dir its entries were built for, its priority), one
index file `<uid>.narinfo` per store entry and the entries' archives `nar/<sha256>.tar.zst`.
An index is `Key: value` lines (see docs/cache.md); its signature covers a fingerprint of
everything that decides what lands in the store (uid, path, both hashes and sizes,
references), so a signed index pins the archive's bytes and the unpacked tree's content hash.

Nothing here does I/O; `ixd.cache` moves the bytes, `ixd.cache.substitute` unpacks them.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ixd.wire.errors import CacheFormatError, CacheKeyError, CacheSignatureInvalid, MissingExtra

if TYPE_CHECKING:  # cryptography is the `cache` extra's: imported when a key is used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

INFO_KEY = "ix-cache-info"
INDEX_SUFFIX = ".narinfo"
ARCHIVE_PREFIX = "nar/"
ARCHIVE_SUFFIX = ".tar.zst"
COMPRESSION = "zstd"
#: what a signature signs starts with this: a signature of another format never verifies
FINGERPRINT_VERSION = "ix-cache-1"
#: an index file larger than this is refused unread
MAX_INDEX_BYTES = 64 * 1024
MAX_REFERENCES = 4096

_UID = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_INDEX_KEYS = ("StorePath", "URL", "Compression", "FileHash", "FileSize", "ContentHash",
               "ContentSize", "References", "Sig")


def index_key(uid: str) -> str:
    return f"{uid}{INDEX_SUFFIX}"


def archive_key(file_hash: str) -> str:
    return f"{ARCHIVE_PREFIX}{file_hash}{ARCHIVE_SUFFIX}"


def is_uid(text: str) -> bool:
    return bool(_UID.match(text))


# --- ix-cache-info -------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheInfo:
    #: the store folder every entry's path is under: a cache for another store is useless
    store_dir: str
    #: lower is asked first when a daemon has several caches (as Nix's Priority)
    priority: int = 50

    def serialise(self) -> str:
        return f"StoreDir: {self.store_dir}\nPriority: {self.priority}\n"


def parse_info(text: str, where: str) -> CacheInfo:
    fields = _fields(text, where, ("StoreDir", "Priority"))
    if "StoreDir" not in fields:
        raise CacheFormatError(f"{where}: no StoreDir line; the cache's ix-cache-info is "
                               f"damaged, push to it again or remove it")
    try:
        priority = int(fields.get("Priority", "50"))
    except ValueError:
        raise CacheFormatError(f"{where}: Priority {fields['Priority']!r} is not a "
                               f"number") from None
    return CacheInfo(fields["StoreDir"], priority)


# --- index entries -------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One store entry as a cache describes it."""

    uid: str
    store_path: str
    #: sha256 (hex) and bytes of the compressed archive
    file_hash: str
    file_size: int
    #: the unpacked tree's `ixd.store.treehash` (what `ixd verify` checks) and its bytes
    content_hash: str
    content_size: int
    #: uids of the store entries this one needs at run time (its paths appear in its files)
    references: tuple[str, ...] = ()
    #: `keyname:base64` signatures
    signatures: tuple[str, ...] = field(default=())

    @property
    def url(self) -> str:
        return archive_key(self.file_hash)

    def fingerprint(self) -> bytes:
        return ";".join([FINGERPRINT_VERSION, self.uid, self.store_path, self.file_hash,
                         str(self.file_size), self.content_hash, str(self.content_size),
                         ",".join(self.references)]).encode()

    def serialise(self) -> str:
        lines = [f"StorePath: {self.store_path}", f"URL: {self.url}",
                 f"Compression: {COMPRESSION}", f"FileHash: sha256:{self.file_hash}",
                 f"FileSize: {self.file_size}", f"ContentHash: sha256:{self.content_hash}",
                 f"ContentSize: {self.content_size}",
                 f"References: {' '.join(self.references)}"]
        lines += [f"Sig: {s}" for s in self.signatures]
        return "\n".join(lines) + "\n"


def parse_entry(uid: str, text: str, store_dir: str) -> Entry:
    """The index of `uid`; CacheFormatError naming what is wrong if it is not one.

    Strict: unknown or repeated keys, a path outside `store_dir` or of another uid, an archive
    URL other than the one its hash names are all refused."""
    where = index_key(uid)
    if not is_uid(uid):
        raise CacheFormatError(f"{uid!r} is not a store uid (32 hex digits)")
    if len(text) > MAX_INDEX_BYTES:
        raise CacheFormatError(f"{where} is {len(text)} bytes, more than an index may be")
    signatures = [line[5:].strip() for line in text.splitlines() if line.startswith("Sig:")]
    rest = "\n".join(line for line in text.splitlines() if not line.startswith("Sig:"))
    fields = _fields(rest, where, _INDEX_KEYS[:-1])
    missing = [k for k in _INDEX_KEYS[:-1] if k not in fields]
    if missing:
        raise CacheFormatError(f"{where} lacks {', '.join(missing)}; the entry is damaged")
    store_path = fields["StorePath"]
    if (posixpath.dirname(store_path) != store_dir.rstrip("/")
            or not posixpath.basename(store_path).startswith(f"{uid}-")
            or "\0" in store_path or posixpath.normpath(store_path) != store_path):
        raise CacheFormatError(f"{where}: StorePath {store_path!r} is not an entry of uid "
                               f"{uid} in the store {store_dir}")
    if fields["Compression"] != COMPRESSION:
        raise CacheFormatError(f"{where}: compression {fields['Compression']!r} is not "
                               f"{COMPRESSION}")
    file_hash = _sha256_field(fields["FileHash"], where, "FileHash")
    content_hash = _sha256_field(fields["ContentHash"], where, "ContentHash")
    if fields["URL"] != archive_key(file_hash):
        raise CacheFormatError(f"{where}: URL {fields['URL']!r} is not the archive of its "
                               f"FileHash ({archive_key(file_hash)})")
    references = tuple(fields["References"].split())
    bad = [r for r in references if not is_uid(r) or r == uid]
    if bad or len(references) > MAX_REFERENCES or len(set(references)) != len(references):
        raise CacheFormatError(f"{where}: bad References ({' '.join(bad) or 'repeated'})")
    return Entry(uid, store_path, file_hash, _size_field(fields["FileSize"], where),
                 content_hash, _size_field(fields["ContentSize"], where), references,
                 tuple(signatures))


def _fields(text: str, where: str, known: Iterable[str]) -> dict[str, str]:
    allowed = set(known)
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon or key not in allowed:
            raise CacheFormatError(f"{where} line {number}: {line[:80]!r} is not one of "
                                   f"{', '.join(sorted(allowed))}")
        if key in fields:
            raise CacheFormatError(f"{where} line {number}: {key} given twice")
        fields[key] = value.strip()
    return fields


def _sha256_field(value: str, where: str, name: str) -> str:
    digest = value.removeprefix("sha256:")
    if not value.startswith("sha256:") or not _SHA256.match(digest):
        raise CacheFormatError(f"{where}: {name} {value!r} is not sha256:<64 hex digits>")
    return digest


def _size_field(value: str, where: str) -> int:
    if not value.isdigit() or len(value) > 15:
        raise CacheFormatError(f"{where}: size {value!r} is not a number of bytes")
    return int(value)


# --- keys and signatures -------------------------------------------------------------------


@dataclass(frozen=True)
class SecretKey:
    name: str
    key: Ed25519PrivateKey

    def serialise(self) -> str:
        ser = _crypto().serialization
        raw = self.key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw,
                                     ser.NoEncryption())
        return f"{self.name}:{base64.b64encode(raw).decode()}\n"

    def public(self) -> PublicKey:
        return PublicKey(self.name, self.key.public_key())


@dataclass(frozen=True)
class PublicKey:
    name: str
    key: Ed25519PublicKey

    def serialise(self) -> str:
        ser = _crypto().serialization
        raw = self.key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
        return f"{self.name}:{base64.b64encode(raw).decode()}\n"


def generate_key(name: str) -> SecretKey:
    _check_key_name(name)
    return SecretKey(name, _crypto().ed25519.Ed25519PrivateKey.generate())


def parse_secret_key(text: str, where: str) -> SecretKey:
    name, raw = _key_parts(text, where)
    return SecretKey(name, _crypto().ed25519.Ed25519PrivateKey.from_private_bytes(raw))


def parse_public_key(text: str, where: str) -> PublicKey:
    name, raw = _key_parts(text, where)
    return PublicKey(name, _crypto().ed25519.Ed25519PublicKey.from_public_bytes(raw))


def _crypto() -> Any:
    """cryptography's ed25519, serialization and InvalidSignature (MissingExtra if it is not
    installed: `pip install 'ix[cache]'`)."""
    try:
        import cryptography.exceptions
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise MissingExtra(
            f"signed binary caches need the Python package cryptography ({exc}): install "
            f"ix's cache extra, pip install 'ix[cache]' (under runit: apt-get install "
            f"python3-cryptography python3-boto3 python3-zstandard)") from None

    return types.SimpleNamespace(InvalidSignature=cryptography.exceptions.InvalidSignature,
                                 serialization=serialization, ed25519=ed25519)


def _check_key_name(name: str) -> None:
    if not _KEY_NAME.match(name):
        raise CacheKeyError(f"key name {name!r} must be letters, digits, '.', '_' or '-' "
                            f"(at most 64), e.g. cache.example.org-1")


def _key_parts(text: str, where: str) -> tuple[str, bytes]:
    name, colon, data = text.strip().partition(":")
    if not colon:
        raise CacheKeyError(f"{where} is not a key: expected NAME:BASE64 (as `ixd keygen` "
                            f"writes)")
    _check_key_name(name)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise CacheKeyError(f"{where}: the key of {name!r} is not valid base64") from None
    if len(raw) != 32:
        raise CacheKeyError(f"{where}: the key of {name!r} is {len(raw)} bytes, an ed25519 "
                            f"key is 32")
    return name, raw


def sign(entry: Entry, key: SecretKey) -> Entry:
    """`entry` with its signature by `key` (replacing an earlier one by the same name)."""
    signature = base64.b64encode(key.key.sign(entry.fingerprint())).decode()
    others = tuple(s for s in entry.signatures if not s.startswith(f"{key.name}:"))
    return Entry(entry.uid, entry.store_path, entry.file_hash, entry.file_size,
                 entry.content_hash, entry.content_size, entry.references,
                 (*others, f"{key.name}:{signature}"))


def check_signature(entry: Entry, trusted: Mapping[str, PublicKey], cache: str) -> str:
    """The name of the trusted key that signed `entry`; CacheSignatureInvalid if none did."""
    names = []
    for signature in entry.signatures:
        name, _, data = signature.partition(":")
        names.append(name)
        key = trusted.get(name)
        if key is None:
            continue
        try:
            key.key.verify(base64.b64decode(data, validate=True), entry.fingerprint())
        except (_crypto().InvalidSignature, binascii.Error, ValueError):
            raise CacheSignatureInvalid(
                f"{cache}: the signature of {entry.uid} by key {name!r} does not match the "
                f"entry: it was changed after signing or signed by another key of that "
                f"name; refused") from None
        return name
    raise CacheSignatureInvalid(
        f"{cache}: {entry.uid} is signed by {', '.join(names) or 'no key'}, none of them "
        f"trusted (trusted: {', '.join(sorted(trusted)) or 'none'}); refused. The "
        f"administrator trusts a key with ixd --trusted-key")
