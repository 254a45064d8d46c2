#!/bin/sh
# Create the account ix-worker runs as on a cluster worker machine (README, "Build on a
# cluster"): a system account with no home, no password and no login shell, in no group of
# build users. Dask runs whatever the cluster submits as this account; it holds no key and
# cannot write the store: its machine's ixd (`ixd --cluster-worker-account NAME`) builds,
# signs and pushes. Idempotent. Run as root (.ci/setup does).
#
#   runit/worker-account.sh [NAME]        default: ixworker
set -eu
name=${1:-ixworker}
if ! getent passwd "$name" >/dev/null; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        --user-group --comment "ix cluster worker" "$name"
fi
