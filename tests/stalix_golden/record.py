"""Record golden facts from stal/IX's own `ix` (the reference) for tests/test_stalix_compat.py.

How the files here were made (stal/IX's core at the tree's commit, 25be9ec):

    git -C MIRROR archive HEAD ix core | tar -x -C REF        # stal/IX's `ix` and core/
    apt-get install clang-14 lld-14                           # its bootstrap probes these
    PATH=/usr/lib/llvm-14/bin:/usr/bin:/bin IX_PATH=../shared/stalix/pkgs IX_ROOT=/ix \\
        IX_DUMP_GRAPH=1 python3 REF/ix build TARGET > graph.json
    python -m tests.stalix_golden.record TARGET graph.json REF/ix [FLAG=VALUE...]

Another platform: `ix build TARGET --target=darwin-arm64`, recorded with `target=darwin-arm64`
(the file's name then ends in `@darwin-arm64`).

stal/IX's CI set is `ix build set/ci --seed=1` (bin/ssh/3's host keys need a seed), recorded
with `seed=1`. `ix build` puts its targets in the realm `ephemeral`, so they carry the flag
`target_realm=ephemeral`; the test loads them with it. Only facts are kept (names, counts,
hashes of masked scripts): nothing of the reference's code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.stalix_facts import reference_facts

HERE = Path(__file__).resolve().parent
BOOT_PATH = "/usr/lib/llvm-14/bin:/usr/bin:/bin"


def settings_for(reference_ix: str) -> dict[str, str]:
    """The render settings the reference ran with, as ixd `--set` values."""
    return {"ix_boot_path": BOOT_PATH,
            "ix_extract": f"/usr/bin/python3 {reference_ix} misc extract",
            "ix_dir": "/ix", "ix_trash_dir": "/ix/trash"}


def main(argv: list[str]) -> None:
    target, graph_file, reference_ix, *more = argv
    flags = {"target_realm": "ephemeral", **dict(f.split("=", 1) for f in more)}
    settings = settings_for(reference_ix)
    # the settings are kept as they were, not masked: recipes paste some of them into scripts
    # in base64; ix renders with the same values
    facts = reference_facts(json.loads(Path(graph_file).read_text()), {})
    facts = {"target": target, "flags": flags, "settings": settings, **facts}
    stem = target.replace("/", "_")
    if "target" in flags:
        stem += f"@{flags['target']}"
    out = HERE / (stem + ".json")
    out.write_text(json.dumps(facts, indent=0, sort_keys=True) + "\n")
    print(f"{out}: {facts['build_nodes']} build nodes, {len(facts['names'])} names, "
          f"{len(facts['urls'])} sources")


if __name__ == "__main__":
    main(sys.argv[1:])
