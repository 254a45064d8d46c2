"""Platform descriptions: what recipes see as `host` and `target`.

A selector's `target` flag holds a platform name (`linux-x86_64`); the name `host` stands for
the platform the daemon runs on. The description is data, fixed by the daemon, never by a
client, so every user gets the same render.

The fields are the ones stal/IX's recipes read (docs/recipes.md, "Platforms"): a name is made
of parts (`mingw-w64-x86_64` = the `mingw_w64` part, then the `x86_64` part), each part
contributes fields, and the fields a part does not set are derived from the others
(`gnu.three` from `gnu_arch`, `vendor` and `os`; `rust` from `gnu_arch`, `vendor`, `rust_os`;
...). `id` is a hash of the whole description, as stal/IX computes it, so recipes comparing
ids (`native`) agree with it.
"""

from __future__ import annotations

from ixd.wire.errors import BadFlag

TYPE_CHECKING = False
if TYPE_CHECKING:  # `ixc` imports this module (through the selectors): no typing at run time
    from typing import Any

# Each part of a platform name and the fields it sets. A value that is itself a platform
# name (a str) stands for that platform's parts.
_PARTS: dict[str, dict[str, Any] | str] = {
    "linux": {"os": "linux", "kernel": "linux", "obj_fmt": "elf",
              "cmake_system_name": "Linux", "rust_os": "linux-musl"},
    "freebsd": {"os": "freebsd", "kernel": "freebsd", "obj_fmt": "elf",
                "cmake_system_name": "FreeBSD", "rust_os": "freebsd"},
    "darwin": {"os": "darwin", "clang_os": "darwin11", "kernel": "xnu", "vendor": "apple",
               "obj_fmt": "mach-o", "cmake_system_name": "Darwin", "dl_suffix": "dylib",
               "symbol_prefix": "_"},
    "wasi": {"os": "wasi", "kernel": "wasi", "obj_fmt": "wasm", "cmake_system_name": "WASI"},
    "mingw_w64": {"os": "mingw32", "kernel": "nt", "obj_fmt": "coff",
                  "cmake_system_name": "Windows", "vendor": "w64", "exe_suffix": ".exe"},
    "x86_64": {"gnu_arch": "x86_64", "family": "x86"},
    "aarch64": {"gnu_arch": "aarch64", "family": "arm"},
    "riscv64": {"gnu_arch": "riscv64", "family": "riscv"},
    "armv7": {"gnu_arch": "armv7", "family": "arm", "bits": 32},
    "wasm32": {"gnu_arch": "wasm32", "family": "wasm"},
    "wasm64": {"gnu_arch": "wasm64", "family": "wasm"},
    "gnueabihf": {"hard_float": True, "gnu": {"three": "armv7-linux-gnueabihf"}},
    # shorthands
    "wasi32": "wasi-wasm32",
    "wasi64": "wasi-wasm64",
    "mingw64": "mingw_w64-x86_64",
}

_LLVM_TARGET = {"aarch64": "AArch64", "x86_64": "X86", "armv7": "ARM", "riscv64": "RISCV",
                "wasm32": "TODO", "wasm64": "TODO"}
_LINUX_ARCH = {"aarch64": "arm64", "riscv64": "riscv", "armv7": "arm"}
_GO_ARCH = {"aarch64": "arm64", "x86_64": "amd64"}

#: every platform name `describe` knows, the host's among them
KNOWN = (
    "linux-x86_64", "linux-aarch64", "linux-riscv64", "linux-armv7",
    "darwin-x86_64", "darwin-arm64", "darwin-aarch64",
    "freebsd-x86_64", "freebsd-aarch64",
    "mingw-w64-x86_64", "mingw64",
    "wasi-wasm32", "wasi-wasm64", "wasi32", "wasi64",
)

#: shorthands, resolved to the full name so both load the same packages
_ALIASES = {"mingw64": "mingw-w64-x86_64", "wasi32": "wasi-wasm32", "wasi64": "wasi-wasm64"}

#: the operating systems and architectures platform names are made of; every render sets the
#: target's two to True, so no client flag may be named like them
OS_NAMES = frozenset({"linux", "freebsd", "darwin", "wasi", "mingw32"})
ARCH_NAMES = frozenset({"x86_64", "aarch64", "riscv64", "armv7", "arm64", "wasm32",
                        "wasm64"})


def _merge(into: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    # stal/IX merges parts shallowly: a later part's value replaces an earlier one's
    return {**into, **more}


def _raw(name: str) -> dict[str, Any]:
    if "-" in name:
        result: dict[str, Any] = {}
        for part in name.split("-"):
            result = _merge(result, _raw(part))
        return result
    if name == "arm64":  # Apple's name for aarch64 on darwin
        return _merge(_raw("darwin-aarch64"), {"arch": "arm64"})
    if name not in _PARTS:
        raise KeyError(name)
    fields = _PARTS[name]
    if isinstance(fields, str):
        return _raw(fields)
    import copy  # (as every heavy import here: `ixc` needs only the names above)

    copied: dict[str, Any] = copy.deepcopy(fields)
    return copied


_B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def struct_id(data: Any) -> str:
    """stal/IX's short hash of a JSON value: md5 of its sorted JSON, 22 base-62 digits."""
    import hashlib
    import json

    number = int.from_bytes(
        hashlib.md5(json.dumps(data, sort_keys=True).encode()).digest(), "little")
    digits = []
    for _ in range(22):
        number, digit = divmod(number, 62)
        digits.append(_B62[digit])
    return "".join(digits)


def _enrich(d: dict[str, Any]) -> dict[str, Any]:
    """Derive every field a part did not set, in stal/IX's order (`id` hashes what is set
    before it, so the order matters)."""
    d.setdefault("vendor", "unknown")
    d.setdefault("gnu_vendor", d["vendor"])
    d.setdefault("rust_vendor", d["gnu_vendor"])
    if "gnu_arch" not in d and d.get("arch"):
        d["gnu_arch"] = {"arm64": "aarch64"}.get(d["arch"], d["arch"])
    d.setdefault("arch", d["gnu_arch"])
    if "bits" not in d:
        both = d.get("arch", "") + d.get("gnu_arch", "")
        if "64" in both:
            d["bits"] = 64
        if "32" in both:
            d["bits"] = 32
    d["llvm_target"] = _LLVM_TARGET[d["gnu_arch"]]
    d.setdefault("linux_arch", _LINUX_ARCH.get(d["gnu_arch"], d["gnu_arch"]))
    d.setdefault("go_arch", _GO_ARCH.get(d["gnu_arch"], d["gnu_arch"]))
    d.setdefault("endian", "little")
    if "dl_suffix" not in d and d.get("obj_fmt") == "elf":
        d["dl_suffix"] = "so"
    d.setdefault("clang_os", d["os"])
    gnu = d.setdefault("gnu", {})
    gnu.setdefault("three", f"{d['gnu_arch']}-{d['gnu_vendor']}-{d['os']}")
    gnu.setdefault("four", f"{gnu['three']}-{d['obj_fmt']}")
    d.setdefault("uname_m", d["arch"])
    d.setdefault("uname_s", d["cmake_system_name"])
    d["ptrlen"] = int(d["bits"]) // 8
    d.setdefault("exe_suffix", "")
    d.setdefault("id", struct_id(d))
    d.setdefault("rust_os", d["os"])
    if "rust" not in d:
        if d["os"] == "mingw32":
            d["rust"] = f"{d['gnu_arch']}-pc-windows-gnullvm"
        else:
            d["rust"] = f"{d['gnu_arch']}-{d['rust_vendor']}-{d['rust_os']}"
    return d


#: descriptions made so far, one per platform name (a bounded set: `KNOWN`)
_DESCRIBED: dict[str, dict[str, Any]] = {}


def _described(name: str) -> dict[str, Any]:
    known = _DESCRIBED.get(name)
    if known is not None:
        return known
    try:
        raw = _raw(name.replace("mingw-w64", "mingw_w64"))
        description = _enrich(raw)
    except KeyError:
        raise BadFlag(f"unknown target platform {name!r}; known platforms: "
                      f"{', '.join(KNOWN)}") from None
    # `name` is ix's: the platform name the description was made from (not hashed into id)
    description["name"] = name
    _DESCRIBED[name] = description
    return description


def describe(name: str) -> dict[str, Any]:
    """The description of a platform name (`linux-x86_64`): one shared dict per name, which
    callers must not change (renders only read it)."""
    if name not in KNOWN:
        raise BadFlag(f"unknown target platform {name!r}; known platforms: {', '.join(KNOWN)}")
    return _described(name)


def elf_machine(description: dict[str, Any]) -> str:
    """The machine every ELF file built for the platform must be for (its `gnu_arch`, the
    name `ixd.store.elf` knows it by), or "" for a platform whose objects are not ELF."""
    if description.get("obj_fmt") != "elf":
        return ""
    return str(description["gnu_arch"])


def host_name() -> str:
    import platform  # here: `ixc` imports this module on its way to the socket

    machine = platform.machine()
    return f"linux-{ {'amd64': 'x86_64', 'arm64': 'aarch64'}.get(machine, machine) }"


def resolve(name: str, host: str) -> str:
    """`host` → the host's platform name; any other name is checked and returned."""
    resolved = host if name == "host" else _ALIASES.get(name, name)
    describe(resolved)
    return resolved
