"""The Jinja2 filters recipes use (RECIPES.md, "Trees, names, templates").

Each filter is a plain function of strings and lists, so recipes written for stal/IX read the
same here. They are registered on the recipe environment by `FILTERS`.
"""

from __future__ import annotations

import base64
import json
import os.path
from collections.abc import Callable, Iterable, Sequence
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
    return json.dumps(value, sort_keys=True)


def basename(value: str) -> str:
    return os.path.basename(value)


def dirname(value: str) -> str:
    return os.path.dirname(value)


def lines(value: str) -> list[str]:
    """The non-empty lines, stripped."""
    return [line.strip() for line in str(value).splitlines() if line.strip()]


def strip(value: str) -> str:
    return str(value).strip()


def strip_prefix(value: str, prefix: str) -> str:
    return value[len(prefix) :] if value.startswith(prefix) else value


def strip_suffix(value: str, suffix: str) -> str:
    return value[: -len(suffix)] if suffix and value.endswith(suffix) else value


def field(value: str, sep: str | int | None = None, index: int = 0) -> str:
    """`x|field('=', 1)`: the index-th field split by sep; `x|field(1)` splits on blanks."""
    if isinstance(sep, int):
        return str(value).split()[sep]
    return str(value).split(sep)[index]


def pad(value: str, width: int, fill: str = " ") -> str:
    return str(value).ljust(width, fill)


def add(value: Any, other: Any) -> Any:
    return value + other


def preproc(value: str) -> list[str]:
    """The lines that are neither empty nor `#` comments, stripped."""
    return [line for line in lines(value) if not line.startswith("#")]


def fix_list(value: str) -> str:
    return " ".join(preproc(value))


def parse_list(value: str) -> list[str]:
    return fix_list(value).split()


def list_to_json(value: str) -> str:
    return json.dumps(preproc(value))


def group_by(items: Sequence[Any], size: int) -> list[list[Any]]:
    if size < 1:
        raise ValueError(f"group_by needs a size of at least 1, not {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def parse_urls(value: str) -> list[dict[str, str]]:
    """`url` lines, each followed by its checksum line (`sha:HEX` or `HEX`) → [{url, md5}].

    The field is called md5 for compatibility with stal/IX; it holds the sha256.
    """
    items = preproc(value)
    if len(items) % 2:
        raise ValueError(f"fetch block: every URL needs a checksum line after it; got {items!r}")
    result = []
    for url, checksum in group_by(items, 2):
        result.append({"url": url, "md5": strip_prefix(checksum, "sha:")})
    return result


def fjoin(items: Iterable[Any], sep: str = " ") -> str:
    """Join the non-empty items."""
    return sep.join(str(i).strip() for i in items if str(i).strip())


def defined(value: Any) -> Any:
    """Fail the render when a value is undefined, naming it."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


FILTERS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        b64e, b64d, jl, jd, basename, dirname, lines, strip, strip_prefix, strip_suffix,
        field, pad, add, preproc, fix_list, parse_list, list_to_json, group_by, parse_urls,
        fjoin, defined,
    )
}
