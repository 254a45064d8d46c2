"""`ixd.8`, the manual page, written from ixd's own argument parser and subcommand table
(`ixd.daemon.main`): `ixd manpage > ixd.8` (runit/install.sh installs it)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence

from ixd import __version__
from ixd.wire import roff


def manual(parser: argparse.ArgumentParser,
           subcommands: Mapping[str, tuple[Callable[[Sequence[str]], int], str]]) -> str:
    groups = []
    for group in parser._action_groups:  # argparse keeps its groups nowhere public
        items = [roff.item(_spelling(action), action.help or "")
                 for action in group._group_actions if action.help != argparse.SUPPRESS]
        if items:
            title = "Options" if group.title in ("options", "optional arguments") else (
                group.title or "")
            groups.append(f".SS {roff.text(title[:1].upper() + title[1:])}\n" + "\n".join(items))
    return roff.page("ixd", 8, "the ix daemon: owns the store, builds, switches realms",
                     f"ix {__version__}", [
        ("Synopsis", ".B ixd\n" + roff.text("--root ROOT [options]") + "\n.br\n.B ixd\n"
         + roff.text("SUBCOMMAND [--help] ...")),
        ("Description", roff.paragraphs(
            "ixd owns an ix store (ROOT/store), its build database and the realms of every "
            "user, and serves them on a Unix socket (ROOT/var/ixd.sock) to ixc(1). It runs "
            "as root, like nix-daemon, so that every build runs as a build user of its own "
            "in a sandbox; usually under runit (`sv up ixd`, docs/admin.md).")),
        ("Options", "\n".join(groups)),
        ("Subcommands", "\n".join(roff.item(f"ixd {name}", summary)
                                  for name, (_, summary) in subcommands.items())),
        ("Files", "\n".join(roff.item(path, what) for path, what in (
            ("ROOT/store", "the package store"), ("ROOT/var/ixd.sqlite", "the build database"),
            ("ROOT/var/ixd.sock", "the socket ixc connects to"),
            ("ROOT/var/log", "build logs"), ("/etc/sv/ixd", "the runit service")))),
        ("See also", roff.text("ixc(1), runsv(8), sv(8); docs/admin.md of ix")),
    ])


def _spelling(action: argparse.Action) -> str:
    names = ", ".join(action.option_strings) or action.dest
    if action.nargs == 0:
        return names
    return f"{names} {action.metavar or action.dest.upper()}"
