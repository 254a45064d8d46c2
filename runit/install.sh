#!/bin/sh
# Install ix as a system service on a fresh Debian machine (run as root; docs/admin.md):
# the build users, the root, a world-readable copy of ix, the `ixd`/`ixc` commands, and the
# runit service ixd — enabled, and waited for when a runsvdir watches the service folder.
#
#   runit/install.sh [--prefix DIR] [--root DIR] [--build-users GROUP] [--sv-dir DIR]
#                    [--service-dir DIR] [--bin-dir DIR] [--share-dir DIR]
#                    [--mirror TEMPLATE]... [--python PATH] [--no-enable]
#
# Running it again upgrades the copy and the service scripts; the env/ settings an admin
# changed are kept (an explicit --mirror replaces env/IX_MIRRORS).
set -eu

prefix=/opt/ix root=/ix build_users=ixbld build_user_count=16 sv_dir=/etc/sv service_dir=/etc/service bin_dir=/usr/local/bin
share_dir=/usr/local/share
mirrors="" enable=1 python=/usr/bin/python3 python_given=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --root) root=$2; shift 2 ;;
        --build-users) build_users=$2; shift 2 ;;
        --build-user-count) build_user_count=$2; shift 2 ;;
        --sv-dir) sv_dir=$2; shift 2 ;;
        --service-dir) service_dir=$2; shift 2 ;;
        --bin-dir) bin_dir=$2; shift 2 ;;
        --share-dir) share_dir=$2; shift 2 ;;
        --mirror) mirrors="${mirrors:+$mirrors }$2"; shift 2 ;;
        --python) python=$2; python_given=1; shift 2 ;;
        --no-enable) enable=0; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
say() { echo "install.sh: $*"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run me as root"
src=$(cd "$(dirname "$0")/.." && pwd)
for d in ixd client services pkgs runit; do
    [ -d "$src/$d" ] || die "$src/$d is missing: run me from an ix checkout"
done
for tool in runsvdir runsv sv svlogd chpst bwrap; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: apt-get install runit bubblewrap"
done
"$python" -c 'import trio, msgpack, jinja2, pyinotify, sqlite_utils' 2>/dev/null ||
    die "$python lacks ix's libraries: apt-get install python3-trio python3-msgpack" \
        "python3-jinja2 python3-pyinotify sqlite-utils"

# 1. the build users: every build runs as one of these, never as root or a login
sh "$src/runit/build-users.sh" "$build_users" "$build_user_count"
say "build users: group $build_users ($build_user_count accounts)"

# 2. the root: the daemon's (root's) to write, everyone's to read
mkdir -p "$root"
chown root: "$root"
chmod 755 "$root"

# 3. ix itself, readable by every account (the daemon's, the users' sessions), byte-compiled
new="$prefix.new.$$"
rm -rf "$new"
mkdir -p "$new"
for d in ixd client services pkgs runit; do
    cp -R "$src/$d" "$new/$d"
done
find "$new" -name __pycache__ -prune -exec rm -rf {} +
"$python" -m compileall -q "$new/ixd" "$new/client" "$new/services" >/dev/null
chmod -R u=rwX,go=rX "$new"
chmod 755 "$new"
if [ -d "$prefix" ]; then
    rm -rf "$prefix.old"
    mv "$prefix" "$prefix.old"
fi
mv "$new" "$prefix"
rm -rf "$prefix.old"
say "installed ix into $prefix"

# 4. the commands
mkdir -p "$bin_dir"
cat > "$bin_dir/ixd.tmp" <<WRAPPER
#!/bin/sh
PYTHONPATH="$prefix" exec "$python" -m ixd.daemon.main "\$@"
WRAPPER
# ixc: a Python script, not sh running `python -m` (runpy): its start is most of what a cheap
# request costs. client/launcher.py says why it names its folders and skips `site` (-S); -E: no
# PYTHON* variables, as PYTHONPATH was replaced before.
PYTHONPATH="$prefix" "$python" -m client.launcher "$bin_dir/ixc.tmp" --prefix "$prefix" \
    --ignore-environment
for name in ixd ixc; do
    chmod 755 "$bin_dir/$name.tmp"
    mv -f "$bin_dir/$name.tmp" "$bin_dir/$name"
done
say "installed $bin_dir/ixd and $bin_dir/ixc"

# the manual pages and the shell completions, written from the commands' own tables
manual() {  # manual FILE COMMAND...: COMMAND's output into FILE, readable by everyone
    mkdir -p "$(dirname "$1")"
    out=$1
    shift
    PYTHONPATH="$prefix" "$@" > "$out.tmp" && chmod 644 "$out.tmp" && mv -f "$out.tmp" "$out"
}
manual "$share_dir/man/man1/ixc.1" "$python" -m client.manpage
manual "$share_dir/man/man8/ixd.8" "$python" -m ixd.daemon.main manpage
manual "$share_dir/bash-completion/completions/ixc" "$python" -m client.main completion bash
manual "$share_dir/zsh/site-functions/_ixc" "$python" -m client.main completion zsh
say "manual pages ixc(1) and ixd(8), bash and zsh completion in $share_dir"

# 5. the service folder: scripts replaced, settings kept
svc="$sv_dir/ixd"
mkdir -p "$svc/log" "$svc/env"
for f in run finish check log/run; do
    cp "$src/runit/ixd/$f" "$svc/$f.tmp"
    chmod 755 "$svc/$f.tmp"
    mv -f "$svc/$f.tmp" "$svc/$f"
done
setting() {  # setting NAME VALUE [replace]
    if [ ! -e "$svc/env/$1" ] || [ -n "${3:-}" ]; then
        printf '%s\n' "$2" > "$svc/env/$1"
    fi
}
setting IX_ROOT "$root"
setting IX_BUILD_USERS "$build_users"
setting IX_PREFIX "$prefix"
setting IX_OVERLAYS "$prefix/pkgs"
setting IX_PYTHON "$python" "$python_given"
[ -n "$mirrors" ] && setting IX_MIRRORS "$mirrors" replace
say "service folder $svc (settings in $svc/env)"

# 6. enable it, and wait for it when a runsvdir watches the service folder
if [ "$enable" = 1 ]; then
    mkdir -p "$service_dir"
    [ -L "$service_dir/ixd" ] || ln -s "$svc" "$service_dir/ixd"
    say "enabled: $service_dir/ixd"
    i=0
    while [ ! -p "$svc/supervise/ok" ] && [ $i -lt 12 ]; do  # runsvdir looks every 5s
        sleep 0.5
        i=$((i + 1))
    done
    if [ ! -p "$svc/supervise/ok" ]; then
        say "no runsvdir watches $service_dir yet: start one (docs/admin.md), and ixd starts"
        exit 0
    fi
    if sv -w 60 check "$service_dir/ixd" >/dev/null; then
        say "ixd is up and answers (sv status ixd; log in $svc/log/main/current)"
        exit 0
    fi
    die "ixd did not answer within 60s: see $svc/log/main/current"
fi
