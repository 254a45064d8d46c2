"""`ixc.1`, the manual page, written from the command table (`client.commands`) and the
error hierarchy (`ixd.wire.errors`): what `ixc help` says, with the options, exit statuses,
error codes, environment and files. `python3 -m client.manpage > ixc.1`
(runit/install.sh installs it)."""

from __future__ import annotations

import sys

from client.commands import COMMANDS
from client.main import OPTIONS_HELP
from ixd import __version__
from ixd.wire import roff
from ixd.wire.errors import ERRORS_BY_CODE
from ixd.wire.transport import DEFAULT_SOCKET

EXIT_STATUSES = (("0", "success"), ("1", "an error (the message says which, with its code)"),
                 ("2", "a usage error or a request the daemon refused as malformed"),
                 ("3", "the daemon cannot be reached (E_NO_DAEMON, E_SOCKET_PERMISSION, "
                       "E_NOT_A_SOCKET) or the connection was lost"),
                 ("130", "interrupted (Ctrl-C): nothing was switched"))


def manual() -> str:
    commands = "\n".join(
        roff.item("ixc " + cmd.synopsis,
                  " ".join(line.strip() for line in cmd.summary.splitlines()) + "."
                  + (f"\n{cmd.detail}" if cmd.detail else ""))
        for cmd in COMMANDS.values())
    errors = "\n".join(roff.item(code, (cls.__doc__ or cls.__name__).strip().split("\n\n")[0])
                       for code, cls in sorted(ERRORS_BY_CODE.items()))
    return roff.page("ixc", 1, "change your realms through the ix daemon",
                     f"ix {__version__}", [
        ("Synopsis", ".B ixc\n" + roff.text("[--socket PATH] [--json] [-v] [--no-retry] "
                                            "COMMAND [WORDS...]")),
        ("Description", roff.paragraphs(
            "ixc asks ixd, the daemon that owns the ix store, to change your realms (your "
            "own package sets, named after your login unless you name another), to build "
            "packages and to tell what it holds. Every user has realms of their own; a "
            "package asked for by several users at once is built once.",
            "Selectors with flags contain parentheses: quote them for the shell, e.g. "
            "ixc mut '+bin/greet(shout=1)'.")),
        ("Commands", commands),
        ("Options", roff.text(" ".join(OPTIONS_HELP.split())) + "\n.PP\n"
         + roff.text("Every command that prints data takes --json.")),
        ("Exit status", "\n".join(roff.item(code, what) for code, what in EXIT_STATUSES)),
        ("Errors", roff.text("Every error ends with its stable code in brackets:") + "\n"
         + errors),
        ("Environment", roff.item("IX_SOCKET", f"the daemon's socket (default "
                                               f"{DEFAULT_SOCKET}); --socket wins")),
        ("Files", roff.item(DEFAULT_SOCKET, "the system daemon's socket") + "\n"
         + roff.item("/ix/realm/REALM", "the current generation of a realm: bin/, lib/, "
                                        "meta.json and an env to source")),
        ("See also", roff.text("ixd(8); README.md and docs/ of ix")),
    ])


if __name__ == "__main__":
    sys.stdout.write(manual())
