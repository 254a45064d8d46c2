"""`ixc`'s side of the ixd socket: a blocking client, one request at a time.

A thin wrapper around `ixd.wire.frames.Connection` over an AF_UNIX socket. It imports only `_socket`
(the C core of `socket`: the full module costs milliseconds of imports `ixc` never uses), `os`,
msgpack (through the wire core) and `ixd.wire.errors`, never trio or typing, so that a no-op `ixc`
command answers in tens of milliseconds.
"""

from __future__ import annotations

import os
from _socket import AF_UNIX, SOCK_STREAM
from _socket import socket as Socket

from ixd import __version__
from ixd.wire.errors import (
    ConnectionLost,
    DaemonUnavailable,
    NotASocket,
    ProtocolError,
    SocketPermission,
    error_from_wire,
)
from ixd.wire.frames import (
    CLOSED,
    NEED_DATA,
    PROTOCOL_VERSION,
    Connection,
    Error,
    Event,
    Hello,
    Message,
    Request,
    Result,
    Sentinel,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any

AGENT = f"ixc {__version__}"
#: where a daemon's socket is under its root (`ixd.model.layout.Layout.socket`)
SOCKET_IN_ROOT = "var/ixd.sock"
#: the system daemon's root, and its socket: where `ixc` and `ixc session` look without
#: --socket/$IX_SOCKET
SYSTEM_ROOT = "/ix"
DEFAULT_SOCKET = f"{SYSTEM_ROOT}/{SOCKET_IN_ROOT}"
_RECV_SIZE = 64 * 1024


class Client:
    """A handshaken connection to ixd. Build it with `Client.connect(path)`."""

    def __init__(self, sock: Socket, path: str) -> None:
        self._sock: Socket | None = sock
        self._conn = Connection("client")
        self._last_id = 0
        self.path = path

    @classmethod
    def connect(cls, path: str | os.PathLike[str], *, agent: str = AGENT) -> Client:
        """Connect to the daemon's socket at `path` and exchange hellos."""
        path = os.fspath(path)
        sock = Socket(AF_UNIX, SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise _unavailable(path, exc) from exc
        client = cls(sock, path)
        try:
            client._handshake(agent)
        except BaseException:
            client.close()
            raise
        return client

    def request(
        self,
        op: str,
        args: dict[str, Any],
        on_event: Callable[[Event], None] | None = None,
    ) -> Any:
        """Run `op` in the daemon and return its result, calling `on_event` for each event
        the daemon sends first. A failure comes back as the `IxError` subclass it names."""
        self._last_id += 1
        request_id = self._last_id
        self._send(Request(id=request_id, op=op, args=args))
        while True:
            msg = self._receive()
            if isinstance(msg, Sentinel):  # CLOSED: _receive never returns NEED_DATA
                raise ConnectionLost(
                    f"ixd closed the connection before answering {op!r} (request {request_id})"
                )
            if isinstance(msg, Event) and msg.id == request_id:
                if on_event is not None:
                    on_event(msg)
            elif isinstance(msg, Result) and msg.id == request_id:
                return msg.value
            elif isinstance(msg, Error) and msg.id in (request_id, None):
                raise error_from_wire(msg.code, msg.message)
            elif not _answers_earlier(msg, request_id):
                raise ProtocolError(
                    f"ixd sent an unexpected {msg.TYPE} message while request {request_id}"
                    " was waiting for its answer"
                )

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _handshake(self, agent: str) -> None:
        self._send(Hello(version=PROTOCOL_VERSION, agent=agent))
        # The connection refuses anything but a hello of our version as the first message.
        if self._receive() is CLOSED:
            raise ConnectionLost(f"ixd at {self.path} closed the connection during the handshake")

    def _send(self, msg: Message) -> None:
        data = self._conn.send(msg)
        try:
            self._socket().sendall(data)
        except OSError as exc:
            raise ConnectionLost(f"lost the connection to ixd at {self.path}: {exc}") from exc

    def _receive(self) -> Message | Sentinel:
        while (msg := self._conn.next_event()) is NEED_DATA:
            try:
                data = self._socket().recv(_RECV_SIZE)
            except OSError as exc:
                raise ConnectionLost(f"lost the connection to ixd at {self.path}: {exc}") from exc
            self._conn.receive_data(data)
        return msg

    def _socket(self) -> Socket:
        if self._sock is None:
            raise ConnectionLost(f"the connection to ixd at {self.path} is closed")
        return self._sock


def _answers_earlier(msg: Message, request_id: int) -> bool:
    """Whether `msg` is a late reply to an earlier request the caller abandoned (say, because
    its `on_event` raised); such replies are skipped."""
    return isinstance(msg, Event | Result | Error) and msg.id is not None and msg.id < request_id


def _unavailable(path: str, exc: OSError) -> DaemonUnavailable:
    """Why `path` could not be connected to, told apart: a permission or a path that is no
    socket is said at once (waiting would not help); a refusal or a missing socket is what a
    restarting daemon shows (`may_come_back`)."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if isinstance(exc, PermissionError):
        return SocketPermission(
            f"permission denied connecting to ixd's socket {path} ({_describe(st)}): ixd "
            f"makes it mode 0666 and tells users apart by their uid; ask the administrator "
            f"to fix its mode or the folders above it, or give --socket PATH")
    if st is not None and not _is_socket(st.st_mode):
        return NotASocket(f"{path} is {_kind(st.st_mode)}, not ixd's socket; give the "
                          f"socket's path with --socket PATH or $IX_SOCKET (usually "
                          f"ROOT/var/ixd.sock)")
    error = DaemonUnavailable(f"cannot reach ixd at {path}: {exc.strerror or exc}; "
                              f"{start_hint(path)}")
    error.may_come_back = isinstance(exc, FileNotFoundError | ConnectionRefusedError)
    return error


def start_hint(path: str) -> str:
    """What starts the daemon of the socket at `path`: the service command ixd wrote beside
    it when runit ran it (`<socket>.hint`), else `ixd --root ROOT`."""
    try:
        with open(path + HINT_SUFFIX, "rb") as hint_file:
            hint = hint_file.read(200).decode(errors="replace").strip()
    except OSError:
        hint = ""
    if hint:
        return f"ixd runs as a service here: the administrator starts it with `{hint}`"
    return f"is ixd running? start it with `ixd --root {_root_of(path)}`"


#: beside the socket, the command that starts the daemon when a supervisor runs it
HINT_SUFFIX = ".hint"


def _is_socket(mode: int) -> bool:
    return mode & 0o170000 == 0o140000


def _kind(mode: int) -> str:
    kinds = {0o040000: "a folder", 0o100000: "a regular file", 0o120000: "a link",
             0o010000: "a FIFO", 0o020000: "a character device", 0o060000: "a block device"}
    return kinds.get(mode & 0o170000, "not a socket")


def _describe(st: os.stat_result | None) -> str:
    """A socket's mode, owner and group, as `ls -l` would name them."""
    if st is None:
        return "a folder above it may not be searchable by you"
    import grp
    import pwd  # here: only this error needs them

    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"mode {st.st_mode & 0o7777:04o}, owner {owner}, group {group}"


def _root_of(socket_path: str) -> str:
    """The daemon root a socket path belongs to (`<root>/var/ixd.sock`), or a placeholder."""
    folder, name = os.path.split(socket_path)
    root, var = os.path.split(folder)
    if (var, name) == tuple(SOCKET_IN_ROOT.split("/")):
        return root or "."
    return "ROOT"
