"""Sources named by their Debian source package (`deb-src://`, ixd/store/debsrc.py).

Pure parts (the URL form, apt's answer, the derived source list) are tested on their own;
`DebianArchive` against a stand-in `apt-get` that answers like the real one and records how
it was called; `fetch_source` with such sources from a mirror and from the archive; and at
the end, a real root-run ixd fetching a real Debian file, in no mirror, through the host's
real apt (and refusing what is not so).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.store.debsrc import (
    DebianArchive,
    DebianSource,
    derive_deb_src,
    parse_deb822,
    parse_debsrc_url,
    parse_print_uris,
    parse_sources_list,
)
from ixd.store.fetch import fetch_source
from ixd.wire.errors import ChecksumMismatch, FetchError
from tests.daemon_harness import PKGS, RunningDaemon, start_daemon

DATA = b"a Debian orig tarball\n" * 500
SHA = hashlib.sha256(DATA).hexdigest()
OTHER_SHA = "0" * 64


# --- the URL --------------------------------------------------------------------------------


def test_a_debsrc_url_names_package_version_and_file() -> None:
    assert parse_debsrc_url(
        "deb-src://llvm-toolchain-14/1:14.0.6-12/llvm-toolchain-14_14.0.6.orig.tar.xz"
    ) == DebianSource("llvm-toolchain-14", "1:14.0.6-12", "llvm-toolchain-14_14.0.6.orig.tar.xz")
    assert parse_debsrc_url("deb-src://lzip/1.23-5/lzip_1.23.orig.tar.xz").version == "1.23-5"


@pytest.mark.parametrize("url", [
    "deb-src://lzip/1.23-5",  # no file
    "deb-src://lzip/1.23-5/lzip_1.23.orig.tar.xz/more",
    "deb-src://lzip//lzip_1.23.orig.tar.xz",
    "deb-src://Lzip/1.23-5/Lzip_1.23.orig.tar.xz",  # no upper case in package names
    "deb-src://-o/1.23-5/-o_1.23.tar.xz",  # an option for apt, not a package
    "deb-src://lzip/--print-uris/lzip_1.23.orig.tar.xz",
    "deb-src://lzip/1.23;touch x/lzip_1.23.orig.tar.xz",
    "deb-src://lzip/1.23-5/lzip_$(id).tar.xz",
    "deb-src://lzip/1.23-5/lzip_1.23.orig.tar.xz?x=1",
    "deb-src://lzip/1.23-5/lzip_1.23.orig.tar.xz#frag",
    "deb-src://lzip/1.23-5/lzip_%2e%2e",
    "deb-src://lzip/1.23-5/xz_5.4.tar.xz",  # not a file of that package
    "deb-src://lzip/1.23-5/lzip_1.23 orig.tar.xz",
    "deb-src://user@lzip/1.23-5/lzip_1.23.orig.tar.xz",
    "http://lzip/1.23-5/lzip_1.23.orig.tar.xz",
])
def test_a_bad_debsrc_url_is_refused_saying_the_form(url: str) -> None:
    with pytest.raises(FetchError) as caught:
        parse_debsrc_url(url)
    assert "deb-src://PACKAGE/VERSION/FILE" in caught.value.message or \
        "are named lzip_" in caught.value.message


# --- apt's answer -------------------------------------------------------------------------------


PRINTED = f"""Reading package lists...
NOTICE: 'lzip' packaging is maintained in the 'Git' version control system at:
https://git.example/lzip
Need to get 95.1 kB of source archives.
'http://archive.example/debian/pool/main/l/lzip/lzip_1.23-5.dsc' lzip_1.23-5.dsc 1886 SHA256:{"d" * 64}
'http://archive.example/debian/pool/main/l/lzip/lzip_1.23.orig.tar.xz' lzip_1.23.orig.tar.xz {len(DATA)} SHA256:{SHA}
'ftp://archive.example/x/lzip_1.23.extra.tar.xz' lzip_1.23.extra.tar.xz 10 SHA256:{"e" * 64}
'http://archive.example/x/bad name' bad name 10 SHA256:{"f" * 64}
"""  # noqa: E501


def test_print_uris_is_parsed_strictly() -> None:
    files = parse_print_uris(PRINTED)
    assert [(f.name, f.size) for f in files] == [("lzip_1.23-5.dsc", 1886),
                                                 ("lzip_1.23.orig.tar.xz", len(DATA))]
    assert files[1].sha256 == SHA
    assert files[1].uri.endswith("/pool/main/l/lzip/lzip_1.23.orig.tar.xz")


# --- the machine's sources ------------------------------------------------------------------------


def test_deb_src_entries_are_derived_from_the_machines_own(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "distro.sources").write_text(
        "Types: deb\n"
        "# a comment the derived entry does not need\n"
        "URIs: file:///srv/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: file:///srv/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main contrib\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "Architectures: amd64\n"
    )
    (sources / "third-party.sources").write_text(
        "Types: deb\nURIs: file:///srv/other\nSuites: nodistro\nComponents: main\n")
    (sources / "old.list").write_text(
        "deb [arch=amd64 signed-by=/usr/share/keyrings/old.gpg] file:///srv/old bookworm main"
        " non-free # a comment\n"
        "deb file:///srv/elsewhere trixie main\n")
    text = derive_deb_src(sources, codename="bookworm")
    assert text is not None
    assert parse_deb822(text) == [
        {"Types": "deb-src", "URIs": "file:///srv/debian", "Suites": "bookworm bookworm-updates",
         "Components": "main",
         "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg"},
        {"Types": "deb-src", "URIs": "file:///srv/debian-security",
         "Suites": "bookworm-security", "Components": "main contrib",
         "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg"},
        {"Types": "deb-src", "URIs": "file:///srv/old", "Suites": "bookworm",
         "Components": "main non-free", "Signed-By": "/usr/share/keyrings/old.gpg"},
    ]
    # once the machine has deb-src entries for them, nothing more is needed...
    (sources / "src.sources").write_text(text)
    assert derive_deb_src(sources, codename="bookworm") is None
    # ... unless the whole list is asked for (ix's own apt state)
    again = derive_deb_src(sources, codename="bookworm", skip_existing=False)
    assert again is not None and len(parse_deb822(again)) == 3


def test_no_deb_entry_to_derive_from_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="no enabled `deb` entry"):
        derive_deb_src(tmp_path, codename="bookworm")


def test_one_line_sources_become_stanzas() -> None:
    assert parse_sources_list("deb-src http://h/debian bookworm main\n# deb x y z\n") == [
        {"Types": "deb-src", "URIs": "http://h/debian", "Suites": "bookworm",
         "Components": "main"}]


# --- the archive, with a stand-in apt-get -------------------------------------------------------


def fake_apt(tmp_path: Path, printed: str, *, known: str = "lzip=1.23-5 lzip") -> Path:
    """An `apt-get` that records its argv (one JSON line per call) and answers
    `source --print-uris` for the packages in `known` (else exits 100, as apt does)."""
    calls = tmp_path / "apt-calls.jsonl"
    script = tmp_path / "apt-get"
    script.write_text(f"""#!/usr/bin/python3
import json, sys
with open({str(calls)!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
words = [w for w in sys.argv[1:] if not w.startswith("-") and "::" not in w]
if words[:1] == ["update"]:
    sys.exit(0)
if words[-1] in {known.split()!r}:
    sys.stdout.write({printed!r})
    sys.exit(0)
sys.stderr.write("E: Unable to find a source package for " + words[-1] + "\\n")
sys.exit(100)
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def archive(tmp_path: Path, printed: str = PRINTED, **kwargs: str) -> DebianArchive:
    sources = tmp_path / "sources.list.d"
    sources.mkdir(exist_ok=True)
    (sources / "d.sources").write_text(
        f"Types: deb\nURIs: http://archive.example/debian\nSuites: {_codename()}\n"
        "Components: main\n")
    return DebianArchive(tmp_path / "state", sources_dir=sources, sources_list=None,
                         apt_get=str(fake_apt(tmp_path, printed, **kwargs)))


def _codename() -> str:
    from ixd.store.debsrc import _codename as machine_codename
    return machine_codename() or "bookworm"


def calls(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "apt-calls.jsonl").read_text().splitlines()]


def test_the_archive_locates_a_file_by_name_and_checksum(tmp_path: Path) -> None:
    found = archive(tmp_path).locate("lzip", "1.23-5", SHA, "lzip_1.23.orig.tar.xz")
    assert found.name == "lzip_1.23.orig.tar.xz" and found.size == len(DATA)
    made = calls(tmp_path)
    # the index was read first (a fresh state), then asked; always with ix's own state
    assert [c[-1] for c in made] == ["update", "lzip=1.23-5"]
    for argv in made:
        assert f"Dir::State::Lists={tmp_path / 'state' / 'lists'}" in argv
        assert f"Dir::Etc::sourcelist={tmp_path / 'state' / 'deb-src.sources'}" in argv
    written = parse_deb822((tmp_path / "state" / "deb-src.sources").read_text())
    assert written[0]["Types"] == "deb-src"
    assert written[0]["URIs"] == "http://archive.example/debian"


def test_a_checksum_the_index_does_not_list_is_refused_before_fetching(tmp_path: Path) -> None:
    with pytest.raises(ChecksumMismatch) as caught:
        archive(tmp_path).locate("lzip", "1.23-5", OTHER_SHA, "lzip_1.23.orig.tar.xz")
    assert SHA in caught.value.message and OTHER_SHA in caught.value.message
    with pytest.raises(FetchError, match=r"no file lzip_9\.orig\.tar\.xz"):
        archive(tmp_path).locate("lzip", "1.23-5", SHA, "lzip_9.orig.tar.xz")


def test_a_file_over_the_size_bound_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="over the bound"):
        archive(tmp_path).locate("lzip", "1.23-5", SHA, "lzip_1.23.orig.tar.xz",
                                 max_size=len(DATA) - 1)


def test_a_version_apt_does_not_know_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        archive(tmp_path).locate("lzip", "9.9-1", SHA, "lzip_1.23.orig.tar.xz")
    assert "lzip=9.9-1" in caught.value.message
    assert "Unable to find a source package" in caught.value.message
    # a fresh index is not read again for it: one update, two questions
    assert [c[-1] for c in calls(tmp_path)] == ["update", "lzip=9.9-1"]


def test_a_bad_package_never_reaches_apt(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="bad Debian source package"):
        archive(tmp_path).locate("-o", None, SHA)
    assert not (tmp_path / "apt-calls.jsonl").exists()


# --- fetch_source with deb-src:// sources ---------------------------------------------------------


URL = "deb-src://lzip/1.23-5/lzip_1.23.orig.tar.xz"


def test_a_mirror_serves_a_debsrc_source_by_sha_or_name(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "lzip_1.23.orig.tar.xz").write_bytes(DATA)
    got = fetch_source(URL, SHA, tmp_path / "cache", mirrors=[f"{mirror}/{{name}}"])
    assert got.read_bytes() == DATA


def test_a_debsrc_source_without_an_archive_says_only_a_mirror_can_serve_it(
        tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="only a mirror can serve it"):
        fetch_source(URL, SHA, tmp_path / "cache", mirrors=[f"{tmp_path}/none/{{sha}}"])


def test_a_debsrc_source_comes_from_where_the_index_says(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "lzip_1.23.orig.tar.xz").write_bytes(DATA)
    printed = PRINTED.replace("http://archive.example/debian/pool/main/l/lzip", f"file://{pool}")
    cache = tmp_path / "cache"
    got = fetch_source(URL, SHA, cache, debian=archive(tmp_path, printed))
    assert got == cache / SHA and got.read_bytes() == DATA
    assert not os.access(got, os.W_OK) or os.getuid() == 0
    # the index lists other bytes than the pool holds: nothing is cached
    (pool / "lzip_1.23.orig.tar.xz").write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatch):
        fetch_source(URL, SHA, tmp_path / "cache2", debian=archive(tmp_path, printed))
    assert not list((tmp_path / "cache2").iterdir())


def test_a_malformed_debsrc_source_fails_before_any_candidate(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="bad Debian source"):
        fetch_source("deb-src://lzip/1.23-5/lzip_1.23;id", SHA, tmp_path / "cache",
                     debian=archive(tmp_path))
    assert not (tmp_path / "apt-calls.jsonl").exists()


# --- through a real ixd and the host's real apt -------------------------------------------------

#: a small file of a real Debian source package, in no mirror: only apt can find it
DEBIAN_FILE = "deb-src://lzip/1.23-5/lzip_1.23-5.debian.tar.xz"
DEBIAN_SHA = "14ba256e46ed524ba7ed407c4e3fbee50fd92722caede589dc35115fac5ab032"
RECIPE = """{% extends '//die/sh.sh' %}
{% block fetch %}
URL
sha:SHA
{% endblock %}
{% block install %}
mkdir -p "$out"
find . -type f | sort > "$out/files"
{% endblock %}
"""


def _apt_sees_lzip() -> bool:
    if shutil.which("apt-get") is None or os.getuid() != 0:
        return False
    try:
        derive_deb_src(skip_existing=False)
    except FetchError:
        return False
    return True


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    if not _apt_sees_lzip():
        pytest.skip("needs root and apt with Debian's sources")
    top = Path(tempfile.mkdtemp(prefix="ix-debsrc-", dir="/var/tmp"))
    top.chmod(0o755)
    overlay = top / "overlay"
    for name, url, sha in (("debsrc/good", DEBIAN_FILE, DEBIAN_SHA),
                           ("debsrc/wrongsum", DEBIAN_FILE, OTHER_SHA),
                           # (each its own sha256: a source already fetched is known by it)
                           ("debsrc/nofile", "deb-src://lzip/1.23-5/lzip_0.orig.tar.xz",
                            "1" * 64),
                           ("debsrc/noversion", "deb-src://lzip/0.1-1/lzip_1.23-5.debian.tar.xz",
                            "2" * 64),
                           ("debsrc/hostile",
                            "deb-src://lzip/1.23-5;touch${IFS}/tmp/ix-pwned/lzip_1.tar.xz",
                            "3" * 64)):
        (overlay / "bin" / name).mkdir(parents=True)
        (overlay / "bin" / name / "ix.sh").write_text(
            RECIPE.replace("URL", url).replace("SHA", sha))
    running = start_daemon(top / "root", overlays=(overlay, PKGS))
    try:
        yield running
        assert running.stop() == 0, running.log.read_text()
    finally:
        running.stop()
        subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
        shutil.rmtree(top, ignore_errors=True)


def _apt_state() -> list[tuple[str, float]]:
    """What of the system's apt configuration and state a look-up could have written."""
    found = []
    for folder in (Path("/etc/apt"), Path("/var/lib/apt/lists")):
        for path in sorted(folder.rglob("*")):
            with contextlib.suppress(OSError):
                found.append((str(path), path.stat().st_mtime))
    return found


def test_ixd_fetches_a_debian_file_through_the_hosts_apt(daemon: RunningDaemon) -> None:
    before = _apt_state()
    out = Path(daemon.ixc("build", "bin/debsrc/good", timeout=600).stdout.split()[-1])
    # the unpack went into its one top folder, debian/
    assert {"./control", "./rules", "./watch"} <= set((out / "files").read_text().split())
    cached = daemon.root / "src" / DEBIAN_SHA
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == DEBIAN_SHA
    # apt ran with ix's own state, from sources derived from the machine's own
    own = parse_deb822((daemon.root / "var" / "apt" / "deb-src.sources").read_text())
    assert own and all(stanza["Types"] == "deb-src" for stanza in own)
    assert list((daemon.root / "var" / "apt" / "lists").glob("*Sources*"))
    assert _apt_state() == before


@pytest.mark.parametrize(("package", "code", "said"), [
    ("bin/debsrc/wrongsum", "E_CHECKSUM", f"Debian's index {DEBIAN_SHA}"),
    ("bin/debsrc/nofile", "E_FETCH", "has no file lzip_0.orig.tar.xz"),
    ("bin/debsrc/noversion", "E_FETCH", "no Debian source package lzip=0.1-1"),
    ("bin/debsrc/hostile", "E_FETCH", "bad Debian source"),
])
def test_a_debian_source_that_is_not_so_fails_clearly(
        daemon: RunningDaemon, package: str, code: str, said: str) -> None:
    failed = daemon.ixc("build", package, check=False, timeout=600)
    assert failed.returncode != 0
    assert code in failed.stderr and said in failed.stderr, failed.stderr
    assert not Path("/tmp/ix-pwned").exists()
    cached = daemon.root / "src"
    assert not [p for p in cached.iterdir() if p.name != DEBIAN_SHA] if cached.exists() else True
    # and the daemon serves on
    assert daemon.ixc("status").returncode == 0
