"""What the host's tools are: versions stamped into the `bld/host/*` wrappers' renders.

A wrapper's uid then changes when its host tool is upgraded, and so does the uid of
everything built with it. Looked up once per tool and daemon run (restart ixd after a host
upgrade); the same for every user, since it describes the host, not the client.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ixd.recipes.hostfiles import find_program, read_kept, write_kept

#: where //die/host.sh looks for host tools, in this order
SYSTEM_DIRS = ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")


class HostVersions(Mapping[str, str]):
    """tool name → "VERSION-LINE (REAL-PATH sha256:PREFIX)", computed on first use.

    With `cache_file` (the daemon's `var/host-tools.json`), descriptions are kept across
    restarts and reused while the tool's file is the one described (same real path, inode,
    size and modification time: a package upgrade writes a new file), so a restarted daemon
    does not run every host tool's `--version` again."""

    def __init__(self, cache_file: Path | None = None) -> None:
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()
        self._cache_file = cache_file
        self._kept: dict[str, list[Any]] = read_kept(cache_file, 7) if cache_file else {}

    def __getitem__(self, tool: str) -> str:
        with self._lock:
            if tool not in self._known:
                self._known[tool] = self._describe(tool)
            return self._known[tool]

    def _describe(self, tool: str) -> str:
        path = find_tool(tool)
        if path is None or self._cache_file is None:
            return describe_tool(tool)
        identity = _identity(path)
        kept = self._kept.get(tool)
        if identity is not None and kept is not None and kept[:-1] == identity:
            return str(kept[-1])
        described = describe_tool(tool)
        if identity is not None:
            self._kept[tool] = [*identity, described]
            write_kept(self._cache_file, self._kept)
        return described

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._known))

    def __len__(self) -> int:
        return len(self._known)


def find_tool(tool: str) -> str | None:
    """The host's executable `tool` in SYSTEM_DIRS, or None (or for a name that is no
    plain file name)."""
    return None if tool.startswith("/") else find_program(tool, SYSTEM_DIRS)


def _identity(path: str) -> list[Any] | None:
    """What tells a tool's file from its next version, without reading it."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return [path, real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def describe_tool(tool: str) -> str:
    if not tool or "/" in tool or tool in (".", ".."):
        return "not a tool name"
    path = find_tool(tool)
    if path is None:
        return "not installed"
    real = os.path.realpath(path)
    with open(real, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    version = ""
    try:
        done = subprocess.run([path, "--version"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", timeout=5,
                              check=False, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
        if done.returncode == 0 and done.stdout.strip():
            version = done.stdout.strip().splitlines()[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"{version or '-'} ({real} sha256:{digest[:16]})"
