"""ixd.store.fetch against a real HTTP server on 127.0.0.1 and real files."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import socket
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from ixd.store.fetch import fetch_source, url_basename
from ixd.wire.errors import ChecksumMismatch, FetchError

GOOD = b"hello, ix\n" * 1000
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
BAD = b"not what the recipe pinned\n"
BAD_SHA = hashlib.sha256(BAD).hexdigest()


@dataclass
class Server:
    """A local HTTP server: files from `root`, plus /missing/*, /short/* and /hang/*."""

    root: Path
    base: str = ""
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def put(self, name: str, data: bytes) -> str:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.url(name)

    def hits(self, prefix: str = "/") -> list[str]:
        with self.lock:
            return [p for p in self.requests if p.startswith(prefix)]


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with server.lock:
                server.requests.append(path)
            if path.startswith("/missing/"):
                self.send_error(404, "Not Found")
                return
            if path.startswith("/hang/"):
                server.release.wait()  # the client times out first; teardown releases us
                return
            if path.startswith("/endless/"):  # no length said, and more than any bound
                self.send_response(200)
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(GOOD)
                self.wfile.flush()
                return
            if path.startswith("/short/"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(GOOD)))
                self.end_headers()
                self.wfile.write(GOOD[: len(GOOD) // 2])
                self.wfile.flush()
                return
            target = server.root / path.lstrip("/")
            if not target.is_file():
                self.send_error(404, "Not Found")
                return
            data = target.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    srv = Server(root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(srv))
    httpd.daemon_threads = True
    srv.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    # a short poll interval so that shutdown() returns at once, not after 0.5 s
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, name="test-http", daemon=True
    )
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "src"


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# --- success -------------------------------------------------------------------------------


def test_http_fetch(server: Server, cache: Path) -> None:
    url = server.put("hello-1.0.tar.gz", GOOD)
    path = fetch_source(url, GOOD_SHA, cache)
    assert path == cache / GOOD_SHA
    assert path.read_bytes() == GOOD
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert leftovers(cache) == [GOOD_SHA]
    assert server.hits() == ["/hello-1.0.tar.gz"]


def test_file_url(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "dir with space" / "a.tar"
    src.parent.mkdir()
    src.write_bytes(GOOD)
    path = fetch_source(src.as_uri(), GOOD_SHA, cache)
    assert path.read_bytes() == GOOD
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert leftovers(cache) == [GOOD_SHA]


def test_cache_hit_makes_no_request(server: Server, cache: Path) -> None:
    url = server.put("a.tar", GOOD)
    first = fetch_source(url, GOOD_SHA, cache)
    assert len(server.hits()) == 1
    second = fetch_source(url, GOOD_SHA, cache, mirrors=[server.url("m/{sha}")])
    assert second == first
    assert len(server.hits()) == 1


def test_cache_hit_even_when_source_is_gone(server: Server, cache: Path) -> None:
    cache.mkdir()
    (cache / GOOD_SHA).write_bytes(GOOD)
    assert fetch_source(server.url("missing/x"), GOOD_SHA, cache) == cache / GOOD_SHA
    assert server.hits() == []


def test_progress_reports_bytes_and_total(server: Server, cache: Path) -> None:
    url = server.put("a.tar", GOOD)
    seen: list[tuple[int, int | None]] = []
    fetch_source(url, GOOD_SHA, cache, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, len(GOOD))
    assert seen[-1] == (len(GOOD), len(GOOD))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# --- checksums -----------------------------------------------------------------------------


def test_wrong_checksum(server: Server, cache: Path) -> None:
    url = server.put("a.tar", BAD)
    with pytest.raises(ChecksumMismatch) as info:
        fetch_source(url, GOOD_SHA, cache)
    message = str(info.value)
    assert url in message
    assert GOOD_SHA in message
    assert BAD_SHA in message
    assert info.value.code == "E_CHECKSUM"
    assert leftovers(cache) == []


def test_wrong_checksum_from_file_url(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "a.tar"
    src.write_bytes(BAD)
    with pytest.raises(ChecksumMismatch, match=BAD_SHA):
        fetch_source(src.as_uri(), GOOD_SHA, cache)
    assert leftovers(cache) == []


# --- mirrors -------------------------------------------------------------------------------


def test_mirror_is_tried_first(server: Server, cache: Path) -> None:
    server.put(f"mirror/{GOOD_SHA}", GOOD)
    url = server.put("upstream/a.tar", GOOD)
    path = fetch_source(url, GOOD_SHA, cache, mirrors=[server.url("mirror/{sha}")])
    assert path.read_bytes() == GOOD
    assert server.hits() == [f"/mirror/{GOOD_SHA}"]
    assert server.hits("/upstream") == []


def test_mirror_name_placeholder(server: Server, cache: Path) -> None:
    server.put("byname/hello-1.0.tar.gz", GOOD)
    url = server.url("upstream/hello-1.0.tar.gz?download=1")
    path = fetch_source(url, GOOD_SHA, cache, mirrors=[server.url("byname/{name}")])
    assert path.read_bytes() == GOOD
    assert server.hits("/upstream") == []


def test_mirror_as_plain_absolute_path(server: Server, tmp_path: Path, cache: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / GOOD_SHA).write_bytes(GOOD)
    url = server.url("upstream/a.tar")
    for template in (f"{mirror}/{{sha}}", str(mirror)):  # explicit, and directory-like
        path = fetch_source(url, GOOD_SHA, cache, mirrors=[template])
        assert path.read_bytes() == GOOD
        os.chmod(path, 0o644)
        path.unlink()
    assert server.hits() == []


def test_mirror_with_wrong_bytes_falls_back_to_url(server: Server, cache: Path) -> None:
    server.put(f"mirror/{GOOD_SHA}", BAD)
    url = server.put("upstream/a.tar", GOOD)
    path = fetch_source(url, GOOD_SHA, cache, mirrors=[server.url("mirror/{sha}")])
    assert path.read_bytes() == GOOD
    assert server.hits() == [f"/mirror/{GOOD_SHA}", "/upstream/a.tar"]
    assert leftovers(cache) == [GOOD_SHA]


def test_mirror_404_falls_back(server: Server, cache: Path) -> None:
    url = server.put("upstream/a.tar", GOOD)
    mirrors = [server.url("missing/{sha}"), server.url("short/{sha}")]
    path = fetch_source(url, GOOD_SHA, cache, mirrors=mirrors)
    assert path.read_bytes() == GOOD
    assert server.hits() == [f"/missing/{GOOD_SHA}", f"/short/{GOOD_SHA}", "/upstream/a.tar"]
    assert leftovers(cache) == [GOOD_SHA]


def test_bad_mirror_scheme_falls_back(server: Server, cache: Path) -> None:
    url = server.put("a.tar", GOOD)
    path = fetch_source(url, GOOD_SHA, cache, mirrors=["ftp://example.invalid/{sha}"])
    assert path.read_bytes() == GOOD


# --- failures ------------------------------------------------------------------------------


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/x/{{sha}}"


def test_all_failing_lists_candidates(server: Server, tmp_path: Path, cache: Path) -> None:
    refused = _refused_url()
    missing_file = tmp_path / "nowhere" / "{sha}"
    mirrors = [server.url("missing/{sha}"), refused, str(missing_file), server.url("hang/{sha}")]
    url = server.url("short/a.tar")
    with pytest.raises(FetchError) as info:
        fetch_source(url, GOOD_SHA, cache, mirrors=mirrors, timeout=0.2)
    err = info.value
    assert not isinstance(err, ChecksumMismatch)
    assert err.code == "E_FETCH"
    message = str(err)
    sub = GOOD_SHA
    assert f"{server.url('missing/' + sub)}: HTTP 404" in message
    assert f"{refused.replace('{sha}', sub)}: connection refused" in message
    assert f"{str(missing_file).replace('{sha}', sub)}: missing file" in message
    assert f"{server.url('hang/' + sub)}: timed out" in message
    assert f"{url}: short read" in message
    assert "5 candidate(s)" in message
    assert leftovers(cache) == []


def test_mismatch_wins_over_later_failures(server: Server, cache: Path) -> None:
    server.put(f"mirror/{GOOD_SHA}", BAD)
    url = server.url("missing/a.tar")
    with pytest.raises(ChecksumMismatch) as info:
        fetch_source(url, GOOD_SHA, cache, mirrors=[server.url("mirror/{sha}")])
    message = str(info.value)
    assert url in message and GOOD_SHA in message and BAD_SHA in message
    assert "HTTP 404" in message
    assert leftovers(cache) == []


def test_a_source_over_the_size_bound_is_cut_off(server: Server, tmp_path: Path,
                                                 cache: Path) -> None:
    bound = len(GOOD) * 4
    said = server.put("big.tar", GOOD * 8)  # its length is said: refused before reading
    src = tmp_path / "big.tar"
    src.write_bytes(GOOD * 8)
    for url in (said, f"file://{src}", server.url("endless/a.tar")):
        with pytest.raises(FetchError) as caught:
            fetch_source(url, GOOD_SHA, cache, max_size=bound)
        assert f"bound of {bound} bytes" in caught.value.message, url
        assert leftovers(cache) == []
    # within the bound, the same source is fetched
    assert fetch_source(server.put("a.tar", GOOD), GOOD_SHA, cache, max_size=bound).is_file()


def test_bad_scheme(cache: Path) -> None:
    with pytest.raises(FetchError, match=re.escape("ftp://example.org/a.tar")):
        fetch_source("ftp://example.org/a.tar", GOOD_SHA, cache)
    with pytest.raises(FetchError, match="unsupported URL scheme"):
        fetch_source("example.org/a.tar", GOOD_SHA, cache)


@pytest.mark.parametrize(
    "sha",
    ["", "abc", GOOD_SHA.upper(), GOOD_SHA[:-1], GOOD_SHA + "0", "g" * 64, f"../{GOOD_SHA[3:]}"],
)
def test_bad_sha_format(sha: str, cache: Path) -> None:
    with pytest.raises(FetchError, match="bad sha256"):
        fetch_source("https://example.org/a.tar", sha, cache)
    assert not cache.exists()


def test_empty_url(cache: Path) -> None:
    with pytest.raises(FetchError, match="empty source URL"):
        fetch_source("", GOOD_SHA, cache)


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_interrupted_download_leaves_nothing(
    server: Server, cache: Path, exc: type[BaseException]
) -> None:
    url = server.put("a.tar", GOOD)

    def progress(done: int, total: int | None) -> None:
        if done > 0:
            assert [p for p in leftovers(cache) if p.endswith(".part")], "streams via a .part"
            raise exc()

    with pytest.raises(exc):
        fetch_source(url, GOOD_SHA, cache, on_progress=progress)
    assert leftovers(cache) == []


# --- helpers and the daemon's way of calling ---------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://example.org/pub/hello-1.0.tar.gz", "hello-1.0.tar.gz"),
        ("https://example.org/pub/hello-1.0.tar.gz?download=1#frag", "hello-1.0.tar.gz"),
        ("https://example.org/pub/dir/", "dir"),
        ("https://example.org/a%20b.tar", "a b.tar"),
        ("file:///srv/x.zip", "x.zip"),
        ("https://example.org/", "source"),
        ("https://example.org", "source"),
        ("https://example.org/..", "source"),
        ("https://example.org/a%2Fb", "source"),
        ("", "source"),
    ],
)
def test_url_basename(url: str, name: str) -> None:
    assert url_basename(url) == name


async def test_from_a_trio_thread(server: Server, cache: Path) -> None:
    url = server.put("a.tar", GOOD)
    path = await trio.to_thread.run_sync(fetch_source, url, GOOD_SHA, cache)
    assert path.read_bytes() == GOOD
