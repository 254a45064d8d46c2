"""What `ixc` asks the daemon for, by command and option (pure: the request is caught before
it is sent; the daemon's side of each argument is tested against a real daemon)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from client.commands import EMBED, change_realms, only_adds_and_sets
from client.context import Context, Options


class Caught(Context):
    """A context whose one request is kept, and answered with `answer`."""

    def __init__(self, name: str, as_json: bool, answer: Any) -> None:
        options = Options()
        options.json = as_json
        super().__init__(name, options, io.StringIO(), io.StringIO(), None)
        self.answer = answer
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def call(self, op: str, args: dict[str, Any], idempotent: bool = True,
             on_event: Any = None) -> Any:
        self.sent.append((op, args))
        return self.answer


BRIEF = {"realms": [{"realm": "work", "path": "/ix/store/x-realm", "generation": 3,
                     "changed": True}]}


@pytest.mark.parametrize("name", ["mut", "let"])
def test_a_change_asks_for_the_states_only_with_json(name: str) -> None:
    human = Caught(name, False, BRIEF)
    assert change_realms(human, ["work", "+bin/greet"]) == 0
    [(op, args)] = human.sent
    assert op == name and args["state"] is False
    assert args["words"] == ["work", "+bin/greet"]  # ixd lexes them
    assert human.out.getvalue() == "realm work: generation 3 -> /ix/store/x-realm\n"

    full = {"realms": [{**BRIEF["realms"][0], "state": {"entries": [], "flags": {}}}]}
    as_json = Caught(name, True, full)
    assert change_realms(as_json, ["work", "+bin/greet"]) == 0
    [(op, args)] = as_json.sent
    assert "state" not in args  # the daemon's default: with the states
    assert '"state"' in as_json.out.getvalue()


@pytest.mark.parametrize("words", [
    ["+bin/greet"], ["work", "bin/greet", "--k=v", "--shout"], ["-bin/greet"],
    ["+bin/greet", "--k=-"], ["--k=-"], ["--k=v", "w2", "-bin/a", "+bin/b"], ["--k"],
    ["bin/a(x=-)"], ["+bin/a", "--k=-x"],
])
def test_a_change_is_sent_again_only_if_it_only_adds_and_sets(words: list[str]) -> None:
    """ixc tells from the words whether a lost change may be sent again: exactly when the
    patches ixd lexes from them hold no removal."""
    from ixd.model.realm import AddPackage, SetPackageFlag, SetRealmFlag
    from ixd.model.words import lex_mutation

    ops = [op for patch in lex_mutation(words, "me") for op in patch.ops]
    lexed = all(isinstance(op, AddPackage | SetPackageFlag | SetRealmFlag) for op in ops)
    assert only_adds_and_sets(words) is lexed


def test_the_embed_prefix_is_the_lexers() -> None:
    from ixd.model.words import EMBED_PREFIX

    assert EMBED == EMBED_PREFIX
