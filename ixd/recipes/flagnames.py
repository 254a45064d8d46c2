"""The names a recipe's templates read from their context (its flags among them), and the
default each gives a name (`{{ greeting | default('Hello') }}`): what `ixc show` lists, and
how ix tells a flag no package reads (a typo: `--frobnicate`) from one that counts.

Read from each template's syntax tree, not from a render: every name a template could read,
in any branch (a name read only in a branch not taken still counts as read).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import jinja2
import jinja2.nodes

from ixd.model import selector
from ixd.recipes import rendercontext

#: names the template language itself gives a template
_BUILTIN = frozenset({"self", "super", "loop", "caller", "varargs", "kwargs", "true",
                      "false", "none", "True", "False", "None", "range", "dict", "lipsum",
                      "cycler", "joiner", "namespace"})
#: names the daemon sets in every render context besides the ones a client may not set
#: (`ixd.model.selector.ENGINE_NAMES`): its settings (`ixd --set`), `setx` on boot builds
ENGINE_NAMES = selector.ENGINE_NAMES | frozenset(rendercontext.DEFAULT_SETTINGS) | {"setx"}
#: flags the daemon reads itself, outside any template (ixd.recipes.plan: allow_dynamic)
ENGINE_FLAGS = frozenset({"allow_dynamic", "target", "host", "target_realm"})


def template_names(env: jinja2.Environment, text: str) -> dict[str, str | None]:
    """Each name `text` (a template) reads but never sets, with the default it gives it
    (`NAME | default('v')`), None if it gives none; {} for what is no template."""
    try:
        tree = env.parse(text)
    except jinja2.TemplateSyntaxError:
        return {}
    read: set[str] = set()
    set_here: set[str] = set()
    for node in tree.find_all(jinja2.nodes.Name):
        (read if node.ctx == "load" else set_here).add(node.name)
    defaults: dict[str, str | None] = {}
    for found in tree.find_all(jinja2.nodes.Filter):
        if (found.name == "default" and isinstance(found.node, jinja2.nodes.Name)
                and found.args and isinstance(found.args[0], jinja2.nodes.Const)):
            defaults.setdefault(found.node.name, str(found.args[0].value))
    return {n: defaults.get(n) for n in sorted(read - set_here - _BUILTIN)}


def flags_of(names: Mapping[str, str | None]) -> dict[str, str | None]:
    """The names of `names` that are flags (not set by the daemon), with their defaults."""
    return {n: d for n, d in names.items() if n not in ENGINE_NAMES}


def unread(flags: Iterable[str], read: Iterable[str]) -> list[str]:
    """Of `flags` (set by a user), those no template reads and the daemon does not either."""
    known = set(read) | ENGINE_FLAGS
    return sorted({f for f in flags if f not in known})


class TemplateNames:
    """`template_names` of recipe files, each read and parsed once and kept until the file
    changes (`invalidate`); thread-safe."""

    def __init__(self) -> None:
        self._env = jinja2.Environment()
        self._lock = threading.Lock()
        self._by_file: dict[Path, dict[str, str | None]] = {}

    def of_files(self, files: Iterable[Path]) -> dict[str, str | None]:
        """The names the files read, with the defaults they give (the first file's)."""
        names: dict[str, str | None] = {}
        for path in files:
            for name, default in self._of_file(path).items():
                if names.get(name) is None:
                    names[name] = default
        return names

    def _of_file(self, path: Path) -> dict[str, str | None]:
        with self._lock:
            known = self._by_file.get(path)
        if known is not None:
            return known
        try:
            text = path.read_text(errors="replace")
        except OSError:
            text = ""
        names = template_names(self._env, text)
        with self._lock:
            self._by_file[path] = names
        return names

    def invalidate(self, paths: Iterable[Path]) -> None:
        with self._lock:
            for path in paths:
                self._by_file.pop(Path(path), None)
