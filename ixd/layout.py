"""Where things live under a daemon's root (see ARCHITECTURE.md, "Store and state layout")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
        return self.var / "ixd.sock"

    @property
    def sources(self) -> Path:
        return self.root / "src"

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def trash(self) -> Path:
        return self.root / "trash"

    def store_dir(self, uid: str, kind: str, name: str) -> Path:
        return self.store / f"{uid}-{kind}-{name}"

    def log_path(self, uid: str) -> Path:
        return self.logs / f"{uid}.log"

    def scratch(self, uid: str) -> Path:
        return self.build / uid

    def source_path(self, sha256: str) -> Path:
        return self.sources / sha256

    def realm_link(self, realm: str) -> Path:
        return self.realms / realm

    def ensure(self) -> None:
        """Create the tree; only the daemon's account may write, anyone may read the store,
        realms and logs; build scratch and trash are private."""
        for path, mode in ((self.root, 0o755), (self.store, 0o755), (self.realms, 0o755),
                           (self.var, 0o755), (self.logs, 0o755), (self.sources, 0o755),
                           (self.build, 0o700), (self.trash, 0o700)):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
