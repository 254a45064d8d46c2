"""Recipe templates: overlays, path rules, include lines, rendering to a descriptor.

A package name `bin/hello` is the file `bin/hello/ix.sh`, looked up in each overlay in turn.
Template paths starting with `//` are from the overlay root, others are relative to the
including template's folder. A whole line `{% include 'x' %}` is replaced by the file's text
when the template is loaded; `'x/base64'` gives that file's base64.

Every render records the files it read, so a change to one file drops exactly the renders
that depend on it (`RecipeTree.invalidate`).
"""

from __future__ import annotations

import base64
import contextvars
import functools
import json
import os
import posixpath
import re
import stat
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.runtime

from ixd.recipes.filters import FILTERS
from ixd.recipes.mounts import MOUNT_SCRIPT, Mount, load_mount
from ixd.recipes.templatecache import TemplateCache, shared_folder
from ixd.recipes.templateindex import Identity, TemplateIndex, identity
from ixd.wire.errors import RecipeError, RecipeNotFound

_INCLUDE_LINE = re.compile(r"""^[ \t]*\{%-?\s*include\s+(['"])(?P<name>[^'"]+)\1\s*-?%\}[ \t]*$""",
                           re.MULTILINE)
_MAX_INCLUDE_DEPTH = 16

# Template names loaded during the current render, to learn its file dependencies.
_loaded_names: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "_loaded_names", default=None
)
# Names of the render context the current render looked up (its templates' code resolves
# every name it uses when it enters a template or block).
_read_names: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "_read_names", default=None
)


@functools.lru_cache(maxsize=65536)
def join_template_path(name: str, parent: str | None) -> str:
    """Resolve a template path: `//x` from the overlay root, `x` beside `parent`."""
    if name.startswith("//"):
        joined = name[2:]
    elif parent is None:
        joined = name
    else:
        joined = posixpath.join(posixpath.dirname(parent), name)
    normal = posixpath.normpath(joined)
    if normal.startswith("../") or normal == ".." or normal.startswith("/") or normal == ".":
        raise jinja2.TemplateNotFound(f"{name} (from {parent}) leaves the overlay root")
    return normal


@functools.lru_cache(maxsize=65536)
def recipe_file(package_name: str) -> str:
    """The template of a package: `bin/hello` → `bin/hello/ix.sh`; `x/t.sh` → itself."""
    return package_name if package_name.endswith(".sh") else f"{package_name}/ix.sh"


def _read_regular(path: Path, seen: _Seen | None = None) -> str | None:
    """The text of a regular file, or None if there is none at `path` (one open, not a stat
    then an open: a fresh root reads hundreds; never blocking on a fifo). Its identity as
    read goes to `seen`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with open(fd, encoding="utf-8", closefd=True) as stream:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if seen is not None:
            seen.files[path] = identity(st)
        return stream.read()


@dataclass
class _Seen:
    """What a template's text was read from (`ixd.recipes.templateindex`): each file with
    its identity when read (None: not a plain file, e.g. a mount's), and the paths that
    were looked for first and not found."""

    files: dict[Path, Identity | None] = field(default_factory=dict)
    absent: list[Path] = field(default_factory=list)


class OverlayLoader(jinja2.BaseLoader):
    """Finds templates in an ordered list of overlays and expands include lines."""

    def __init__(self, overlays: Sequence[Path], tree: RecipeTree) -> None:
        self.overlays = [Path(o).resolve() for o in overlays]
        self._tree = tree
        #: the index of compiled templates by their files' identities, if there is one
        self.index: TemplateIndex | None = None

    def find(self, name: str, seen: _Seen | None = None) -> Path | None:
        for overlay in self.overlays:
            candidate = overlay / name
            try:
                st = os.stat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                if seen is not None:
                    seen.absent.append(candidate)
                continue
            except OSError:  # there, but not to be looked at: not indexed
                if seen is not None:
                    seen.files[candidate] = None
                continue
            if stat.S_ISREG(st.st_mode):
                if seen is not None:
                    seen.files[candidate] = identity(st)
                return candidate
            if seen is not None:  # there, but not a file: not indexed
                seen.files[candidate] = None
        return None

    def read(self, name: str, seen: _Seen | None = None
             ) -> tuple[str, tuple[Path, ...]] | None:
        """The text of a tree file and the files it comes from: the file itself, or, for a
        name in a folder with a mount (`pip/x/ix.sh`), the mount's files."""
        for overlay in self.overlays:
            candidate = overlay / name
            text = _read_regular(candidate, seen)
            if text is not None:
                return text, (candidate,)
            if seen is not None:
                seen.absent.append(candidate)
            first, sep, rest = name.partition("/")
            if sep:
                if seen is not None:
                    seen.absent.append(overlay / first / MOUNT_SCRIPT)
                mount = self._tree.mount(overlay / first)
                if mount is not None and (text := mount.serve(rest)) is not None:
                    if seen is not None:
                        seen.files.update(dict.fromkeys(mount.files))
                    return text, mount.files
        return None

    def load(self, environment: jinja2.Environment, name: str,
             globals: MutableMapping[str, Any] | None = None) -> jinja2.Template:
        """Jinja's `BaseLoader.load`, but a template whose files the index finds unchanged
        is taken from the shared folder unread, and one compiled or found otherwise is
        indexed."""
        cache = environment.bytecode_cache
        index = self.index if isinstance(cache, TemplateCache) else None
        template_globals = {} if globals is None else globals
        if index is not None:
            assert isinstance(cache, TemplateCache)
            found = index.lookup(name)
            code = cache.load_entry(found[0]) if found is not None else None
            if found is not None and code is not None:
                self._tree._record_files(name, found[2], found[1])
                return environment.template_class.from_code(
                    environment, code, template_globals, self._tree.up_to_date_check(found[2]))
        seen = _Seen() if index is not None else None
        source, filename, uptodate = self._source(name, seen)
        if cache is None:
            code = environment.compile(source, name, filename)
        else:
            bucket = cache.get_bucket(environment, name, filename, source)
            if bucket.code is None:
                bucket.code = environment.compile(source, name, filename)
                cache.set_bucket(bucket)
            code = bucket.code
            if index is not None and seen is not None:
                assert isinstance(cache, TemplateCache)
                entry = cache.shared_entry(bucket)
                if entry is not None:
                    index.note(name, entry, REALM_FLAG in source, seen.files, seen.absent)
        return environment.template_class.from_code(environment, code, template_globals,
                                                    uptodate)

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        return self._source(template, None)

    def _source(self, template: str, seen: _Seen | None
                ) -> tuple[str, str, Callable[[], bool]]:
        found = self.read(template, seen)
        if found is None:
            raise jinja2.TemplateNotFound(template)
        text, origin = found
        files: set[Path] = set(origin)
        source = self._expand_includes(text, template, files, 0, seen)
        self._tree._record_files(template, files, REALM_FLAG in source)
        return source, str(origin[0]), self._tree.up_to_date_check(files)

    def _expand_includes(self, text: str, name: str, files: set[Path], depth: int,
                         seen: _Seen | None = None) -> str:
        if depth > _MAX_INCLUDE_DEPTH:
            raise RecipeError(f"{name}: include lines nest deeper than {_MAX_INCLUDE_DEPTH}")

        def replace(match: re.Match[str]) -> str:
            target = join_template_path(match.group("name"), name)
            as_base64 = target.endswith("/base64")
            file_name = target[: -len("/base64")] if as_base64 else target
            if as_base64:
                path = self.find(file_name, seen)
                if path is None:
                    raise RecipeError(f"{name}: included file {match.group('name')!r} not "
                                      f"found (looked for {file_name} in every overlay)")
                files.add(path)
                return base64.b64encode(path.read_bytes()).decode("ascii")
            found = self.read(file_name, seen)
            if found is None:
                raise RecipeError(f"{name}: included file {match.group('name')!r} not found "
                                  f"(looked for {file_name} in every overlay)")
            included, origin = found
            files.update(origin)
            return self._expand_includes(included, file_name, files, depth + 1, seen).strip()

        return _INCLUDE_LINE.sub(replace, text)


#: what Jinja's generated code takes for a name the context does not have
_JINJA_MISSING: Any = getattr(jinja2.runtime, "missing")  # noqa: B009 (not in its __all__)
#: keyword arguments Jinja's generated code passes to every call (for `pass_context`
#: functions only)
_RUNTIME_KWARGS = frozenset({"_block_vars", "_loop_vars"})


class RecipeContext(jinja2.runtime.Context):
    """Jinja's render context, with a short way for the call recipes make most: a block
    (`self.script()`, `super()`), which takes no context argument (dozens per render); it
    notes each name the render looks up (`Rendered.reads`)."""

    def resolve_or_missing(self, key: str) -> Any:
        # Jinja's own, inline: generated code calls it for every name of every block
        reads = _read_names.get()
        if reads is not None:
            reads.add(key)
        if key in self.vars:
            return self.vars[key]
        if key in self.parent:
            return self.parent[key]
        return _JINJA_MISSING

    def call(__self, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if (type(__obj) is jinja2.runtime.BlockReference and not args
                and _RUNTIME_KWARGS.issuperset(kwargs)):
            context = __obj._context
            if context.eval_ctx.autoescape:  # `{% autoescape %}`: Jinja's own
                return __obj()
            # `BlockReference.__call__` of a synchronous environment (RecipeTree's)
            return "".join(__obj._stack[__obj._depth](context))
        return super().call(__obj, *args, **kwargs)


class RecipeEnvironment(jinja2.Environment):
    """A Jinja environment with IX path rules that reports which templates a render loads."""

    context_class = RecipeContext

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._kept: dict[str, jinja2.Template] = {}

    def join_path(self, template: str, parent: str) -> str:
        return join_template_path(template, parent)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`self.NAME` is a block: looked up directly, not after a failed attribute lookup
        (an exception per block call)."""
        if type(obj) is jinja2.runtime.TemplateReference:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def get_template(self, name: Any, parent: Any = None, globals: Any = None) -> Any:
        if isinstance(name, str):
            if parent is not None:
                name = self.join_path(name, parent)
            loaded = _loaded_names.get()
            if loaded is not None:
                loaded.add(name)
            # every `extends` of every render asks again: the kept template, while none of
            # its files changed, without Jinja's generic lookup
            kept = self._kept.get(name)
            if kept is not None and globals is None and kept.is_up_to_date:
                return kept
            template = super().get_template(name, None, globals)
            self._kept[name] = template
            return template
        return super().get_template(name, parent, globals)


#: the flag a realm gives its packages (docs/recipes.md, "target_realm"): a render whose
#: templates never name it is the same for every realm, and is shared between them
REALM_FLAG = "target_realm"


@dataclass(frozen=True)
class Rendered:
    """One render: the descriptor and the files it depends on."""

    descriptor: dict[str, Any]
    files: frozenset[Path]
    #: whether a template it loaded names REALM_FLAG (so the realm may change the render)
    reads_realm: bool = True
    #: the descriptor as the templates wrote it (JSON)
    text: str = ""
    #: the names of the render context it looked up: the render is a function of the files
    #: it read and of these names' values (an undefined name's too)
    reads: frozenset[str] = frozenset()


class IxHelper:
    """The `ix` object of the render context: loads files beside the recipe."""

    def __init__(self, tree: RecipeTree, package_name: str, files: set[Path]) -> None:
        self._tree = tree
        self._folder = posixpath.dirname(recipe_file(package_name))
        self._files = files

    def load_file(self, name: str) -> str:
        target = join_template_path(name, self._folder + "/x")
        found = self._tree.loader.read(target)
        if found is None:
            raise RecipeError(f"ix.load_file: {name!r} not found beside {self._folder}")
        text, origin = found
        self._files.update(origin)
        return text

    def error(self, message: str) -> None:
        """`{{ ix.error('why') }}`: the recipe refuses to render, saying why."""
        raise RecipeRefused(str(message))


class RecipeRefused(Exception):
    """A recipe's own `ix.error(...)`."""


class RecipeTree:
    """The overlays and a Jinja environment over them. Thread-safe for rendering."""

    def __init__(self, overlays: Sequence[Path], bytecode_dir: Path | None = None,
                 shared_templates: Path | None = None) -> None:
        """`bytecode_dir`: where compiled templates are kept for the next run;
        `shared_templates`: the machine's folder of them (`ixd.recipes.templatecache`)."""
        if not overlays:
            raise RecipeError("no recipe overlays configured")
        self._versions: dict[Path, int] = {}
        self._mounts: dict[Path, Mount | None] = {}
        self._file_sets: dict[frozenset[Path], frozenset[Path]] = {}
        #: how many invalidations there were: a template loaded since the last is up to date
        self._generation = 0
        self._lock = threading.Lock()
        self._files_of_template: dict[str, frozenset[Path]] = {}
        #: the templates whose text names REALM_FLAG
        self._realm_templates: set[str] = set()
        self.loader = OverlayLoader(overlays, self)
        self.env = RecipeEnvironment(
            loader=self.loader,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=True,
            cache_size=-1,
            autoescape=False,
            bytecode_cache=(TemplateCache(bytecode_dir, shared_folder(shared_templates))
                            if bytecode_dir or shared_templates else None),
        )
        self.env.filters.update(FILTERS)
        cache = self.env.bytecode_cache
        if isinstance(cache, TemplateCache):
            self.loader.index = cache.index(self.loader.overlays)

    def flush(self) -> None:
        """Keep what this run added to the index of compiled templates."""
        if self.loader.index is not None:
            self.loader.index.flush()

    @property
    def overlays(self) -> list[Path]:
        return self.loader.overlays

    def mount(self, folder: Path) -> Mount | None:
        """The generated recipes of a tree folder with a mount.py (cached until its files
        change)."""
        with self._lock:
            if folder not in self._mounts:
                self._mounts[folder] = load_mount(folder)
            return self._mounts[folder]

    def _record_files(self, template: str, files: Iterable[Path], reads_realm: bool) -> None:
        with self._lock:
            self._files_of_template[template] = frozenset(files)
            if reads_realm:
                self._realm_templates.add(template)
            else:
                self._realm_templates.discard(template)

    def file_versions(self, files: Iterable[Path]) -> tuple[int, ...]:
        """The versions of `files`, in the order given."""
        return tuple(self._versions.get(f, 0) for f in files)

    def up_to_date_check(self, files: Iterable[Path]) -> Callable[[], bool]:
        """Jinja's check, on every use of a loaded template, that none of `files` changed
        since: one comparison while nothing at all was invalidated since the last check."""
        files = tuple(sorted(files))
        versions = self.file_versions(files)
        checked = [self._generation]

        def up_to_date() -> bool:
            generation = self._generation
            if checked[0] == generation:
                return True
            if self.file_versions(files) != versions:
                return False
            checked[0] = generation
            return True

        return up_to_date

    def shared_file_set(self, files: frozenset[Path]) -> frozenset[Path]:
        """The one copy of an equal file set (renders of one template family read the same
        files)."""
        with self._lock:
            return self._file_sets.setdefault(files, files)

    def invalidate(self, paths: Iterable[Path]) -> None:
        """Make Jinja reload the templates that read `paths` on next use."""
        with self._lock:
            self._generation += 1
            self._file_sets.clear()  # sets of dropped renders go with them
            for path in paths:
                self._versions[path] = self._versions.get(path, 0) + 1
                self._mounts.pop(path.parent, None)

    def render(self, package_name: str, context: Mapping[str, Any]) -> Rendered:
        """Render a package's recipe to its descriptor dict."""
        template_name = recipe_file(package_name)
        loaded: set[str] = set()
        reads: set[str] = set()
        extra_files: set[Path] = set()
        token = _loaded_names.set(loaded)
        reads_token = _read_names.set(reads)
        try:
            ctx: MutableMapping[str, Any] = dict(context)
            ctx["ix"] = IxHelper(self, package_name, extra_files)
            text = self.env.get_template(template_name).render(ctx)
        except RecipeError:
            raise
        except RecipeRefused as exc:
            raise RecipeError(f"{_where(exc, template_name)}: recipe of {package_name!r} "
                              f"refuses to render: {exc}") from None
        except jinja2.TemplateNotFound as exc:
            if exc.name == template_name:
                raise RecipeNotFound(
                    f"no recipe for package {package_name!r}: {template_name} is in none of "
                    f"the overlays {', '.join(str(o) for o in self.overlays)}",
                    package_name) from None
            raise RecipeError(f"{_where(exc, template_name)}: template {exc.name!r} not found "
                              f"in any overlay") from None
        except jinja2.TemplateSyntaxError as exc:
            where = f"{exc.filename or exc.name}:{exc.lineno}"
            raise RecipeError(f"{where}: syntax error in recipe of {package_name!r}: "
                              f"{exc.message}") from None
        except Exception as exc:  # a template's own failure: name the file and line
            raise RecipeError(f"{_where(exc, template_name)}: rendering {package_name!r} "
                              f"failed: {type(exc).__name__}: {exc}") from None
        finally:
            _read_names.reset(reads_token)
            _loaded_names.reset(token)
        try:
            descriptor = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecipeError(
                f"{template_name}: recipe of {package_name!r} did not render to JSON "
                f"({exc.msg} at line {exc.lineno}); does it extend a //die/ template?"
            ) from None
        if not isinstance(descriptor, dict):
            raise RecipeError(f"{template_name}: recipe of {package_name!r} rendered "
                              f"{type(descriptor).__name__}, not a descriptor object")
        with self._lock:
            files = set(extra_files)
            for name in loaded:
                files |= self._files_of_template.get(name, frozenset())
            # renders of one template family read the same files: one set for all of them
            shared = self._file_sets.setdefault(frozenset(files), frozenset(files))
            reads_realm = not self._realm_templates.isdisjoint(loaded)
        return Rendered(descriptor, shared, reads_realm, text, frozenset(reads))


def _where(exc: BaseException, fallback: str) -> str:
    """`file:line` of the innermost template frame in a render's traceback."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename and not frame.filename.endswith(".py") and frame.lineno:
            return f"{frame.filename}:{frame.lineno}"
    return fallback

