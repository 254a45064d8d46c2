"""What `ixc` shows while a request waits: the daemon's progress events, as lines on stderr."""

from __future__ import annotations

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
        self.done = 0
        self.jobs = 1
        self.expected: dict[str, float] = {}
        self.running: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        data = event.data
        if event.kind == "plan":
            self.total = int(data.get("todo", 0))
            self.jobs = max(1, int(data.get("jobs", 1)))
            self.expected = {n["uid"]: float(n["expected"]) for n in data.get("nodes", [])
                             if n.get("expected") is not None}
            if self.total:
                self._say(f"{self.total} of {data.get('total')} nodes to build{self._eta()}")
        elif event.kind in ("started", "joined"):
            self.running[data["uid"]] = data["name"]
            verb = "building" if event.kind == "started" else "waiting for (shared)"
            if event.kind == "started" and data.get("kind") == "substitute":
                verb = "substituting"
            self._say(f"[{self.done}/{self.total}] {verb} {data['name']}{self._eta()}")
        elif event.kind == "finished":
            self.running.pop(data["uid"], None)
            self.expected.pop(data["uid"], None)
            self.done += 1
            now = ", ".join(sorted(self.running.values()))
            verb = "substituted" if data.get("kind") == "substitute" else "built"
            self._say(f"[{self.done}/{self.total}] {verb} {data['name']} "
                      f"in {float(data.get('duration', 0)):.1f}s"
                      + (f"; running: {now}" if now else "") + self._eta())
        elif event.kind == "notice":  # the daemon had to do other than planned: always said
            self._say(f"ixc: {data.get('text', '')}")
        elif event.kind == "log" and self.verbose:
            self._say(f"  | {data.get('line', '')}")
        elif event.kind == "log-skipped" and self.verbose:
            where = "here (printed faster than ixd relays)" if data.get("live") else "earlier"
            self._say(f"  | ... {data.get('count')} lines left out {where}; see "
                      f"`ixc log {data.get('uid')}`")
        elif event.kind == "dropped" and self.verbose:
            self._say(f"ixc: {data.get('count')} progress events were dropped: this terminal "
                      "read too slowly")

    def _eta(self) -> str:
        if not self.expected:
            return ""
        return f" (ETA {sum(self.expected.values()) / self.jobs:.0f}s)"

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)
