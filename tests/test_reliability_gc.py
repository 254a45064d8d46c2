"""Garbage collection end to end: what a purged realm alone held goes; what a command of
`ixc run` uses stays while it runs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from tests.daemon_harness import public_daemon, wait_for


def _out_dir(build_json: str) -> Path:
    return Path(json.loads(build_json)["packages"][0]["out"])


def test_purge_then_gc_frees_what_only_that_realm_held() -> None:
    with public_daemon("ix-purge-gc-") as d:
        gone_pkg = "bin/attack/hold(tag=purgeonly,secs=0)"
        kept_pkg = "bin/attack/hold(tag=stillused,secs=0)"
        d.ixc("let", "doomed", f"+{gone_pkg}")
        d.ixc("let", "keeper", f"+{kept_pkg}")
        gone = _out_dir(d.ixc("build", gone_pkg, "--json").stdout)
        kept = _out_dir(d.ixc("build", kept_pkg, "--json").stdout)
        doomed_entry = d.realm("doomed").resolve()
        keeper_entry = d.realm("keeper").resolve()
        assert (gone / "tag").read_text().strip() == "purgeonly"
        assert doomed_entry.is_dir() and keeper_entry.is_dir()

        d.ixc("purge", "doomed")
        assert not d.realm("doomed").exists()
        result = json.loads(d.ixc("gc", "--json").stdout)

        assert result["entries"] >= 2  # the purged realm's entry and its package
        assert not gone.exists() and not doomed_entry.exists()
        assert kept.is_dir() and keeper_entry.is_dir()
        assert (d.realm("keeper") / "meta.json").is_file()
        # its files go from the trash just after the answer (the collector's own task)
        wait_for(lambda: not any((d.root / "trash").iterdir()), "gc's trash to be emptied")
        # the purged realm's name starts afresh, and its package is built again
        d.ixc("let", "doomed", f"+{gone_pkg}")
        gens = json.loads(d.ixc("generations", "doomed", "--json").stdout)["generations"]
        assert [g["number"] for g in gens] == [1]
        assert (gone / "tag").is_file()


def test_gc_during_ixc_run_keeps_the_realm_its_command_uses() -> None:
    with public_daemon("ix-run-gc-") as d:
        junk = _out_dir(d.ixc("build", "bin/slow(secs=0,tag=junk)", "--json").stdout)
        started = d.root.parent / "started"
        # the command says where it found its tool, then waits for a line on its stdin
        script = (f'command -v slow-held > {started}.tmp && mv {started}.tmp {started} && '
                  'read line && slow-held && cat "$(command -v slow-held)" > /dev/null')
        argv, env = d.ixc_argv("run", "bin/slow(secs=0,tag=held)", "--", "sh", "-c", script)
        client = subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            tool = Path(wait_for(lambda: started.is_file() and started.read_text().strip(),
                                 "the command to start in its realm"))
            entry = tool.parent.parent  # <store>/<uid>-rlm-run/bin/slow-held
            assert entry.parent == d.root / "store" and (entry / "meta.json").is_file()
            linked = [Path(p) for p in json.loads((entry / "meta.json").read_text())["store_dirs"]]

            result = json.loads(d.ixc("gc", "--json").stdout)

            assert not junk.exists()  # gc ran and deleted what nobody holds
            assert result["entries"] >= 1
            assert (entry / "meta.json").is_file() and tool.exists()
            assert linked and all(p.is_dir() for p in linked)
            out, err = client.communicate("go\n", timeout=60)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        assert client.returncode == 0, err
        assert out.strip() == "slow-held"
        # once the command exited, the ephemeral realm is garbage like any other
        # (the daemon sees the hang-up on its own time: collect until it has)
        wait_for(lambda: d.ixc("gc").returncode == 0 and not entry.exists(),
                 "gc to delete the released realm")


def test_ixc_run_returns_the_commands_exit_status() -> None:
    with public_daemon("ix-run-status-") as d:
        result = d.ixc("run", "bin/slow(secs=0,tag=st)", "--", "sh", "-c",
                       "slow-st; exit 7", check=False)
        assert result.returncode == 7, result.stderr
        assert result.stdout.strip() == "slow-st"


def test_a_leftover_pin_row_keeps_nothing() -> None:
    """Pins were read but never written; gc no longer reads them, so a row left in the
    table (say, written by hand) keeps nothing alive."""
    with public_daemon("ix-pins-gc-") as d:
        built = json.loads(d.ixc("build", "bin/slow(secs=0,tag=pinned)", "--json").stdout)
        out = Path(built["packages"][0]["out"])
        with sqlite3.connect(d.root / "var" / "ixd.sqlite") as db:
            db.execute("INSERT INTO pins (uid, by, created) VALUES (?, 0, 0)",
                       [built["packages"][0]["uid"]])
        json.loads(d.ixc("gc", "--json").stdout)
        assert not out.exists()
