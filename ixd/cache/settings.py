"""The daemon's cache options (`CacheSettings`), apart from what uses them: a daemon without
`--cache` or `--push` reads its options without loading the cache's modules (tar archives,
object stores, signatures)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CacheSettings:
    """The daemon's cache options, as the administrator set them."""

    caches: tuple[str, ...] = ()
    push: str | None = None
    trusted_keys: tuple[str, ...] = ()
    signing_key: Path | None = None
    credentials: Path | None = None
