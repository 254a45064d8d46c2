"""stal/IX's `target_realm` flag and `fix.deps` hooks through a real ixd (issue 11,
divergence G): a realm's packages see `target_realm`, a package's `fix/` hooks run with the
tools its `fix.deps` name, in a sandboxed build of their own, and what they made is in the
realm; the hooks, their folder and their tools are not."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ixd.store.fstree import remove_tree
from tests.daemon_harness import RunningDaemon, start_daemon

RECIPES = {
    # a tool the hooks run: lists a folder's files (everything linked is a symlink)
    "bld/fixtool": """{% extends '//die/sh.sh' %}
{% block install %}
mkdir -p "$out/bin"
printf '#!/bin/sh\\nfind "$1" -type l | LC_ALL=C sort\\n' > "$out/bin/ix-index"
chmod +x "$out/bin/ix-index"
{% endblock %}
""",
    # data with a hook: an index of share/ in the realm, made by bld/fixtool
    "aux/fixdemo": """{% extends '//die/sh.sh' %}
{% block fix_deps %}
bld/fixtool
{% endblock %}
{% block install %}
mkdir -p "$out/fix" "$out/share/demo"
echo a > "$out/share/demo/a.txt"
echo 'ix-index share > share/demo/index.txt' > "$out/fix/index.sh"
echo 'echo ignored > share/demo/not-a-hook.txt' > "$out/fix/notes.txt"
{% endblock %}
""",
    # brings aux/fixdemo only in a realm, as stal/IX's lib/glib/ix brings its fix-up
    "bin/realmy": """{% extends '//die/sh.sh' %}
{% block run_data %}
{% if target_realm %}
aux/fixdemo
{% endif %}
{% endblock %}
{% block install %}
mkdir -p "$out/share/realmy"
echo x > "$out/share/realmy/x"
{% endblock %}
""",
}


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    top = Path(tempfile.mkdtemp(prefix="ix-fixup-", dir="/var/tmp"))
    overlay = top / "overlay"
    for name, text in RECIPES.items():
        (overlay / name).mkdir(parents=True)
        (overlay / name / "ix.sh").write_text(text)
    running = start_daemon(top / "root", overlays=(overlay, Path("pkgs").resolve()))
    try:
        yield running
        assert running.stop() == 0, running.log.read_text()
    finally:
        running.stop()
        remove_tree(top)


def test_a_realm_runs_the_fix_hooks_of_its_packages(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "fixa", "+bin/realmy")
    realm = daemon.realm("fixa")
    assert (realm / "share" / "demo" / "a.txt").read_text() == "a\n"
    # the hook ran in the whole realm (it saw bin/realmy's files) with bld/fixtool on PATH
    index = realm / "share" / "demo" / "index.txt"
    assert index.read_text().split() == ["share/demo/a.txt", "share/realmy/x"]
    assert os.readlink(index).split("/")[-4].endswith("-fix-realm")
    # only *.sh files of fix/ are hooks; the folder and the tool stay out of the realm
    assert not (realm / "share" / "demo" / "not-a-hook.txt").exists()
    assert not (realm / "fix").exists() and not (realm / "bin" / "ix-index").exists()
    meta = json.loads((realm / "meta.json").read_text())
    assert meta["fixers"] == ["bld/fixtool"]
    assert any("target_realm=fixa" in p for p in meta["packages"])


def test_realms_with_the_same_packages_share_one_fix_up(daemon: RunningDaemon) -> None:
    daemon.ixc("mut", "fixa", "+bin/realmy")
    daemon.ixc("mut", "fixb", "+bin/realmy")
    made = {os.readlink(daemon.realm(r) / "share" / "demo" / "index.txt")
            for r in ("fixa", "fixb")}
    assert len(made) == 1


def test_plain_plans_are_in_the_ephemeral_realm(daemon: RunningDaemon) -> None:
    # as stal/IX's `ix build`: its realm `ephemeral`, so bin/realmy brings aux/fixdemo
    summary = json.loads(daemon.ixc("plan", "--summary", "bin/realmy").stdout)
    assert "bin/realmy" in summary["packages"]
    assert "aux/fixdemo" in summary["packages"]
    # outside any realm (the flag set empty) it does not
    summary = json.loads(daemon.ixc("plan", "--summary", "bin/realmy(target_realm=)").stdout)
    assert "aux/fixdemo" not in summary["packages"]
    # a realm whose packages name no fix.deps has no fix-up node
    daemon.ixc("mut", "plain", "+bin/realmy(target_realm=)")
    realm = daemon.realm("plain")
    assert (realm / "share" / "realmy" / "x").exists()
    assert not (realm / "share" / "demo").exists()
    assert "fixers" not in json.loads((realm / "meta.json").read_text())
