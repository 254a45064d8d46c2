"""The host's files as the render context asks about them (`hosttools`, `hostcapture`):
finding a program, and what the daemon keeps about files across restarts (a JSON map in
`var/`, replaced whole, reused while a file is unchanged)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def find_program(name: str, folders: Sequence[str]) -> str | None:
    """An absolute `name` as it is, or the first executable `name` in `folders`; None if
    there is none (or for a name that is no plain file name)."""
    if name.startswith("/"):
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    if not name or "/" in name or name in (".", ".."):
        return None
    for folder in folders:
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def read_kept(path: Path, width: int) -> dict[str, list[Any]]:
    """The kept map: name -> a list of `width` items; anything else in the file is
    dropped (it is only a cache)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items()
            if isinstance(k, str) and isinstance(v, list) and len(v) == width}


def write_kept(path: Path, kept: Mapping[str, list[Any]]) -> None:
    """Replace the file whole (a reader sees the old or the new one); a failure only costs
    the next start the work the file saves."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(kept, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
