"""Deleting trees the daemon owns, read-only ones too, without ever following a link."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def remove_tree(path: Path) -> None:
    """Delete a file or directory tree, read-only ones too; a missing path is fine.

    A symlink is removed itself, never what it points to (shutil.rmtree works through file
    descriptors and does not follow links inside the tree either)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    if os.geteuid() != 0:
        # Entries can only be unlinked from a writable (and searchable) directory; root may
        # anyway. Only real folders are made writable, never what a link names.
        stack = [os.fspath(path)]
        while stack:
            directory = stack.pop()
            mode = stat.S_IMODE(os.lstat(directory).st_mode)
            if mode & 0o700 != 0o700:
                os.chmod(directory, mode | 0o700)
            with os.scandir(directory) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
    shutil.rmtree(path, onerror=_ignore_missing)


def _ignore_missing(function: object, path: str, exc_info: tuple[type, BaseException, object]
                    ) -> None:
    """Two deleters of one tree (the trash collector and gc's sweep) may meet: what the
    other one deleted first is fine."""
    if isinstance(exc_info[1], FileNotFoundError):
        return
    raise exc_info[1]
