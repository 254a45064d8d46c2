"""Where things live under a daemon's root (see ARCHITECTURE.md, "Store and state layout")."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ixd.wire.errors import RootUnsafe
from ixd.wire.transport import SOCKET_IN_ROOT


def entry_path(store: Path, uid: str, label: str) -> Path:
    """A store entry's folder: `STORE/UID-LABEL`, the label `KIND-NAME` (`bin-hello`,
    `rlm-alice`): the one spelling of a store path."""
    return store / f"{uid}-{label}"


def sources_dir(store: Path) -> Path:
    """The sources' folder beside the store they are built into (`ROOT/src`)."""
    return store.parent / "src"


def source_file(store: Path, sha256: str) -> Path:
    """A source's file, by its content's sha256 (`ROOT/src/SHA256`): the one spelling of a
    source's path."""
    return sources_dir(store) / sha256


def entry_kind(path: str | Path) -> str:
    """The kind of the store entry at `path` (`bin` of `.../UID-bin-hello`): for entries
    known only by their path (a binary cache's index); plan nodes carry theirs."""
    return Path(path).name.split("-", 2)[1]


@dataclass(frozen=True)
class Layout:
    """The paths under one root. Pure: creating them is `ensure()`'s job."""

    root: Path

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def realms(self) -> Path:
        return self.root / "realm"

    @property
    def var(self) -> Path:
        return self.root / "var"

    @property
    def logs(self) -> Path:
        return self.var / "log"

    @property
    def database(self) -> Path:
        return self.var / "ixd.sqlite"

    @property
    def socket(self) -> Path:
        return self.root / SOCKET_IN_ROOT

    @property
    def sources(self) -> Path:
        return sources_dir(self.store)

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def trash(self) -> Path:
        return self.root / "trash"

    def store_dir(self, uid: str, kind: str, name: str) -> Path:
        return entry_path(self.store, uid, f"{kind}-{name}")

    def log_path(self, uid: str) -> Path:
        return self.logs / f"{uid}.log"

    def scratch(self, uid: str) -> Path:
        return self.build / uid

    def source_path(self, sha256: str) -> Path:
        return source_file(self.store, sha256)

    def realm_link(self, realm: str) -> Path:
        return self.realms / realm

    def ensure(self) -> None:
        """Create the tree; only the daemon's account may write, anyone may read the store,
        realms and logs; trash is private, and build/ may only be passed through (each build's
        scratch in it is private to its build user).

        Refuses (RootUnsafe) a root that is a symlink, or a fixed subfolder that is a symlink,
        not a folder, or owned by another account: the daemon deletes under these folders as
        root and must never do so through a link someone else planted.
        """
        me = os.geteuid()
        for path, mode in ((self.root, 0o755), (self.store, 0o755), (self.realms, 0o755),
                           (self.var, 0o755), (self.logs, 0o755), (self.sources, 0o755),
                           (self.build, 0o711), (self.trash, 0o700)):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                path.mkdir(parents=path == self.root, mode=0o700)
                st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                raise RootUnsafe(f"{path} is a symbolic link (to {os.readlink(path)}); the "
                                 f"daemon's root and its folders must be real folders: give "
                                 f"--root the real path, or remove the link")
            if not stat.S_ISDIR(st.st_mode):
                raise RootUnsafe(f"{path} is not a folder; move it away or choose another "
                                 f"--root")
            if st.st_uid != me:
                raise RootUnsafe(f"{path} belongs to uid {st.st_uid}, not to the daemon's "
                                 f"account (uid {me}); chown it, or choose another --root")
            if stat.S_IMODE(st.st_mode) != mode:
                os.chmod(path, mode)
