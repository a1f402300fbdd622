"""The aiosmtpd protocol with the few changes a gateway needs (aiosmtpd is imported only in smtp/).

- Idle timeout, not per-command timeout: aiosmtpd arms its timer once per command, so a
  slow 30 MB DATA would be cut off mid-transfer; here every received byte re-arms it.
  A separate DATA deadline bounds how long one message may take to arrive.
- While a message is being processed (inspect, store, relay) the timers are held: the work
  has its own budgets, and a fired timer would cancel handle_DATA mid-relay.
- Backpressure: a session limit (excess connections get 421 4.3.2 and are closed) and a
  budget of message bytes in flight (DATA gets 451 4.3.2 when it is spent), so memory stays
  bounded under a burst of large messages.
- Drain: on shutdown idle sessions get 421 at once; a session with a message arriving or
  being processed gets its reply first, then 421.
- Every reply gets an enhanced status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP

from .replies import enhance

BUSY = "451 4.3.2 System busy, try again later"
_CHUNK = 256 * 1024
_TERMINATOR = b"\r\n.\r\n"
SHUTTING_DOWN = b"421 4.3.2 Service shutting down, try again later\r\n"
TOO_MANY = b"421 4.3.2 Too many connections, try again later\r\n"


@dataclass
class Limits:
    """Process-wide counters shared by every session."""

    max_sessions: int
    max_inflight_bytes: int
    data_timeout: float
    sessions: set = field(default_factory=set)
    inflight_bytes: int = 0
    draining: bool = False

    def reserve(self, n: int) -> int | None:
        n = min(n, self.max_inflight_bytes)  # one huge message may still go when nothing else is in flight
        if self.inflight_bytes + n > self.max_inflight_bytes:
            return None
        self.inflight_bytes += n
        return n

    def release(self, n: int) -> None:
        self.inflight_bytes -= n


class Refuse(asyncio.Protocol):
    """Stands in for a session past the limit: one 421 line, then close."""

    def __init__(self, line: bytes):
        self.line = line

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.line)  # type: ignore[attr-defined]
        transport.close()


class GatewaySMTP(SMTP):
    def __init__(self, handler: Any, *, limits: Limits, line_length_limit: int, default_reserve: int, **kwargs: Any):
        # The StreamReader limit is taken from this attribute inside SMTP.__init__.
        self.line_length_limit = line_length_limit + 1  # + the transparency dot
        # A line is what lies between line feeds (bare ones too: they become line ends later);
        # with CRLF + the transparency dot a line may take limit + 3 bytes on the wire.
        self._long_line = re.compile(rb"[^\n]{%d}" % (line_length_limit + 3))
        self.limits = limits
        self.default_reserve = default_reserve
        self._busy = 0
        self._receiving = False
        self._data_deadline: asyncio.TimerHandle | None = None
        super().__init__(handler, **kwargs)

    # -- timers ------------------------------------------------------------
    @contextlib.contextmanager
    def busy(self):
        self._busy += 1
        self._cancel_data_deadline()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy and self.transport is not None:
                self._reset_timeout()

    def data_received(self, data: bytes) -> None:
        if self._timeout_handle is not None and not self._busy:
            self._reset_timeout()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        if self._busy:
            self._reset_timeout()
            return
        super()._timeout_cb()

    def _cancel_data_deadline(self) -> None:
        if self._data_deadline is not None:
            self._data_deadline.cancel()
            self._data_deadline = None

    def _data_too_slow(self) -> None:
        self._data_deadline = None
        if not self._busy and self.transport is not None:
            self.transport.write(b"421 4.4.2 Message took too long to arrive, closing\r\n")
            self.transport.close()

    # -- envelope addresses ----------------------------------------------------
    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Strict envelope addresses: no control characters (NUL, CR, LF, DEL...) and no
        source routes (<@relay:user@host>, obsolete since RFC 5321 and only useful to abuse
        a relay). aiosmtpd answers a None address with 553 5.1.3."""
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in arg) or arg.lstrip().startswith("<@"):
            return None, None
        return super()._getaddr(arg)

    # -- DATA with a byte budget --------------------------------------------
    def _declared_size(self) -> int | None:
        for opt in self.envelope.mail_options if self.envelope else ():
            if opt.upper().startswith("SIZE=") and opt[5:].isdigit():
                return int(opt[5:])
        return None

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's own checks and replies, in its order.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not (self.envelope and self.envelope.rcpt_tos):
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        if self.limits.draining:
            await self.push("421 4.3.2 Service shutting down, try again later")
            return
        reserved = self.limits.reserve(self._declared_size() or self.default_reserve)
        if reserved is None:
            await self.push(BUSY)
            return
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            self._data_deadline = self.loop.call_later(self.limits.data_timeout, self._data_too_slow)
            self._receiving = True
            try:
                content, problem = await self._read_data()
            finally:
                self._receiving = False
                self._cancel_data_deadline()
            if problem:
                self._set_post_data_state()
                await self.push(problem)
                return
            self.envelope.content = self.envelope.original_content = content
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push("250 OK" if status is MISSING else status)
        finally:
            self.limits.release(reserved)
            if self.limits.draining:  # the reply to this message is out: now say goodbye
                self.shutdown()

    async def _read_data(self) -> tuple[bytes, str | None]:
        """The DATA payload, read in large chunks instead of aiosmtpd's line by line (several
        times faster for big messages), with aiosmtpd's semantics kept exactly: only
        CRLF.CRLF ends the data (a bare CR or LF never does), the first dot of every line is
        removed, and an over-long line or an over-size message is read to its end and then
        refused. Bytes the client sent after the terminator are given back to the reader."""
        buf = bytearray()
        checked = 0  # buf[:checked] has been searched for the terminator and long lines
        total = 0
        problem: str | None = None
        limit = self.data_size_limit
        while True:
            chunk = await self._reader.read(_CHUNK)
            if not chunk:
                raise ConnectionResetError("connection closed during DATA")
            total += len(chunk)
            buf += chunk
            if total == len(buf) and buf.startswith(b".\r\n"):  # an empty message
                end, after = 0, 3
            else:
                i = buf.find(_TERMINATOR, max(0, checked - 4))
                end, after = (i + 2, i + 5) if i >= 0 else (-1, -1)
            scan_to = end if end >= 0 else len(buf)
            if problem is None:
                line_start = buf.rfind(b"\n", 0, checked) + 1
                if self._long_line.search(buf, line_start, scan_to):
                    problem = "500 Line too long (see RFC5321 4.5.3.1.6)"
                elif limit and total - (len(buf) - scan_to) > limit:
                    problem = "552 Error: Too much mail data"
            if end >= 0:
                leftover = bytes(buf[after:])
                if leftover:  # pipelined commands: they belong to the command loop
                    self._reader._buffer[0:0] = leftover  # type: ignore[attr-defined]
                if problem:
                    return b"", problem
                content = bytes(buf[:end])
                del buf
                if content.startswith(b"."):
                    content = content[1:]
                return content.replace(b"\r\n.", b"\r\n"), None
            if problem:
                del buf[:-4]  # keep only what the terminator could start with
            checked = len(buf)

    # -- replies and lifecycle ------------------------------------------------
    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = enhance(status)
        await super().push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not the STARTTLS re-entry
            self.limits.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.limits.sessions.discard(self)
        self._cancel_data_deadline()
        closed = getattr(self.event_handler, "session_closed", None)
        if closed is not None and self.session is not None:
            closed(self.session)
        super().connection_lost(error)

    def shutdown(self) -> None:
        """Drain: an idle session is told 421 now; one with a message in flight (arriving or
        being processed) after the reply to that message."""
        if not self.in_flight and self.transport is not None:
            self.transport.write(SHUTTING_DOWN)
            self.transport.close()

    @property
    def in_flight(self) -> bool:
        return bool(self._busy) or self._receiving
