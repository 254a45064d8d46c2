"""`ixd`'s one-off commands for the administrator, besides serving (`ixd.daemon.main`):

    ixd cache-init URL [--root ROOT]   make a binary cache's bucket and its ix-cache-info
    ixd cluster-certs DIR ...          make the Dask cluster's CA and TLS certificates

Each is `NAME_main(argv) -> exit status`, printing what it did or what went wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ixd.cache.stores import BinaryCache, open_store, read_credentials
from ixd.model.layout import Layout
from ixd.wire.errors import IxError


def cache_init_main(argv: Sequence[str]) -> int:
    """`ixd cache-init URL`: the bucket (or folder) made if missing, and its ix-cache-info
    written for the store of --root; nothing changed if it is there already."""
    parser = argparse.ArgumentParser(
        prog="ixd cache-init",
        description="make a binary cache's bucket (or folder) and its ix-cache-info "
                    "(docs/cache.md); run once, before any ixd pushes to it")
    parser.add_argument("url", help="s3://BUCKET/PREFIX?endpoint=...&region=... or "
                                    "file:///PATH, as given to --push and --cache")
    parser.add_argument("--root", type=Path, default=Path("/ix"),
                        help="the root of the daemons that will use it (default /ix): its "
                             "entries are for ROOT/store")
    parser.add_argument("--priority", type=int, default=50,
                        help="asked before caches of a higher number (default 50)")
    parser.add_argument("--cache-credentials", type=Path, metavar="FILE",
                        help="an AWS credentials file; else the AWS_* environment variables")
    args = parser.parse_args(argv)
    store_dir = str(Layout(args.root.absolute()).store)
    try:
        credentials = read_credentials(args.cache_credentials) if args.cache_credentials \
            else None
        cache = BinaryCache(open_store(args.url, credentials), store_dir,
                            priority=args.priority)
        made, info = cache.initialise()
    except IxError as exc:
        print(f"ixd cache-init: {exc}", file=sys.stderr)
        return 1
    where = "made" if made else "was there already"
    print(f"{args.url}: the bucket {where}; ix-cache-info: StoreDir {info.store_dir}, "
          f"Priority {info.priority}")
    return 0
