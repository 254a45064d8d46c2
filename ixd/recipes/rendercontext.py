"""The render context: what a recipe's templates see (`render_context`), in stal/IX's
layers, the daemon's settings (`ixd --set`, `render_settings`) under the names the engine sets
and the package's flags; and the host's answers to the probes a template may call
(`HostProbes`: `ix_boot_tool`, `host_capture`, `host_program`; `isfile`, `host_versions`),
each call marked when the render is to be kept across restarts (a render that asked the host
is not). How to key the values a render looked up (`values_key`) is here too: it knows which
names hold the engine's helpers and which hold platforms.

May import: `ixd.wire`, `ixd.model`, and of `ixd.recipes` the modules below the package graph
(`package`, `tree`, `hostcapture`, `hostfiles`, `rendercache`): never `packages` or what
imports it.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ixd.model import platforms
from ixd.recipes.hostcapture import Captured, HostCapture
from ixd.recipes.hostfiles import find_program
from ixd.recipes.package import BOOT_PREFIX, Package, norm_name, uniq_id
from ixd.recipes.rendercache import Asked
from ixd.recipes.tree import recipe_file

_MISSING = object()
#: names of the render context that hold the engine's helpers: a new object for each render
#: (`ix`, `intro`, and the host's probes when renders are kept), doing the same
SAME_HELPERS = frozenset({"ix", "intro", "isfile", "ix_boot_tool", "host_versions"})


#: the names of the render context whose values are platform descriptions (dicts)
PLATFORM_NAMES = frozenset({"host", "target"})


def values_key(context: Mapping[str, Any], names: tuple[str, ...],
               platforms_at: tuple[int, ...]) -> tuple[Any, ...]:
    """The values of `names` in `context` (`_MISSING` for an undefined one) as a dict key:
    a platform description (at `platforms_at`) is one shared dict per platform, alive for
    good (`platforms.describe`), so its identity stands for it."""
    values = list(map(context.get, names, itertools.repeat(_MISSING)))
    for at in platforms_at:
        if type(values[at]) is dict:
            values[at] = ("platform", id(values[at]))
    return tuple(values)


def _isfile(path: object) -> bool:
    """`isfile(path)`: whether the daemon's host has that regular file."""
    return isinstance(path, str) and os.path.isfile(path)


#: the names of the render context the daemon's settings give (`ixd --set NAME=VALUE`), with
#: their defaults; `{store}` and `{root}` stand for the daemon's store and its parent
DEFAULT_SETTINGS: Mapping[str, str] = {
    "default_clang": "21",
    "default_allocator": "gperftools",
    "ix_boot_path": "/usr/local/bin:/usr/bin:/bin{llvm}",
    "ix_extract": "bsdtar --no-same-permissions --no-same-owner -x -f",
    "ix_dir": "{root}",
    "ix_trash_dir": "{root}/trash",
    # the build tools: `boot`, built from source on stage 0's captured compiler, every
    # build seeing only its inputs; `host`, the host's own (bld/host/*), in a sandbox that
    # shows the host's system folders (docs/recipes.md, "Stages")
    "ix_tools": "boot",
}


def render_settings(store: Path, given: Mapping[str, str]) -> dict[str, str]:
    """The defaults with `given` on top; `stalix` and other names are taken as they come."""
    settings = {**DEFAULT_SETTINGS, **given}
    root = str(Path(store).parent)
    llvm = _host_llvm_bin()
    return {k: v.replace("{root}", root).replace("{store}", str(store))
            .replace("{llvm}", f":{llvm}" if llvm else "")
            for k, v in settings.items()}


def _host_llvm_bin() -> str | None:
    """The newest `/usr/lib/llvm-N/bin`: where Debian keeps `clang-cpp` and `lld` under the
    names stal/IX's bootstrap looks for (`/usr/bin` has them only as `clang-cpp-N`)."""
    best: tuple[int, str] | None = None
    try:
        names = os.listdir("/usr/lib")
    except OSError:
        return None
    for entry in names:
        version = entry.removeprefix("llvm-")
        if entry.startswith("llvm-") and version.isdigit():
            folder = f"/usr/lib/{entry}/bin"
            if os.path.isdir(folder) and (best is None or int(version) > best[0]):
                best = (int(version), folder)
    return best[1] if best else None


class HostProbes:
    """The host's answers to a render's probes on `ix_boot_path` (of `settings`): the boot
    tools found once, stage 0's captures (`capture`) and programs looked up each time."""

    def __init__(self, settings: Mapping[str, str], capture: HostCapture) -> None:
        self.settings = settings
        self.host_capture = capture
        self._boot_tools: dict[str, str | None] = {}

    def boot_tool(self, tool: str) -> str | None:
        """`ix_boot_tool(name)`: the host's tool of that name on `ix_boot_path`, or None."""
        found = self._boot_tools.get(tool, "")
        if found == "":
            found = shutil.which(str(tool), path=self.settings["ix_boot_path"])
            self._boot_tools[tool] = found
        return found

    def capture(self, programs: Sequence[str], folders: Sequence[str] = ()) -> Captured:
        """`host_capture(programs, folders)`: what stage 0 copies of the host (programs by
        name, found on `ix_boot_path`, or by absolute path; folders whole)."""
        return self.host_capture.capture(
            [str(p) for p in programs], [str(f) for f in folders], self.boot_dirs())

    def program(self, name: str) -> str | None:
        """`host_program(name)`: the real path of the host's program `name` on
        `ix_boot_path` (where a recipe finds a folder to capture beside it), or None."""
        found = find_program(str(name), self.boot_dirs())
        return os.path.realpath(found) if found else None

    def boot_dirs(self) -> list[str]:
        return [d for d in self.settings["ix_boot_path"].split(":") if d]


def render_context(name: str, flags: Mapping[str, str], settings: Mapping[str, str],
                   host_name: str, probes: HostProbes, host_versions: Mapping[str, str],
                   intro: Callable[[str], Package]) -> dict[str, Any]:
    """What a recipe sees, in stal/IX's layers: the daemon's settings (`ixd --set`), the
    names the engine sets, `KIND`/`OS`/`ARCH` as True, then the package's flags. (Made for
    every package not rendered yet, most of which take a render of another flag set: the
    probes are marked only for a render made, `mark_probes`.)"""
    boot_tool: Callable[[str], str | None] = probes.boot_tool
    isfile: Callable[[object], bool] = _isfile
    capture: Callable[..., Captured] = probes.capture
    program: Callable[[str], str | None] = probes.program
    target = platforms.describe(flags["target"])
    host = platforms.describe(host_name)
    kind = flags["kind"]
    context: dict[str, Any] = {
        **settings,
        "ix_boot_tool": boot_tool,
        "host_capture": capture,
        "host_program": program,
        "host": host,
        "tool": name.startswith("bld/"),
        "boot": name.startswith(BOOT_PREFIX),
        "name": recipe_file(name),
        "basename": posixpath.basename(norm_name(name)),
        "uniq_id": uniq_id(name, kind),
        "native": host["id"] == target["id"],
        "isfile": isfile,
        "intro": intro,
        "host_versions": host_versions,
        kind: True,
        target["os"]: True,
        target["arch"]: True,
    }
    context.update(flags)
    context["target"] = target
    if context["boot"]:
        context["setx"] = "1"
    return context


# a question a render asked the host (`mark_probes`, `Asked`): a probe's name "" stands for
# one whose answer is not kept (`host_capture`'s, arguments or answers other than strings)
#: the probes whose answers a kept render keeps, to be asked again (`answers_hold`)
_KEPT_PROBES = frozenset({"ix_boot_tool", "isfile", "host_program", "host_versions"})
_UNKEPT: Asked = ("", (), None)


def mark_probes(context: dict[str, Any], probed: list[Asked]) -> None:
    """The host's probes of `context` (`render_context`) append to `probed` what the render
    asks the host: a render is kept across restarts only with these answers, used while the
    host answers alike (`answers_hold`)."""
    for name in ("ix_boot_tool", "isfile", "host_capture", "host_program"):
        context[name] = _asked(name, context[name], probed)
    context["host_versions"] = _AskedMapping(context["host_versions"], probed)


def answers_kept(probed: Sequence[Asked]) -> bool:
    """Whether every answer a render was given can be asked again (`answers_hold`)."""
    return all(name for name, _, _ in probed)


def answers_hold(asked: Sequence[Asked], probes: HostProbes,
                 host_versions: Mapping[str, str]) -> bool:
    """Whether the host answers each question a kept render asked as it did then: the
    render made now would be the same (it is a function of its files, its context's values
    and these answers)."""
    for name, args, answer in asked:
        try:
            if name == "ix_boot_tool":
                now: Any = probes.boot_tool(*args)
            elif name == "isfile":
                now = _isfile(*args)
            elif name == "host_program":
                now = probes.program(*args)
            elif name == "host_versions":
                now = host_versions.get(*args)
            else:
                return False
        except (TypeError, ValueError, OSError):
            return False
        if now != answer or type(now) is not type(answer):
            return False
    return True


def _asked(name: str, call: Callable[..., Any], probed: list[Asked]) -> Callable[..., Any]:
    def asking(*args: Any) -> Any:
        answer = call(*args)
        kept = (name in _KEPT_PROBES and all(type(a) is str for a in args)
                and (answer is None or type(answer) in (str, bool)))
        probed.append((name, args, answer) if kept else _UNKEPT)
        return answer
    return asking


class _AskedMapping(Mapping[str, str]):
    """`host_versions` as a render sees it: each lookup is noted with its answer (None: not
    there), a walk of them all as an answer not kept."""

    def __init__(self, mapping: Mapping[str, str], probed: list[Asked]) -> None:
        self._mapping = mapping
        self._probed = probed

    def __getitem__(self, key: str) -> str:
        answer = self._mapping.get(key) if type(key) is str else None
        self._probed.append(("host_versions", (key,), answer) if type(key) is str
                            else _UNKEPT)
        if answer is None:
            raise KeyError(key)
        return answer

    def __iter__(self) -> Iterator[str]:
        self._probed.append(_UNKEPT)
        return iter(self._mapping)

    def __len__(self) -> int:
        return len(self._mapping)
