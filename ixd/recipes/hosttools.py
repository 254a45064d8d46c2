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

#: where //die/host.sh looks for host tools, in this order
SYSTEM_DIRS = ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")


class HostVersions(Mapping[str, str]):
    """tool name → "VERSION-LINE (REAL-PATH sha256:PREFIX)", computed on first use."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def __getitem__(self, tool: str) -> str:
        with self._lock:
            if tool not in self._known:
                self._known[tool] = describe_tool(tool)
            return self._known[tool]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._known))

    def __len__(self) -> int:
        return len(self._known)


def describe_tool(tool: str) -> str:
    if not tool or "/" in tool or tool in (".", ".."):
        return "not a tool name"
    for folder in SYSTEM_DIRS:
        path = os.path.join(folder, tool)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            break
    else:
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
