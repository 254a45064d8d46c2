"""How the suite is spread over processes (tests/parallel.py): which work units there are, the
order they are handed out in, and what workers tell their controller."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.parallel import ModuleScheduling, Needs, RunFolder, needs_of

SLOW = "tests/test_slow.py"
PLAIN = ["tests/test_a.py", "tests/test_b.py"]
ON_GCC = ["tests/test_gcc_one.py", "tests/test_gcc_two.py"]
ON_CLANG = "tests/test_clang.py"
COLLECTION = [f"{module}::test_{n}" for module in [*PLAIN, ON_GCC[0], SLOW, ON_CLANG, ON_GCC[1]]
              for n in range(3)]


class Worker:
    """A stand-in for xdist's WorkerController: records what it is sent."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[list[str]] = []
        self.shutting_down = False

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent.append([COLLECTION[i] for i in indexes])

    def shutdown(self) -> None:
        self.shutting_down = True

    def modules(self) -> list[set[str]]:
        return [{nodeid.split("::")[0] for nodeid in batch} for batch in self.sent]


def scheduling(ready: set[str], workers: int, slow: set[str] | None = None,
               early: set[str] | None = None) -> tuple[ModuleScheduling, list[Worker]]:
    config: Any = SimpleNamespace(getvalue=lambda name: [f"{workers}*popen"],
                                  option=SimpleNamespace(loadscopereorder=True))
    needs = Needs(seeded_modules={ON_GCC[0]: "lib_c_root", ON_GCC[1]: "lib_c_root",
                                  ON_CLANG: "toolchain_root"},
                  slow_modules={SLOW} if slow is None else slow, early_modules=early or set())
    scheduler = ModuleScheduling(config, None, needs=lambda: needs,
                                 seeded_ready=lambda root: root in ready)
    nodes = [Worker(f"gw{n}") for n in range(workers)]
    for node in nodes:
        scheduler.add_node(node)  # type: ignore[arg-type]
        scheduler.add_node_collection(node, COLLECTION)  # type: ignore[arg-type]
    scheduler.schedule()
    return scheduler, nodes


def finish_first_batch(scheduler: ModuleScheduling, node: Worker) -> None:
    for nodeid in node.sent[0]:
        scheduler.mark_test_complete(node, COLLECTION.index(nodeid))  # type: ignore[arg-type]


def test_a_ready_roots_modules_go_first_each_a_unit_of_its_own() -> None:
    _, (first, second) = scheduling(ready={"lib_c_root"}, workers=2)
    # both modules of the root, one in each worker (each sees the root's path as its own)
    assert first.modules()[0] | second.modules()[0] == set(ON_GCC)
    assert [len(first.modules()[0]), len(second.modules()[0])] == [1, 1]


def test_a_ready_slow_module_on_a_root_goes_before_the_others() -> None:
    scheduler, (only,) = scheduling(ready={"lib_c_root", "toolchain_root"}, workers=1,
                                    slow={SLOW, ON_CLANG})
    assert only.modules()[0] == {ON_CLANG}
    handed = drain(scheduler, only)
    assert handed.index({ON_CLANG}) < handed.index({ON_GCC[0]}) < handed.index({SLOW})


def test_a_module_starting_before_its_root_goes_out_at_once() -> None:
    _, (first, second) = scheduling(ready=set(), workers=2, slow={SLOW, ON_CLANG},
                                    early={ON_CLANG})
    assert first.modules()[0] | second.modules()[0] == {SLOW, ON_CLANG}


def test_a_root_still_being_built_waits_while_other_units_are_left() -> None:
    ready: set[str] = set()
    scheduler, (first, second) = scheduling(ready=ready, workers=2)
    assert first.modules()[0] == {SLOW}
    assert not any(set(ON_GCC) & batch for batch in first.modules() + second.modules())
    ready.add("lib_c_root")  # the root is made: the next unit handed out is one of its own
    finish_first_batch(scheduler, first)
    assert first.modules()[-1] <= set(ON_GCC)


def test_a_root_still_being_built_is_handed_out_when_nothing_else_is_left() -> None:
    scheduler, (only,) = scheduling(ready=set(), workers=1)
    handed = drain(scheduler, only)
    assert {ON_CLANG} in handed and {ON_GCC[0]} in handed and {ON_GCC[1]} in handed
    assert handed.index({SLOW}) < handed.index({ON_GCC[0]})
    assert all(handed.index({plain}) < handed.index({ON_CLANG}) for plain in PLAIN)


def drain(scheduler: ModuleScheduling, node: Worker) -> list[set[str]]:
    """Finish what `node` is sent until nothing is left; the modules it was sent, in order."""
    while scheduler.workqueue:
        for nodeid in node.sent[-1]:
            scheduler.mark_test_complete(node, COLLECTION.index(nodeid))  # type: ignore[arg-type]
    return node.modules()


def test_workers_needs_reach_the_controller_together(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.tell("gw0", Needs(seeded_modules={ON_CLANG: "toolchain_root"}, accounts=False))
    folder.tell("gw1", Needs(seeded_modules={ON_GCC[0]: "lib_c_root"}, accounts=True,
                             slow_modules={SLOW}))
    assert folder.needs() == Needs(seeded_modules={ON_CLANG: "toolchain_root",
                                                   ON_GCC[0]: "lib_c_root"},
                                   accounts=True, slow_modules={SLOW})
    assert not list(tmp_path.glob(".needs-*"))  # each written whole, then renamed


def test_accounts_the_controller_did_not_make_fail_clearly(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    with pytest.raises(pytest.fail.Exception, match="made no test accounts"):
        folder.accounts()
    folder.publish_accounts({"ixtalice": 1001})
    assert folder.accounts() == {"ixtalice": 1001}


def test_a_module_asking_for_two_roots_is_refused() -> None:
    item: Any = SimpleNamespace(nodeid="tests/test_x.py::test_y",
                                fixturenames=["lib_c_root", "toolchain_root"],
                                get_closest_marker=lambda name: None)
    with pytest.raises(pytest.UsageError, match="two prebuilt roots"):
        needs_of([item], ["lib_c_root", "toolchain_root"])
    plain: Any = SimpleNamespace(nodeid="tests/test_x.py::test_z", fixturenames=["accounts"],
                                 get_closest_marker=lambda name: name == "slow" or None)
    assert needs_of([plain], ["lib_c_root"]) == Needs(accounts=True,
                                                     slow_modules={"tests/test_x.py"})
