#!/bin/sh
# Create the build users ixd runs builds as (like Nix's nixbld1..N): a system group and COUNT
# system accounts in it, with no home, no password and no login shell. Idempotent: accounts
# that exist are kept. Run as root (runit/install.sh and .ci/setup do).
#
#   runit/build-users.sh [GROUP [COUNT]]        defaults: ixbld 16
set -eu
group=${1:-ixbld}
count=${2:-16}
case "$count" in ''|*[!0-9]*) echo "build-users.sh: COUNT must be a number, not $count" >&2; exit 2 ;; esac
getent group "$group" >/dev/null || groupadd --system "$group"
i=1
while [ "$i" -le "$count" ]; do
    name="$group$i"
    if ! getent passwd "$name" >/dev/null; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            --gid "$group" --groups "$group" --comment "ix build user $i" "$name"
    fi
    i=$((i + 1))
done
