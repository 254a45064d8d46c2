"""What `ixc` shows while a request waits: the daemon's progress events, as lines on stderr."""

from __future__ import annotations

from ixd.wire import events

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

    from ixd.wire.frames import Event


class Progress:
    """Shows what the daemon reports while a request waits: N of M built, the builds running
    now, and an ETA from the durations of earlier builds of the same packages."""

    def __init__(self, out: TextIO, verbose: bool) -> None:
        self.out = out
        self.verbose = verbose
        self.total = 0
        self.jobs = 1
        self.expected: dict[str, float] = {}
        self.running: dict[str, str] = {}
        #: the nodes of the current plan (a retry or another try plans anew), and those done
        self.todo: set[str] = set()
        self.finished: set[str] = set()

    @property
    def done(self) -> int:
        """Nodes of the current plan finished: never more than its total."""
        return len(self.finished)

    def __call__(self, event: Event) -> None:
        data = event.data
        if event.kind == events.PLAN:  # a new plan (a retry, another try): its own count
            nodes = data.get("nodes", [])
            self.todo = {n["uid"] for n in nodes}
            self.total = int(data.get("todo", len(nodes)))
            self.finished.clear()
            self.running.clear()
            self.jobs = max(1, int(data.get("jobs", 1)))
            self.expected = {n["uid"]: float(n["expected"]) for n in nodes
                             if n.get("expected") is not None}
            if self.total:
                self._say(f"{self.total} of {data.get('total')} nodes to build{self._eta()}")
        elif event.kind in (events.STARTED, events.JOINED):
            self.running[data["uid"]] = data["name"]
            verb = "building" if event.kind == events.STARTED else "waiting for (shared)"
            if event.kind == events.STARTED and data.get("kind") == "fetch":
                verb = "fetching"
            if event.kind == events.STARTED and data.get("kind") == "substitute":
                verb = "substituting"
            self._say(f"[{self.done}/{self.total}] {verb} {data['name']}{self._eta()}")
        elif event.kind == events.HEARTBEAT:
            self._say(f"[{self.done}/{self.total}] {_doing(data)} {data['name']}: "
                      f"{_elapsed(data)}")
        elif event.kind == events.FINISHED:
            self.running.pop(data["uid"], None)
            self.expected.pop(data["uid"], None)
            if data["uid"] in self.todo or not self.todo:
                self.finished.add(data["uid"])
            now = ", ".join(sorted(self.running.values()))
            verb = {"substitute": "substituted", "fetch": "fetched"}.get(str(data.get("kind")),
                                                                       "built")
            self._say(f"[{self.done}/{self.total}] {verb} {data['name']} "
                      f"in {float(data.get('duration', 0)):.1f}s"
                      + (f"; running: {now}" if now else "") + self._eta())
        elif event.kind == events.NOTICE:  # the daemon had to do other than planned: always said
            self._say(f"ixc: {data.get('text', '')}")
        elif event.kind == events.LOG and self.verbose:
            self._say(f"  | {data.get('line', '')}")
        elif event.kind == events.LOG_SKIPPED and self.verbose:
            where = "here (printed faster than ixd relays)" if data.get("live") else "earlier"
            self._say(f"  | ... {data.get('count')} lines left out {where}; see "
                      f"`ixc log {data.get('uid')}`")
        elif event.kind == events.DROPPED and self.verbose:
            self._say(f"ixc: {data.get('count')} progress events were dropped: this terminal "
                      "read too slowly")

    def _eta(self) -> str:
        if not self.expected:
            return ""
        return f" (ETA {sum(self.expected.values()) / self.jobs:.0f}s)"

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def _doing(data: dict[str, object]) -> str:
    return "substituting" if data.get("kind") == "substitute" else (
        "still building" if data.get("kind") == "build" else "still at")


def _elapsed(data: dict[str, object]) -> str:
    """`40s so far, about 1m45s left (it took 2m25s last time)`."""
    elapsed = float(data.get("elapsed") or 0)  # type: ignore[arg-type]
    text = f"{_duration(elapsed)} so far"
    expected = data.get("expected")
    if isinstance(expected, (int, float)) and expected > 0:
        left = expected - elapsed
        text += (f", about {_duration(left)} left" if left > 0 else ", longer than")
        text += f" (it took {_duration(expected)} last time)"
    return text


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
