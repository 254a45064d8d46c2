"""Blame in the right place: a build whose command cannot be started "could not be run"
(E_BUILD_FAILED); a file of the daemon's own that it cannot make or write (the build's log,
its scratch) is the daemon's fault (E_DAEMON_FAULT), named as such, in the reply and as an
ERROR in the daemon's log, and the build leaves nothing behind either way."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from ixd.build.runner import StoreRunner
from ixd.model.layout import Layout
from ixd.store.db import BuildDatabase
from ixd.wire.errors import BuildFailed, DaemonFault
from tests.one_node import run_one_node
from tests.test_builder import (
    assert_cleaned_up,
    both_modes,
    build,
    layout,
    make_node,
    out_of,
)

__all__ = ["layout"]  # the fixture


@both_modes
async def test_a_log_that_cannot_be_opened_is_the_daemons_fault(layout: Layout,
                                                                confine: bool) -> None:
    node = make_node(layout, 'echo hello > "$out/greeting"')
    layout.log_path(node.uid).mkdir()  # the daemon's log file cannot be opened
    with pytest.raises(DaemonFault) as info:
        await build(node, layout, confine=confine)
    assert info.value.code == "E_DAEMON_FAULT"
    message = info.value.message
    assert "could not open its log" in message and str(layout.log_path(node.uid)) in message
    assert "could not be run" not in message and "daemon's, not the build's" in message
    assert_cleaned_up(layout, node)


@both_modes
async def test_a_scratch_that_cannot_be_made_is_the_daemons_fault(layout: Layout,
                                                                  confine: bool) -> None:
    node = make_node(layout, 'echo hello > "$out/greeting"')
    layout.build.rmdir()
    layout.build.write_text("not a folder")  # where every scratch goes
    with pytest.raises(DaemonFault) as info:
        await build(node, layout, confine=confine)
    assert "could not prepare its scratch" in info.value.message
    assert str(layout.scratch(node.uid)) in info.value.message
    assert not isinstance(info.value, BuildFailed)
    assert not out_of(node).exists()


@both_modes
async def test_a_command_that_cannot_be_started_could_not_be_run(layout: Layout,
                                                                 confine: bool) -> None:
    node = dataclasses.replace(make_node(layout, ""),
                               command=(str(layout.root / "no-such-program"),))
    with pytest.raises(BuildFailed) as info:
        await build(node, layout, confine=confine)
    assert info.value.code == "E_BUILD_FAILED" and "no-such-program" in info.value.message
    assert_cleaned_up(layout, node)


def test_the_scheduler_reports_and_records_a_daemon_fault(
        layout: Layout, caplog: pytest.LogCaptureFixture) -> None:
    db = BuildDatabase(layout.database)
    runner = StoreRunner(layout, db, confine=False, mirrors=(), make_thrs=1)
    node = make_node(layout, 'echo hello > "$out/greeting"')
    layout.log_path(node.uid).mkdir()
    with caplog.at_level(logging.INFO, logger="ixd.build"):
        _events, raised = run_one_node(runner, node)
    assert [type(e) for e in raised] == [DaemonFault]
    assert [(r["uid"], r["state"]) for r in db.builds()] == [(node.uid, "failed")]
    assert "could not open its log" in db.builds()[0]["error"]
    faults = [r for r in caplog.records
              if r.levelno == logging.ERROR and "E_DAEMON_FAULT" in r.getMessage()]
    assert faults, [r.getMessage() for r in caplog.records]
    assert node.uid not in runner.valid
    db.close()
