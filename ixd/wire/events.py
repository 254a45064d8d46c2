"""The kinds of `Event` the daemon sends while a request runs, and the fields of each: the one
list every emitter (scheduler, runner, log streaming, the ops, the server) and `ixc`'s
printers (`client.progress`, `client.commands`) name them from.

An event's data is a map of the fields below (a field may be absent when it does not apply,
e.g. `live` of a `log-skipped` replayed to a follower). `ixc` imports this module on its way
to the socket, so it is plain constants: no typing, no dataclasses at run time.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# --- a plan's progress (the scheduler) ---------------------------------------------------

#: a plan is under way: its node count, how many to do, the build slots, the nodes to do
PLAN: Final = "plan"
#: a node this request needs is being done for another request already: waiting for it
JOINED: Final = "joined"
#: a node started (build, fetch, substitute ...); how long it took last time, if known
STARTED: Final = "started"
#: a node finished, and how long it took
FINISHED: Final = "finished"
#: a node still runs: for how long, and how long it took last time
HEARTBEAT: Final = "heartbeat"
#: the daemon does other than planned (a node built here after all, a flag nobody reads):
#: always shown
NOTICE: Final = "notice"

# --- build output -------------------------------------------------------------------------

#: one line a running build printed
LOG: Final = "log"
#: lines of a running build left out: printed faster than relayed live (`live`), or before
#: a request joined
LOG_SKIPPED: Final = "log-skipped"
#: a piece of a build's log file, whole lines (`ixc log`)
LOG_TEXT: Final = "log-text"
#: internal, never sent: how far the build's log file is written (`Flight.log_end`)
LOG_MARK: Final = "log-mark"

# --- the ops' own ---------------------------------------------------------------------------

#: a zlib-compressed piece of a plan as JSON text (`plan` with `text`)
PLAN_TEXT: Final = "plan-text"
#: a batch of a plan's nodes (`plan` with `stream`)
PLAN_NODES: Final = "plan-nodes"
#: `run` with `hold`: the realm is built, at `path`, and held until the client hangs up
READY: Final = "ready"
#: this many progress events were dropped: the client read too slowly (the server)
DROPPED: Final = "dropped"

#: every kind a client may receive, with the fields its data may hold
FIELDS: Final = {
    PLAN: frozenset({"total", "todo", "jobs", "nodes"}),
    JOINED: frozenset({"uid", "name"}),
    STARTED: frozenset({"uid", "name", "kind", "expected"}),
    FINISHED: frozenset({"uid", "name", "kind", "duration"}),
    HEARTBEAT: frozenset({"uid", "name", "kind", "elapsed", "expected"}),
    NOTICE: frozenset({"text"}),
    LOG: frozenset({"uid", "line"}),
    LOG_SKIPPED: frozenset({"uid", "count", "live"}),
    LOG_TEXT: frozenset({"uid", "text"}),
    PLAN_TEXT: frozenset({"zlib"}),
    PLAN_NODES: frozenset({"nodes"}),
    READY: frozenset({"path"}),
    DROPPED: frozenset({"count"}),
}
#: the fields of each node of a `plan` event
PLAN_NODE_FIELDS: Final = frozenset({"uid", "name", "kind", "expected"})
