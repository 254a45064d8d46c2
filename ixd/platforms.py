"""Platform descriptions: what recipes see as `host` and `target`.

A selector's `target` flag holds a platform name (`linux-x86_64`); the name `host` stands for
the platform the daemon runs on. The description is data, fixed by the daemon, never by a
client, so every user gets the same render.
"""

from __future__ import annotations

from ixd.errors import BadFlag

TYPE_CHECKING = False
if TYPE_CHECKING:  # `ixc` imports this module (through the selectors): no typing at run time
    from typing import Any

_ARCHES: dict[str, dict[str, Any]] = {
    "x86_64": {"bits": 64, "family": "x86"},
    "aarch64": {"bits": 64, "family": "arm"},
    "riscv64": {"bits": 64, "family": "riscv"},
    "i686": {"bits": 32, "family": "x86"},
}

#: the operating systems and architectures platform names are made of; every render sets the
#: target's two to True, so no client flag may be named like them
OS_NAMES = frozenset({"linux"})
ARCH_NAMES = frozenset(_ARCHES)
#: every platform name `describe` knows
KNOWN = tuple(f"linux-{arch}" for arch in _ARCHES)


def describe(name: str) -> dict[str, Any]:
    """The description of a platform name `OS-ARCH`; the result is a fresh dict."""
    os_name, _, arch = name.partition("-")
    if os_name != "linux" or arch not in _ARCHES:
        raise BadFlag(f"unknown target platform {name!r}; known platforms: {', '.join(KNOWN)}")
    return {
        "name": name,
        "os": os_name,
        "arch": arch,
        "bits": _ARCHES[arch]["bits"],
        "family": _ARCHES[arch]["family"],
        "gnu": {"three": f"{arch}-linux-musl"},
        "exe_suffix": "",
        "linux": True,
    }


def host_name() -> str:
    import platform  # here: `ixc` imports this module on its way to the socket

    machine = platform.machine()
    return f"linux-{ {'amd64': 'x86_64', 'arm64': 'aarch64'}.get(machine, machine) }"


def resolve(name: str, host: str) -> str:
    """`host` → the host's platform name; any other name is checked and returned."""
    resolved = host if name == "host" else name
    describe(resolved)
    return resolved
