"""The op contract (`ixd.wire.ops`): every request's arguments checked once, by the server,
into the op's typed record; and the event kinds (`ixd.wire.events`) every emitter names."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from ixd.daemon.identity import Caller
from ixd.daemon.server import Server
from ixd.wire import events, protocol
from ixd.wire.errors import BadRequest, UnknownOp
from ixd.wire.ops import (
    MAX_BUILDS_REACH,
    OPS,
    BuildArgs,
    DiffArgs,
    NoArgs,
    PageArgs,
    RunArgs,
    SearchArgs,
    check_request,
)

PROJECT = Path(__file__).resolve().parent.parent


def test_arguments_become_the_ops_record_with_defaults() -> None:
    assert check_request("ping", {}) == NoArgs()
    assert check_request("build", {"packages": ["bin/a"]}) == BuildArgs(["bin/a"], False)
    assert check_request("run", {"packages": ["bin/a"], "hold": True}) == RunArgs(
        packages=["bin/a"], strict=False, hold=True)
    assert check_request("status", {}) == PageArgs(limit=100, offset=0)
    assert check_request("builds", {"offset": 5}) == PageArgs(limit=50, offset=5)
    # `from` is a keyword in Python: the record calls it `start`
    assert check_request("diff", {"from": 1, "to": 3}) == DiffArgs(None, 1, 3)
    assert check_request("search", {"prefix": ""}) == SearchArgs(None, "", 50)
    # nil is as good as absent
    assert check_request("list", {"realm": None}).realm is None


@pytest.mark.parametrize(("op", "args", "message"), [
    ("build", {}, "this op needs 'packages': a non-empty list of selectors"),
    ("build", {"packages": []}, "this op needs 'packages'"),
    ("build", {"packages": ["bin/a", 3]}, "this op needs 'packages'"),
    ("build", {"packages": ["bin/a"], "strict": "yes"},
     "'strict' must be true or false, not 'yes'"),
    ("build", {"packages": ["bin/a"], "hold": True},
     "op 'build' takes no argument 'hold'; its arguments: packages, strict"),
    ("ping", {"n": 1}, "op 'ping' takes no argument 'n'; its arguments: none"),
    ("status", {"limit": 0}, "'limit' must be a number from 1 to 1000, not 0"),
    ("status", {"limit": True}, "'limit' must be a number from 1 to 1000, not True"),
    ("status", {"offset": -1}, "'offset' must be a number from 0 up, not -1"),
    ("builds", {"limit": 10_000, "offset": MAX_BUILDS_REACH},
     f"may reach at most {MAX_BUILDS_REACH} entries back"),
    ("rollback", {"to": "2"}, "'to' must be a generation number, not '2'"),
    ("diff", {"from": 1.5}, "'from' must be a generation number, not 1.5"),
    ("log", {"target": ""}, "'target' must be a package selector or a build uid"),
    ("log", {}, "'target' must be a package selector or a build uid"),
    ("search", {}, "'terms' must be a list of 1 to 16 words"),
    ("search", {"terms": ["x"] * 17}, "'terms' must be a list of 1 to 16 words"),
    ("search", {"prefix": "x" * 201}, "'prefix' must be a string of at most 200"),
    ("list", {"realm": 7}, "'realm' must be a string (a realm's name), not 7"),
    ("mut", {"patches": []}, "'patches' must be a non-empty list of realm patches"),
    ("why", {"realm": "work"}, "'package' must be a package name, e.g. lib/c"),
])
def test_a_bad_argument_is_refused_naming_it(op: str, args: dict[str, Any],
                                             message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        check_request(op, args)
    assert type(refused.value) is BadRequest and refused.value.code == "E_BAD_REQUEST"
    assert message in refused.value.message


def test_an_unknown_op_is_refused_naming_the_ops() -> None:
    with pytest.raises(UnknownOp, match=r"unknown op 'frob'; this daemon knows: build, "):
        check_request("frob", {})


async def test_the_server_checks_arguments_before_the_op_runs() -> None:
    seen: list[tuple[str, Any]] = []

    async def handle(op: str, args: Any, caller: Caller, emit: Any) -> Any:
        seen.append((op, args))
        return "ran"

    client_end, server_end = trio.testing.memory_stream_pair()
    conn = protocol.Connection("client")
    replies: list[protocol.Message] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Server(handle).serve_stream, server_end,
                           Caller(uid=1001, gid=1001, pid=1))
        await client_end.send_all(
            conn.send(protocol.Hello(protocol.PROTOCOL_VERSION, "test"))
            + conn.send(protocol.Request(1, "status", {"limit": "all"}))
            + conn.send(protocol.Request(2, "frob", {}))
            + conn.send(protocol.Request(3, "status", {"offset": 2})))
        while len(replies) < 4:  # the hello, three replies
            msg = conn.next_event()
            if msg is protocol.NEED_DATA:
                conn.receive_data(bytes(await client_end.receive_some(65536)))
            elif isinstance(msg, protocol.Message):
                replies.append(msg)
        nursery.cancel_scope.cancel()
    by_id = {m.id: m for m in replies[1:] if not isinstance(m, protocol.Hello)}
    assert by_id[1] == protocol.Error(1, "E_BAD_REQUEST",
                                      "'limit' must be a number from 1 to 1000, not 'all'")
    assert isinstance(by_id[2], protocol.Error) and by_id[2].code == "E_UNKNOWN_OP"
    assert by_id[3] == protocol.Result(3, "ran")
    assert seen == [("status", PageArgs(limit=100, offset=2))]


# --- events --------------------------------------------------------------------------------

#: the names a module calls to hand on an event
_EMITTERS = {"emit", "listener", "send", "_emit"}


def _bare_event_kinds(path: Path, base: Path = PROJECT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        if name in _EMITTERS and isinstance(first, ast.Constant) and isinstance(
                first.value, str) and first.value in {*events.FIELDS, events.LOG_MARK}:
            found.append(f"{path.relative_to(base)}:{node.lineno} {first.value!r}")
    return found


def test_every_emitter_names_event_kinds_from_the_list() -> None:
    bare = [hit for path in sorted((PROJECT / "ixd").rglob("*.py"))
            for hit in _bare_event_kinds(path)]
    assert not bare, f"event kinds spelt out instead of ixd.wire.events: {bare}"


def test_the_bare_kind_finder_finds_one(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('def f(emit):\n    emit("notice", {"text": "x"})\n    emit(K, {})\n')
    assert _bare_event_kinds(module, tmp_path) == ["m.py:2 'notice'"]


def test_every_op_has_a_record_and_every_argument_a_field() -> None:
    for op in OPS.values():
        assert {a.field for a in op.args} == set(op.record._fields), op.name
