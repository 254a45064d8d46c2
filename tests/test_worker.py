"""What an ix worker refuses before building: nodes that are not builds, or that reach
outside its store (the submitter is trusted to submit, not to read the worker's files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ixd.build import worker
from ixd.model.nodes import Node

UID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ix"
    path = tmp_path / "worker.json"
    path.write_text(json.dumps({"root": str(root), "push": f"file://{tmp_path}/cache",
                                "signing_key": str(tmp_path / "absent.secret")}))
    monkeypatch.setenv(worker.CONFIG_ENV, str(path))
    return root


def node(root: Path, **fields: object) -> dict[str, object]:
    base = Node(uid=UID, kind="build", name="bin/x", deps=(), inputs=(),
                outputs=(str(root / "store" / f"{UID}-bin-x"),), command=("/bin/true",))
    return {**base.to_json(), **fields}


def test_a_node_reading_outside_the_store_is_refused(config: Path) -> None:
    answer = worker.build(node(config, inputs=["/etc"]))
    assert answer["error"] == "E_BAD_REQUEST" and "outside the store" in answer["message"]
    assert not (config / "store" / f"{UID}-bin-x").exists()


def test_a_node_for_another_store_or_not_a_build_is_refused(config: Path) -> None:
    answer = worker.build(node(config, outputs=[f"/elsewhere/store/{UID}-bin-x"]))
    assert answer["error"] == "E_BAD_REQUEST" and "this worker's is" in answer["message"]
    answer = worker.build(node(config, kind="realm"))
    assert answer["error"] == "E_BAD_REQUEST" and "builds build nodes" in answer["message"]


def test_a_worker_without_settings_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(worker.CONFIG_ENV, raising=False)
    answer = worker.build(node(Path("/ix")))
    assert answer["error"] == "E_BAD_REQUEST" and worker.CONFIG_ENV in answer["message"]
