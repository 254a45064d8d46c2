"""What `ixc` says when the user stops waiting (Ctrl-C): what became of each build it was
waiting for, and that the realm was not switched.

Hanging up cancels the request in the daemon, and with it every build nobody else waits for;
a build another request waits for goes on. Which it was, the daemon's `status` tells once it
has seen the hang-up (asked again for up to a second, on a fresh connection).
"""

from __future__ import annotations

import time

from ixd.wire.errors import IxError
from ixd.wire.transport import Client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from client.context import Context

#: how long to ask whether the daemon has let go of this request's builds
SETTLE = 1.0
#: the commands that switch realms only once everything is built
SWITCHING = {"mut": "realm", "let": "realm", "run": "ephemeral realm"}


def tell_interrupted(ctx: Context) -> None:
    running = dict(ctx.progress.running)
    lines = ["ixc: interrupted"]
    what = SWITCHING.get(ctx.name)
    if what is not None:
        lines[0] += f": the {what} is unchanged (nothing is switched before every build is done)"
    if running:
        fates = _fates(ctx.socket, set(running), _login())
        for uid, name in sorted(running.items(), key=lambda item: item[1]):
            lines.append(f"ixc: {name}: {fates.get(uid, 'cancelled (nobody else waited for it)')}")
    print("\n".join(lines), file=ctx.err, flush=True)


def _fates(path: str, uids: set[str], login: str) -> dict[str, str]:
    """For each of `uids` still under way for another request: who waits for it."""
    end = time.monotonic() + SETTLE
    fates: dict[str, str] = {}
    while True:
        try:
            with Client.connect(path) as client:
                flights = client.request("status", {"limit": 500})["builds"]
        except IxError:
            return {uid: "unknown (ixd cannot be asked now); see `ixc status`" for uid in uids}
        fates = {}
        mine_only = False
        for flight in flights:
            if flight["uid"] not in uids:
                continue
            others = _others(flight, login)
            mine_only = mine_only or not others
            fates[flight["uid"]] = (f"still being built, for {others}" if others else
                                    "still being built, for another request of yours")
        if not mine_only or time.monotonic() > end:
            return fates
        time.sleep(0.05)  # polled with a deadline: the daemon drops our wait on its own


def _others(flight: dict[str, Any], login: str) -> str:
    names = [n for n in flight.get("waiting", []) if n != login]
    more = int(flight.get("waiting_count", len(names))) - len(flight.get("waiting", []))
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _login() -> str:
    from ixd.model.realm import own_login

    return own_login()
