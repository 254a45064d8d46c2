"""Compiled templates shared by every daemon of a machine (`ixd.recipes.templatecache`): a new
root takes what another compiled from the same text, never a folder or file someone else
could have written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ixd.model.selector import parse_selector
from ixd.recipes import templateindex
from ixd.recipes.packages import PackageGraph
from ixd.recipes.templatecache import TemplateCache
from ixd.recipes.tree import RecipeTree

PROJECT_PKGS = Path(__file__).resolve().parent.parent / "pkgs"


def tree(tmp_path: Path, root: str, shared: Path | None) -> RecipeTree:
    return RecipeTree([tmp_path / "overlay", PROJECT_PKGS],
                      bytecode_dir=tmp_path / root / "jinja", shared_templates=shared)


def load(recipes: RecipeTree, tmp_path: Path, root: str) -> str:
    graph = PackageGraph(recipes, tmp_path / root / "store", host="linux-x86_64")
    package = graph.load(parse_selector("bin/cached"))
    assert package.node is not None
    return package.node.stdin


def cache_of(recipes: RecipeTree) -> TemplateCache:
    cache = recipes.env.bytecode_cache
    assert isinstance(cache, TemplateCache)
    return cache


def compiled(shared: Path) -> list[Path]:
    """The compiled templates of the shared folder (not its index files)."""
    return [p for p in shared.iterdir() if not p.name.startswith("index-")]


def write_recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "overlay" / "bin" / "cached" / "ix.sh"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{% extends '//die/sh.sh' %}\n{% block install %}\n" + text +
                    "\n{% endblock %}\n")
    return path


def test_a_new_root_takes_the_templates_another_compiled(tmp_path: Path) -> None:
    write_recipe(tmp_path, "echo one")
    shared = tmp_path / "shared"
    first = tree(tmp_path, "a", shared)
    script = load(first, tmp_path, "a")
    assert cache_of(first).shared_hits == 0
    written = sorted(p.name for p in compiled(shared))
    assert written and not any(p.name.startswith(".") for p in shared.iterdir())
    second = tree(tmp_path, "b", shared)
    assert load(second, tmp_path, "b") == script
    assert cache_of(second).shared_hits == len(written)
    # a changed recipe is another entry: compiled again, rendered as it is now
    write_recipe(tmp_path, "echo two")
    third = tree(tmp_path, "c", shared)
    assert "echo two" in load(third, tmp_path, "c")
    assert cache_of(third).shared_hits == len(written) - 1
    assert len(compiled(shared)) == len(written) + 1


def test_a_folder_or_entry_others_may_write_is_never_read(tmp_path: Path) -> None:
    write_recipe(tmp_path, "echo one")
    shared = tmp_path / "shared"
    load(tree(tmp_path, "a", shared), tmp_path, "a")
    entries = compiled(shared)
    # an entry someone else could have written (group-writable), or a link: not loaded
    entries[0].chmod(0o664)
    os.rename(entries[1], tmp_path / "elsewhere")
    entries[1].symlink_to(tmp_path / "elsewhere")
    second = tree(tmp_path, "b", shared)
    load(second, tmp_path, "b")
    assert cache_of(second).shared_hits == len(entries) - 2
    # a folder others may write to: not used at all
    shared.chmod(0o777)
    third = tree(tmp_path, "c", shared)
    load(third, tmp_path, "c")
    assert cache_of(third).shared_hits == 0


def test_without_a_shared_folder_the_roots_own_keeps_them(tmp_path: Path) -> None:
    write_recipe(tmp_path, "echo one")
    first = tree(tmp_path, "a", None)
    script = load(first, tmp_path, "a")
    assert list((tmp_path / "a" / "jinja").iterdir())
    again = tree(tmp_path, "a", None)
    assert load(again, tmp_path, "a") == script


def index_hits(recipes: RecipeTree) -> int:
    index = recipes.loader.index
    assert index is not None
    return index.hits


def test_a_new_root_finds_the_compiled_templates_unread(tmp_path: Path,
                                                        monkeypatch: Any) -> None:
    # the test's files were written just now: not "racy" here (the next test: they are)
    monkeypatch.setattr(templateindex, "RACY_SECONDS", 0.0)
    recipe = write_recipe(tmp_path, "echo one")
    shared = tmp_path / "shared"
    (tmp_path / "first").mkdir()

    def tree(root: str) -> RecipeTree:  # an empty overlay in front
        return RecipeTree([tmp_path / "first", tmp_path / "overlay", PROJECT_PKGS],
                          bytecode_dir=tmp_path / root / "jinja", shared_templates=shared)

    script = load(tree("a"), tmp_path, "a")
    second = tree("b")
    assert load(second, tmp_path, "b") == script
    count = len(compiled(shared))
    assert index_hits(second) == count
    # the same size and modification time, another text: its change time differs, so it
    # is read and compiled again, never served from the index
    before = recipe.stat()
    write_recipe(tmp_path, "echo two")
    os.utime(recipe, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert recipe.stat().st_size == before.st_size
    third = tree("c")
    assert "echo two" in load(third, tmp_path, "c")
    assert index_hits(third) == count - 1
    # a copy of the recipe in the overlay in front now: the name resolves to it
    earlier = tmp_path / "first" / "bin" / "cached" / "ix.sh"
    earlier.parent.mkdir(parents=True)
    earlier.write_text(recipe.read_text().replace("echo two", "echo three"))
    fourth = tree("d")
    assert "echo three" in load(fourth, tmp_path, "d")
    assert index_hits(fourth) == count - 1


def test_an_index_not_trusted_or_of_racy_files_is_not_used(tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    write_recipe(tmp_path, "echo one")
    shared = tmp_path / "shared"
    load(tree(tmp_path, "a", shared), tmp_path, "a")
    # a file changed in the last seconds is not indexed (an edit within the clock's tick
    # would keep its identity): the recipe is read again, the rest taken unread
    again = tree(tmp_path, "a", shared)
    load(again, tmp_path, "a")
    assert index_hits(again) == len(compiled(shared)) - 1
    monkeypatch.setattr(templateindex, "RACY_SECONDS", 0.0)
    load(tree(tmp_path, "a", shared), tmp_path, "a")
    [index] = [p for p in shared.iterdir() if p.name.startswith("index-")]
    index.chmod(0o666)  # others could have written it: an empty index
    second = tree(tmp_path, "b", shared)
    load(second, tmp_path, "b")
    assert index_hits(second) == 0
    # every entry damaged (no longer JSON): each template read and hashed again
    damaged = index.read_bytes().replace(b'"', b"'")
    index.unlink()
    index.write_bytes(damaged)
    index.chmod(0o644)
    third = tree(tmp_path, "c", shared)
    assert "echo one" in load(third, tmp_path, "c")
    assert index_hits(third) == 0
