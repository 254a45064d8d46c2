"""The Jinja2 filters recipes use (docs/recipes.md, "Filters").

Each filter is a plain function of strings and lists, so recipes written for stal/IX read the
same here. They are registered on the recipe environment by `FILTERS`.
"""

from __future__ import annotations

import base64
import functools
import json
import os.path
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jinja2


def b64e(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return base64.b64encode(data).decode("ascii")


def b64d(value: str) -> str:
    return base64.b64decode(value).decode()


def jl(value: str) -> Any:
    return json.loads(value)


def jd(value: Any) -> str:
    """JSON of a value, keys in the order given (as stal/IX: recipes build descriptors with
    it, and the order shows in rendered scripts)."""
    return json.dumps(value)


def basename(value: str) -> str:
    return os.path.basename(value)


def dirname(value: str) -> str:
    return os.path.dirname(value)


def lines(value: str) -> list[str]:
    """The lines of the text with its outer blanks stripped (inner lines kept as they are)."""
    return str(value).strip().split("\n")


def strip(value: str) -> str:
    return str(value).strip()


def strip_prefix(value: str, prefix: str) -> str:
    return value[len(prefix) :] if value.startswith(prefix) else value


def strip_suffix(value: str, suffix: str) -> str:
    return value[: -len(suffix)] if suffix and value.endswith(suffix) else value


def field(value: str, index: int) -> str:
    """`'3.45.1'|field(1)` → `'45'`: the index-th dot-separated field of a version."""
    return str(value).split(".")[index]


def pad(value: str, width: int) -> str:
    """`'45'|pad(4)` → `'4500'`: zeros added on the right up to `width` characters."""
    return str(value).ljust(width, "0")


def add(value: Any, other: Any) -> int:
    """Integer sum of two numbers or number strings: `'45'|add(1)` → 46."""
    return int(value) + int(other)


def preproc(value: str) -> list[str]:
    """The lines that are neither empty nor `#` comments, stripped."""
    result = []
    for line in str(value).split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            result.append(line)
    return result


#: the longest text the list filters remember their answer for, and how many they remember:
#: the same list blocks render alike in hundreds of packages (bin/curl's 2,109 packages call
#: them 6,000 times with 700 texts)
_MEMO_TEXT = 2048
_MEMO_ENTRIES = 2048


def _remembered(function: Callable[[str], str]) -> Callable[[str], str]:
    """`function`, remembering its answers for texts of at most _MEMO_TEXT characters (the
    last _MEMO_ENTRIES of them); a longer text, or not a plain string, is worked out anew."""
    memo = functools.lru_cache(maxsize=_MEMO_ENTRIES)(function)

    @functools.wraps(function)
    def answer(value: str) -> str:
        if type(value) is str and len(value) <= _MEMO_TEXT:
            return memo(value)
        return function(value)

    return answer


@_remembered
def fix_list(value: str) -> str:
    """The items of a list block on one line, one space apart."""
    text = " ".join(preproc(value))
    while "  " in text:
        text = text.replace("  ", " ")
    return text


def parse_list(value: str) -> list[str]:
    return [item for item in fix_list(value).split(" ") if item]


@_remembered
def list_to_json(value: str) -> str:
    """`json.dumps` of the `preproc` lines, byte for byte (a list of strings needs no
    encoder: each item is quoted by the encoder's own C function)."""
    lines = preproc(value)
    if not lines:
        return "[]"
    return "[" + ", ".join(map(_json_string, lines)) + "]"


#: json.dumps of one string (ensure_ascii, as its default)
_json_string = json.encoder.encode_basestring_ascii


def group_by(items: Iterable[Mapping[str, Any]], key: str) -> dict[Any, list[Any]]:
    """Items grouped by the value of their `key`, in first-seen order."""
    groups: dict[Any, list[Any]] = {}
    for item in items:
        groups.setdefault(item[key], []).append(item)
    return groups


def parse_urls(value: str) -> list[dict[str, str]]:
    """A fetch block (URLs, each followed by its checksum: `sha:HEX` or `HEX`) → [{url, md5}].

    A word with `://` is a URL, any other word the checksum of the URL before it. The field
    is called md5 for compatibility with stal/IX; it holds the sha256.
    """
    result = []
    current: dict[str, str] = {}
    for word in fix_list(value).split(" "):
        if "://" in word:
            current["url"] = word
        else:
            current["md5"] = strip_prefix(word, "sha:")
        if len(current) == 2:
            result.append(current)
            current = {}
    return result


def fjoin(items: Iterable[Any], sep: str) -> str:
    return sep.join(items)


def defined(value: Any, name: str = "") -> Any:
    """Fail the render when a value is undefined: `{{ user|defined('user') }}` says `user
    undefined` (and how to provide it, for the drivers stal/IX asks for by switch)."""
    if isinstance(value, jinja2.Undefined):
        what = name or getattr(value, "_undefined_name", None) or "value"
        message = _UNDEFINED_HELP.get(
            what, f"{what} undefined: set it as a flag, e.g. pkg({what}=VALUE)")
        raise jinja2.UndefinedError(message)
    return value


_UNDEFINED_HELP = {
    "vulkan": "vulkan undefined: name a vulkan driver with the flag vulkan=PACKAGE",
    "opengl": "opengl undefined: name an opengl driver with the flag opengl=PACKAGE",
}


FILTERS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        b64e, b64d, jl, jd, basename, dirname, lines, strip, strip_prefix, strip_suffix,
        field, pad, add, preproc, fix_list, parse_list, list_to_json, group_by, parse_urls,
        fjoin, defined,
    )
}
