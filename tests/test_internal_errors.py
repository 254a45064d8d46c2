"""A bug inside the builder (any exception but OSError) is an internal error: E_INTERNAL to
the caller, its traceback in the log, the build recorded failed, and the daemon goes on."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from ixd.build.runner import StoreRunner
from ixd.model.layout import Layout
from ixd.model.nodes import Node
from ixd.store import scratch
from ixd.store.db import BuildDatabase
from ixd.wire.errors import InternalError
from tests.one_node import run_one_node


def _node(layout: Layout) -> Node:
    uid = "0123456789abcdef0123456789abcdef"
    return Node(uid=uid, kind="build", name="bin/buggy", deps=(), inputs=(),
                outputs=(str(layout.store_dir(uid, "bin", "buggy")),),
                command=("/bin/sh", "-c", 'mkdir -p "$out"'), env={"PATH": "/usr/bin:/bin"},
                meta={"package": "bin/buggy", "flags": {}})


def test_a_type_error_in_the_builder_is_e_internal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    layout = Layout(tmp_path / "root")
    layout.ensure()
    db = BuildDatabase(layout.database)
    runner = StoreRunner(layout, db, confine=False, mirrors=(), make_thrs=1)

    def buggy(*args: Any, **kwargs: Any) -> None:
        raise TypeError("a bug in _prepare")

    monkeypatch.setattr(scratch, "prepare", buggy)
    node = _node(layout)
    with caplog.at_level(logging.ERROR, logger="ixd.build.scheduler"):
        _events, raised = run_one_node(runner, node)

    assert len(raised) == 1
    assert isinstance(raised[0], InternalError) and raised[0].code == "E_INTERNAL"
    assert "TypeError" in raised[0].message and "a bug in _prepare" in raised[0].message
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is TypeError]
    assert logged, "the traceback of the bug is logged"
    rows = db.builds()
    assert [(r["uid"], r["state"]) for r in rows] == [(node.uid, "failed")]
    assert "TypeError" in rows[0]["error"]
    assert node.uid not in runner.valid
    assert not Path(node.outputs[0]).exists()
    db.close()
