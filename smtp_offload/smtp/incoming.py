"""DATA content too large to hold (server.spool_over_bytes), written to a spool file as it
arrives, already in the form the pipeline judges.

The in-memory path keeps the raw content, unstuffs it (`_read_data`) and the pipeline then
normalises its line ends (`scan.normalize_line_endings`). Here the same happens chunk by
chunk: transparency dots removed, NULs dropped, bare CR/LF made CRLF, each across chunk
edges, and the two facts the pipeline would have read from the raw content are kept as
flags of the FileBytes: `bare_newlines` (scan.has_bare_newlines of the unstuffed content)
and `eight_bit` (not isascii()). tests/test_spool_receive.py checks both paths agree.

The work and the write run in a worker thread, one chunk at a time per message and in order,
while the event loop reads the next chunk: a slow disk never holds up every other session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading

from .. import spool
from ..linestream import LINE_START, CrlfStream, last_two, unstuff

# The terminator's first bytes can reach back this far into content already received
# (".\r" of "\r\n.\r\n" split after them): held back until the next chunk says.
HOLD = 2

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """Made on first use, in the process that spools (a forked worker, not its parent)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="spool")
        return _executor


class SpooledData:
    """One message's DATA content on its way to a spool file. feed() the raw content (after
    the terminator search, before unstuffing) in order; drop_tail() takes back bytes the
    terminator turned out to own; finish() gives the FileBytes; abort() closes the file
    (at once, or after a write still running). OSError (the disk) surfaces at the next
    feed/drop_tail/finish."""

    def __init__(self, directory: str) -> None:
        self._writer = spool.SpoolWriter(directory)  # OSError when the directory is unusable
        self._held = b""  # the last raw bytes, not processed yet (see HOLD)
        self._before = LINE_START  # the last two raw bytes processed: a line begins at the start
        self._last = b""  # the last unstuffed byte, for a CRLF split by an edge
        self._cr = self._lf = self._crlf = 0  # counted in the unstuffed content
        self._eight_bit = False
        self._lines = CrlfStream()
        self._running: concurrent.futures.Future | None = None
        self._aborted = False

    # -- in the worker thread -------------------------------------------------
    def _process(self, data: bytes, final: bool) -> None:
        data = self._held + data if self._held else data
        cut = len(data) if final else max(len(data) - HOLD, 0)
        seg, self._held = data[:cut], data[cut:]
        out = b""
        if seg:
            raw = unstuff(self._before, seg)
            self._before = last_two(self._before, seg)
            if raw:
                crlf, cr, lf = raw.count(b"\r\n"), raw.count(b"\r"), raw.count(b"\n")
                self._crlf += crlf + (self._last == b"\r" and raw[:1] == b"\n")
                self._cr += cr
                self._lf += lf
                self._last = raw[-1:]
                self._eight_bit = self._eight_bit or not raw.isascii()
                clean = cr == crlf == lf  # no bare CR or LF within this piece (the everyday case)
                if b"\x00" in raw:
                    raw, clean = raw.replace(b"\x00", b""), False
                out = self._lines.feed(raw, clean)
        if final:
            out += self._lines.end()
        if out:
            self._writer.write(out)

    # -- on the event loop ----------------------------------------------------
    async def _settle(self) -> None:
        """Wait for the write in flight; its error, if any, is raised here."""
        running = self._running
        if running is not None:
            await asyncio.wrap_future(running)
            self._running = None  # (kept when it failed or we were cancelled: abort() waits for it)

    async def feed(self, data: bytes) -> None:
        """Queue `data` after what came before; returns once the previous chunk is written
        (so at most one chunk per message waits in memory for the disk)."""
        await self._settle()
        if data:
            self._running = _pool().submit(self._process, data, False)

    async def drop_tail(self, n: int) -> None:
        """The last n bytes fed (n <= HOLD) were the terminator's, not content."""
        await self._settle()
        self._held = self._held[:max(len(self._held) - n, 0)]

    async def finish(self) -> spool.FileBytes:
        await self._settle()
        self._running = _pool().submit(self._process, b"", True)
        await self._settle()
        bare = self._cr != self._crlf or self._lf != self._crlf
        return self._writer.finish(eight_bit=self._eight_bit, bare_newlines=bare)

    async def discard(self) -> None:
        """Close the file once the write in flight is done (a refused message: the reader
        reads on to the terminator anyway, so waiting for one write costs nothing)."""
        if self._running is not None:
            with contextlib.suppress(OSError):
                await asyncio.wrap_future(self._running)
        self.abort()

    def abort(self) -> None:
        """Close the file now, or as soon as the write in flight ends: never under a worker
        thread still writing to its descriptor (the number could be reused meanwhile)."""
        if self._aborted:
            return
        self._aborted = True
        if self._running is None:
            self._writer.abort()
        else:  # runs at once when it is already done
            self._running.add_done_callback(lambda _: self._writer.abort())
