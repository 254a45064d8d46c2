"""Manual pages as roff text: the few requests `man` needs, with text escaped. Here, in the
lowest layer, because `ixc` (client.manpage) and `ixd` (ixd.daemon.manpage) both write their
page from their own command tables with it."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


def text(value: str) -> str:
    """`value` as roff body text: backslashes and dashes escaped, no line starting with a
    control character."""
    lines = []
    for line in value.replace("\\", "\\e").replace("-", "\\-").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def page(name: str, section: int, title: str, version: str,
         sections: Iterable[tuple[str, str]]) -> str:
    """A whole page: `.TH`, NAME, then each (heading, roff body) in order."""
    head = [f'.TH {name.upper()} {section} "" "{version}" "{title}"', ".SH NAME",
            f"{name} \\- {text(title)}"]
    for heading, body in sections:
        head.append(f".SH {heading.upper()}")
        head.append(body)
    return "\n".join(head) + "\n"


def item(term: str, body: str) -> str:
    """A tagged paragraph: `term` in bold, `body` indented below it."""
    return f".TP\n.B {text(term)}\n{text(body)}"


def paragraphs(*bodies: str) -> str:
    return "\n.PP\n".join(text(b) for b in bodies)
