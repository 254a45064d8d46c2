"""Sources named by their Debian source package, found through the host's own apt sources.

A recipe names such a source `deb-src://PACKAGE/VERSION/FILE` with its sha256: a file of
Debian's source package PACKAGE, version VERSION (`1:14.0.6-12`), e.g. an orig tarball that
Debian repacked, so that no upstream URL serves it byte for byte (docs/recipes.md, "Sources").

Where it is: ix runs apt with a state of its own (`DebianArchive(state_dir)`: its own source
list, index lists and caches; the system's apt state is never written). Its source list is
derived, each time, from the machine's own `deb` entries (the same URIs, suites, components
and keys, as `deb-src`), so no host name is written anywhere. `apt-get source --print-uris`
then names the file's URI, size and sha256 from the signed index, which must match the
recipe's before any byte is fetched; the bytes come over ix's own fetcher
(ixd/store/fetch.py: bounded, hashed, atomic).

Everything a recipe wrote is checked against Debian's naming rules before it reaches apt's
command line (an argument vector, never a shell), and apt's answer is parsed strictly.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ixd.wire.errors import ChecksumMismatch, FetchError

__all__ = ["DebianArchive", "DebianSource", "IndexedFile", "derive_deb_src", "parse_deb822",
           "parse_debsrc_url", "parse_print_uris", "parse_sources_list"]

SCHEME = "deb-src"
SOURCES_DIR = Path("/etc/apt/sources.list.d")
SOURCES_LIST = Path("/etc/apt/sources.list")
OS_RELEASE = Path("/etc/os-release")

#: Debian policy: source package names, versions ([epoch:]upstream[-revision]), file names
_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,99}")
_VERSION_RE = re.compile(r"(?:[0-9]{1,9}:)?[0-9][A-Za-z0-9.+~-]{0,99}")
_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_~-]{0,199}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: one line of `apt-get source --print-uris`: 'URI' NAME SIZE SHA256:HEX
_PRINTED_RE = re.compile(r"'([^'\s]+)' (\S+) ([0-9]{1,15}) SHA256:([0-9a-f]{64})")
_COPIED_FIELDS = ("URIs", "Suites", "Components", "Signed-By")
_URI_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class DebianSource:
    """`deb-src://PACKAGE/VERSION/FILE`, checked."""

    package: str
    version: str
    filename: str


@dataclass(frozen=True)
class IndexedFile:
    """A file of a source package as apt's index describes it."""

    uri: str
    name: str
    size: int
    sha256: str


def parse_debsrc_url(url: str) -> DebianSource:
    """The parts of a `deb-src://` URL, or FetchError saying what is wrong with it."""
    form = (f"expected {SCHEME}://PACKAGE/VERSION/FILE (a Debian source package, one of its "
            f"versions, a file of it), e.g. {SCHEME}://lzip/1.23-5/lzip_1.23.orig.tar.xz")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != SCHEME or parts.query or parts.fragment or "%" in url:
        raise FetchError(f"bad Debian source {url!r}: {form}")
    segments = parts.path.split("/")
    if len(segments) != 3 or segments[0] != "":
        raise FetchError(f"bad Debian source {url!r}: {form}")
    package, version, filename = parts.netloc, segments[1], segments[2]
    for what, value, pattern in (("package name", package, _PACKAGE_RE),
                                 ("version", version, _VERSION_RE),
                                 ("file name", filename, _FILE_RE)):
        if not pattern.fullmatch(value):
            raise FetchError(f"bad Debian source {url!r}: {value!r} is no Debian {what}; {form}")
    if not filename.startswith(f"{package}_"):
        raise FetchError(f"bad Debian source {url!r}: the files of Debian's source package "
                         f"{package} are named {package}_..., not {filename!r}")
    return DebianSource(package, version, filename)


def parse_print_uris(text: str) -> list[IndexedFile]:
    """The files `apt-get source --print-uris` lists (other lines are apt's chatter)."""
    found = []
    for line in text.splitlines():
        match = _PRINTED_RE.fullmatch(line.strip())
        if match is None:
            continue
        uri, name, size, sha256 = match.groups()
        if urllib.parse.urlsplit(uri).scheme not in _URI_SCHEMES or not _FILE_RE.fullmatch(name):
            continue
        found.append(IndexedFile(uri, name, int(size), sha256))
    return found


# --- the machine's apt sources, as deb-src entries ---------------------------------------------


def parse_deb822(text: str) -> list[dict[str, str]]:
    """The stanzas of a deb822 file (comments dropped, continuation lines joined)."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, None
            continue
        if line[0] in " \t" and last is not None:
            current[last] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        last = key.strip()
        current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def parse_sources_list(text: str) -> list[dict[str, str]]:
    """The one-line entries of a `sources.list` (`deb [opts] URI SUITE COMPONENT...`) as
    deb822 stanzas."""
    stanzas = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] not in ("deb", "deb-src"):
            continue
        stanza = {"Types": words[0]}
        rest = words[1:]
        if rest[0].startswith("["):
            options = []
            while rest and not rest[0].endswith("]"):
                options.append(rest.pop(0))
            if rest:
                options.append(rest.pop(0))
            for option in " ".join(options).strip("[] ").split():
                key, _, value = option.partition("=")
                if key == "signed-by":
                    stanza["Signed-By"] = value
        if len(rest) < 2:
            continue
        stanza["URIs"], stanza["Suites"] = rest[0], rest[1]
        if len(rest) > 2:
            stanza["Components"] = " ".join(rest[2:])
        stanzas.append(stanza)
    return stanzas


def _codename(os_release: Path = OS_RELEASE) -> str | None:
    try:
        text = os_release.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip().strip('"') or None
    return None


def _machine_stanzas(sources_dir: Path, sources_list: Path | None,
                     skip: Path | None) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    files = sorted(sources_dir.glob("*.sources")) + sorted(sources_dir.glob("*.list"))
    if sources_list is not None:
        files.append(sources_list)
    for path in files:
        if skip is not None and path.resolve() == skip.resolve():
            continue
        try:
            text = path.read_text()
        except OSError:
            continue
        stanzas += parse_deb822(text) if path.suffix == ".sources" else parse_sources_list(text)
    return stanzas


def derive_deb_src(
    sources_dir: Path = SOURCES_DIR,
    own_file: Path | None = None,
    codename: str | None = None,
    *,
    sources_list: Path | None = None,
    skip_existing: bool = True,
) -> str | None:
    """The deb822 text of `deb-src` entries mirroring the machine's enabled `deb` entries
    for its own release (third-party repositories are left out). With `skip_existing`, the
    entries the machine already has as `deb-src` are left out, and None means there is
    nothing to add. `own_file` (a file this function's text was written to) is not read.

    Raises FetchError when the machine has no `deb` entry to derive from.
    """
    codename = codename if codename is not None else _codename()
    binary: list[dict[str, str]] = []
    source_keys: set[tuple[str, str]] = set()
    for stanza in _machine_stanzas(sources_dir, sources_list, own_file):
        if stanza.get("Enabled", "yes").lower() == "no":
            continue
        if not stanza.get("URIs") or not stanza.get("Suites"):
            continue
        suites = stanza["Suites"].split()
        if codename and not any(s.split("-")[0] == codename for s in suites):
            continue  # a third-party repository, not the distribution's own
        types = stanza.get("Types", "").split()
        if "deb-src" in types:
            source_keys.add((stanza["URIs"], stanza["Suites"]))
        if "deb" in types:
            binary.append(stanza)
    if not binary:
        raise FetchError(
            f"no enabled `deb` entry for this release ({codename or 'unknown'}) in "
            f"{sources_dir} or {SOURCES_LIST}: cannot find Debian's source packages")
    wanted = [s for s in binary
              if not skip_existing or (s["URIs"], s["Suites"]) not in source_keys]
    if not wanted:
        return None
    out = ["# deb-src entries derived from this machine's own deb entries (by ix),",
           "# so that apt can find the files of Debian's source packages."]
    seen: set[tuple[str, ...]] = set()
    for stanza in wanted:
        key = tuple(stanza.get(k, "") for k in _COPIED_FIELDS)
        if key in seen:
            continue
        seen.add(key)
        out.append("")
        out.append("Types: deb-src")
        for field_name in _COPIED_FIELDS:
            if stanza.get(field_name):
                value = stanza[field_name].replace("\n", "\n ")
                out.append(f"{field_name}: {value}")
    return "\n".join(out) + "\n"


# --- apt, with a state of ix's own --------------------------------------------------------------


class DebianArchive:
    """Debian's source packages as this machine's apt sources reach them, looked up with
    apt in a state folder of ix's own (`state_dir`: made when first needed).

    One look-up at a time (apt locks its lists); blocking, like all of ixd.store.fetch: the
    daemon calls it in a worker thread.
    """

    #: an index at least this old is refreshed when it lacks what is asked for (seconds)
    REFRESH_AFTER = 600.0

    def __init__(self, state_dir: Path, *, sources_dir: Path = SOURCES_DIR,
                 sources_list: Path | None = SOURCES_LIST, timeout: float = 600.0,
                 apt_get: str = "apt-get") -> None:
        self.state_dir = Path(state_dir)
        self.sources_dir = sources_dir
        self.sources_list = sources_list
        self.timeout = timeout
        self._apt_get = apt_get
        self._lock = threading.Lock()
        self._refreshed: float | None = None

    def locate(self, package: str, version: str | None, sha256: str,
               filename: str | None = None, max_size: int | None = None) -> IndexedFile:
        """The file of Debian's source package `package` (at `version`, else at the version
        apt knows) whose sha256 is `sha256` (and whose name is `filename`, if given).

        Raises FetchError (nothing of that name or checksum in the index, too big, apt
        failing) or ChecksumMismatch (the index lists `filename` with another sha256).
        """
        what = f"{package}={version}" if version else package
        if not _PACKAGE_RE.fullmatch(package) or (version and not _VERSION_RE.fullmatch(version)):
            raise FetchError(f"bad Debian source package {what!r}")
        with self._lock:
            files = self._print_uris(package, version)
        if filename is not None:
            named = [f for f in files if f.name == filename]
            if not named:
                listed = ", ".join(f.name for f in files) or "nothing"
                raise FetchError(f"Debian's source package {what} has no file {filename} "
                                 f"(apt lists {listed})")
            if all(f.sha256 != sha256 for f in named):
                raise ChecksumMismatch(
                    f"checksum mismatch for {filename} of Debian's source package {what}: the "
                    f"recipe says sha256 {sha256}, Debian's index {named[0].sha256}; fix the "
                    f"recipe's sha256 if the source changed on purpose")
            files = named
        matching = [f for f in files if f.sha256 == sha256]
        if not matching:
            listed = ", ".join(f"{f.name} ({f.sha256})" for f in files) or "nothing"
            raise FetchError(f"Debian's source package {what} has no file with sha256 "
                             f"{sha256} (apt lists {listed})")
        found = matching[0]
        if max_size is not None and found.size > max_size:
            raise FetchError(f"{found.name} of Debian's source package {what} is {found.size} "
                             f"bytes, over the bound of {max_size} bytes for a source")
        return found

    def has_file(self, package: str, name: str) -> bool:
        """Whether apt's index lists a file `name` in the source package (e.g. `.asc`)."""
        with self._lock:
            return any(f.name == name for f in self._print_uris(package, None))

    # --- apt ---------------------------------------------------------------------------------

    def _print_uris(self, package: str, version: str | None) -> list[IndexedFile]:
        """The files apt lists for the source package, refreshing the index once if apt does
        not know it (or it is new)."""
        wanted = f"{package}={version}" if version else package
        changed = self._write_sources()
        lists = self.state_dir / "lists"
        indexed = any(lists.glob("*Sources*"))
        if changed or not indexed:
            self._update()
        done = self._apt("source", "--print-uris", "--only-source", wanted)
        if done.returncode != 0 and self._stale():
            self._update()
            done = self._apt("source", "--print-uris", "--only-source", wanted)
        if done.returncode != 0:
            raise FetchError(f"apt finds no Debian source package {wanted} through this "
                             f"machine's apt sources: {_last_error(done)}")
        return parse_print_uris(done.stdout)

    def _stale(self) -> bool:
        return (self._refreshed is None
                or time.monotonic() - self._refreshed > self.REFRESH_AFTER)

    def _write_sources(self) -> bool:
        """Write the derived source list if it is missing or changed; True if it changed."""
        text = derive_deb_src(self.sources_dir, sources_list=self.sources_list,
                              skip_existing=False)
        assert text is not None
        for folder in (self.state_dir, self.state_dir / "lists" / "partial",
                       self.state_dir / "cache" / "archives" / "partial"):
            folder.mkdir(parents=True, exist_ok=True, mode=0o755)
        target = self._sources_file
        with contextlib.suppress(OSError):
            if target.read_text() == text:
                return False
        staging = target.with_name(f".{target.name}.tmp")
        staging.write_text(text)
        os.replace(staging, target)
        return True

    @property
    def _sources_file(self) -> Path:
        return self.state_dir / "deb-src.sources"

    def _update(self) -> None:
        done = self._apt("update")
        if done.returncode != 0:
            raise FetchError(f"apt could not read Debian's source indexes through this "
                             f"machine's apt sources: {_last_error(done)}")
        self._refreshed = time.monotonic()

    def _options(self) -> list[str]:
        state = self.state_dir
        return ["-q",
                "-o", f"Dir::Etc::sourcelist={self._sources_file}",
                "-o", f"Dir::Etc::sourceparts={state / 'no-parts'}",
                "-o", f"Dir::State::Lists={state / 'lists'}",
                "-o", f"Dir::Cache={state / 'cache'}"]

    def _apt(self, *words: str) -> subprocess.CompletedProcess[str]:
        argv: Sequence[str] = [self._apt_get, *self._options(), *words]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "LC_ALL": "C"}
        try:
            return subprocess.run(argv, capture_output=True, text=True, env=env,
                                  stdin=subprocess.DEVNULL, timeout=self.timeout, check=False,
                                  cwd=self.state_dir)
        except FileNotFoundError as exc:
            raise FetchError(f"{self._apt_get} is not installed: Debian's source packages are "
                             f"found with apt") from exc
        except subprocess.TimeoutExpired as exc:
            raise FetchError(f"apt took longer than {self.timeout:g}s "
                             f"({' '.join(words)})") from exc


def _last_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "W:"))]
    shown = (errors or lines)[-3:]
    return "; ".join(shown)[:1000] or f"exit status {done.returncode}"
