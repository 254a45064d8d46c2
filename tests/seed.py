"""Seed a local source mirror from Debian's source packages.

`python -m tests.seed --mirror DIR [PKG...]` fills DIR with upstream release tarballs named by
their sha256, so that a daemon started with `--mirror DIR/{sha}` builds without reaching the
upstream hosts. Which tarballs are needed comes from the recipes themselves: each package's
`fetch` block (URL + sha256) is rendered through `PackageGraph`, with its whole build closure.

The tarballs are Debian's `*.orig.tar.*` files, taken byte for byte: Debian keeps upstream's
release tarball untouched as its orig tarball (and upstream's signature beside it as `.asc`
when there is one), so the sha256 the recipe names for the upstream URL is the orig file's
sha256. A tarball whose sha256 differs from the recipe's is an error, never copied.

To download them, apt needs a `deb-src` entry. The script derives one from the machine's own
deb822 entries in /etc/apt/sources.list.d/ (same URIs, Suites, Components and Signed-By; only
the Types change) and writes it as its own file; no host name is written in the project.
Already seeded tarballs are skipped, so running it again costs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: the ix packages whose sources come from Debian, and the Debian source package of each
DEBIAN_SOURCES: dict[str, str] = {
    "lib/c": "musl",
    "bin/hello": "hello",
    "lib/lua": "lua5.4",
    "bin/lua": "lua5.4",
    "lib/lzma": "xz-utils",
    "bin/xz": "xz-utils",
    "lib/ncurses": "ncurses",
    "bin/less": "less",
    # stage 1 (pkgs/bld/boot/1)
    "bld/boot/1/lib/c": "musl",
    "bld/boot/1/busybox": "busybox",
    "bld/boot/1/sh": "dash",
    "bld/boot/1/make": "make-dfsg",
    "bld/tic": "ncurses",
}

SOURCES_DIR = Path("/etc/apt/sources.list.d")
DEB_SRC_FILE = SOURCES_DIR / "ix-deb-src.sources"
OS_RELEASE = Path("/etc/os-release")
_COPIED_FIELDS = ("URIs", "Suites", "Components", "Signed-By")
_CHUNK = 1 << 20

Log = Callable[[str], object]


class SeedError(Exception):
    """Something the person running the script has to fix; the message says what."""


@dataclass(frozen=True)
class Needed:
    """One source file a recipe fetches."""

    package: str  # the ix package whose closure fetches it
    debian: str  # the Debian source package that carries it
    url: str
    sha256: str


@dataclass
class Report:
    present: list[Needed] = field(default_factory=list)
    copied: list[tuple[Needed, str, bool]] = field(default_factory=list)  # (need, orig, .asc?)


# --- what the recipes need -----------------------------------------------------------------


def needed_sources(packages: Sequence[str], overlays: Sequence[Path] = ()) -> list[Needed]:
    """The (url, sha256) of every fetch in the build closure of `packages`, with the Debian
    source package that carries each one.

    Only packages listed in DEBIAN_SOURCES can be seeded; a fetched file of another package
    in the closure is an error naming it.
    """
    from ixd.model.selector import Selector
    from ixd.recipes.packages import PackageGraph, walk_closure
    from ixd.recipes.tree import RecipeTree

    if not overlays:
        overlays = (Path(__file__).resolve().parents[1] / "pkgs",)
    for name in packages:
        if name not in DEBIAN_SOURCES:
            raise SeedError(
                f"no Debian source package is known for {name}; known: "
                f"{', '.join(sorted(DEBIAN_SOURCES))}"
            )
    graph = PackageGraph(RecipeTree(list(overlays)), Path("/nonexistent/store"))
    roots = [graph.load(Selector(name, ())) for name in packages]
    found: dict[str, Needed] = {}
    for package in walk_closure(roots):
        for fetch in package.descriptor.fetch:
            if fetch.sha256 in found:
                continue
            debian = DEBIAN_SOURCES.get(package.name)
            if debian is None:
                raise SeedError(
                    f"{package.name} fetches {fetch.url}, but no Debian source package is "
                    f"known for it: add it to DEBIAN_SOURCES in {__file__}"
                )
            found[fetch.sha256] = Needed(package.name, debian, fetch.url, fetch.sha256)
    return list(found.values())


# --- apt: a deb-src entry derived from the machine's own ---------------------------------


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


def derive_deb_src(
    sources_dir: Path = SOURCES_DIR,
    own_file: Path = DEB_SRC_FILE,
    codename: str | None = None,
) -> str | None:
    """The deb822 text of a deb-src entry mirroring the machine's enabled `deb` entries for
    its own release; None when such deb-src entries already exist elsewhere.

    Raises SeedError when the machine has no deb822 `deb` entry to derive from.
    """
    codename = codename if codename is not None else _codename()
    binary: list[dict[str, str]] = []
    source_keys: set[tuple[str, str]] = set()
    for path in sorted(sources_dir.glob("*.sources")):
        if path.resolve() == own_file.resolve():
            continue
        try:
            stanzas = parse_deb822(path.read_text())
        except OSError:
            continue
        for stanza in stanzas:
            if stanza.get("Enabled", "yes").lower() == "no":
                continue
            types = stanza.get("Types", "").split()
            if not stanza.get("URIs") or not stanza.get("Suites"):
                continue
            suites = stanza["Suites"].split()
            if codename and not any(s.split("-")[0] == codename for s in suites):
                continue  # a third-party repository, not the distribution's own
            if "deb-src" in types:
                source_keys.add((stanza["URIs"], stanza["Suites"]))
            if "deb" in types:
                binary.append(stanza)
    if not binary:
        raise SeedError(
            f"no enabled deb822 `Types: deb` entry for this release ({codename or 'unknown'}) "
            f"in {sources_dir}: cannot derive a deb-src entry"
        )
    wanted = [s for s in binary if (s["URIs"], s["Suites"]) not in source_keys]
    if not wanted:
        return None
    out = [
        "# Written by tests/seed.py: deb-src entries derived from this machine's own deb entries,",
        "# so that `apt-get source --download-only` can fetch upstream tarballs for ix.",
    ]
    for stanza in wanted:
        out.append("")
        out.append("Types: deb-src")
        for key in _COPIED_FIELDS:
            if stanza.get(key):
                value = stanza[key].replace("\n", "\n ")
                out.append(f"{key}: {value}")
    return "\n".join(out) + "\n"


def ensure_deb_src(
    sources_dir: Path = SOURCES_DIR, own_file: Path = DEB_SRC_FILE, log: Log = print
) -> bool:
    """Write the derived deb-src file if it is missing or stale; True if it changed."""
    text = derive_deb_src(sources_dir, own_file)
    if text is None:
        return False
    try:
        if own_file.read_text() == text:
            return False
    except OSError:
        pass
    tmp = own_file.with_name(f".{own_file.name}.tmp")
    try:
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, own_file)
    except PermissionError as exc:
        raise SeedError(f"cannot write {own_file} ({exc.strerror}): run as root") from exc
    log(f"wrote {own_file}")
    return True


def _run(argv: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise SeedError(f"{argv[0]} is not installed: this script needs apt") from exc


def _has_source_index(name: str) -> bool:
    done = _run(["apt-cache", "showsrc", name])
    return done.returncode == 0 and "Package:" in done.stdout


def apt_update(own_file: Path = DEB_SRC_FILE) -> None:
    """Refresh the indexes of the deb-src file only (the other lists are kept)."""
    argv = ["apt-get", "update", "-q"]
    if own_file.exists():
        argv += [
            "-o", f"Dir::Etc::sourcelist={own_file}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", "APT::Get::List-Cleanup=0",
        ]  # fmt: skip
    done = _run(argv)
    if done.returncode != 0:
        raise SeedError(f"`{' '.join(argv)}` failed:\n{done.stdout}{done.stderr}")


def download_orig(debian: str, workdir: Path) -> list[Path]:
    """`apt-get source --download-only NAME` in `workdir`; the orig tarballs it brought."""
    done = _run(["apt-get", "source", "--download-only", "-q", debian], cwd=workdir)
    if done.returncode != 0:
        raise SeedError(
            f"`apt-get source --download-only {debian}` failed:\n{done.stdout}{done.stderr}"
        )
    origs = sorted(
        p for p in workdir.iterdir()
        if ".orig.tar." in p.name and not p.name.endswith(".asc")
        and p.name.startswith(f"{debian}_")
    )
    if not origs:
        raise SeedError(f"`apt-get source {debian}` brought no *.orig.tar.* file")
    return origs


def signature_listed(debian: str, orig_name: str, sha256: str) -> bool:
    """Does any version of `debian` in apt's source index carry `orig_name` with this
    sha256 together with upstream's signature `orig_name.asc`? (A later Debian revision
    may drop the .asc while keeping the very same orig tarball.)"""
    done = _run(["apt-cache", "showsrc", debian])
    if done.returncode != 0:
        return False
    for stanza in done.stdout.split("\n\n"):
        words = stanza.split()
        if sha256 in words and f"{orig_name}.asc" in words:
            return True
    return False


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _store(source: Path, mirror: Path, sha256: str) -> None:
    """Copy `source` to `mirror/sha256` atomically, read-only."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{sha256}.", suffix=".part", dir=mirror)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as inp:
            shutil.copyfileobj(inp, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        if sha256_file(tmp) != sha256:
            raise SeedError(f"copying {source} into {mirror} changed its bytes")
        os.chmod(tmp, 0o444)
        os.replace(tmp, mirror / sha256)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --- the whole job -------------------------------------------------------------------------


def seed(mirror: Path, needs: Iterable[Needed], log: Log = print) -> Report:
    """Make every needed tarball present in `mirror` under its sha256."""
    mirror = Path(mirror)
    mirror.mkdir(parents=True, exist_ok=True)
    report = Report()
    missing: dict[str, list[Needed]] = {}
    for need in needs:
        path = mirror / need.sha256
        if path.is_file():
            if sha256_file(path) == need.sha256:
                report.present.append(need)
                continue
            log(f"{path} holds the wrong bytes: replacing it")
            os.chmod(path, 0o644)
            path.unlink()
        missing.setdefault(need.debian, []).append(need)
    if not missing:
        return report

    changed = ensure_deb_src(log=log)
    if changed or not all(_has_source_index(d) for d in missing):
        log("apt-get update (deb-src indexes)")
        apt_update()
    for debian, wanted in missing.items():
        with tempfile.TemporaryDirectory(prefix=f"ix-seed-{debian}-") as tmp:
            workdir = Path(tmp)
            os.chmod(workdir, 0o755)  # let apt's unprivileged downloader write here
            with contextlib.suppress(KeyError, OSError):
                os.chown(workdir, pwd.getpwnam("_apt").pw_uid, -1)
            log(f"apt-get source --download-only {debian}")
            origs = download_orig(debian, workdir)
            by_sha = {sha256_file(p): p for p in origs}
            for need in wanted:
                orig = by_sha.get(need.sha256)
                if orig is None:
                    got = ", ".join(f"{p.name} sha256 {s}" for s, p in by_sha.items())
                    raise SeedError(
                        f"checksum mismatch: {need.package} fetches {need.url} with sha256 "
                        f"{need.sha256}, but Debian's {debian} source package has {got}; "
                        "Debian's version differs from the recipe's or its tarball is repacked"
                    )
                signed = Path(f"{orig}.asc").is_file() or signature_listed(
                    debian, orig.name, need.sha256)
                _store(orig, mirror, need.sha256)
                report.copied.append((need, orig.name, signed))
                log(f"{need.sha256}  {orig.name}"
                    + ("  (upstream signature .asc beside it in Debian)" if signed
                       else "  (no upstream signature in Debian)"))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.seed",
        description="Seed a content-addressed source mirror from Debian's source packages.",
    )
    parser.add_argument("--mirror", type=Path, required=True,
                        help="the mirror directory (file name = sha256 of the content)")
    parser.add_argument("--overlay", type=Path, action="append", default=[],
                        help="recipe overlays (default: the project's pkgs/)")
    parser.add_argument("packages", nargs="*", metavar="PKG",
                        help=f"ix packages to seed (default: all of {', '.join(DEBIAN_SOURCES)})")
    args = parser.parse_args(argv)
    try:
        needs = needed_sources(args.packages or list(DEBIAN_SOURCES), args.overlay)
        report = seed(args.mirror, needs)
    except SeedError as exc:
        print(f"seed: {exc}", file=sys.stderr)
        return 1
    print(f"{len(report.present)} already present, {len(report.copied)} copied into "
          f"{args.mirror}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
