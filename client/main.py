"""`ixc`: the user's command line. Light on purpose: stdlib, msgpack and the protocol only.

    ixc [--socket PATH] COMMAND ...
      mut [REALM] [+|-]PKG [--k=v] ...   change realms (default realm: your login)
      let [REALM] PKG [--k=v] ...        set a realm to exactly these packages
      build PKG...                       build packages, print their store dirs
      run PKG... -- CMD [ARGS]           run CMD in an ephemeral realm of PKG...
                                         (kept from gc until CMD exits)
      list [REALM]                       realms, or the packages of one realm
      purge REALM                        remove a realm
      dep PKG...                         the package names of the whole closure
      plan [--summary] PKG...            the build plan as JSON (--summary: counts, names)
      generations [REALM]                a realm's generations (* = current)
      rollback [REALM] [--to N]          switch back to the previous (or given) generation
      status [--limit N] [--offset N]    the builds queued and running, for all users
      builds [--limit N] [--offset N]    build history, newest first
      log PKG|UID [-f]                   a build's log; -f follows a running build
      gc                                 collect garbage (root or the admin group)
      session --svdir DIR [--realm NAME] keep DIR's runit services in step with a realm
      ping                               check that ixd answers, and who you are to it

    Options: --socket PATH, --json, -v (build logs), --no-retry (do not retry a request
    once a restarted daemon is back).
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from client.transport import Client
from ixd.errors import ConnectionLost, DaemonUnavailable, IxError, ProtocolError, UsageError
from ixd.protocol import Event

USAGE = __doc__ or ""
#: how long `ixc` waits for a restarted daemon before giving up on a retry
RETRY_DEADLINE = 120.0


def wait_for_daemon(path: str, deadline: float) -> Client:
    """Connect once the daemon answers again (it restarts under runit), or give up."""
    end = time.monotonic() + deadline
    while True:
        try:
            return Client.connect(path)
        except (DaemonUnavailable, ConnectionLost, ProtocolError):
            # refused, or accepted by a daemon still dying: wait for the new one
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def socket_path(option: str | None, environ: dict[str, str]) -> str:
    """`--socket`, then `$IX_SOCKET`, then the system daemon's socket."""
    return option or environ.get("IX_SOCKET") or "/ix/var/ixd.sock"


def login_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid{os.getuid()}"


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
            self._say(f"[{self.done}/{self.total}] {verb} {data['name']}{self._eta()}")
        elif event.kind == "finished":
            self.running.pop(data["uid"], None)
            self.expected.pop(data["uid"], None)
            self.done += 1
            now = ", ".join(sorted(self.running.values()))
            self._say(f"[{self.done}/{self.total}] built {data['name']} "
                      f"in {float(data.get('duration', 0)):.1f}s"
                      + (f"; running: {now}" if now else "") + self._eta())
        elif event.kind == "log" and self.verbose:
            self._say(f"  | {data.get('line', '')}")
        elif event.kind == "log-skipped" and self.verbose:
            self._say(f"  | ... {data.get('count')} earlier lines; see `ixc log {data.get('uid')}`")
        elif event.kind == "dropped" and self.verbose:
            self._say(f"ixc: {data.get('count')} progress events were dropped: this terminal "
                      "read too slowly")

    def _eta(self) -> str:
        if not self.expected:
            return ""
        return f" (ETA {sum(self.expected.values()) / self.jobs:.0f}s)"

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


class _CommandExited(Exception):
    """`ixc run`'s command ran while the daemon held its realm; `status` is its exit status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _run_command(argv: list[str]) -> int:
    """Run `argv` as a child with our stdio; its exit status, 128+N if signal N killed it.
    While it runs, the terminal's ^C and ^\\ are the child's to act on: ixc waits on (a
    handler, unlike SIG_IGN, is not inherited: the child gets the default action)."""
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        status = subprocess.Popen(argv).wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - status if status < 0 else status


def _ignore(signum: int, frame: object) -> None:
    """Signals the command acts on; ixc waits for it to exit."""


def _split_options(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Global options before the command: --socket PATH, --json, -v."""
    options: dict[str, Any] = {"socket": None, "json": False, "verbose": False,
                               "no_retry": False}
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        word = rest.pop(0)
        if word == "--socket" and rest:
            options["socket"] = rest.pop(0)
        elif word.startswith("--socket="):
            options["socket"] = word.split("=", 1)[1]
        elif word == "--json":
            options["json"] = True
        elif word == "--no-retry":
            options["no_retry"] = True
        elif word in ("-v", "--verbose"):
            options["verbose"] = True
        elif word in ("-h", "--help"):
            rest = ["help"]
            break
        else:
            raise UsageError(f"unknown option {word!r}; see `ixc help`")
    return options, rest


def _take_flag(words: list[str], flag: str) -> bool:
    if flag in words:
        words.remove(flag)
        return True
    return False


def _packages(words: list[str], command: str) -> list[str]:
    if not words:
        raise UsageError(f"`ixc {command}` needs at least one package, e.g. bin/greet")
    for word in words:
        if word.startswith("-"):
            raise UsageError(f"`ixc {command}`: unexpected option {word!r}")
    return words


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None, execute: Callable[[list[str]], None] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), out, err, execute)
    except IxError as exc:
        print(f"ixc: error: {exc.message} [{exc.code}]", file=err)
        return exc.exit_status
    except KeyboardInterrupt:
        print("ixc: interrupted", file=err)
        return 130
    except BrokenPipeError:
        # the reader went away (`ixc plan ... | head`); keep Python quiet at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: list[str], out: TextIO, err: TextIO,
          execute: Callable[[list[str]], None] | None) -> int:
    options, rest = _split_options(argv)
    if not rest or rest[0] == "help":
        print(USAGE.strip(), file=out)
        return 0 if rest else 2
    command, words = rest[0], rest[1:]
    as_json = options["json"] or _take_flag(words, "--json")
    verbose = options["verbose"] or _take_flag(words, "-v")
    progress = Progress(err, verbose)

    def call(op: str, args: dict[str, Any], idempotent: bool = True,
             on_event: Callable[[Event], None] = progress) -> Any:
        path = socket_path(options["socket"], dict(os.environ))
        try:
            with Client.connect(path) as client:
                return client.request(op, args, on_event)
        except DaemonUnavailable as exc:
            # a socket that is there but refuses: ixd is restarting (runit brings it back)
            if options["no_retry"] or exc.from_wire or not os.path.exists(path):
                raise
            print(f"ixc: {exc.message.split(';')[0]}; waiting for ixd to come back "
                  f"(--no-retry fails at once)", file=err, flush=True)
        except ConnectionLost as exc:
            # only a connection lost before the reply is retried: an error the daemon sent
            # (E_FRAME_TOO_LARGE, E_PROTOCOL, ...) would come back the same the second time
            if options["no_retry"] or not idempotent or exc.from_wire:
                raise
            print(f"ixc: {exc.message}; retrying once ixd is back", file=err, flush=True)
        with wait_for_daemon(path, RETRY_DEADLINE) as client:
            return client.request(op, args, on_event)

    def show(value: Any, human: Callable[[Any], None]) -> int:
        if as_json:
            print(json.dumps(value, indent=1, sort_keys=True), file=out)
        else:
            human(value)
        return 0

    if command in ("mut", "let"):
        # only these commands need the lexer and the realm model: keep the others light
        from client.lexer import lex_mutation
        from ixd.realm_model import AddPackage, SetPackageFlag, SetRealmFlag, patch_to_wire

        patches = lex_mutation(words, login_name())
        if not patches:
            raise UsageError(f"`ixc {command}` needs a realm or a package, e.g. "
                             f"`ixc {command} +bin/greet`")
        # adding and setting twice is adding and setting once; removing twice is an error
        idempotent = all(isinstance(op, (AddPackage, SetPackageFlag, SetRealmFlag))
                         for p in patches for op in p.ops)
        value = call(command, {"patches": [patch_to_wire(p) for p in patches]}, idempotent)
        return show(value, lambda v: _print_realms(v, out))
    if command == "build":
        value = call("build", {"packages": _packages(words, command)})
        return show(value, lambda v: _print_built(v, out))
    if command == "run":
        if "--" not in words:
            raise UsageError("usage: ixc run PKG... -- CMD [ARGS...]")
        cut = words.index("--")
        packages, cmd = _packages(words[:cut], command), words[cut + 1:]
        if not cmd:
            raise UsageError("`ixc run`: no command after --")

        def command_argv(path: str) -> list[str]:
            return ["/bin/sh", "-c", '. "$0/env" && exec "$@"', path, *cmd]

        def run_held(event: Event) -> None:
            # the daemon built the realm and keeps it from gc while this connection is open:
            # run the command now, then hang up (the request never answers)
            if event.kind != "ready":
                progress(event)
                return
            argv = command_argv(str(event.data["path"]))
            out.flush()
            err.flush()
            if execute is not None:
                execute(argv)
                raise _CommandExited(0)
            raise _CommandExited(_run_command(argv))

        try:
            # a retry after the command ran would run it twice: not idempotent
            value = call("run", {"packages": packages, "hold": True}, False, run_held)
        except _CommandExited as exited:
            return exited.status
        # an older daemon answers at once and does not hold the realm: exec as before
        argv = command_argv(value["path"])
        if execute is not None:
            execute(argv)
            return 0
        out.flush()
        os.execv(argv[0], argv)
    if command == "list":
        if len(words) > 1:
            raise UsageError("usage: ixc list [REALM]")
        value = call("list", {"realm": words[0]} if words else {})
        return show(value, lambda v: _print_list(v, out))
    if command == "purge":
        if len(words) != 1:
            raise UsageError("usage: ixc purge REALM")
        value = call("purge", {"realm": words[0]}, idempotent=False)
        return show(value, lambda v: print(f"purged realm {v['realm']}", file=out))
    if command == "dep":
        value = call("dep", {"packages": _packages(words, command)})
        return show(value, lambda v: _print_unique_names(v, out))
    if command == "generations":
        realm = _at_most_one(words, "usage: ixc generations [REALM]")
        value = call("generations", {"realm": realm} if realm else {})
        return show(value, lambda v: _print_generations(v, out))
    if command == "rollback":
        usage = "usage: ixc rollback [REALM] [--to N]"
        to = _take_number(words, "--to", usage)
        realm = _at_most_one(words, usage)
        args: dict[str, Any] = {"realm": realm} if realm else {}
        if to is not None:
            args["to"] = to
        value = call("rollback", args, idempotent="to" in args)
        return show(value, lambda v: print(
            f"realm {v['realm']}: generation {v['previous']} -> {v['generation']}", file=out))
    if command in ("status", "builds"):
        usage = f"usage: ixc {command} [--limit N] [--offset N]"
        page = {name: number for name in ("limit", "offset")
                if (number := _take_number(words, f"--{name}", usage)) is not None}
        if words:
            raise UsageError(usage)
        if command == "builds":
            page.setdefault("limit", 50)
        value = call(command, page)
        if command == "status":
            return show(value, lambda v: _print_status(v, out))
        if value.get("cut") and not as_json:
            print(f"ixc: the reply was cut at {len(value['builds'])} builds to stay small; "
                  f"the next ones: ixc builds --offset {value['next_offset']}", file=err)
        return show(value, lambda v: _print_builds(v, out))
    if command == "log":
        follow = _take_flag(words, "-f") or _take_flag(words, "--follow")
        if len(words) != 1:
            raise UsageError("usage: ixc log PKG|UID [-f]")

        texts: list[str] = []  # --json: the log goes in the JSON document, whole

        def print_text(event: Event) -> None:
            # the log comes in pieces of whole lines ("log-text"); an older daemon follows
            # a build line by line ("log")
            if event.kind == "log-text":
                text = event.data["text"]
            elif event.kind == "log":
                text = event.data["line"] + "\n"
            else:
                return
            if as_json:
                texts.append(text)
            else:
                out.write(text)
                out.flush()

        # a followed log printed again after a retry would repeat lines: no retry then
        value = call("log", {"target": words[0], "follow": follow}, not follow, print_text)
        if as_json:
            value["log"] = "".join(texts) + value["log"]
            print(json.dumps(value, indent=1, sort_keys=True), file=out)
        elif value["log"]:
            out.write(value["log"])  # an older daemon sends a finished log whole
        return 1 if value.get("error") else 0
    if command == "gc":
        if words:
            raise UsageError("usage: ixc gc")
        value = call("gc", {})
        return show(value, lambda v: print(
            f"gc: {v['entries']} entries deleted, {v['bytes']} bytes freed, "
            f"{v['kept']} kept", file=out))
    if command == "ping":
        value = call("ping", {})
        return show(value, lambda v: print(f"ixd {v['version']} answers {v['login']} "
                                           f"(uid {v['uid']})", file=out))
    if command == "plan":
        summary = "--summary" in words
        request = {"packages": _packages([w for w in words if w != "--summary"], command)}
        if summary:
            value = call("plan", {**request, "summary": True})
        else:  # nodes come in events: a big plan outgrows one frame
            nodes: list[Any] = []

            def collect(event: Event) -> None:
                if event.kind == "plan-nodes":
                    nodes.extend(event.data["nodes"])
                else:
                    progress(event)

            reply = call("plan", {**request, "stream": True}, on_event=collect)
            value = {"nodes": nodes, "targets": reply["targets"]}
        print(json.dumps(value, indent=1, sort_keys=True), file=out)
        return 0
    if command == "session":
        # imported here: the session's code and pyinotify only for this command
        from services.session import main as session_main

        return session_main(words, socket=socket_path(options["socket"], dict(os.environ)))
    raise UsageError(f"unknown command {command!r}; see `ixc help`")


def _take_number(words: list[str], option: str, usage: str) -> int | None:
    """Remove `OPTION N` from words and return N (None when the option is absent)."""
    if option not in words:
        return None
    at = words.index(option)
    try:
        number = int(words[at + 1])
    except (IndexError, ValueError):
        raise UsageError(f"{option} needs a number; {usage}") from None
    del words[at:at + 2]
    return number


def _at_most_one(words: list[str], usage: str) -> str | None:
    if len(words) > 1 or any(w.startswith("-") for w in words):
        raise UsageError(usage)
    return words[0] if words else None


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _print_generations(value: dict[str, Any], out: TextIO) -> None:
    for g in value["generations"]:
        mark = "*" if g["number"] == value["current"] else " "
        packages = ", ".join(e["selector"] for e in g["state"]["entries"]) or "(empty)"
        print(f"{mark}{g['number']:>4}  {_when(g['created'])}  {g['by']:<12} {packages}",
              file=out)


def _print_status(value: dict[str, Any], out: TextIO) -> None:
    builds = value["builds"]
    total = value.get("total", len(builds))
    if not total:
        print(f"idle ({value['jobs']} build slots)", file=out)
    for b in builds:
        expected = f", expected {b['expected']:.0f}s" if b["expected"] else ""
        others = b.get("waiting_count", len(b["waiting"])) - len(b["waiting"])
        waiting = ", ".join(b["waiting"]) + (f" and {others} more" if others > 0 else "")
        print(f"{b['state']:<8} {b['name']}  for {b['elapsed']:.0f}s{expected}; "
              f"waiting: {waiting}", file=out)
    after = value.get("offset", 0) + len(builds)
    if after < total:
        print(f"... {total - after} more of {total} ({value.get('running', 0)} running); "
              f"the next: ixc status --offset {after}", file=out)


def _print_builds(value: dict[str, Any], out: TextIO) -> None:
    for b in value["builds"]:
        duration = f"{b['duration']:.1f}s" if b["duration"] is not None else "-"
        print(f"{_when(b['started'])}  {b['state']:<11} {duration:>8}  {b['name']}  "
              f"{b['uid']}  by {b['requested_by']}", file=out)


def _print_realms(value: dict[str, Any], out: TextIO) -> None:
    for realm in value["realms"]:
        what = f"generation {realm['generation']}" if realm["changed"] else "unchanged"
        print(f"realm {realm['realm']}: {what} -> {realm['path']}", file=out)


def _print_built(value: dict[str, Any], out: TextIO) -> None:
    for package in value["packages"]:
        print(package["out"] or package["selector"], file=out)


def _print_list(value: dict[str, Any], out: TextIO) -> None:
    if "realms" in value:
        for realm in value["realms"]:
            print(realm["name"], file=out)
        return
    state = value["state"]
    for key, flag in sorted(state["flags"].items()):
        print(f"--{key}={flag}", file=out)
    for entry in state["entries"]:
        flags = "".join(f" --{k}={v}" for k, v in sorted(entry["flags"].items()))
        print(f"{entry['selector']}{flags}", file=out)


def _print_unique_names(value: dict[str, Any], out: TextIO) -> None:
    seen: set[str] = set()
    for package in value["packages"]:
        if package["name"] not in seen:
            seen.add(package["name"])
            print(package["name"], file=out)


if __name__ == "__main__":
    sys.exit(main())
