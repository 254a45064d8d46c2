"""One error hierarchy for daemon, client and wire.

Every error a user can meet is an `IxError` subclass with a stable wire `code`. The daemon
sends `{code, message}`; the client rebuilds the same class from the code with
`error_from_wire`. Messages name the offending value and say what to do. This module imports
nothing but the standard library, because `ixc` imports it on its way to the socket.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # `ixc` imports this module: no typing at run time
    from typing import ClassVar


class IxError(Exception):
    """Root of every error ix reports to a user."""

    code: ClassVar[str] = "E_IX"
    #: process exit status `ixc` uses for this error
    exit_status: ClassVar[int] = 1
    #: True on an error rebuilt from the daemon's reply (`error_from_wire`), False on one
    #: raised here; a client retries only connection losses it met itself
    from_wire: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"


# --- the wire and requests ---------------------------------------------------------------


class ProtocolError(IxError):
    """Framing or message schema broken: by the peer (RemoteProtocolError) or by this side
    (LocalProtocolError). Both say E_PROTOCOL on the wire."""

    code = "E_PROTOCOL"


class RemoteProtocolError(ProtocolError):
    """The peer broke the framing or the message schema: close the connection."""


class LocalProtocolError(ProtocolError):
    """This side tried to send what the protocol does not allow (a message out of turn, a
    value the peer could not read back): a bug here, not the peer's."""


class FrameTooLarge(ProtocolError):
    code = "E_FRAME_TOO_LARGE"


class VersionMismatch(ProtocolError):
    code = "E_VERSION"


class BadRequest(IxError):
    """A well-formed frame whose request makes no sense."""

    code = "E_BAD_REQUEST"
    exit_status = 2


class UnknownOp(BadRequest):
    code = "E_UNKNOWN_OP"


class UsageError(BadRequest):
    """The command line of `ixc` is wrong."""

    code = "E_USAGE"


class TooManyConnections(IxError):
    code = "E_TOO_MANY_CONNECTIONS"
    exit_status = 3


class DaemonUnavailable(IxError):
    """`ixc` could not reach `ixd`."""

    code = "E_NO_DAEMON"
    exit_status = 3
    #: the socket refused or is missing: a restarting daemon (runit) may be back soon
    may_come_back: bool = False


class SocketPermission(DaemonUnavailable):
    """The socket is there but this account may not connect to it (its mode or a folder's):
    waiting would not help."""

    code = "E_SOCKET_PERMISSION"


class NotASocket(DaemonUnavailable):
    """The path given for ixd's socket is something else (a folder, a file)."""

    code = "E_NOT_A_SOCKET"


class ConnectionLost(IxError):
    code = "E_CONNECTION_LOST"
    exit_status = 3


class FrameLimit(ProtocolError):
    """A frame holding more values, or a longer list, map, string or binary, than the
    decoder's limits allow (see `ixd.wire.protocol.DecodeLimits`)."""

    code = "E_FRAME_LIMIT"


class TooSlow(IxError):
    """The client did not read what it asked for (a followed log) fast enough: the daemon
    stopped sending rather than leave a gap or hold an unbounded backlog."""

    code = "E_TOO_SLOW"
    exit_status = 3


# --- names, selectors, recipes -------------------------------------------------------------


class BadName(BadRequest):
    """A package name or selector that is refused before any file is opened."""

    code = "E_BAD_NAME"


class BadFlag(BadName):
    """A flag a client or recipe may not set: a value outside the safe characters or too
    long, a name ix sets itself, or an unknown platform for `target`/`host`."""

    code = "E_BAD_FLAG"


class BadRealmName(BadRequest):
    code = "E_BAD_REALM_NAME"


class RecipeNotFound(IxError):
    code = "E_NO_RECIPE"

    def __init__(self, message: str, package: str = "") -> None:
        super().__init__(message)
        #: the package no overlay holds, when known (what the daemon suggests names for)
        self.package = package


class RecipeError(IxError):
    """A template failed to load or render; the message names file and line."""

    code = "E_RECIPE"


class DependencyCycle(RecipeError):
    code = "E_CYCLE"


# --- fetching, building --------------------------------------------------------------------


class FetchError(IxError):
    code = "E_FETCH"


class ChecksumMismatch(FetchError):
    code = "E_CHECKSUM"


class BuildFailed(IxError):
    code = "E_BUILD_FAILED"


class BuildLimitExceeded(BuildFailed):
    """A build broke one of its limits (time, output size, memory) and was killed whole;
    the message names the limit and the option that sets it."""

    code = "E_BUILD_LIMIT"


class DependencyFailed(BuildFailed):
    """A node not started because something it needs failed."""

    code = "E_DEPENDENCY_FAILED"


class BuildCancelled(BuildFailed):
    code = "E_CANCELLED"


class WrongMachine(BuildFailed):
    """A build's output holds an ELF file (or a static library's member) for another machine
    than the platform its package is built for: nothing of it enters the store."""

    code = "E_WRONG_MACHINE"


class ExportError(IxError):
    """A realm's closure cannot be exported (`ixc export`): the file cannot be written, or a
    store entry went away meanwhile."""

    code = "E_EXPORT"


class NoSuchBuild(IxError):
    code = "E_NO_BUILD"


class ConfinementUnavailable(IxError):
    code = "E_NO_CONFINEMENT"


class BuildUserStuck(ConfinementUnavailable):
    """The processes of a build user could not be killed; that uid is not used again."""

    code = "E_BUILD_USER_STUCK"


class StaticPolicyViolation(IxError):
    code = "E_DYNAMIC_BINARY"


# --- realms --------------------------------------------------------------------------------


class RealmError(IxError):
    code = "E_REALM"


class NoSuchRealm(RealmError):
    code = "E_NO_REALM"


class NotInRealm(RealmError):
    """Removing a package or flag the realm does not have."""

    code = "E_NOT_IN_REALM"


class PermissionDenied(IxError):
    code = "E_PERMISSION"


class UnsafeServiceDir(IxError):
    """`ixc session --svdir DIR`: a folder another user could write into (or a symlink)."""

    code = "E_UNSAFE_SVDIR"


# --- the daemon ----------------------------------------------------------------------------


class DatabaseBusy(IxError):
    code = "E_DATABASE_BUSY"


class DatabaseTooNew(IxError):
    """The build database was written by a newer ixd (its schema is one this ixd does not
    know): it is left as it is."""

    code = "E_DATABASE_TOO_NEW"


class RootUnsafe(IxError):
    """The daemon's root, or a folder of it, is a link or belongs to someone else."""

    code = "E_ROOT_UNSAFE"


class GcAborted(IxError):
    """Garbage collection stopped before deleting anything (a root could not be read)."""

    code = "E_GC_ABORTED"


# --- the binary cache ---------------------------------------------------------------------


class CacheError(IxError):
    """Something about a binary cache (`ixd --cache`, `--push`, `ixc push`)."""

    code = "E_CACHE"


class CacheBadUrl(CacheError):
    code = "E_CACHE_BAD_URL"


class CacheKeyError(CacheError):
    """A signing or trusted key that cannot be read."""

    code = "E_CACHE_KEY"


class ClusterUnavailable(IxError):
    """The Dask cluster (`ixd --dask`) cannot be reached or lost a build; it is built
    locally unless `--dask-required`."""

    code = "E_CLUSTER_UNAVAILABLE"


class ClusterLost(ClusterUnavailable):
    """A remote attempt lost with its worker or scheduler (not the build's fault): recorded
    as `lost` and tried again, on the cluster or here."""

    code = "E_CLUSTER_LOST"


class ClusterRefused(IxError):
    """A cluster worker's machine would not build a node (it fails a check there, an input
    or source cannot be had there, its ixd is not set up for the cluster): logged on both
    sides, and the node is built locally instead."""

    code = "E_CLUSTER_REFUSED"


class CacheUnavailable(CacheError):
    """The cache's server is down, slow or refuses us; the build runs locally."""

    code = "E_CACHE_UNAVAILABLE"


class CacheNoBucket(CacheUnavailable):
    """The cache's bucket (or folder) does not exist: the administrator makes it once, with
    `ixd cache-init URL`."""

    code = "E_CACHE_NO_BUCKET"


class CacheRefused(CacheError):
    """A cache entry that does not check out: it never enters the store."""

    code = "E_CACHE_REFUSED"


class CacheFormatError(CacheRefused):
    code = "E_CACHE_FORMAT"


class CacheSignatureInvalid(CacheRefused):
    code = "E_CACHE_SIGNATURE"


class CacheHashMismatch(CacheRefused):
    code = "E_CACHE_HASH"


class CacheArchiveMissing(CacheRefused):
    code = "E_CACHE_ARCHIVE_MISSING"


class CacheUnsafeArchive(CacheRefused):
    code = "E_CACHE_UNSAFE_ARCHIVE"


# --- what users meet every day (issue 23) ---------------------------------------------------


class NoSpace(BuildFailed):
    """The file system under the store is full: the message names it, its free space, and
    what frees some (`ixc gc`, `ixd --min-free`)."""

    code = "E_NO_SPACE"


class EmptyRealm(RealmError):
    """A change that would create a realm holding nothing (`ixc mut hello`, no `+`)."""

    code = "E_EMPTY_REALM"


class UnreadFlag(BadFlag):
    """`--strict`: a flag no package of the closure reads (a typo, or a flag of another
    package)."""

    code = "E_UNREAD_FLAG"


class MissingExtra(IxError):
    """An option that needs an optional part of ix whose libraries are not installed
    (`pip install 'ix[cache]'`, `'ix[cluster]'`)."""

    code = "E_MISSING_EXTRA"


class SessionError(IxError):
    """`ixc session` cannot set up or keep its service folder."""

    code = "E_SESSION"


class DaemonFault(IxError):
    """The daemon could not do its own part of a request: a file or folder of its own (a
    build's log, the scratch it makes) it could not write. Neither the build's fault nor
    the client's: the administrator's to fix, named in the message and the daemon's log."""

    code = "E_DAEMON_FAULT"


class InternalError(IxError):
    """A bug in ix: the daemon logged the traceback and keeps serving."""

    code = "E_INTERNAL"


def _all_subclasses(cls: type[IxError]) -> list[type[IxError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


#: the classes that name a wire code of their own (Local/RemoteProtocolError share
#: E_PROTOCOL: which side broke the protocol is this process's business, not the wire's)
_CODED = [c for c in _all_subclasses(IxError) if c is IxError or "code" in c.__dict__]
ERRORS_BY_CODE: dict[str, type[IxError]] = {c.code: c for c in _CODED}
assert len(ERRORS_BY_CODE) == len(_CODED), "wire codes must be unique"


def error_from_wire(code: str, message: str) -> IxError:
    """The error class a wire code names; an unknown code still becomes an IxError."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        err = IxError(message)
        err.code = code  # type: ignore[misc]
    else:
        err = cls(message)
    err.from_wire = True
    return err
