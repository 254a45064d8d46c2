"""The optional parts of ix and the libraries each needs: `pip install .` gives a daemon
without binary caches or clusters; an option that needs one of them says which extra to
install, at start, rather than failing on an import half way through a build."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from ixd.wire.errors import MissingExtra

#: the extras of pyproject.toml, with the Debian packages the runit service's python3 needs
DEBIAN = {"cache": "python3-cryptography python3-boto3 python3-zstandard",
          "cluster": "python3-distributed (or pip install distributed)"}


def require(modules: Sequence[str], extra: str, option: str) -> None:
    """MissingExtra naming `extra` unless every one of `modules` can be imported (found,
    not imported: that is left to the code that uses them)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(
            f"{option} needs the Python packages {', '.join(missing)}, which are not "
            f"installed: pip install 'ix[{extra}]' (for the Debian python3 that runit runs: "
            f"apt-get install {DEBIAN[extra]})")
