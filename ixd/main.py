"""`ixd`: the daemon's command line. Serves in the foreground until stopped.

    ixd --root ROOT [options]      serve
    ixd verify --root ROOT         check every valid store entry against its content hash
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from ixd.confine import check_confinement
from ixd.daemon import VERSION, Config, Daemon
from ixd.errors import IxError
from ixd.layout import Layout
from ixd.server import Server, open_unix_listener
from ixd.verify import Problem, verify_store

log = logging.getLogger("ixd")

DEFAULT_OVERLAY = Path(__file__).resolve().parent.parent / "pkgs"


def parse_size(text: str) -> int:
    """`5G`, `200M`, `1024` → bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 5G or 200M)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ixd", description="The ix daemon: owns the store, builds, switches realms.")
    parser.add_argument("--root", type=Path, required=True,
                        help="the store and state root (e.g. /ix); created if missing")
    parser.add_argument("--overlay", type=Path, action="append", default=[],
                        help="a recipe overlay, searched in order (default: the project's pkgs/)")
    parser.add_argument("--mirror", action="append", default=[],
                        help="a source mirror template, {sha} is the sha256; tried before URLs")
    parser.add_argument("--socket", type=Path, help="the socket path (default ROOT/var/ixd.sock)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="concurrent builds (default: the number of cores)")
    parser.add_argument("--admin-group",
                        help="members of this group may change root's realms (e.g. system)")
    parser.add_argument("--keep-generations", type=int, default=3,
                        help="generations of each realm kept by gc besides the current one")
    parser.add_argument("--min-free", type=parse_size, default=0,
                        help="collect garbage when free space under the root is below this "
                             "(e.g. 5G)")
    parser.add_argument("--frame-timeout", type=float, default=10.0,
                        help="seconds a client may take to say hello or finish a frame")
    parser.add_argument("--max-connections-per-user", type=int, default=64)
    parser.add_argument("--db-busy-timeout", type=float, default=30.0,
                        help="seconds to wait for a build database another process locked")
    parser.add_argument("--no-confine", action="store_true",
                        help="run builds unconfined (only where namespaces are unavailable)")
    parser.add_argument("--version", action="version", version=f"ixd {VERSION}")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overlays = tuple(p.resolve() for p in args.overlay) or (DEFAULT_OVERLAY,)
    for overlay in overlays:
        if not overlay.is_dir():
            raise IxError(f"overlay {overlay} is not a directory")
    if args.jobs < 0:
        raise IxError(f"--jobs must be at least 1, not {args.jobs}")
    return Config(root=args.root.resolve(), overlays=overlays, mirrors=tuple(args.mirror),
                  jobs=args.jobs, confine=not args.no_confine, socket=args.socket,
                  admin_group=args.admin_group, keep_generations=args.keep_generations,
                  min_free=args.min_free, frame_timeout=args.frame_timeout,
                  max_connections_per_user=args.max_connections_per_user,
                  db_busy_timeout=args.db_busy_timeout)


async def serve(daemon: Daemon, socket_path: Path, *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    listener = await open_unix_listener(socket_path)
    server = Server(daemon.handle, frame_timeout=daemon.config.frame_timeout,
                    max_per_user=daemon.config.max_connections_per_user)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.scheduler.serve)
        await nursery.start(server.serve, listener)
        nursery.start_soon(daemon.watch_free_space)
        await nursery.start(daemon.watch_recipes)
        log.info("ixd %s serving on %s (root %s, jobs %d, confined %s)", VERSION, socket_path,
                 daemon.config.root, daemon.config.job_count, daemon.config.confine)
        task_status.started()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("ixd stopping on signal %d", signum)
                nursery.cancel_scope.cancel()
                break


def verify_main(argv: Sequence[str]) -> int:
    """`ixd verify --root ROOT`: exit 0 when every valid entry matches its content hash."""
    parser = argparse.ArgumentParser(prog="ixd verify",
                                     description="check the store against the build database")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    args = parser.parse_args(argv)
    layout = Layout(args.root.resolve())
    if not layout.database.is_file():
        print(f"ixd verify: no build database at {layout.database}", file=sys.stderr)
        return 2
    checked = problems = 0
    for outcome in verify_store(layout):
        checked += 1
        if isinstance(outcome, Problem):
            problems += 1
            print(f"BAD {outcome}")
        elif not args.quiet:
            print(f"ok  {outcome}")
    print(f"{checked} entries checked, {problems} problems", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["verify"]:
        return verify_main(argv[1:])
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        if config.confine:
            check_confinement()
        else:
            log.warning("--no-confine: builds run unconfined and can write anywhere "
                        "this account can")
        os.umask(0o022)
        daemon = Daemon(config)
        socket_path = config.socket or daemon.layout.socket
        trio.run(serve, daemon, socket_path)
    except IxError as exc:
        print(f"ixd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
