"""Bytes too large to hold in memory: a private file on disk, read by offset.

A large message (server.spool_over_bytes) is written to a file in server.spool_dir as it
arrives, and every later stage reads it through `FileBytes`, which offers the few bytes
methods the MIME scanner uses (len, find, startswith, slices) by reading windows of the file.
So finding the structure of a 36 MB message holds a window, never the message. Decoded
attachments that large live in the same kind of file.

The files have no name: they are created unlinked (O_TMPFILE, or created and unlinked at
once where the filesystem lacks it), 0600, so nothing is left behind whatever happens to the
process - a crash, a kill -9, a power cut - and nobody else can open them. `sweep()` removes
what the fallback could leave between its two calls.

`Pieces` is a message to relay made of literal bytes and ranges of a FileBytes: the rewritten
message, streamed on the wire chunk by chunk instead of joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import mmap
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

WINDOW = 256 * 1024  # bytes read at once (each session reading a spool file holds about one)
T = TypeVar("T")
PREFIX, SUFFIX = "smtp-offload-", ".spool"  # the fallback's names, for sweep()


def _create(directory: str) -> int:
    """A new private file in `directory`, already without a name: its descriptor."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    fd, path = tempfile.mkstemp(prefix=PREFIX, suffix=SUFFIX, dir=directory)  # 0600
    with contextlib.suppress(FileNotFoundError):  # a concurrent sweep() got there first
        os.unlink(path)
    return fd


def sweep(directory: str) -> int:
    """Remove spool files a crash left in `directory` (only the fallback ever names one, for
    microseconds). Returns how many were removed."""
    n = 0
    with contextlib.suppress(FileNotFoundError):
        for p in Path(directory).glob(f"{PREFIX}*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n


def ready(directory: str) -> int:
    """Make `directory` ready for spool files, at start: created (0700, with its parents, as
    the local store's is) when missing, proven writable by creating a file in it, and swept.
    Returns how many leftovers were removed; OSError when it cannot hold spool files."""
    path = Path(directory)
    if not path.is_dir():
        with contextlib.suppress(FileExistsError):  # another process made it first (or it is a file: below)
            path.mkdir(mode=0o700, parents=True)
            os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    os.close(_create(directory))
    return sweep(directory)


def unusable(directory: str) -> str | None:
    """Why `directory` could not hold spool files, changing nothing (check-config): None when
    it can, or when ready() could create it."""
    path = Path(directory).absolute()
    while not path.exists() and path.parent != path:  # where ready() would create it
        path = path.parent
    if not path.is_dir():
        return f"{path} is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path}: permission denied"
    return None


class _Map(mmap.mmap):
    """A read-only map whose "in" searches as bytes' does: mmap's own matches one byte only and
    says False for b"begin " in a map that holds it (code written for bytes reads maps too)."""

    def __contains__(self, sub: object) -> bool:
        if isinstance(sub, (bytes, bytearray, memoryview)):
            return self.find(sub) >= 0
        return super().__contains__(sub)


class SpoolWriter:
    """Appends to a new private file; `finish()` makes it a FileBytes."""

    def __init__(self, directory: str) -> None:
        self.fd = _create(directory)
        self.size = 0
        self.directory = directory

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)

    def finish(self, **flags: bool) -> FileBytes:
        fd, self.fd = self.fd, -1
        return FileBytes(fd, self.size, directory=self.directory, **flags)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileBytes:
    """Read-only bytes in a private file: len, find, startswith, slices and chunks, by reading
    windows. `eight_bit` and `bare_newlines` are what the writer saw on the way in (the
    content is already normalised to CRLF line ends when it is a received message)."""

    def __init__(self, fd: int, size: int, *, eight_bit: bool = True, bare_newlines: bool = False,
                 directory: str | None = None) -> None:
        self.fd = fd
        self.size = size
        self.eight_bit = eight_bit
        self.bare_newlines = bare_newlines
        self.directory = directory  # where it was written: files derived from it go there too
        # The last window read for a find or a small slice: the scanner's many nearby look-ups
        # (a delimiter, the CRLF after it, the blank line after a part's headers) are then a
        # search in memory, not a system call and a window's copy each.
        self._cache: tuple[int, bytes] = (0, b"")

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __repr__(self) -> str:
        return f"<FileBytes fd={self.fd} size={self.size}>"

    def _span(self, start: int | None, end: int | None) -> tuple[int, int]:
        return slice(start, end).indices(self.size)[:2]

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        start, end = self._span(start, end)
        if end <= start:
            return b""
        if self.fd < 0:
            raise ValueError("read of a closed FileBytes")
        out = os.pread(self.fd, end - start, start)
        while len(out) < end - start:  # pread may return less (signals, huge reads)
            more = os.pread(self.fd, end - start - len(out), start + len(out))
            if not more:
                raise OSError(errno.EIO, "spool file shorter than written")
            out += more
        return out

    def __getitem__(self, key: slice | int) -> bytes | int:
        if isinstance(key, int):
            i = key + self.size if key < 0 else key
            if not 0 <= i < self.size:
                raise IndexError("FileBytes index out of range")
            return self.read(i, i + 1)[0]
        if key.step not in (None, 1):
            raise ValueError("FileBytes slices take no step")
        start, end = self._span(key.start, key.stop)
        if end <= start or end - start > WINDOW:
            return self.read(start, end)
        at, window = self._window(start, end)
        return window[start - at:end - at]

    def _window(self, start: int, end: int) -> tuple[int, bytes]:
        """(offset, bytes) of a cached window holding [start, end), read when it is not held."""
        at, window = self._cache
        if at <= start and end <= at + len(window):
            return at, window
        window = self.read(start, min(max(end, start + WINDOW), self.size))
        self._cache = (start, window)
        return start, window

    def chunks(self, start: int = 0, end: int | None = None, size: int = WINDOW) -> Iterator[bytes]:
        start, end = self._span(start, end)
        for at in range(start, end, size):
            yield self.read(at, min(at + size, end))

    def _empty_match(self, start: int | None, end: int | None) -> int:
        """Where bytes.find finds b"" (its rules: start is not clamped to the length)."""
        start = 0 if start is None else (max(start + self.size, 0) if start < 0 else start)
        end = self.size if end is None else (max(end + self.size, 0) if end < 0 else min(end, self.size))
        return start if start <= end else -1

    def find(self, sub: bytes, start: int | None = 0, end: int | None = None) -> int:
        if not sub:
            return self._empty_match(start, end)
        start, end = self._span(start, end)
        at = start
        while end - at >= len(sub):
            # Whatever the cached window holds from `at` on (at least one possible match), else
            # a window read from `at`: a search that starts near the last one reads nothing.
            cached, window = self._window(at, at + len(sub))
            stop = min(cached + len(window), end)
            i = window.find(sub, at - cached, stop - cached)
            if i >= 0:
                return cached + i
            at = stop - len(sub) + 1  # a match may straddle the window's end
        return -1

    def startswith(self, prefix: bytes, start: int | None = 0, end: int | None = None) -> bool:
        if not prefix:
            return self._empty_match(start, end) >= 0
        start, end = self._span(start, end)
        if end - start < len(prefix):
            return False
        at, window = self._window(start, start + len(prefix))
        return window.startswith(prefix, start - at)

    def isascii(self) -> bool:
        return not self.eight_bit

    def open(self) -> io.BufferedReader:
        """A file object of its own (its own offset) reading from the start, for SDKs that
        stream from a file. The caller closes it."""
        return open(f"/proc/self/fd/{self.fd}", "rb")  # noqa: SIM115 - handed to the caller

    @contextlib.contextmanager
    def mapped(self) -> Iterator[mmap.mmap | bytes]:
        """The bytes as a read-only memory map, for code that needs a buffer (the file judges):
        pages are read from the file as they are touched and are the page cache's, not ours."""
        if self.size == 0:
            yield b""
            return
        mm = _Map(self.fd, self.size, access=mmap.ACCESS_READ)
        try:
            yield mm
        finally:
            mm.close()

    def close(self) -> None:
        self._cache = (0, b"")
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> FileBytes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def in_thread(fn: Callable[..., T], *args: Any, orphan: Callable[[T], None] | None = None) -> T:
    """fn(*args) in a worker thread, for work that reads a spool file. A thread cannot be
    cancelled: when the caller is, the thread is waited for all the same (so the file it reads
    is not closed under it, its descriptor reused by another file), `orphan` is given what it
    made for nobody (to close it), and the cancellation goes on."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        if orphan is not None and not task.cancelled() and task.exception() is None:
            orphan(task.result())
        raise


Piece = bytes | tuple[int, int]  # literal bytes, or a range of the source


class Pieces:
    """A message made of literal bytes and ranges of a FileBytes, streamed rather than joined."""

    def __init__(self, source: FileBytes, pieces: list[Piece] | tuple[Piece, ...]) -> None:
        self.source = source
        self.pieces = tuple(p for p in pieces if (p if isinstance(p, bytes) else p[1] > p[0]))
        self._len = sum(len(p) if isinstance(p, bytes) else p[1] - p[0] for p in self.pieces)

    def __len__(self) -> int:
        return self._len

    def prepend(self, head: bytes) -> Pieces:
        return Pieces(self.source, (head,) + self.pieces)

    def chunks(self, size: int = WINDOW) -> Iterator[bytes]:
        for p in self.pieces:
            if isinstance(p, bytes):
                yield p
            else:
                yield from self.source.chunks(p[0], p[1], size)

    def isascii(self) -> bool:
        if not self.source.eight_bit:  # only the literals can bring an 8-bit byte
            return all(p.isascii() for p in self.pieces if isinstance(p, bytes))
        return all(c.isascii() for c in self.chunks())

    def read_all(self) -> bytes:
        """Joined, in memory: for the few steps that need one buffer (ARC sealing)."""
        return b"".join(self.chunks())
