"""What a user's service tree should become: the pure half of the session reconciler.

A realm provides services as folders `etc/services/<name>/` (a `run`, maybe `finish`,
`log/run`, ...). The session mirrors each into a writable folder `<svdir>/<name>/` that a
runsvdir supervises (runsv must write `supervise/`, and the store is read-only).

Everything here is plain data and pure functions, tested without a file system:

- `ServiceSpec`: the files a realm gives one service (content and executable bit).
- `Present`: a folder found in the service tree, and whether this session made it (its
  marker file names the same realm) and with which files.
- `plan(desired, present)`: the actions that make the tree match the realm: `Create`,
  `Update`, `Retire` and `LeaveAlone` (the realm wants a name that a folder the session did
  not create already has: that folder is never touched).
- `restart_for(old, spec)`: how runsv is told about an updated service.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: the file in every folder the session creates; folders without it are never touched
MARKER = ".ix-session"
#: a folder being filled before it is renamed into place (runsvdir skips dot-names)
NEW_PREFIX = ".ix-new."
#: a folder taken out of service, removed once its runsv is gone
RETIRED_PREFIX = ".ix-retired."
#: the link to the realm generation the services run from (their PATH goes through it)
REALM_LINK = ".ix-realm"
#: what runsv writes into a service folder: never copied, compared or removed
RUNSV_OWN = frozenset({"supervise", "log/supervise"})
#: the longest service name accepted (a file name, less room for the prefixes above)
NAME_MAX = 200


def service_name_problem(name: str) -> str | None:
    """Why `name` cannot be a service folder in the tree, or None if it can."""
    if not name or name in (".", ".."):
        return "an empty name"
    if name.startswith("."):
        return "runsvdir ignores names starting with a dot"
    if "/" in name or "\0" in name:
        return "a name with a slash or NUL"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a name with control characters"
    if len(name) > NAME_MAX:
        return f"a name longer than {NAME_MAX} characters"
    return None


def file_path_problem(path: str) -> str | None:
    """Why `path` (relative, `/`-separated) cannot be a file of a service, or None."""
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts):
        return "not a plain relative path"
    if parts[0] == MARKER:
        return "the session's own marker name"
    if any(path == own or path.startswith(own + "/") for own in RUNSV_OWN):
        return "a runsv state folder"
    return None


@dataclass(frozen=True)
class ServiceFile:
    path: str  # relative to the service folder, `/`-separated: "run", "log/run"
    data: bytes
    executable: bool

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(b"x" if self.executable else b"-")
        h.update(self.data)
        return h.hexdigest()


@dataclass(frozen=True)
class ServiceSpec:
    """The files a realm provides for service `name`, sorted by path."""

    name: str
    files: tuple[ServiceFile, ...]

    @classmethod
    def of(cls, name: str, files: Iterable[ServiceFile]) -> ServiceSpec:
        return cls(name, tuple(sorted(files, key=lambda f: f.path)))

    @property
    def file_digests(self) -> dict[str, str]:
        return {f.path: f.digest for f in self.files}

    @property
    def digest(self) -> str:
        """One checksum of every file: path, executable bit, content."""
        text = json.dumps(sorted(self.file_digests.items()))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def has_log(self) -> bool:
        return any(f.path == "log/run" for f in self.files)


@dataclass(frozen=True)
class Present:
    """A folder in the service tree. `mine`: it holds the session's marker for this realm;
    then `files` are the files the session wrote there (path → digest)."""

    name: str
    mine: bool
    files: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Create:
    spec: ServiceSpec


@dataclass(frozen=True)
class Update:
    spec: ServiceSpec
    old: Present


@dataclass(frozen=True)
class Retire:
    name: str


@dataclass(frozen=True)
class LeaveAlone:
    name: str
    reason: str


Action = Create | Update | Retire | LeaveAlone


def plan(desired: Mapping[str, ServiceSpec], present: Mapping[str, Present]) -> list[Action]:
    """The actions that make the tree hold exactly the desired services, in the order to
    apply them: retirements first (a service going away stops before new ones start), then
    updates, then creations. Folders the session did not create never get an action but
    `LeaveAlone`, and only when the realm wants their name."""
    actions: list[Action] = []
    for name in sorted(present):
        if present[name].mine and name not in desired:
            actions.append(Retire(name))
    creates: list[Action] = []
    for name in sorted(desired):
        spec = desired[name]
        found = present.get(name)
        if found is None:
            creates.append(Create(spec))
        elif not found.mine:
            actions.append(LeaveAlone(name, "the service folder exists and was not created "
                                            "by this session; it is left as it is"))
        elif dict(found.files) != spec.file_digests:
            actions.append(Update(spec, found))
    return actions + creates


@dataclass(frozen=True)
class Restart:
    """How runsv learns about changed files: `runsv` — tell runsv to exit so runsvdir starts
    a fresh one (needed when `log/` appears or goes: runsv looks for it only when it
    starts); else `main` / `log` — send TERM to the service / its logger, which runsv
    restarts with the new `run` if the service is wanted up."""

    runsv: bool = False
    main: bool = False
    log: bool = False

    @property
    def needed(self) -> bool:
        return self.runsv or self.main or self.log


def restart_for(old: Mapping[str, str], spec: ServiceSpec) -> Restart:
    new = spec.file_digests
    if ("log/run" in old) != ("log/run" in new):
        return Restart(runsv=True)
    changed = {p for p in set(old) | set(new) if old.get(p) != new.get(p)}
    in_log = {p for p in changed if p.startswith("log/")}
    return Restart(main=bool(changed - in_log), log=bool(in_log))


def service_of_folder(name: str) -> str:
    """The service a folder of the tree is for: its name, or for `.ix-new.NAME.TOKEN` and
    `.ix-retired.NAME.TOKEN` the NAME inside."""
    for prefix in (NEW_PREFIX, RETIRED_PREFIX):
        if name.startswith(prefix):
            return name[len(prefix):].rpartition(".")[0]
    return name


def marker_json(realm: str, spec: ServiceSpec) -> str:
    return json.dumps({"made_by": "ix session", "realm": realm, "service": spec.name,
                       "files": spec.file_digests}, indent=1, sort_keys=True) + "\n"


def parse_marker(text: str, realm: str, service: str) -> dict[str, str] | None:
    """The files a marker lists, if it is the marker `realm`'s session wrote for `service`;
    else None (a copy of our folder under another name is not ours)."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("realm") != realm or \
            data.get("service") != service:
        return None
    files = data.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return None
    return dict(files)
