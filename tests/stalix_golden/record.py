"""Record golden facts from stal/IX's own `ix` (the reference) for tests/test_stalix_compat.py.

How the files here are made (stal/IX's core at the tree's commit, 25be9ec; the `fetch` tool
brings github:stal-ix/ix):

    git -C MIRROR archive HEAD ix core deps | tar -x -C /tmp/stalix/ref   # its `ix`, core/
    apt-get install clang-14 lld-14                           # its bootstrap probes these
    python -m tests.stalix_golden.record /tmp/stalix/ref/ix TARGET [FLAG=VALUE...]

which runs, with the reference's own interpreter (/usr/bin/python3) and
PATH=/usr/lib/llvm-14/bin:/usr/bin:/bin IX_PATH=../shared/stalix/pkgs IX_ROOT=/ix:

- `ix build TARGET --FLAG=VALUE...` with IX_DUMP_GRAPH=1: the build graph, reduced to facts
  (tests/stalix_facts.py);
- tests/stalix_golden/loadorder.py with the same words: every package the reference loads
  for that build, by name and flags, in the order its loader finishes them (`packages`:
  what `ixc dep` must list).

The reference's path is pasted into scripts (its `ix_extract` setting), so it must be
/tmp/stalix/ref/ix for new files to share the settings of the others. Another platform:
`target=darwin-arm64` (the file's name then ends in `@darwin-arm64`). stal/IX's CI set is
`set/ci seed=1` (bin/ssh/3's host keys need a seed). `ix build` puts its targets in the realm
`ephemeral`, so they carry the flag `target_realm=ephemeral`; the test loads them with it.
Only facts are kept (names, counts, hashes of masked scripts): nothing of the reference's
code.

`python -m tests.stalix_golden.record --all /tmp/stalix/ref/ix` records every file again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ixd.model import platforms
from ixd.recipes.package import normal_name
from tests.stalix_facts import reference_facts

HERE = Path(__file__).resolve().parent
BOOT_PATH = "/usr/lib/llvm-14/bin:/usr/bin:/bin"
STALIX_PKGS = Path(os.environ.get(
    "IX_STALIX_PKGS", Path(__file__).resolve().parents[3] / "shared" / "stalix" / "pkgs"))
#: the reference's own interpreter (stal/IX runs with the system's python3)
PYTHON = "/usr/bin/python3"


def settings_for(reference_ix: str) -> dict[str, str]:
    """The render settings the reference ran with, as ixd `--set` values."""
    return {"ix_boot_path": BOOT_PATH,
            "ix_extract": f"/usr/bin/python3 {reference_ix} misc extract",
            "ix_dir": "/ix", "ix_trash_dir": "/ix/trash"}


def selector_text(name: str, flags: dict[str, str]) -> str:
    """One package as the test compares it: `name(k=v,...)`, flags sorted, `target` among
    them (a platform name), `boot` as `1`."""
    return f"{name}({','.join(f'{k}={v}' for k, v in sorted(flags.items()))})"


def packed(selectors: list[str]) -> dict[str, list[str]]:
    """A list of `selector_text`s as the files keep it: the flag sets once each
    (`package_flags`), the packages as `NAME INDEX` (a closure has thousands of packages and
    a few dozen flag sets)."""
    flag_sets: dict[str, int] = {}
    packages = []
    for text in selectors:
        name, _, flags = text.partition("(")
        packages.append(f"{name} {flag_sets.setdefault(flags, len(flag_sets))}")
    return {"packages": packages, "package_flags": list(flag_sets)}


def unpacked(facts: dict[str, Any]) -> list[str]:
    """The `selector_text`s of a golden file's `packages`."""
    flag_sets = facts["package_flags"]
    out = []
    for item in facts["packages"]:
        name, index = item.rsplit(" ", 1)
        out.append(f"{name}({flag_sets[int(index)]}")
    return out


def reference_env() -> dict[str, str]:
    return {"PATH": BOOT_PATH, "IX_PATH": str(STALIX_PKGS), "IX_ROOT": "/ix", "LANG": "C.UTF-8"}


def words_for(target: str, flags: dict[str, str]) -> list[str]:
    return [target, *(f"--{k}={v}" for k, v in flags.items() if k != "target_realm")]


def reference_graph(reference_ix: str, words: list[str]) -> dict[str, Any]:
    """`ix build WORDS`'s build graph (IX_DUMP_GRAPH=1)."""
    done = subprocess.run([PYTHON, reference_ix, "build", *words], capture_output=True,
                          env={**reference_env(), "IX_DUMP_GRAPH": "1"}, check=True,
                          cwd=str(Path(reference_ix).parent))
    graph: dict[str, Any] = json.loads(done.stdout)
    return graph


def reference_packages(reference_ix: str, words: list[str]) -> list[str]:
    """Every package `ix build WORDS` loads, in the reference's order."""
    done = subprocess.run(
        [PYTHON, str(HERE / "loadorder.py"), str(Path(reference_ix).parent),
         ",".join(platforms.KNOWN), *words],
        capture_output=True, env=reference_env(), check=True)
    # the reference loads `pip/x` and `pip/x/ix.sh` as two packages, ix as one: the first
    texts = (selector_text(normal_name(name), {**flags, "target": target})
             for name, target, flags in json.loads(done.stdout))
    return list(dict.fromkeys(texts))


def record(reference_ix: str, target: str, more: list[str]) -> Path:
    flags = {"target_realm": "ephemeral", **dict(f.split("=", 1) for f in more)}
    settings = settings_for(reference_ix)
    words = words_for(target, flags)
    # the settings are kept as they were, not masked: recipes paste some of them into scripts
    # in base64; ix renders with the same values
    facts = reference_facts(reference_graph(reference_ix, words), {})
    facts = {"target": target, "flags": flags, "settings": settings, **facts,
             **packed(reference_packages(reference_ix, words))}
    stem = target.replace("/", "_")
    if "target" in flags:
        stem += f"@{flags['target']}"
    out = HERE / (stem + ".json")
    out.write_text(json.dumps(facts, indent=0, sort_keys=True) + "\n")
    print(f"{out}: {facts['build_nodes']} build nodes, {len(facts['names'])} names, "
          f"{len(facts['urls'])} sources, {len(facts['packages'])} packages")
    return out


def main(argv: list[str]) -> None:
    if argv[:1] == ["--all"]:
        reference_ix = argv[1]
        for path in sorted(HERE.glob("*.json")):
            old = json.loads(path.read_text())
            more = [f"{k}={v}" for k, v in old["flags"].items() if k != "target_realm"]
            record(reference_ix, old["target"], more)
        return
    reference_ix, target, *more = argv
    record(reference_ix, target, more)


if __name__ == "__main__":
    main(sys.argv[1:])
