"""Fetching sources into the content-addressed cache.

`fetch_source` is blocking on purpose: the daemon runs it in a worker thread
(`trio.to_thread.run_sync`). A source is known by its sha256; the cache keeps it at
`cache_dir / sha256`, so a hit costs one `stat` and no network.

Candidates are tried in order: every mirror template, then the recipe's URL. A template
may use `{sha}` (the expected sha256) and `{name}` (the URL's basename, see `url_basename`);
a template with neither is a directory-like base and gets `/<sha256>` appended. After
substitution a template is a `file://`, `http://` or `https://` URL, or a plain absolute
path. A recipe's URL may also name a file of a Debian source package,
`deb-src://PACKAGE/VERSION/FILE` (ixd/store/debsrc.py): apt's index says where it is, and
its size and sha256, which must be the recipe's before a byte is fetched.

No source is larger than `max_size` (1 GiB by default): a candidate that sends more is cut
off and fails.

Bytes are streamed into a unique temporary file inside `cache_dir`, hashed on the way,
fsynced, checked, made read-only and only then renamed to their final name. Whatever
happens (a bad candidate, an exception from the progress callback, KeyboardInterrupt),
nothing partial is left in `cache_dir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from ixd.model.nodes import url_basename
from ixd.store.debsrc import SCHEME as DEBSRC_SCHEME
from ixd.store.debsrc import DebianArchive, parse_debsrc_url
from ixd.wire.errors import ChecksumMismatch, FetchError

__all__ = ["MAX_SOURCE_SIZE", "fetch_source", "url_basename"]

#: called with (bytes received so far, total bytes or None when the source does not say)
ProgressCallback = Callable[[int, int | None], None]

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_URL_SCHEMES = ("file", "http", "https")
#: what a recipe's URL may also be (never a mirror's)
_RECIPE_SCHEMES = (*_URL_SCHEMES, DEBSRC_SCHEME)
#: the largest source fetched (bytes): LLVM's whole tree is 130 MB
MAX_SOURCE_SIZE = 1 << 30
_CHUNK = 64 * 1024
_USER_AGENT = "ix-fetch/0.1"


def fetch_source(
    url: str,
    sha256: str,
    cache_dir: Path,
    mirrors: Sequence[str] = (),
    timeout: float = 60.0,
    on_progress: ProgressCallback | None = None,
    *,
    debian: DebianArchive | None = None,
    max_size: int = MAX_SOURCE_SIZE,
) -> Path:
    """Return `cache_dir / sha256`, fetching it from a mirror or `url` first if needed
    (`debian` finds a `deb-src://` URL's file; without it, only mirrors can serve one).

    Raises `ChecksumMismatch` when the candidates that delivered bytes delivered the wrong
    ones (or Debian's index lists other ones), else `FetchError` listing every candidate
    tried and why it failed.
    """
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise FetchError(f"bad sha256 {sha256!r} for {url!r}: expected 64 lowercase hex digits")
    if not isinstance(url, str) or not url.strip():
        raise FetchError(f"empty source URL (sha256 {sha256}): a recipe must name a URL")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _RECIPE_SCHEMES:
        raise FetchError(
            f"unsupported URL scheme {scheme or '(none)'!r} in {url}: "
            f"use one of {', '.join(s + '://' for s in _RECIPE_SCHEMES)}"
        )
    if scheme == DEBSRC_SCHEME:
        parse_debsrc_url(url)  # FetchError for a malformed one, before anything else

    cache_dir = Path(cache_dir)
    final = cache_dir / sha256
    if final.exists():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)

    failures: list[tuple[str, str]] = []
    mismatch: tuple[str, str] | None = None  # (candidate, received sha256), the last one
    listed_otherwise: str | None = None  # Debian's index lists other bytes: why
    for candidate in _candidates(url, sha256, mirrors):
        if candidate.kind == "bad":
            failures.append((candidate.display, candidate.target))
            continue
        try:
            if candidate.kind == "debian":
                candidate = _locate(candidate, sha256, debian, max_size)
            return _attempt(candidate, sha256, cache_dir, final, timeout, on_progress,
                            max_size)
        except _Mismatch as exc:
            mismatch = (candidate.display, exc.got)
            failures.append((candidate.display, f"sha256 mismatch, got {exc.got}"))
        except _CandidateFailed as exc:
            failures.append((candidate.display, exc.reason))
        except ChecksumMismatch as exc:
            listed_otherwise = exc.message
            failures.append((candidate.display, exc.message))
        except FetchError as exc:
            failures.append((candidate.display, exc.message))

    tried = "; ".join(f"{where}: {why}" for where, why in failures)
    if listed_otherwise is not None and mismatch is None:
        raise ChecksumMismatch(listed_otherwise + (f"; candidates tried: {tried}"
                                                   if len(failures) > 1 else ""))
    if mismatch is not None:
        where, got = mismatch
        raise ChecksumMismatch(
            f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}"
            + (f" (from {where})" if where != url else "")
            + (f"; candidates tried: {tried}" if len(failures) > 1 else "")
            + "; fix the recipe's sha256 if the source changed on purpose"
        )
    raise FetchError(
        f"could not fetch {url} (sha256 {sha256}); tried {len(failures)} candidate(s): {tried}"
    )


# --- candidates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    #: how messages name it
    display: str
    kind: Literal["file", "http", "debian", "bad"]
    #: a filesystem path for "file", a URL for "http" and "debian", the reason for "bad"
    target: str


def _candidates(url: str, sha256: str, mirrors: Sequence[str]) -> list[_Candidate]:
    name = url_basename(url)
    seen: set[str] = set()
    found: list[_Candidate] = []
    for raw in [*(_expand(m, sha256, name) for m in mirrors)]:
        if raw in seen:
            continue
        seen.add(raw)
        found.append(_classify(raw))
    if url not in seen:
        debian = urllib.parse.urlsplit(url).scheme.lower() == DEBSRC_SCHEME
        found.append(_Candidate(url, "debian", url) if debian else _classify(url))
    return found


def _locate(candidate: _Candidate, sha256: str, debian: DebianArchive | None,
            max_size: int) -> _Candidate:
    """Where Debian's index says a `deb-src://` candidate's file is (FetchError or
    ChecksumMismatch when the index does not list it with this sha256)."""
    if debian is None:
        raise _CandidateFailed("no Debian archive to look it up in (only a mirror can serve "
                               "it here)")
    source = parse_debsrc_url(candidate.target)
    found = debian.locate(source.package, source.version, sha256, source.filename, max_size)
    located = _classify(found.uri)
    if located.kind == "bad":
        raise _CandidateFailed(f"Debian's index names {found.uri}: {located.target}")
    return _Candidate(f"{candidate.display} (at {found.uri})", located.kind, located.target)


def _expand(template: str, sha256: str, name: str) -> str:
    if "{sha}" not in template and "{name}" not in template:
        template = template.rstrip("/") + "/{sha}"
    if "://" in template:  # a URL: the name goes in percent-encoded
        name = urllib.parse.quote(name)
    return template.replace("{sha}", sha256).replace("{name}", name)


def _classify(raw: str) -> _Candidate:
    if raw.startswith("/"):
        return _Candidate(raw, "file", raw)
    parts = urllib.parse.urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return _Candidate(raw, "http", raw)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            return _Candidate(raw, "bad", f"file URL with a remote host {parts.netloc!r}")
        return _Candidate(raw, "file", urllib.request.url2pathname(parts.path))
    return _Candidate(raw, "bad", f"unsupported URL scheme {scheme or '(none)'!r}")


# --- one attempt ---------------------------------------------------------------------------


class _CandidateFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Mismatch(Exception):
    def __init__(self, got: str) -> None:
        super().__init__(got)
        self.got = got


class _Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


def _attempt(
    candidate: _Candidate,
    sha256: str,
    cache_dir: Path,
    final: Path,
    timeout: float,
    on_progress: ProgressCallback | None,
    max_size: int,
) -> Path:
    """Fetch one candidate into `final`, or raise `_CandidateFailed` / `_Mismatch`.

    Exceptions from `on_progress` (and KeyboardInterrupt) propagate as they are.
    """
    with _open(candidate, timeout) as (reader, total):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{sha256}.", suffix=".part", dir=cache_dir)
        tmp = Path(tmp_name)
        done = False
        try:
            with os.fdopen(fd, "wb") as out:
                got = _copy(reader, out, total, timeout, on_progress, max_size)
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise _CandidateFailed(f"writing {tmp}: {_describe(exc, timeout)}") from exc
            if got != sha256:
                raise _Mismatch(got)
            try:
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
            except OSError as exc:
                raise _CandidateFailed(f"storing {final}: {_describe(exc, timeout)}") from exc
            done = True
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    tmp.unlink()
    _fsync_dir(cache_dir)
    return final


@contextlib.contextmanager
def _open(candidate: _Candidate, timeout: float) -> Iterator[tuple[_Reader, int | None]]:
    """Open a candidate for reading: (reader, total size or None)."""
    if candidate.kind == "file":
        try:
            handle: BinaryIO = open(candidate.target, "rb")
        except OSError as exc:
            raise _CandidateFailed(_describe(exc, timeout)) from exc
        with handle:
            try:
                total: int | None = os.fstat(handle.fileno()).st_size
            except OSError as exc:
                raise _CandidateFailed(_describe(exc, timeout)) from exc
            yield handle, total
        return

    request = urllib.request.Request(candidate.target, headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _CandidateFailed(_describe(exc, timeout)) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _CandidateFailed(_describe(exc, timeout)) from exc
    with response:
        status = getattr(response, "status", 200)
        if status != 200:
            raise _CandidateFailed(f"unexpected HTTP {status} {getattr(response, 'reason', '')}")
        length = response.headers.get("Content-Length")
        try:
            total = int(length) if length is not None else None
        except ValueError:
            total = None
        if total is not None and total < 0:
            total = None
        yield response, total


def _copy(
    reader: _Reader,
    out: BinaryIO,
    total: int | None,
    timeout: float,
    on_progress: ProgressCallback | None,
    max_size: int,
) -> str:
    """Stream `reader` into `out`; return the sha256 of what was read."""
    digest = hashlib.sha256()
    received = 0
    if total is not None and total > max_size:
        raise _CandidateFailed(f"{total} bytes, over the bound of {max_size} bytes for a source")
    if on_progress is not None:
        on_progress(0, total)
    while True:
        try:
            chunk = reader.read(_CHUNK)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _CandidateFailed(f"{_describe(exc, timeout)} after {received} bytes") from exc
        if not chunk:
            break
        digest.update(chunk)
        try:
            out.write(chunk)
        except OSError as exc:
            raise _CandidateFailed(f"writing the cache: {_describe(exc, timeout)}") from exc
        received += len(chunk)
        if received > max_size:
            raise _CandidateFailed(f"more than the bound of {max_size} bytes for a source")
        if on_progress is not None:
            on_progress(received, total)
    if total is not None and received != total:
        raise _CandidateFailed(f"short read: got {received} of {total} bytes")
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; best effort (some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _describe(exc: BaseException, timeout: float) -> str:
    """A short human reason for one failed candidate."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".rstrip()
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, BaseException):
            return _describe(exc.reason, timeout)
        return str(exc.reason)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, FileNotFoundError):
        return "missing file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, http.client.IncompleteRead):
        return f"short read: got {len(exc.partial)} bytes, {exc.expected} more expected"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP response ({type(exc).__name__}: {exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
