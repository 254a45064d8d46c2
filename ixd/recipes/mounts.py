"""Virtual recipes of a tree folder with a `mount.py` (stal/IX's `pip/`), generated as data.

stal/IX runs a folder's `mount.py` to serve the recipes that are not files there; its `pip/`
folder's script fills a recipe template (the string constant `TMPL`) from `pypi.json`. ixd
runs as root, so it never executes tree-supplied Python: it reads `TMPL` out of `mount.py`
as a literal (with `ast`, nothing is run) and fills it from `pypi.json` itself, the way the
script does. A `mount.py` of any other shape serves nothing, and says so in the error of a
recipe that is then not found. See docs/recipes.md, "Virtual recipes".
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

MOUNT_SCRIPT = "mount.py"
INDEX = "pypi.json"


@dataclass(frozen=True)
class Mount:
    """One folder's generated recipes: `pkg/ix.sh` → its text."""

    folder: Path
    template: str
    index: dict[str, dict[str, object]]

    @property
    def files(self) -> tuple[Path, Path]:
        """The files the generated recipes are made from (a change to either changes them)."""
        return (self.folder / MOUNT_SCRIPT, self.folder / INDEX)

    def serve(self, path: str) -> str | None:
        """The recipe text at `path` (relative to the folder), or None if it has none.
        `x/t/ix.sh` serves the same recipe as `x/ix.sh`, as stal/IX's script does."""
        key = path.replace("/t/ix.sh", "/ix.sh")
        record = self.index.get(key)
        if not isinstance(record, dict):
            return None
        run = record.get("run", [])
        if not isinstance(run, list):
            run = []
        return (self.template
                .replace("{url}", str(record.get("url", "")))
                .replace("{sha}", str(record.get("sha", "")))
                .replace("{run}", "\n".join(f"{r}/ix.sh" for r in run)))


def _template_literal(script: str) -> str | None:
    """The string assigned to `TMPL` at the top level of `script`, if it is a literal."""
    try:
        module = ast.parse(script)
    except SyntaxError:
        return None
    for statement in module.body:
        if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)
                and statement.targets[0].id == "TMPL"
                and isinstance(statement.value, ast.Constant)
                and isinstance(statement.value.value, str)):
            return statement.value.value
    return None


def load_mount(folder: Path) -> Mount | None:
    """The mount of `folder`, or None when it has no `mount.py` of the known shape (a `TMPL`
    literal and a `pypi.json` object beside it)."""
    script = folder / MOUNT_SCRIPT
    index_file = folder / INDEX
    if not script.is_file() or not index_file.is_file():
        return None
    template = _template_literal(script.read_text())
    if template is None:
        return None
    try:
        index = json.loads(index_file.read_text())
    except ValueError:
        return None
    if not isinstance(index, dict):
        return None
    return Mount(folder, template, index)
