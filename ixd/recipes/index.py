"""The packages the overlays hold, by name and description: what `ixc search` ranks, what
completion lists, and where a misspelt name finds its closest names.

A package is a folder holding an `ix.sh` (`bin/hello` is `bin/hello/ix.sh`; the first
overlay holding a name wins). Its description is the first sentence of the comment a recipe
may open with (`{#- GNU hello: prints a friendly greeting. -#}`); stal/IX's recipes have
none, and then the name is all there is. The index is made on first use (one pass over the
overlays, the first few KiB of each recipe) and kept until a recipe file changes (the
daemon's watcher calls `invalidate`); every query after that is in memory.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: the folders of an overlay that hold templates, not packages
NOT_PACKAGES = frozenset({"die"})
#: how much of a recipe is read for its description
HEAD_BYTES = 4096
_COMMENT = re.compile(r"^\s*\{#-?(?P<text>.*?)-?#\}", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_EXTENDS = re.compile(r"""\{%-?\s*extends\s+(['"])(?P<name>[^'"]+)\1""")
MAX_DESCRIPTION = 160


@dataclass(frozen=True)
class Recipe:
    """One package of the overlays."""

    name: str
    #: the first sentence of the recipe's opening comment ("" if it has none)
    description: str
    #: the recipe file that defines it (the first overlay holding the name)
    file: Path

    @property
    def basename(self) -> str:
        return posixpath.basename(self.name)


@dataclass(frozen=True)
class Found:
    recipe: Recipe
    score: int


class RecipeIndex:
    """Every package of `overlays`, made once and kept until `invalidate` (thread-safe)."""

    def __init__(self, overlays: Sequence[Path]) -> None:
        self.overlays = [Path(o) for o in overlays]
        self._lock = threading.Lock()
        self._recipes: dict[str, Recipe] | None = None
        self._lowered: list[tuple[Recipe, str, str, str]] = []

    def invalidate(self) -> None:
        """A recipe file changed: the next query reads the overlays again."""
        with self._lock:
            self._recipes = None

    def recipes(self) -> dict[str, Recipe]:
        """Every package by name, in name order."""
        with self._lock:
            if self._recipes is None:
                found: dict[str, Recipe] = {}
                for overlay in self.overlays:
                    for name, file in _recipe_files(overlay):
                        if name not in found:
                            found[name] = Recipe(name, _description(file), file)
                self._recipes = dict(sorted(found.items()))
                self._lowered = [(r, r.name.lower(), r.basename.lower(),
                                  r.description.lower()) for r in self._recipes.values()]
            return self._recipes

    def get(self, name: str) -> Recipe | None:
        return self.recipes().get(name)

    def search(self, terms: Sequence[str]) -> list[Found]:
        """The packages whose name or description holds every term (case-blind), best
        first: a name equal to a term, then a last part equal to it, then names that start
        with it, hold it, and last descriptions that hold it; shorter names first."""
        self.recipes()
        words = [t.lower() for t in terms if t.strip()]
        if not words:
            return []
        found = []
        for recipe, name, base, description in self._lowered:
            score = 0
            for word in words:
                points = _points(word, name, base, description)
                if not points:
                    break
                score += points
            else:
                found.append(Found(recipe, score))
        found.sort(key=lambda f: (-f.score, len(f.recipe.name), f.recipe.name))
        return found

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in self.recipes() if n.startswith(prefix)]

    def closest(self, name: str, count: int = 3) -> list[str]:
        """The names most like `name` (a misspelt package), best first: by the whole name,
        and by its last part anywhere (`bin/helo` → `bin/hello`; `hello` → `bin/hello`)."""
        recipes = self.recipes()
        scored: dict[str, float] = {}
        base = posixpath.basename(name)
        for candidate in difflib.get_close_matches(name, list(recipes), count, 0.8):
            scored[candidate] = difflib.SequenceMatcher(None, name, candidate).ratio() + 1
        by_base: dict[str, list[str]] = {}
        for recipe in recipes.values():
            by_base.setdefault(recipe.basename, []).append(recipe.name)
        for match in difflib.get_close_matches(base, list(by_base), count, 0.8):
            ratio = difflib.SequenceMatcher(None, base, match).ratio()
            for candidate in by_base[match]:
                scored[candidate] = max(scored.get(candidate, 0.0), ratio)
        return sorted(scored, key=lambda n: (-scored[n], n))[:count]

    def beside(self, name: str, extending: str = "") -> list[str]:
        """The last parts of the packages in `name`'s folder (`bld/host/tcc` → cc, clang,
        gcc, make, ...); with `extending`, only those whose recipe extends, at some remove, a
        template of that file name (`compiler.sh`: the compilers), if any does."""
        folder = posixpath.dirname(name)
        siblings = [r for r in self.recipes().values()
                    if posixpath.dirname(r.name) == folder and r.name != name]
        if extending:
            chosen = [r for r in siblings
                      if any(posixpath.basename(t) == extending for t in self._extends(r))]
            siblings = chosen or siblings
        return [r.basename for r in siblings]

    def _extends(self, recipe: Recipe) -> list[str]:
        """The templates `recipe` extends, nearest first (through the overlays, by the text
        of each `{% extends '...' %}`; at most 16 deep)."""
        chain: list[str] = []
        name = f"{recipe.name}/ix.sh"
        file: Path | None = recipe.file
        while file is not None and len(chain) < 16:
            try:
                text = file.read_text(errors="replace")
            except OSError:
                break
            match = _EXTENDS.search(text)
            if match is None:
                break
            target = match.group("name")
            name = posixpath.normpath(target[2:] if target.startswith("//") else
                                      posixpath.join(posixpath.dirname(name), target))
            chain.append(name)
            file = next((o / name for o in self.overlays if (o / name).is_file()), None)
        return chain

    def with_basename(self, word: str) -> list[str]:
        """The packages whose last part is `word` (`hello` → `bin/hello`)."""
        return [r.name for r in self.recipes().values() if r.basename == word]


def _points(word: str, name: str, base: str, description: str) -> int:
    if word == name:
        return 100
    if word == base:
        return 80
    if base.startswith(word) or name.startswith(word):
        return 60
    if word in base:
        return 40
    if word in name:
        return 30
    if word in description:
        return 10
    return 0


def _recipe_files(overlay: Path) -> Iterable[tuple[str, Path]]:
    """(package name, recipe file) of every `ix.sh` under `overlay` (links not followed)."""
    top = os.fspath(overlay)
    for folder, subfolders, files in os.walk(top):
        if folder == top:
            subfolders[:] = [d for d in subfolders if d not in NOT_PACKAGES]
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        if "ix.sh" in files and folder != top:
            name = os.path.relpath(folder, top).replace(os.sep, "/")
            yield name, Path(folder) / "ix.sh"


def _description(file: Path) -> str:
    """The first sentence of the recipe's opening `{# ... #}` comment, or ""."""
    try:
        with open(file, "rb") as recipe:
            head = recipe.read(HEAD_BYTES).decode(errors="replace")
    except OSError:
        return ""
    match = _COMMENT.match(head)
    if match is None:
        return ""
    text = " ".join(match.group("text").split())
    first = _SENTENCE_END.split(text, maxsplit=1)[0]
    return first if len(first) <= MAX_DESCRIPTION else first[:MAX_DESCRIPTION - 1] + "…"
