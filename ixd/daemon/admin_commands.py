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

from ixd.build.certs import DEFAULT_DAYS, make_certificates, members
from ixd.cache.binarycache import BinaryCache
from ixd.cache.stores import open_store, read_credentials
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


def cluster_certs_main(argv: Sequence[str]) -> int:
    """`ixd cluster-certs DIR --ixd NAME --worker NAME`: the cluster's CA (made once, then
    reused) and a certificate and key for the scheduler and each member named."""
    parser = argparse.ArgumentParser(
        prog="ixd cluster-certs",
        description="make the Dask cluster's CA and TLS certificates (README, \"Build on a "
                    "cluster\"); run again to add members")
    parser.add_argument("dir", type=Path, help="where they go (the CA's key stays here)")
    parser.add_argument("--ixd", action="append", default=[], metavar="NAME",
                        help="an ixd that submits builds (repeatable): ixd-NAME.pem/.key")
    parser.add_argument("--worker", action="append", default=[], metavar="NAME",
                        help="an ix-worker (repeatable): worker-NAME.pem/.key")
    parser.add_argument("--scheduler-host", action="append", default=[], metavar="HOST",
                        help="the scheduler's host name or address, recorded in its "
                             "certificate (repeatable)")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS,
                        help=f"how long they are valid (default {DEFAULT_DAYS})")
    args = parser.parse_args(argv)
    try:
        written = make_certificates(args.dir, members(args.ixd, args.worker,
                                                      args.scheduler_host), args.days)
    except (IxError, OSError) as exc:
        print(f"ixd cluster-certs: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    print(f"give each member ca.pem and its own .pem and .key (keys: readable by the account "
          f"that uses them only); {args.dir / 'ca.key'} stays with you", file=sys.stderr)
    return 0
