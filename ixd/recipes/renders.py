"""The renders a package graph keeps (docs/recipes.md, "Rendering speed"): in memory by
package key while no file they read changes, a realm-blind render (its templates never name
`target_realm`) once for every realm; on disk across restarts (`store`,
`ixd.recipes.rendercache`); and the index of the files each kept render and each cached
package read, so that a changed file finds exactly what it changes.

A render stays when its package goes because a dependency changed: it is reused when the
package is loaded again (its closures and uid are made anew, which is cheap).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

from ixd.recipes.descriptor import Descriptor
from ixd.recipes.packagecache import PackageKey
from ixd.recipes.rendercache import RenderStore

#: a kept render: its descriptor and the files it read
KeptRender = tuple[Descriptor, frozenset[Path]]


class RenderCache:
    """Not thread-safe: its graph's lock guards it."""

    def __init__(self, store: RenderStore | None) -> None:
        #: renders kept across restarts, if the graph has a file for them
        self.store = store
        self._renders: dict[PackageKey, KeptRender] = {}
        #: the keys of kept renders whose templates never name `target_realm`: the same
        #: render serves the package in every realm (and outside any)
        self._realm_free: set[PackageKey] = set()
        #: the keys whose render or package read each set of files, and the sets each file
        #: is in (a template family's renders read one set: indexing sets, not files, costs
        #: a key one entry, not one per file)
        self._by_files: dict[frozenset[Path], set[PackageKey]] = {}
        self._file_sets_of: dict[Path, set[frozenset[Path]]] = {}

    def get(self, key: PackageKey, realm_free_key: PackageKey) -> KeptRender | None:
        """The render kept for `key`, or the realm-blind one of the package outside any
        realm (`realm_free_key`)."""
        kept = self._renders.get(key)
        if kept is None and realm_free_key in self._realm_free:
            kept = self._renders[realm_free_key]  # another realm's render, realm-blind
        return kept

    def keep(self, key: PackageKey, descriptor: Descriptor, files: frozenset[Path],
             realm_free_key: PackageKey | None = None) -> None:
        """Keep a render for `key`, and for every realm (`realm_free_key`) if it is
        realm-blind; from now on a change to one of its files finds it."""
        self._renders[key] = (descriptor, files)
        self.index(key, files)
        if realm_free_key is not None:
            self._renders[realm_free_key] = (descriptor, files)
            self.index(realm_free_key, files)
            self._realm_free.add(realm_free_key)

    def share_text(self, key: PackageKey, descriptor: Descriptor) -> None:
        """The render kept for `key` is `descriptor` (the same, its script text shared with
        another flag set of the same build)."""
        kept = self._renders.get(key)
        if kept is not None:
            self._renders[key] = (descriptor, kept[1])

    def drop(self, key: PackageKey, cached: Collection[PackageKey]) -> None:
        """Drop a kept render; its index entries go too unless its package is still
        `cached` (invalidation then forgets the package, and they go with it)."""
        kept = self._renders.pop(key, None)
        self._realm_free.discard(key)
        if kept is not None and key not in cached:
            self.unindex(key, kept[1])

    def forget_package(self, key: PackageKey, files: frozenset[Path],
                       keep_render: bool = False) -> None:
        """A cached package went: its index entries go, and its render unless
        `keep_render`."""
        if not (keep_render and key in self._renders):
            self._renders.pop(key, None)
            self._realm_free.discard(key)
            self.unindex(key, files)

    def prune(self, cached: Collection[PackageKey]) -> None:
        """Drop the renders of packages not `cached`."""
        for key in [k for k in self._renders if k not in cached]:
            self.drop(key, cached)

    def __len__(self) -> int:
        return len(self._renders)

    # --- the file index -----------------------------------------------------------------

    def index(self, key: PackageKey, files: frozenset[Path]) -> None:
        """`key`'s render or package read `files`."""
        keys = self._by_files.get(files)
        if keys is None:
            keys = self._by_files[files] = set()
            for path in files:
                self._file_sets_of.setdefault(path, set()).add(files)
        keys.add(key)

    def unindex(self, key: PackageKey, files: frozenset[Path]) -> None:
        keys = self._by_files.get(files)
        if keys is None:
            return
        keys.discard(key)
        if not keys:
            del self._by_files[files]
            for path in files:
                sets = self._file_sets_of.get(path)
                if sets is not None:
                    sets.discard(files)
                    if not sets:
                        del self._file_sets_of[path]

    def keys_reading(self, paths: Iterable[Path]) -> set[PackageKey]:
        """The keys whose kept render or cached package read any of `paths`."""
        return {k for path in paths for fs in self._file_sets_of.get(path, ())
                for k in self._by_files[fs]}

    def check_invariants(self, packages: Iterable[tuple[PackageKey, frozenset[Path]]]
                         ) -> None:
        """Every index entry names a kept render or one of the cached `packages` (key and
        files), and finds each of them (raises AssertionError)."""
        cached = dict(packages)
        named = set(self._renders) | set(cached)
        for files, keys in self._by_files.items():
            assert keys and keys <= named, files
            for path in files:
                assert files in self._file_sets_of[path], path
        for path, sets in self._file_sets_of.items():
            assert sets and all(path in fs and fs in self._by_files for fs in sets), path
        for key, (_, files) in self._renders.items():
            assert key in self._by_files.get(files, ()), key
        for key, files in cached.items():
            assert key in self._by_files.get(files, ()), key
        assert self._realm_free <= set(self._renders)
