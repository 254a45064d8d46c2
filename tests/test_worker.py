"""The cluster's pure parts, without a cluster: what a machine accepts to build for the
cluster (`ixd.build.cluster_node`), the worker function's answers, ix-worker's and ixd's
refusals (root, no TLS), and the cluster's certificates."""

from __future__ import annotations

import dataclasses
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ixd.build import worker
from ixd.build.certs import make_certificates, members
from ixd.build.cluster import ClusterSettings
from ixd.build.cluster_node import check_cluster_node, input_uids, inputs_plan
from ixd.cache.format import Entry
from ixd.model.layout import Layout
from ixd.model.nodes import Node
from ixd.model.selector import parse_selector
from ixd.recipes.package import recipe_node_uid, walk_closure
from ixd.recipes.packages import PackageGraph
from ixd.recipes.plan import build_plan
from ixd.recipes.tree import RecipeTree
from ixd.wire.errors import (
    BuildCancelled,
    BuildFailed,
    ClusterLost,
    ClusterRefused,
    ConnectionLost,
    DaemonUnavailable,
    DependencyFailed,
    IxError,
)
from tests.daemon_harness import PKGS, PROJECT, TEST_OVERLAY

ROOT = Path("/ix")
LAYOUT = Layout(ROOT)


def _plan(*selectors: str) -> list[Node]:
    graph = PackageGraph(RecipeTree([TEST_OVERLAY, PKGS]), LAYOUT.store)
    packages = [graph.load(parse_selector(s)) for s in selectors]
    assert walk_closure(packages)
    return [n for n in build_plan(packages, LAYOUT).nodes if n.kind == "build"]


@pytest.fixture(scope="module")
def hello_nodes() -> list[Node]:
    return _plan("bin/hello", "bin/lua", "bin/slow(tag=w)")


def _node(nodes: list[Node], name: str) -> Node:
    return next(n for n in nodes if n.name.split("(")[0] == name)


def test_every_recipe_build_of_real_packages_passes_the_check(hello_nodes: list[Node]) -> None:
    for node in hello_nodes:
        assert recipe_node_uid(node, LAYOUT.store) == node.uid, node.name
        assert check_cluster_node(node.to_json(), LAYOUT) == node
    # lib/c reads its source from the source cache: no longer "outside the store" (issue 22)
    lib_c = _node(hello_nodes, "lib/c")
    assert any(p.startswith(f"{ROOT}/src/") for p in lib_c.inputs)


def _refusal(data: Any) -> str:
    with pytest.raises(ClusterRefused) as caught:
        check_cluster_node(data, LAYOUT)
    return caught.value.message


def test_a_node_whose_content_does_not_make_its_uid_is_refused(hello_nodes: list[Node]) -> None:
    hello = _node(hello_nodes, "bin/hello").to_json()
    trojan = {**hello, "stdin": hello["stdin"] + "\necho pwned > $out/bin/hello\n"}
    assert "its content makes the uid" in _refusal(trojan)
    assert "its content makes the uid" in _refusal({**hello, "env": {**hello["env"], "X": "1"}})
    # nor may a node ask to see the host's folders its recipe does not show it
    assert hello["host_view"] is False
    assert "its content makes the uid" in _refusal({**hello, "host_view": True})
    other_input = {**hello, "inputs": [f"{ROOT}/store/{'0' * 32}-lib-evil",
                                       *hello["inputs"][1:]]}
    assert "its content makes the uid" in _refusal(other_input)


def test_a_node_reaching_outside_the_store_or_its_sources_is_refused(
        hello_nodes: list[Node]) -> None:
    hello = _node(hello_nodes, "bin/hello").to_json()
    assert "neither an entry of the store" in _refusal({**hello, "inputs": ["/etc"]})
    assert "neither an entry of the store" in _refusal(
        {**hello, "inputs": [*hello["inputs"], f"{ROOT}/src/{'a' * 64}"]})
    assert "not its entry in this machine's store" in _refusal(
        {**hello, "outputs": [f"/elsewhere/store/{hello['uid']}-bin-hello"]})
    assert "not its entry in this machine's store" in _refusal(
        {**hello, "outputs": [f"{ROOT}/store/{'1' * 32}-bin-hello"]})


def test_sources_must_be_http_and_named_as_recipes_name_them(hello_nodes: list[Node]) -> None:
    lib_c = _node(hello_nodes, "lib/c").to_json()
    source = lib_c["sources"][0]
    local = {**lib_c, "sources": [{**source, "url": "file:///etc/shadow"}]}
    assert "is not an http(s) or deb-src URL" in _refusal(local)
    renamed = {**lib_c, "sources": [{**source, "filename": "../../x"}]}
    assert "is not the last part of its URL" in _refusal(renamed)


def test_nodes_of_other_kinds_and_malformed_nodes_are_refused(hello_nodes: list[Node]) -> None:
    hello = _node(hello_nodes, "bin/hello").to_json()
    assert "builds build nodes, not a realm node" in _refusal({**hello, "kind": "realm"})
    assert "built where they are used" in _refusal({**hello, "entry_kind": "fix"})
    assert "not a well-formed" in _refusal({**hello, "command": "sh"})
    assert "not a well-formed" in _refusal({**hello, "env": {"A": 1}})
    assert "not a well-formed" in _refusal({k: v for k, v in hello.items() if k != "inputs"})
    assert "not a well-formed" in _refusal({**hello, "timeout": -1})
    assert "a plan node (a map)" in _refusal(["not", "a", "map"])


def test_a_long_timeout_is_bounded(hello_nodes: list[Node]) -> None:
    slow = _node(hello_nodes, "bin/slow").to_json()
    checked = check_cluster_node({**slow, "timeout": 1e12}, LAYOUT)
    assert checked.timeout == 24 * 3600


def _entry(uid: str, name: str, references: tuple[str, ...] = ()) -> Entry:
    return Entry(uid, f"{LAYOUT.store}/{uid}-{name}", "0" * 64, 1, "0" * 64, 1, references)


def test_inputs_come_from_the_caches_with_their_references(hello_nodes: list[Node]) -> None:
    hello = _node(hello_nodes, "bin/hello")
    wanted = input_uids(hello, LAYOUT.store)
    extra = "e" * 32  # a run-time reference of one input, not an input itself
    held = {u: _entry(u, "lib-x", (extra,) if u == wanted[0] else ()) for u in wanted}
    held[extra] = _entry(extra, "lib-extra")
    plan = inputs_plan(hello, LAYOUT, lambda uid: False,
                       lambda uids: {u: held[u] for u in uids if u in held})
    kinds = {n.uid: n.kind for n in plan.nodes}
    assert {u: kinds[u] for u in [*wanted, extra]} == dict.fromkeys([*wanted, extra],
                                                                    "substitute")
    assert plan.targets == (hello.uid,) and plan.nodes[-1].uid == hello.uid
    fetched = [n for n in plan.nodes if n.kind == "fetch"]
    assert [n.uid for n in fetched] == [s.sha256 for s in hello.sources]
    assert set(plan.nodes[-1].deps) == {*wanted, extra, *(s.sha256 for s in hello.sources)}


def test_an_input_no_cache_holds_is_refused(hello_nodes: list[Node]) -> None:
    hello = _node(hello_nodes, "bin/hello")
    with pytest.raises(ClusterRefused, match="which no trusted cache of this machine holds"):
        inputs_plan(hello, LAYOUT, lambda uid: False, lambda uids: {})
    # what the store holds already needs no cache
    plan = inputs_plan(hello, LAYOUT, lambda uid: True, lambda uids: {})
    assert [n.kind for n in plan.nodes if n.kind == "substitute"] == []


def test_an_input_for_another_store_is_refused(hello_nodes: list[Node]) -> None:
    hello = _node(hello_nodes, "bin/hello")
    wanted = input_uids(hello, LAYOUT.store)
    elsewhere = {u: dataclasses.replace(_entry(u, "lib-x"), store_path=f"/srv/store/{u}-lib-x")
                 for u in wanted}
    with pytest.raises(ClusterRefused, match="not an entry of /ix/store"):
        inputs_plan(hello, LAYOUT, lambda uid: False,
                    lambda uids: {u: elsewhere[u] for u in uids})


# --- the worker function ---------------------------------------------------------------------


@pytest.mark.parametrize(("error", "code"), [
    (BuildFailed("make: *** [all] Error 2"), "E_BUILD_FAILED"),
    (DependencyFailed("an input failed"), "E_CLUSTER_REFUSED"),
    # a BuildFailed too, but not the build's own failure: nobody waited for it there
    (BuildCancelled("bin/x was cancelled: nobody waits for it"), "E_CLUSTER_REFUSED"),
    (ClusterRefused("bin/x (u): no; refused"), "E_CLUSTER_REFUSED"),
    (ConnectionLost("the daemon went away"), "E_CLUSTER_LOST"),
    (DaemonUnavailable("no ixd at /ix/var/ixd.sock"), "E_CLUSTER_REFUSED"),
    (IxError("anything else"), "E_CLUSTER_REFUSED"),
])
def test_what_the_submitter_hears_of_a_worker_machine_error(error: IxError, code: str) -> None:
    answer = worker._failure(error)
    assert answer["error"] == code
    assert error.message in answer["message"]
    assert code != ClusterLost.code or "went away" in answer["message"]


def test_a_worker_without_its_machines_ixd_refuses(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(worker.SOCKET_ENV, str(tmp_path / "absent.sock"))
    answer = worker.build({"uid": "u" * 32, "name": "bin/x"})
    assert answer["error"] == "E_CLUSTER_REFUSED" and "E_NO_DAEMON" in answer["message"]
    assert answer["uid"] == "u" * 32


def _run(module: str, *words: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", module, *words]
    return subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is of root")
def test_ix_worker_refuses_to_run_as_root() -> None:
    done = _run("ixd.build.worker", "tcp://127.0.0.1:1", "--insecure-cluster")
    assert done.returncode == 2 and "refuses to run as root" in done.stderr


def test_no_cluster_without_tls_unless_the_admin_says_so(tmp_path: Path) -> None:
    refused = _run("ixd.daemon.main", "--root", str(tmp_path / "r"), "--dask",
                   "tcp://127.0.0.1:1", "--cache", f"file://{tmp_path}/c")
    assert refused.returncode != 0
    assert "refusing a Dask cluster without TLS" in refused.stderr
    assert "--insecure-cluster" in refused.stderr and "ixd cluster-certs" in refused.stderr
    pem = tmp_path / "x.pem"
    pem.write_text("")
    with pytest.raises(IxError, match="tls://HOST:PORT"):
        ClusterSettings("tcp://h:1", tls_ca=pem, tls_cert=pem, tls_key=pem).check()
    with pytest.raises(IxError, match="go together"):
        ClusterSettings("tls://h:1", tls_ca=pem).check()
    with pytest.raises(IxError, match="contradict"):
        ClusterSettings("tcp://h:1", insecure=True, tls_ca=pem, tls_cert=pem,
                        tls_key=pem).check()
    with pytest.raises(IxError, match="no such file"):
        ClusterSettings("tls://h:1", tls_ca=pem, tls_cert=pem,
                        tls_key=tmp_path / "absent.key").check()
    ClusterSettings("tcp://h:1", insecure=True).check()  # the admin said so


def test_a_signing_key_others_can_read_is_refused(tmp_path: Path) -> None:
    assert _run("ixd.daemon.main", "keygen", "k", "--dir", str(tmp_path)).returncode == 0
    key = tmp_path / "k.secret"
    key.chmod(0o644)
    refused = _run("ixd.daemon.main", "--root", str(tmp_path / "r"), "--push",
                   f"file://{tmp_path}/c", "--signing-key", str(key))
    assert refused.returncode != 0 and "readable by others" in refused.stderr
    assert "chmod 600" in refused.stderr


# --- certificates ----------------------------------------------------------------------------


def test_cluster_certs_make_a_ca_whose_members_verify_each_other(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    made = _run("ixd.daemon.main", "cluster-certs", str(folder), "--ixd", "a", "--worker",
                "w1", "--scheduler-host", "10.0.0.5")
    assert made.returncode == 0, made.stderr
    for stem in ("ca", "scheduler", "ixd-a", "worker-w1"):
        assert (folder / f"{stem}.key").stat().st_mode & 0o777 == 0o600
    # each side of a connection accepts the other's certificate, as Dask's TLS does
    for stem in ("scheduler", "ixd-a", "worker-w1"):
        context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
        context.load_cert_chain(str(folder / f"{stem}.pem"), str(folder / f"{stem}.key"))
        verified = subprocess.run(["openssl", "verify", "-CAfile", str(folder / "ca.pem"),
                                   str(folder / f"{stem}.pem")], capture_output=True, text=True)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    # run again: the CA is kept and signs the new member; an existing one is not overwritten
    ca = (folder / "ca.pem").read_bytes()
    again = _run("ixd.daemon.main", "cluster-certs", str(folder), "--worker", "w2")
    assert again.returncode == 0 and (folder / "ca.pem").read_bytes() == ca
    assert (folder / "worker-w2.pem").exists()
    twice = _run("ixd.daemon.main", "cluster-certs", str(folder), "--worker", "w2")
    assert twice.returncode == 1 and "not overwritten" in twice.stderr


def test_certificate_names_are_checked() -> None:
    with pytest.raises(IxError, match="letters, digits"):
        members(["../a"], [])
    with pytest.raises(IxError, match="letters, digits"):
        make_certificates(Path("/nonexistent"), members([], ["a b"]))
