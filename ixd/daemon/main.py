"""`ixd`: the daemon's command line. Serves in the foreground until stopped.

    ixd --root ROOT [options]      serve
    ixd verify --root ROOT         check every valid store entry against its content hash
    ixd keygen NAME [--dir DIR]    write a cache signing key NAME.secret and NAME.public
    ixd cache-init URL             make a binary cache's bucket and ix-cache-info
    ixd cluster-certs DIR ...      make the Dask cluster's CA and TLS certificates
    ixd manpage                    print ixd.8

`ixd --help` lists the subcommands from `SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import gc
import logging
import logging.handlers
import os
import queue
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from ixd import __version__
from ixd.build.cluster import ClusterSettings
from ixd.cache.settings import CacheSettings
from ixd.daemon.core import Config, Daemon
from ixd.daemon.heap import glibc_malloc, keep_heap_trimmed, one_malloc_arena
from ixd.daemon.server import Server, open_unix_listener
from ixd.daemon.supervision import write_start_hint
from ixd.model.layout import Layout
from ixd.recipes.packages import DEFAULT_CACHE_BYTES, GC_THRESHOLDS
from ixd.recipes.rendercache import DEFAULT_STORE_BYTES
from ixd.recipes.templatecache import DEFAULT_SHARED as DEFAULT_TEMPLATE_CACHE
from ixd.store.builder import BuildLimits
from ixd.store.buildlog import DEFAULT_MAX_LOG, MIN_MAX_LOG
from ixd.store.buildusers import DEFAULT_GROUP as DEFAULT_BUILD_GROUP
from ixd.store.buildusers import BuildUserPool, load_pool
from ixd.store.confine import check_confinement
from ixd.wire.errors import ConfinementUnavailable, IxError, RootUnsafe

log = logging.getLogger("ixd")

#: how long the event loop may hold the interpreter before a worker thread (finishing a
#: build, hashing) gets it back; 5 ms by default, which stalls every thread hand-off under load
SWITCH_INTERVAL = 0.0005

DEFAULT_OVERLAY = Path(__file__).resolve().parents[2] / "pkgs"


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


def default_max_memory(jobs: int) -> int:
    """Half the machine's memory, shared by `jobs` builds."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(64 << 20, total // 2 // max(1, jobs))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ixd", description="The ix daemon: owns the store, builds, switches realms.",
        usage="ixd --root ROOT [options]\n       ixd SUBCOMMAND [--help] ...",
        epilog="subcommands:\n" + "\n".join(f"  ixd {name:<10} {summary}"
                                             for name, (_, summary) in SUBCOMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True,
                        help="the store and state root (e.g. /ix); created if missing")
    parser.add_argument("--overlay", type=Path, action="append", default=[],
                        help="a recipe overlay, searched in order (default: the project's pkgs/)")
    parser.add_argument("--mirror", action="append", default=[],
                        help="a source mirror template, {sha} is the sha256; tried before URLs")
    parser.add_argument("--socket", type=Path, help="the socket path (default ROOT/var/ixd.sock)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="concurrent builds (default: the number of cores)")
    parser.add_argument("--max-jobs-per-user", type=int, default=0, metavar="N",
                        help="build slots one user may hold at once (default: --jobs less "
                             "one, so another user's build always finds a slot; the daemon's "
                             "own account is not capped)")
    parser.add_argument("--admin-group",
                        help="members of this group may change root's realms (e.g. system)")
    parser.add_argument("--keep-generations", type=int, default=3,
                        help="generations of each realm kept by gc besides the current one")
    parser.add_argument("--min-free", type=parse_size, default=0,
                        help="collect garbage when free space under the root is below this "
                             "(e.g. 5G)")
    parser.add_argument("--keep-build-inputs", action="store_true",
                        help="gc keeps what every kept entry was built from (as Nix's "
                             "keep-outputs); by default a valid package's build-only inputs "
                             "are garbage, and nothing builds them again while it stays valid")
    parser.add_argument("--frame-timeout", type=float, default=10.0,
                        help="seconds a client may take to say hello or finish a frame")
    parser.add_argument("--max-connections-per-user", type=int, default=64)
    parser.add_argument("--db-busy-timeout", type=float, default=30.0,
                        help="seconds to wait for a build database another process locked")
    parser.add_argument("--build-users", default=DEFAULT_BUILD_GROUP, metavar="GROUP",
                        help="the group of build accounts builds run as, one uid per running "
                             f"build (default {DEFAULT_BUILD_GROUP}; runit/build-users.sh "
                             "creates it)")
    parser.add_argument("--build-timeout", type=float, default=BuildLimits.timeout,
                        metavar="SECONDS",
                        help="wall-clock seconds a build may take (a recipe may ask for more; "
                             "default 4 hours)")
    parser.add_argument("--max-processes", type=int, default=BuildLimits.max_processes,
                        help="processes one build may run at once")
    parser.add_argument("--max-output-size", type=parse_size,
                        default=BuildLimits.max_output_size, metavar="SIZE",
                        help="bytes one build may write, scratch and output together "
                             "(default 32G)")
    parser.add_argument("--max-memory", type=parse_size, default=0, metavar="SIZE",
                        help="bytes of memory one build's processes share (default: half "
                             "the machine's memory divided by --jobs)")
    parser.add_argument("--max-log-size", type=parse_size, default=DEFAULT_MAX_LOG,
                        metavar="SIZE",
                        help="bytes of one build's log; past it the log keeps its head and "
                             "a rolling tail (default 32M)")
    parser.add_argument("--keep-logs", type=float, default=30.0, metavar="DAYS",
                        help="gc deletes logs of failed builds older than this (default 30)")
    parser.add_argument("--max-package-cache", type=parse_size, default=DEFAULT_CACHE_BYTES,
                        metavar="SIZE",
                        help="bytes of rendered packages kept in memory, a quarter of them "
                             "for one user (default 256M)")
    parser.add_argument("--max-render-store", type=parse_size, default=DEFAULT_STORE_BYTES,
                        metavar="SIZE",
                        help="bytes of var/renders.jsonl, renders kept across restarts "
                             "(default 192M)")
    parser.add_argument("--no-confine", action="store_true",
                        help="run builds unconfined, as the daemon (only where build users and "
                             "namespaces are unavailable: a build can then do all ixd can)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        dest="settings", type=parse_setting,
                        help="a name every recipe sees, e.g. default_clang=18 or "
                             "ix_boot_path=/usr/bin:/bin (docs/recipes.md, \"Settings\")")
    parser.add_argument("--template-cache", metavar="DIR",
                        help="compiled templates shared by every ixd of the machine (default "
                             f"{DEFAULT_TEMPLATE_CACHE} when run as root, else none; an "
                             "empty value: none)")
    cache = parser.add_argument_group("binary caches (docs/cache.md)")
    cache.add_argument("--cache", action="append", default=[], metavar="URL",
                       help="substitute from this cache (s3://BUCKET/PREFIX?endpoint=...&"
                            "region=..., or file:///PATH); repeatable, in priority order")
    cache.add_argument("--trusted-key", action="append", default=[], metavar="FILE|NAME:KEY",
                       help="a public key whose signatures make cache entries acceptable; "
                            "repeatable. The only trust: no user can add one")
    cache.add_argument("--push", metavar="URL", help="upload every entry this ixd builds")
    cache.add_argument("--signing-key", type=Path, metavar="FILE",
                       help="the secret key pushes are signed with (ixd keygen NAME)")
    cache.add_argument("--cache-credentials", type=Path, metavar="FILE",
                       help="an AWS credentials file ([default] aws_access_key_id, "
                            "aws_secret_access_key); else the AWS_* environment variables")
    cluster = parser.add_argument_group("building on a Dask cluster (README)")
    cluster.add_argument("--dask", metavar="tls://HOST:PORT",
                         help="hand builds to this Dask scheduler's ix workers (needs --cache "
                              "and --push naming the cache the workers push to, and --tls-*)")
    cluster.add_argument("--dask-scheduler-file", type=Path, metavar="FILE",
                         help="the scheduler's address from its --scheduler-file instead")
    cluster.add_argument("--dask-required", action="store_true",
                         help="fail builds when the cluster is unreachable (default: build "
                              "locally)")
    cluster.add_argument("--tls-ca", "--dask-tls-ca", type=Path, metavar="FILE",
                         dest="tls_ca",
                         help="the cluster's CA certificate: the scheduler and every member "
                              "must show a certificate it signed (`ixd cluster-certs`)")
    cluster.add_argument("--tls-cert", "--dask-tls-cert", type=Path, metavar="FILE",
                         dest="tls_cert", help="this ixd's certificate in the cluster")
    cluster.add_argument("--tls-key", "--dask-tls-key", type=Path, metavar="FILE",
                         dest="tls_key", help="its private key")
    cluster.add_argument("--insecure-cluster", action="store_true",
                         help="reach the scheduler over plain TCP: whoever can reach it runs "
                              "code on the workers (as their unprivileged account) and can "
                              "spoil remote builds (docs/security.md)")
    cluster.add_argument("--dask-connect-timeout", type=float, default=10.0, metavar="SECS",
                         help="how long to wait for the scheduler (default 10)")
    cluster.add_argument("--cluster-worker-account", metavar="NAME",
                         help="build for the cluster: the unprivileged account `ix-worker` runs "
                              "as on this machine may hand this ixd builds, which it builds "
                              "here, signs with --signing-key and pushes to --push")
    parser.add_argument("--version", action="version", version=f"ixd {__version__}")
    return parser


def parse_setting(text: str) -> tuple[str, str]:
    """`NAME=VALUE` of `--set`: a flag name and any value (the admin's, not a client's)."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"--set {text!r}: write NAME=VALUE, NAME a letter or "
                                         f"_ followed by letters, digits or _")
    return name, value


def config_from_args(args: argparse.Namespace) -> Config:
    overlays = tuple(p.resolve() for p in args.overlay) or (DEFAULT_OVERLAY,)
    for overlay in overlays:
        if not overlay.is_dir():
            raise IxError(f"overlay {overlay} is not a directory")
    if args.jobs < 0:
        raise IxError(f"--jobs must be at least 1, not {args.jobs}")
    if args.max_jobs_per_user < 0:
        raise IxError(f"--max-jobs-per-user must be at least 1, not {args.max_jobs_per_user}")
    if args.root.is_symlink():
        raise RootUnsafe(f"--root {args.root} is a symbolic link (to {os.readlink(args.root)}); "
                         f"give the real path")
    if args.build_timeout <= 0 or args.max_processes < 1 or args.max_output_size < 1:
        raise IxError("--build-timeout, --max-processes and --max-output-size must be "
                      "positive")
    if args.max_log_size < MIN_MAX_LOG:
        raise IxError(f"--max-log-size {args.max_log_size} leaves no room for a log's head "
                      f"and tail: at least {MIN_MAX_LOG} bytes")
    if args.keep_logs < 0:
        raise IxError(f"--keep-logs must be 0 days or more, not {args.keep_logs}")
    if args.max_memory < 0:
        raise IxError(f"--max-memory must be a size, not {args.max_memory}")
    jobs = args.jobs or os.cpu_count() or 1
    limits = BuildLimits(timeout=args.build_timeout, max_processes=args.max_processes,
                         max_output_size=args.max_output_size,
                         max_log_size=args.max_log_size,
                         max_memory=args.max_memory or default_max_memory(jobs))
    template_cache = (Path(args.template_cache) if args.template_cache
                      else DEFAULT_TEMPLATE_CACHE if args.template_cache is None
                      and os.geteuid() == 0 else None)
    cluster = ClusterSettings(args.dask, args.dask_scheduler_file, args.dask_required,
                              args.tls_ca, args.tls_cert, args.tls_key, args.insecure_cluster,
                              args.dask_connect_timeout)
    if cluster.enabled:
        cluster.check()
    elif args.insecure_cluster or args.tls_ca or args.tls_cert or args.tls_key:
        raise IxError("--insecure-cluster and --tls-* are about a cluster: give --dask too")
    if args.signing_key is not None:
        check_secret_file(args.signing_key, "--signing-key")
    return Config(build_users=args.build_users, limits=limits, template_cache=template_cache,
                  root=args.root.resolve(), overlays=overlays, mirrors=tuple(args.mirror),
                  jobs=args.jobs, max_jobs_per_user=args.max_jobs_per_user,
                  confine=not args.no_confine, socket=args.socket,
                  admin_group=args.admin_group, keep_generations=args.keep_generations,
                  keep_logs=args.keep_logs * 86400,
                  package_cache_bytes=args.max_package_cache,
                  render_store_bytes=args.max_render_store,
                  min_free=args.min_free, keep_build_inputs=args.keep_build_inputs,
                  frame_timeout=args.frame_timeout,
                  max_connections_per_user=args.max_connections_per_user,
                  db_busy_timeout=args.db_busy_timeout, settings=tuple(args.settings),
                  cache=CacheSettings(tuple(args.cache), args.push, tuple(args.trusted_key),
                                      args.signing_key, args.cache_credentials),
                  cluster=cluster, cluster_worker_account=args.cluster_worker_account)


def check_secret_file(path: Path, option: str) -> None:
    """Refuse a secret (the signing key) another account could read: only the daemon's own
    account may (on a cluster worker's machine, the worker account must not reach it)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise IxError(f"{option} {path}: {exc.strerror}") from exc
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise IxError(f"{option} {path} is readable by others (owner uid {st.st_uid}, mode "
                      f"{st.st_mode & 0o777:o}): only the daemon's account may read it; "
                      f"chown it to uid {os.geteuid()} and chmod 600")


async def serve(daemon: Daemon, socket_path: Path, *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    daemon.engine.trio_token = trio.lowlevel.current_trio_token()
    try:
        await _serve(daemon, socket_path, task_status)
    finally:
        with trio.CancelScope(shield=True):
            if daemon.runner.cgroups is not None:  # the builds are over: their parent goes
                await trio.to_thread.run_sync(daemon.runner.cgroups.close)


async def _serve(daemon: Daemon, socket_path: Path,
                 task_status: trio.TaskStatus[None]) -> None:
    listener = await open_unix_listener(socket_path)
    await trio.to_thread.run_sync(write_start_hint, socket_path)
    server = Server(daemon.handle, frame_timeout=daemon.config.frame_timeout,
                    max_per_user=daemon.config.max_connections_per_user)
    async with trio.open_nursery() as nursery:
        if daemon.cluster is not None:
            await nursery.start(daemon.cluster.watch)
        await nursery.start(daemon.scheduler.serve)
        nursery.start_soon(daemon.runner.collect_trash)
        await nursery.start(server.serve, listener)
        nursery.start_soon(daemon.collector)
        nursery.start_soon(daemon.watch_accounts)
        malloc = glibc_malloc()
        if malloc is not None:
            nursery.start_soon(keep_heap_trimmed, malloc)
        if daemon.pusher is not None:
            nursery.start_soon(daemon.pusher.serve)
        await nursery.start(daemon.watch_recipes)
        slots = daemon.scheduler.build_slots
        log.info("ixd %s serving on %s (root %s, jobs %d, at most %d per user, confined %s)",
                 __version__, socket_path, daemon.config.root, slots.total, slots.per_user,
                 daemon.config.confine)
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
    from ixd.store.verify import Problem, verify_store  # see SUBCOMMANDS: loaded when run

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


def keygen_main(argv: Sequence[str]) -> int:
    """`ixd keygen NAME`: NAME.secret (0600, for --signing-key) and NAME.public (for
    --trusted-key) in --dir."""
    parser = argparse.ArgumentParser(prog="ixd keygen",
                                     description="make an ed25519 key for signing cache entries")
    parser.add_argument("name", help="the key's name, e.g. cache.example.org-1")
    parser.add_argument("--dir", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    from ixd.cache.format import generate_key  # see SUBCOMMANDS: loaded when run

    try:
        key = generate_key(args.name)
    except IxError as exc:
        print(f"ixd keygen: {exc}", file=sys.stderr)
        return 2
    secret, public = args.dir / f"{args.name}.secret", args.dir / f"{args.name}.public"
    try:
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"ixd keygen: {secret} exists; not overwritten", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as handle:
        handle.write(key.serialise())
    public.write_text(key.public().serialise())
    print(f"{secret} (keep it secret: ixd --signing-key)\n{public} (ixd --trusted-key): "
          f"{key.public().serialise().strip()}")
    return 0


def check_build_confinement(config: Config) -> None:
    """Refuse to start unless confined builds can run as build users (blocking). The probe
    takes its build user the way builds do, by its lock: another daemon starting at the same
    moment kills the processes of every build user it can lock, and would kill the probe."""
    with BuildUserPool(load_pool(config.build_users)).holding_one() as user:
        check_confinement((user.uid, user.gid))
    unreachable = [p for p in (config.root, *config.root.parents)
                   if p.exists() and not os.stat(p).st_mode & 0o001]
    if unreachable:
        raise ConfinementUnavailable(
            f"build users cannot reach the store: {unreachable[0]} is not searchable by "
            f"others (chmod o+x {unreachable[0]}), or choose a --root under public folders")


def cache_init_main(argv: Sequence[str]) -> int:
    from ixd.daemon import admin_commands  # see SUBCOMMANDS: loaded when run

    return admin_commands.cache_init_main(argv)


def cluster_certs_main(argv: Sequence[str]) -> int:
    from ixd.daemon import admin_commands  # see SUBCOMMANDS: loaded when run

    return admin_commands.cluster_certs_main(argv)


#: `ixd NAME ...`: what runs instead of the daemon, and what `ixd --help` says of it. A
#: subcommand's own modules (the cache's, the certificates', verify's) are imported when it
#: runs, never by the daemon: each module loaded stays in its memory for good.
SUBCOMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "verify": (verify_main, "check every valid store entry against its content hash "
                            "(--root ROOT)"),
    "keygen": (keygen_main, "write a cache signing key NAME.secret and NAME.public"),
    "cache-init": (cache_init_main, "make a binary cache's bucket (or folder) and its "
                                    "ix-cache-info (URL)"),
    "cluster-certs": (cluster_certs_main, "make the Dask cluster's CA and TLS certificates "
                                          "(DIR --ixd NAME --worker NAME)"),
    "manpage": (lambda argv: manpage_main(), "print ixd.8, the manual page"),
}


def manpage_main() -> int:
    from ixd.daemon.manpage import manual

    sys.stdout.write(manual(build_parser(), SUBCOMMANDS))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]][0](argv[1:])
    one_malloc_arena()  # before the first thread
    writer = _log_in_background()
    gc.set_threshold(*GC_THRESHOLDS)
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        config.layout.ensure()  # refuses an unsafe root before anything else
        if config.confine:
            check_build_confinement(config)
        else:
            for _ in range(3):  # loud: this gives every user all the daemon's rights
                log.warning("--no-confine: builds run UNCONFINED as uid %d and can read and "
                            "write anything it can; every user of this daemon can do all it "
                            "can", os.geteuid())
        if config.cluster.enabled and config.cluster.insecure:
            for _ in range(3):  # loud: whoever reaches the scheduler runs code on the workers
                log.warning("--insecure-cluster: the Dask scheduler %s is reached over plain "
                            "TCP, without TLS: whoever can reach it runs code on every "
                            "worker (as its account) and can spoil remote builds",
                            config.cluster.where)
        os.umask(0o022)
        sys.setswitchinterval(SWITCH_INTERVAL)
        daemon = Daemon(config)
        socket_path = config.socket or daemon.layout.socket
        trio.run(serve, daemon, socket_path)
    except IxError as exc:
        failure: IxError | None = exc
    else:
        failure = None
    finally:
        writer.stop()  # what is queued is written first
    if failure is not None:
        print(f"ixd: {failure}", file=sys.stderr)
        return 1
    return 0


def _log_in_background() -> logging.handlers.QueueListener:
    """Log lines are formatted where they are logged and written to stderr by a thread of
    their own: a write per request (the audit line) is not the event loop's wait."""
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(lines)]
    root.setLevel(logging.INFO)
    writer = logging.handlers.QueueListener(lines, stderr)
    writer.start()
    return writer


if __name__ == "__main__":
    sys.exit(main())
