"""Seed a local source mirror from Debian's source packages.

`python -m tests.seed --mirror DIR [PKG...]` fills DIR with the source files the recipes
fetch, named by their sha256, so that a daemon started with `--mirror DIR/{sha}` builds
without reaching the upstream hosts. Which files are needed comes from the recipes
themselves: each package's `fetch` block (URL + sha256) is rendered through `PackageGraph`,
with its whole build closure.

Two kinds of source (docs/recipes.md, "Sources"):
- an upstream URL: the file is Debian's `*.orig.tar.*` of the source package named for the
  ix package in DEBIAN_SOURCES, taken byte for byte. Debian keeps upstream's release tarball
  untouched as its orig tarball (and upstream's signature beside it as `.asc` when there is
  one), so the sha256 the recipe names for the upstream URL is the orig file's sha256; a
  Debian file with another sha256 is an error, never copied;
- a `deb-src://PACKAGE/VERSION/FILE` URL: the recipe names the Debian file itself.

Both are found as the daemon finds a `deb-src://` source (ixd/store/debsrc.py): apt, with a
state of its own in a temporary folder, over deb-src entries derived from the machine's own
apt sources (nothing of the system's apt configuration or state is written, and no host name
is written in the project); apt's index gives each file's URI, size and sha256, which must
be the recipe's before a byte is fetched. Already seeded files are checked and skipped, so
running it again costs nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ixd.store.debsrc import SCHEME as DEBSRC_SCHEME
from ixd.store.debsrc import DebianArchive, parse_debsrc_url
from ixd.store.fetch import fetch_source
from ixd.wire.errors import IxError

#: the ix packages whose upstream sources Debian carries byte for byte, and the Debian
#: source package of each (a `deb-src://` source names its own)
DEBIAN_SOURCES: dict[str, str] = {
    "lib/c": "musl",
    "bin/hello": "hello",
    "lib/lua": "lua5.4",
    "bin/lua": "lua5.4",
    "lib/lzma": "xz-utils",
    "bin/xz": "xz-utils",
    "lib/ncurses": "ncurses",
    "bin/less": "less",
    "bin/ninja": "ninja-build",
    # stage 1 (pkgs/bld/boot/1; its make is a deb-src:// file)
    "bld/boot/1/lib/c": "musl",
    "bld/boot/1/busybox": "busybox",
    "bld/boot/1/sh": "dash",
    "bld/tic": "ncurses",
}
#: the packages seeded when none is named: those above and those fetching `deb-src://` files
DEFAULT_PACKAGES = (*DEBIAN_SOURCES, "lib/c++", "bin/lzip", "bin/gperf")

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
    copied: list[tuple[Needed, str, bool]] = field(default_factory=list)  # (need, file, .asc?)


# --- what the recipes need -----------------------------------------------------------------


def needed_sources(packages: Sequence[str], overlays: Sequence[Path] = ()) -> list[Needed]:
    """The (url, sha256) of every fetch in the build closure of `packages`, with the Debian
    source package that carries each one.

    A fetch by upstream URL can be seeded only for packages listed in DEBIAN_SOURCES; a
    fetched file of another package in the closure is an error naming it.
    """
    from ixd.model.selector import parse_selector
    from ixd.recipes.package import walk_closure
    from ixd.recipes.packages import PackageGraph
    from ixd.recipes.tree import RecipeTree

    if not overlays:
        overlays = (Path(__file__).resolve().parents[1] / "pkgs",)
    graph = PackageGraph(RecipeTree(list(overlays)), Path("/nonexistent/store"))
    roots = [graph.load(parse_selector(name)) for name in packages]
    found: dict[str, Needed] = {}
    for package in walk_closure(roots):
        for fetch in package.descriptor.fetch:
            if fetch.sha256 in found:
                continue
            if urllib.parse.urlsplit(fetch.url).scheme == DEBSRC_SCHEME:
                debian: str | None = parse_debsrc_url(fetch.url).package
            else:
                debian = DEBIAN_SOURCES.get(package.name)
            if debian is None:
                raise SeedError(
                    f"{package.name} fetches {fetch.url}, but no Debian source package is "
                    f"known for it: add it to DEBIAN_SOURCES in {__file__}"
                )
            found[fetch.sha256] = Needed(package.name, debian, fetch.url, fetch.sha256)
    return list(found.values())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- the whole job -------------------------------------------------------------------------


def seed(mirror: Path, needs: Iterable[Needed], log: Log = print,
         archive: DebianArchive | None = None) -> Report:
    """Make every needed file present in `mirror` under its sha256 (`archive`: where
    Debian's source packages are looked up; by default apt with a temporary state)."""
    mirror = Path(mirror)
    mirror.mkdir(parents=True, exist_ok=True)
    report = Report()
    missing: list[Needed] = []
    for need in needs:
        path = mirror / need.sha256
        if path.is_file():
            if sha256_file(path) == need.sha256:
                report.present.append(need)
                continue
            log(f"{path} holds the wrong bytes: replacing it")
            os.chmod(path, 0o644)
            path.unlink()
        missing.append(need)
    if not missing:
        return report
    with tempfile.TemporaryDirectory(prefix="ix-seed-apt-") as state:
        if archive is None:
            archive = DebianArchive(Path(state))
        for need in missing:
            report.copied.append(_copy_one(mirror, need, archive, log))
    return report


def _copy_one(mirror: Path, need: Needed, archive: DebianArchive,
              log: Log) -> tuple[Needed, str, bool]:
    try:
        if urllib.parse.urlsplit(need.url).scheme == DEBSRC_SCHEME:
            name = parse_debsrc_url(need.url).filename
            log(f"{need.url}")
            fetch_source(need.url, need.sha256, mirror, debian=archive, timeout=300)
        else:
            found = archive.locate(need.debian, None, need.sha256)
            name = found.name
            log(f"{found.name} of Debian's {need.debian} for {need.url}")
            fetch_source(found.uri, need.sha256, mirror, timeout=300)
    except IxError as exc:
        raise SeedError(
            f"{need.package} fetches {need.url} (sha256 {need.sha256}): {exc.message}; if "
            f"Debian's version differs from the recipe's, or its tarball is repacked, name "
            f"the Debian file in the recipe ({DEBSRC_SCHEME}://PACKAGE/VERSION/FILE)") from exc
    signed = archive.has_file(need.debian, f"{name}.asc")
    log(f"{need.sha256}  {name}" + ("  (upstream signature .asc beside it in Debian)"
                                    if signed else "  (no upstream signature in Debian)"))
    return need, name, signed


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
                        help=f"ix packages to seed (default: {', '.join(DEFAULT_PACKAGES)})")
    args = parser.parse_args(argv)
    try:
        needs = needed_sources(args.packages or list(DEFAULT_PACKAGES), args.overlay)
        report = seed(args.mirror, needs)
    except (SeedError, IxError) as exc:
        print(f"seed: {exc}", file=sys.stderr)
        return 1
    print(f"{len(report.present)} already present, {len(report.copied)} copied into "
          f"{args.mirror}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
