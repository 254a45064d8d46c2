"""The file-system half of the session reconciler: read a realm's services, read and change
the service tree, talk to runsv through its control pipes.

Only folders holding the session's marker (`model.MARKER`, naming the same realm, owned by
this user) are ever changed or removed. A folder is created complete under a dot-name
(runsvdir ignores those) and renamed into place without replacing anything; a folder taken
out of service is renamed to a dot-name first, told to stop, and removed once its runsv has
gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import cast

from services.model import (
    MARKER,
    NEW_PREFIX,
    REALM_LINK,
    RETIRED_PREFIX,
    RUNSV_OWN,
    Present,
    Restart,
    ServiceFile,
    ServiceSpec,
    file_path_problem,
    marker_json,
    parse_marker,
    restart_for,
    service_name_problem,
    service_of_folder,
)

#: limits on what one service folder of a realm may hold
MAX_FILE_BYTES = 4 << 20
MAX_FILES = 256
MAX_DEPTH = 8


class RealmUnreadable(Exception):
    """The realm's services cannot be read now (no realm folder, a generation gone from
    the store mid-read, ...): the tree is left as it is and reading is tried again later."""


class RealmNotOurs(Exception):
    """The daemon says the realm belongs to another uid: none of its services may run as
    us (its owner could put anything there)."""


class ServiceUnreadable(Exception):
    """One service folder of the realm is unusable (too big, no `run`, ...)."""


# --- the realm side ----------------------------------------------------------------------

def read_realm_services(generation: str | None) -> tuple[str | None, dict[str, ServiceSpec],
                                                   list[str]]:
    """The services the realm generation `generation` provides (a store folder the daemon
    named as the current generation of a realm of ours; None: no such realm, no services),
    and a warning for each service folder that is not usable. A store folder never changes,
    so what is read is one generation's services, never a mix."""
    if generation is None:
        return None, {}, []
    if not os.path.isdir(generation):
        raise RealmUnreadable(f"the realm's generation {generation} is not a folder (gone "
                              f"from the store?)")
    services_dir = os.path.join(generation, "etc", "services")
    specs: dict[str, ServiceSpec] = {}
    warnings: list[str] = []
    try:
        names = sorted(os.listdir(services_dir))
    except (FileNotFoundError, NotADirectoryError):
        names = []
    except OSError as exc:
        raise RealmUnreadable(f"cannot list {services_dir}: {exc}") from exc
    for name in names:
        folder = os.path.join(services_dir, name)
        if not os.path.isdir(folder):
            continue
        problem = service_name_problem(name)
        if problem is not None:
            warnings.append(f"service {name!r} of the realm is skipped: {problem}")
            continue
        try:
            specs[name] = read_service(name, folder)
        except ServiceUnreadable as exc:
            warnings.append(f"service {name!r} of the realm is skipped: {exc}")
        except FileNotFoundError as exc:
            # the generation went away under us (a GC after a switch): read again later
            raise RealmUnreadable(f"{generation} changed while it was read: {exc}") from exc
    return generation, specs, warnings


def point_realm_link(svdir: Path, generation: str | None) -> None:
    """`svdir/.ix-realm`, the link the services' PATH goes through, pointed at
    `generation` (the one the daemon vouched for), or removed: never the realm's own link
    under the daemon's root, which follows whoever owns the name."""
    link = svdir / REALM_LINK
    if generation is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        return
    try:
        if os.readlink(link) == generation:
            return
    except OSError:
        pass
    tmp = svdir / f"{REALM_LINK}.{secrets.token_hex(4)}"
    os.symlink(generation, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_service(name: str, folder: str) -> ServiceSpec:
    """The files of one service folder of a realm (symlinks followed, as assembly makes
    every file a symlink into its package)."""
    files: list[ServiceFile] = []
    top_depth = folder.rstrip("/").count("/")
    for top, subdirs, names in os.walk(folder, followlinks=True):
        if top.count("/") - top_depth >= MAX_DEPTH:
            raise ServiceUnreadable(f"folders nest deeper than {MAX_DEPTH}")
        rel_top = os.path.relpath(top, folder)
        rel_top = "" if rel_top == "." else rel_top
        subdirs[:] = sorted(d for d in subdirs
                            if os.path.join(rel_top, d) not in RUNSV_OWN)
        for file_name in sorted(names):
            rel = os.path.join(rel_top, file_name)
            full = os.path.join(top, file_name)
            if file_path_problem(rel) is not None:
                continue
            st = os.stat(full)
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_size > MAX_FILE_BYTES:
                raise ServiceUnreadable(f"{rel} is larger than {MAX_FILE_BYTES} bytes")
            with open(full, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
            files.append(ServiceFile(rel, data, bool(st.st_mode & 0o111)))
            if len(files) > MAX_FILES:
                raise ServiceUnreadable(f"it holds more than {MAX_FILES} files")
    spec = ServiceSpec.of(name, files)
    run = next((f for f in spec.files if f.path == "run"), None)
    if run is None:
        raise ServiceUnreadable("it has no `run` file")
    if not run.executable:
        raise ServiceUnreadable("its `run` file is not executable")
    return spec


# --- the service tree side ---------------------------------------------------------------

def _marker_files(folder: Path, realm: str) -> dict[str, str] | None:
    """The files listed by the session's marker in `folder`, if `folder` is a real folder of
    this user holding a marker of `realm`; else None (the folder is not ours)."""
    uid = os.geteuid()
    try:
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            return None
        marker = folder / MARKER
        mst = os.lstat(marker)
        if not stat.S_ISREG(mst.st_mode) or mst.st_uid != uid or mst.st_size > 1 << 20:
            return None
        return parse_marker(marker.read_text(encoding="utf-8", errors="replace"), realm,
                            service_of_folder(folder.name))
    except OSError:
        return None


def _disk_digest(path: Path) -> str | None:
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return ServiceFile("", data, bool(st.st_mode & 0o111)).digest


def scan_tree(svdir: Path, realm: str) -> tuple[dict[str, Present], list[Path], list[Path]]:
    """What the service tree holds: every entry by name (ours or not), our half-made folders
    (`.ix-new.*`) and our retired ones (`.ix-retired.*`). For our folders, `files` are the
    digests of the files the marker lists, as they are on disk now (a file someone changed
    or deleted gets written again)."""
    present: dict[str, Present] = {}
    unfinished: list[Path] = []
    retired: list[Path] = []
    for entry in sorted(os.scandir(svdir), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.name.startswith((NEW_PREFIX, RETIRED_PREFIX)):
            if _marker_files(path, realm) is not None:
                (unfinished if entry.name.startswith(NEW_PREFIX) else retired).append(path)
            continue
        if entry.name.startswith("."):
            continue
        listed = _marker_files(path, realm)
        if listed is None:
            present[entry.name] = Present(entry.name, mine=False)
            continue
        files = {}
        for rel in listed:
            if file_path_problem(rel) is None:
                digest = _disk_digest(path / rel)
                if digest is not None:
                    files[rel] = digest
        present[entry.name] = Present(entry.name, mine=True, files=files)
    return present, unfinished, retired


def _write_file(folder: Path, file: ServiceFile) -> None:
    target = folder / file.path
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = target.with_name(f".ix-tmp.{target.name}.{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as f:
            f.write(file.data)
        os.chmod(tmp, 0o755 if file.executable else 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_marker(folder: Path, realm: str, spec: ServiceSpec) -> None:
    marker = ServiceFile(MARKER, marker_json(realm, spec).encode(), False)
    _write_file(folder, marker)


def create_service(svdir: Path, realm: str, spec: ServiceSpec) -> Path:
    """Make `<svdir>/<name>` complete under a dot-name, then rename it into place; a folder
    that appeared there meanwhile is not replaced (FileExistsError)."""
    target = svdir / spec.name
    tmp = svdir / f"{NEW_PREFIX}{spec.name}.{secrets.token_hex(4)}"
    tmp.mkdir(mode=0o755)
    try:
        os.chmod(tmp, 0o755)
        _write_marker(tmp, realm, spec)  # first: a crash leaves a folder we may remove
        for file in spec.files:
            _write_file(tmp, file)
        rename_noreplace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def update_service(svdir: Path, realm: str, spec: ServiceSpec, old: Present) -> Restart:
    """Bring our folder `<svdir>/<name>` to `spec` in place (runsv keeps its `supervise/`)
    and say how runsv must be told."""
    folder = svdir / spec.name
    for file in spec.files:
        if old.files.get(file.path) != file.digest:
            _write_file(folder, file)
    wanted = {f.path for f in spec.files}
    for rel in sorted(set(old.files) - wanted, reverse=True):
        if file_path_problem(rel) is not None:
            continue
        path = folder / rel
        try:
            if not path.is_dir() or path.is_symlink():
                path.unlink(missing_ok=True)
        except OSError:
            pass
        _remove_empty_parents(folder, path.parent)
    _write_marker(folder, realm, spec)  # last: it lists what the folder now holds
    return restart_for(old.files, spec)


def _remove_empty_parents(folder: Path, start: Path) -> None:
    path = start
    while path != folder and folder in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


def retire_service(svdir: Path, name: str) -> Path:
    """Take our folder out of service: rename it to a dot-name (runsvdir stops watching it)
    and tell its runsv to stop the service and exit. Returns the new path, to remove once
    `runsv_running` says its runsv is gone."""
    dest = svdir / f"{RETIRED_PREFIX}{name}.{secrets.token_hex(4)}"
    os.rename(svdir / name, dest)
    control(dest, "dx")
    return dest


# --- runsv ---------------------------------------------------------------------------------

def control(folder: Path, letters: str) -> bool:
    """Write `letters` to runsv's control pipe of `folder` (see runsv(8): `d` down, `x`
    exit, `t` TERM, `k` KILL). False if no runsv is listening there."""
    try:
        fd = os.open(folder / "supervise" / "control", os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT, errno.ENOTDIR, errno.EACCES):
            return False
        raise
    try:
        os.write(fd, letters.encode())
    except OSError as exc:
        if exc.errno in (errno.EPIPE, errno.EAGAIN):
            return False
        raise
    finally:
        os.close(fd)
    return True


def runsv_running(folder: Path) -> bool:
    """Whether a runsv supervises `folder` or its `log/` (one holds `supervise/ok` open for
    reading; opening it for writing without a reader fails with ENXIO — sv(8) checks the
    same way)."""
    for ok in (folder / "supervise" / "ok", folder / "log" / "supervise" / "ok"):
        try:
            fd = os.open(ok, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            continue
        os.close(fd)
        return True
    return False


def service_pid(folder: Path) -> int | None:
    """The pid runsv reports for the service in `folder`, if it runs."""
    try:
        text = (folder / "supervise" / "pid").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


# --- renaming without replacing -------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _renameat2() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast(Callable[..., int], fn)


def rename_noreplace(src: Path, dst: Path) -> None:
    """rename(2) that fails with FileExistsError rather than replace `dst` (a plain rename
    would replace an empty folder someone just made there)."""
    fn = _renameat2()
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
              _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), os.fspath(dst))
    if os.path.lexists(dst):  # no renameat2 here: check, then rename (a small window)
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst))
    os.rename(src, dst)
