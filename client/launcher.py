"""Write the `ixc` command: `python -m client.launcher FILE [--prefix DIR] [--ignore-environment]`.

pip installs `client/ixc` with the installing interpreter on its first line and nothing
else: a script's interpreter options are dropped. Started so, the interpreter runs `site`
first (the site folders and every `.pth` file in them: setuptools' distutils hook, an
editable install's path), ~2 ms of a ~13 ms `ixc status`, to find what this launcher can
name at once. It starts the interpreter with `-S` (no `site`) and puts on `sys.path` the
folders `site` would have put there for ix: ix's own (the prefix, first, as the script's own
folder would be) and the interpreter's site folders (msgpack, read for a large reply, is
there). runit/install.sh writes the system's `ixc` with it (and `--ignore-environment`: -E,
no PYTHON* variables), .ci/setup the virtualenv's.

The folders are the ones this interpreter has now: a launcher is written again when ix or
the interpreter moves (install.sh and .ci/setup run it every time).
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

USAGE = "usage: python -m client.launcher FILE [--prefix DIR] [--ignore-environment]"


def launcher_text(python: str, prefix: str, site_dirs: list[str],
                  ignore_environment: bool = False) -> str:
    """The launcher's text. The options share one word: the kernel passes everything after
    the interpreter on a `#!` line as a single argument."""
    options = "-ES" if ignore_environment else "-S"
    return (f"#!{python} {options}\n"
            "# written by `python -m client.launcher` (see there): no `site`, its folders named\n"
            "import gc\n"
            "import sys\n"
            "\n"
            "gc.disable()  # while ixc's modules load: their objects are none of them garbage\n"
            f"sys.path[0] = {prefix!r}\n"
            f"sys.path.extend({site_dirs!r})\n"
            "from client.main import run\n"
            "\n"
            "run()\n")


def own_prefix() -> str:
    """The folder holding this `client` package (and `ixd` beside it)."""
    return str(Path(__file__).resolve().parent.parent)


def site_folders() -> list[str]:
    """The interpreter's site folders that exist (not the user's: the launcher serves every
    account)."""
    return [folder for folder in site.getsitepackages() if os.path.isdir(folder)]


def write_launcher(path: Path, text: str) -> None:
    """`text` as the executable file `path`, replaced whole (a reader never sees half)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.chmod(0o755)
    os.replace(partial, path)


def main(argv: list[str]) -> int:
    words = list(argv)
    ignore_environment = "--ignore-environment" in words
    if ignore_environment:
        words.remove("--ignore-environment")
    prefix = own_prefix()
    if "--prefix" in words:
        at = words.index("--prefix")
        if at + 1 >= len(words):
            print(f"client.launcher: --prefix needs a folder; {USAGE}", file=sys.stderr)
            return 2
        prefix = words[at + 1]
        del words[at:at + 2]
    if len(words) != 1 or words[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    if not os.path.isfile(os.path.join(prefix, "client", "main.py")):
        print(f"client.launcher: {prefix!r} holds no client/main.py: give ix's folder as "
              f"--prefix", file=sys.stderr)
        return 2
    write_launcher(Path(words[0]), launcher_text(sys.executable, prefix, site_folders(),
                                                 ignore_environment))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
