"""A build's log: a file never larger than its bound, written off the event loop, and its
lines relayed live within a budget.

A build prints whatever it likes, as fast as it likes (`yes` prints gigabytes a minute).
Three things keep that from costing anyone else:

- `BoundedLog`: the log file holds at most `limit` bytes (`ixd --max-log-size`). Output up
  to the bound is kept whole; past it, the log keeps its head (the first half) and a rolling
  tail (the latest bytes), with a marker between them saying how much was left out. The
  tail is a ring inside the file while the build runs, so the file never grows past the
  bound; `finish` puts it in order (a kernel copy into a new file, renamed over the old).
- `LogPump`: a thread of its own per build reads the build's output pipe and writes the
  file, so neither the writes nor the reading of a flood run on the event loop that every
  client's request needs.
- `LiveBudget`: the lines handed to the event loop (progress of the waiting clients, log
  followers, the replay of a joined build) are bounded per second; lines past the budget
  go to the file but not live, and the loop is told how many it did not get. Past the
  budget the pump does no work per line at all (it counts newlines in C), so a flood holds
  the interpreter lock for a few microseconds per 64 KiB.

`failure_message` quotes a failed build's last lines; it and `add_notes` may read or write
the file, so the event loop calls them in a worker thread.

Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: bytes of a build's log by default (`ixd --max-log-size`)
DEFAULT_MAX_LOG = 32 << 20
#: bytes between the head and the tail of an over-long log, for the marker
MARKER_BYTES = 256
#: the smallest bound: room for a head, the marker and a tail
MIN_MAX_LOG = 4 * MARKER_BYTES
#: a "line" longer than this is handed on in pieces
MAX_LINE = 64 * 1024
#: bytes of output relayed live per second and at once (the rest only goes to the file)
LIVE_RATE = 256 * 1024
LIVE_BURST = 1 << 20
#: the last bytes of output kept in memory too: an error message quotes them even when the
#: file could not be written (a full disk)
RECENT_BYTES = 64 * 1024
#: log lines a failure message quotes
TAIL_LINES = 20
#: the pump reads this much at once, and looks at its stop flag this often (seconds)
READ_SIZE = 64 * 1024
POLL_SECONDS = 0.1


def head_bytes(limit: int) -> int:
    """The bytes of a log of bound `limit` that are never moved or overwritten: its head."""
    return (limit - MARKER_BYTES) // 2


class BoundedLog:
    """A log file of at most `limit` bytes: head, marker, rolling tail. Not thread-safe: one
    writer at a time (the pump's thread, then the builder's own notes)."""

    def __init__(self, path: Path, limit: int = DEFAULT_MAX_LOG, *,
                 append: bool = False) -> None:
        if limit < MIN_MAX_LOG:
            raise ValueError(f"a log bound of {limit} bytes leaves no room for its head and "
                             f"tail; at least {MIN_MAX_LOG}")
        self.path = path
        self.limit = limit
        self.head = head_bytes(limit)
        #: where the tail's ring starts, and its size
        self.ring_start = self.head + MARKER_BYTES
        self.ring_size = limit - self.ring_start
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (0 if append else os.O_TRUNC)
        self._fd: int | None = os.open(path, flags, 0o644)
        #: bytes of output so far (what was already in the file, when appending)
        self.written = min(os.fstat(self._fd).st_size, limit) if append else 0
        if append:
            os.ftruncate(self._fd, self.written)
        #: the ring's oldest byte (the next to be overwritten), once the log is over its bound
        self._ring_at = 0
        #: whether the output so far ends a line (or there is none)
        self._line_ended = not self.written or os.pread(self._fd, 1, self.written - 1) == b"\n"
        #: the output's last RECENT_BYTES (this writer's, not what the file held before)
        self._recent = bytearray()

    @property
    def dropped(self) -> int:
        """Bytes of output left out between the head and the tail."""
        return max(0, self.written - self.head - self.ring_size)

    def remember(self, data: bytes) -> None:
        """Keep `data` among the recent output `tail` gives, without writing it (the file
        could not be written)."""
        self._recent += data[-RECENT_BYTES:]
        del self._recent[:-RECENT_BYTES]

    def write(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None, "the log is finished"
        if not data:
            return
        self.remember(data)
        self._line_ended = data.endswith(b"\n")
        room = self.limit - self.written
        if room > 0:  # still within the bound: the file is the output as it came
            os.pwrite(fd, data[:room], self.written)
            self.written += min(room, len(data))
            data = data[room:]
            if not data:
                return
        self._ring_write(data[-self.ring_size:])
        self.written += len(data)
        os.pwrite(fd, self._marker(), self.head)

    def end_line(self) -> None:
        """Start a new line unless the output so far ended with one."""
        if not self._line_ended:
            self.write(b"\n")

    def _ring_write(self, data: bytes) -> None:
        assert self._fd is not None
        while data:
            piece = data[:self.ring_size - self._ring_at]
            os.pwrite(self._fd, piece, self.ring_start + self._ring_at)
            self._ring_at = (self._ring_at + len(piece)) % self.ring_size
            data = data[len(piece):]

    def _marker(self) -> bytes:
        text = (f"\n[ix: {self.dropped} bytes of output left out here: the log keeps the "
                f"first {self.head} and the last {self.ring_size} bytes of a build "
                f"(ixd --max-log-size {self.limit})]")
        return text.encode().ljust(MARKER_BYTES - 1)[:MARKER_BYTES - 1] + b"\n"

    def tail(self, size: int = RECENT_BYTES) -> bytes:
        """The last `size` bytes of output, in order: from memory, up to RECENT_BYTES of what
        this writer was given (written or not), else from the file (blocking)."""
        if self._recent or size <= 0:
            return bytes(self._recent[-size:]) if size > 0 else b""
        with open(self.path, "rb") as file:
            if not self.dropped:
                file.seek(max(0, self.written - size))
                return file.read(size)
            file.seek(self.ring_start)
            ring = file.read(self.ring_size)
        return (ring[self._ring_at:] + ring[:self._ring_at])[-size:]

    def finish(self) -> None:
        """Close the file, its tail put in order first (blocking; idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self.dropped and self._ring_at:
                self._unroll(fd)
        finally:
            os.close(fd)

    def _unroll(self, fd: int) -> None:
        """The file anew, its ring from the oldest byte on, renamed over it: the kernel
        copies, the daemon holds none of it."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.unroll")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            start, at = self.ring_start, self._ring_at
            for offset, count in ((0, start), (start + at, self.ring_size - at),
                                  (start, at)):
                _copy(fd, out, offset, count)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        finally:
            os.close(out)


def _copy(source: int, target: int, offset: int, count: int) -> None:
    """`count` bytes of `source` from `offset` appended to `target`, in the kernel."""
    while count > 0:
        try:
            done = os.copy_file_range(source, target, count, offset)
        except OSError:  # a file system without it: through a small buffer
            data = os.pread(source, min(count, 1 << 20), offset)
            done = os.write(target, data) if data else 0
        if done <= 0:
            raise OSError(f"could not copy the log's {count} bytes at {offset}")
        offset += done
        count -= done


def tail_lines(log: BoundedLog, lines: int = TAIL_LINES) -> list[str]:
    """The log's last `lines` lines, decoded ([] if it cannot be read; blocking)."""
    try:
        data = log.tail()
    except OSError:
        return []
    return [decode(line) for line in data.splitlines()[-lines:]]


def quoted_tail(log: BoundedLog) -> str:
    """The log's last lines as an error message quotes them ("" for an empty log)."""
    tail = tail_lines(log)
    if not tail:
        return ""
    return f"\nlast {len(tail)} lines of the log:\n" + "\n".join(f"  {line}" for line in tail)


def failure_message(subject: str, what: str, log: BoundedLog) -> str:
    """"`subject` `what`", where the log is and its last lines (blocking)."""
    return f"{subject} {what}; log: {log.path}{quoted_tail(log)}"


def add_notes(log: BoundedLog, notes: Sequence[str]) -> list[str | int]:
    """Write the daemon's `notes` on a build at the end of its log, one `ix: ` line each,
    on a line of their own; the lines, for the live followers (blocking)."""
    if not notes:
        return []
    log.end_line()
    lines: list[str | int] = [f"ix: {note}" for note in notes]
    log.write(b"".join(f"{line}\n".encode() for line in lines))
    return lines


class LineSplitter:
    """Bytes of output in, whole lines out, in order (decoded; a line longer than MAX_LINE
    in pieces). Bytes may also be taken without being handed on (`drop`, past the live
    budget): each line they touch is then an int, a count of lines left out."""

    def __init__(self) -> None:
        self._pending = b""
        #: the line under way lost its start to `drop`: it is left out whole
        self._dropping = False
        #: bytes of output since the end of the last line
        self.unfinished = 0

    def _count(self, data: bytes) -> None:
        last = data.rfind(b"\n")
        self.unfinished = len(data) - last - 1 if last >= 0 else self.unfinished + len(data)

    def feed(self, data: bytes) -> list[str | int]:
        self._count(data)
        *lines, rest = (self._pending + data).split(b"\n")
        found: list[str | int] = []
        if self._dropping:
            if not lines:
                self._pending = b""
                return found
            found.append(1)  # the end of a line whose start was left out
            lines = lines[1:]
            self._dropping = False
        found.extend(decode(line) for line in lines)
        while len(rest) > MAX_LINE:
            found.append(decode(rest[:MAX_LINE]))
            rest = rest[MAX_LINE:]
        self._pending = rest
        return found

    def drop(self, data: bytes) -> int:
        """Take `data` without handing it on; how many lines it ended."""
        if not data:
            return 0
        self._count(data)
        ended = data.count(b"\n")  # a line left out before, or under way, ends here too
        self._pending = b""
        self._dropping = not data.endswith(b"\n")
        return ended

    def flush(self) -> list[str | int]:
        """What is left at the end of the output: an unfinished last line."""
        rest, self._pending = self._pending, b""
        self.unfinished = 0
        if self._dropping:
            self._dropping = False
            return [1]
        return [decode(rest)] if rest else []


def decode(line: bytes) -> str:
    return line.decode(errors="replace").removesuffix("\r")


class LiveBudget:
    """A token bucket of bytes: `rate` per second, at most `burst` at once."""

    def __init__(self, rate: float = LIVE_RATE, burst: float = LIVE_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self, size: int) -> bool:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if size > self._tokens:
            return False
        self._tokens -= size
        return True


#: what the pump hands the event loop, in order: lines printed, and (an int) how many
#: lines were left out at that place; then how many bytes of output the log holds up to the
#: end of the last of them
Relay = Callable[[list[str | int], int], None]
#: runs a function on the event loop soon (trio's `TrioToken.run_sync_soon`)
Post = Callable[[Callable[[], None]], None]


class LogPump:
    """Reads a build's output pipe in a thread of its own: every byte to the `BoundedLog`,
    the lines within the live budget to `relay` on the event loop (through `post`), in
    order, one batch pending at a time."""

    def __init__(self, fd: int, log: BoundedLog, relay: Relay | None, post: Post,
                 budget: LiveBudget | None = None) -> None:
        self.fd = fd
        self.log = log
        self.relay = relay
        self.post = post
        self.budget = budget or LiveBudget()
        self.splitter = LineSplitter()
        #: what waits for the loop (bounded by the budget: what is past it is a count), and
        #: where in the output the last of it ends
        self._pending: list[str | int] = []
        self._end = 0
        self._posted = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done: Callable[[], None] = lambda: None
        self._thread = threading.Thread(target=self._run, name="ixd-log", daemon=True)
        #: an error writing the log (the pump reads on, the build goes on, the log stops)
        self.error: OSError | None = None

    def start(self, done: Callable[[], None]) -> None:
        """Start reading; `done()` is posted to the loop once the pipe is at its end (or the
        pump was stopped), after every batch of lines."""
        self._done = done
        self._thread.start()

    def stop(self) -> None:
        """Stop reading soon (within POLL_SECONDS), even if the pipe stays open."""
        self._stop.set()

    def _run(self) -> None:
        try:
            self._read()
        except OSError as exc:
            self.error = exc
        finally:
            os.close(self.fd)
            if self.relay is not None:
                self._queue(self.splitter.flush(), self.log.written)
            self.post(self._done)

    def _read(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        # the last chunk printed past the live budget, held back: if it is the output's
        # last, it is relayed all the same (how a build ends is what its waiters look for)
        held = b""
        try:
            while not self._stop.is_set():
                if not poller.poll(int(POLL_SECONDS * 1000)):
                    continue
                chunk = os.read(self.fd, READ_SIZE)
                if not chunk:
                    return
                held = self._take(chunk, held)
        finally:
            if held and self.relay is not None:
                items = self.splitter.feed(held)
                self._queue(items, self.log.written - self.splitter.unfinished)

    def _take(self, chunk: bytes, held: bytes) -> bytes:
        """Log `chunk` and relay it within the budget; what is held back now."""
        if self.error is None:
            try:
                self.log.write(chunk)
            except OSError as exc:  # a full disk: the build goes on, its log stops
                self.error = exc
        else:  # still quoted when the build fails
            self.log.remember(chunk)
        if self.relay is None:
            return b""
        items: list[str | int] = []
        if held:  # not the last piece after all: left out, as anything past the budget
            skipped = self.splitter.drop(held)
            items = [skipped] if skipped else []
            held = b""
        if self.budget.take(len(chunk)):
            items += self.splitter.feed(chunk)
        else:
            held = chunk
        self._queue(items, self.log.written - self.splitter.unfinished - len(held))
        return held

    def _queue(self, items: Sequence[str | int], end: int) -> None:
        if not items:
            return
        with self._lock:
            self._end = end
            pending = self._pending
            for item in items:
                if isinstance(item, int) and pending and isinstance(pending[-1], int):
                    pending[-1] += item  # one count for a run of left-out lines
                else:
                    pending.append(item)
            if not self._posted:
                self._posted = True
                self.post(self._deliver)

    def _deliver(self) -> None:
        """(on the event loop) Hand what waits to `relay`."""
        with self._lock:
            items, self._pending, self._posted = self._pending, [], False
            end = self._end
        if items and self.relay is not None:
            self.relay(items, end)
