"""A binary cache's archive, unpacked the way a build runs: as a build node.

A signed index vouches for an archive's hash, but the archive is still treated as hostile (a
trusted signer may have been fooled, and an unpacker may have bugs): it is unpacked by GNU
tar running as a build user in the build sandbox, into the build's private output, with the
build's limits (time, processes, output size). The daemon then canonicalises the tree like
any build output, and `run_build(expect_hash=...)` accepts it only if its content hash is
the one the signed index names; only then is it renamed into the store. A tar trick can at
worst write into the build's own scratch, and a tree that is not exactly the signed one
never reaches the store.

The archive itself is a source of the node: downloaded (and checked against the signed
archive hash) into the source cache at `Layout.source_path(sha256)`, bound read-only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ixd.model.layout import entry_kind
from ixd.model.nodes import Node, Source
from ixd.store.builder import BuildLimits

#: the archive's name in the build's `$src`
ARCHIVE_NAME = "entry.tar.zst"

# `--no-same-owner`/`--no-same-permissions`: files are the build user's, set-id bits go
# (canonicalisation fixes owner and modes anyway); tar refuses `..` members and strips a
# leading `/` itself. The decompressed stream is cut at $IX_MAX_STREAM bytes (the unpack's
# output bound): a bomb's big files of zeros never reach the disk past it however fast
# they come (a cut archive is a failed unpack); many small files are slow to make, and the
# builder's measurements of the scratch catch them (`ixd.store.builder._Watch`).
UNPACK_SCRIPT = (f'zstd -dcq < "$src/{ARCHIVE_NAME}" | head -c "$IX_MAX_STREAM" | '
                 f'tar -x --no-same-owner --no-same-permissions -f - -C "$out"')


def unpack_node(uid: str, name: str, store_path: Path, archive_sha256: str, archive_url: str,
                max_stream: int) -> Node:
    """The build node that unpacks the archive `archive_sha256` into `store_path`, reading
    at most `max_stream` bytes of its tar stream (its output bound: `unpack_limits`)."""
    return Node(
        uid=uid,
        kind="build",
        name=name,
        deps=(),
        inputs=(),
        outputs=(str(store_path),),
        command=("/bin/sh", "-ec", UNPACK_SCRIPT),
        env={"PATH": "/usr/bin:/bin", "LANG": "C", "IX_MAX_STREAM": str(max_stream)},
        sources=(Source(url=archive_url, sha256=archive_sha256, filename=ARCHIVE_NAME),),
        meta={"unpacks": archive_url},
        entry_kind=entry_kind(store_path),
    )


def unpack_limits(limits: BuildLimits, content_size: int) -> BuildLimits:
    """The build limits of an unpack: what the signed index says the files hold bounds what
    tar may write (twice that and 64 MiB, for blocks and folders), so a compression bomb
    stops there, not at the daemon's --max-output-size."""
    bound = 2 * content_size + (64 << 20)
    return dataclasses.replace(limits, max_output_size=min(limits.max_output_size, bound))
