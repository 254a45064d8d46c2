#!/bin/sh
# Give USER an ix session (docs/session.md): a runit service, running as USER, that
# supervises USER's service tree and keeps it in step with the services of USER's realm.
#
#   runit/enable-session.sh USER [--svdir DIR] [--realm NAME] [--socket PATH]
#                           [--prefix DIR] [--sv-dir DIR] [--service-dir DIR] [--no-enable]
#
# Makes SV_DIR/ix-session-USER (default /etc/sv) from runit/session with its settings in
# env/, and links it into the service folder runsvdir watches (default /etc/service).
# `--no-enable` only makes it. Remove it with: rm SERVICE_DIR/ix-session-USER (stops it).
set -eu

[ $# -ge 1 ] || { sed -n '2,10p' "$0"; exit 2; }
user=$1
shift
svdir="" realm="" socket=/ix/var/ixd.sock prefix=/opt/ix sv_dir=/etc/sv
service_dir=/etc/service enable=1
while [ $# -gt 0 ]; do
    case "$1" in
        --svdir) svdir=$2; shift 2 ;;
        --realm) realm=$2; shift 2 ;;
        --socket) socket=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --sv-dir) sv_dir=$2; shift 2 ;;
        --service-dir) service_dir=$2; shift 2 ;;
        --no-enable) enable=0; shift ;;
        *) echo "enable-session.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
getent passwd "$user" >/dev/null || { echo "enable-session.sh: no user $user" >&2; exit 1; }
template=$(cd "$(dirname "$0")" && pwd)/session
[ -x "$template/run" ] || { echo "enable-session.sh: $template/run is missing" >&2; exit 1; }

svc="$sv_dir/ix-session-$user"
mkdir -p "$svc/log" "$svc/env"
for f in run finish log/run; do
    cp "$template/$f" "$svc/$f.tmp"
    chmod 755 "$svc/$f.tmp"
    mv -f "$svc/$f.tmp" "$svc/$f"
done
printf '%s\n' "$user" > "$svc/env/IX_SESSION_USER"
printf '%s\n' "$socket" > "$svc/env/IX_SOCKET"
printf '%s\n' "$prefix" > "$svc/env/IX_PREFIX"
if [ -n "$svdir" ]; then printf '%s\n' "$svdir" > "$svc/env/IX_SVDIR"; else rm -f "$svc/env/IX_SVDIR"; fi
if [ -n "$realm" ]; then printf '%s\n' "$realm" > "$svc/env/IX_REALM"; else rm -f "$svc/env/IX_REALM"; fi
echo "enable-session.sh: made $svc"
if [ "$enable" = 1 ]; then
    mkdir -p "$service_dir"
    [ -L "$service_dir/ix-session-$user" ] || ln -s "$svc" "$service_dir/ix-session-$user"
    echo "enable-session.sh: enabled $service_dir/ix-session-$user (runsvdir starts it within 5s)"
fi
