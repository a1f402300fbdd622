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
- PROXY protocol (with proxy_protocol_timeout): the header must arrive within that time,
  however it trickles in, and it survives STARTTLS (aiosmtpd starts a new session then).
- Refusals are counted by reason when a metrics object is given.
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
TOO_MUCH = "552 5.3.4 Message size exceeds fixed maximum message size"
LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"  # a protocol refusal, not an internal error
_CHUNK = 256 * 1024
_TERMINATOR = b"\r\n.\r\n"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"\s*<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:\s+(.*?))?\s*$")
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
    def __init__(self, handler: Any, *, limits: Limits, line_length_limit: int, default_reserve: int,
                 metrics: Any = None, **kwargs: Any):
        # The StreamReader limit is taken from this attribute inside SMTP.__init__.
        self.line_length_limit = line_length_limit + 1  # + the transparency dot
        # A line is what lies between line feeds (bare ones too: they become line ends later);
        # with CR and the transparency dot a line may take limit + 2 bytes before its LF.
        # The pattern starts at a line feed so the search costs about one pass, not one per byte.
        self._max_line = line_length_limit + 2
        self._long_line = re.compile(rb"\n[^\n]{%d}" % (self._max_line + 1))
        self.limits = limits
        self.default_reserve = default_reserve
        self.metrics = metrics  # smtp_offload.metrics.Metrics, or None
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

    def _refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.refused(reason)

    def data_received(self, data: bytes) -> None:
        # Bytes re-arm the idle timer, but not the PROXY header's deadline.
        if self._timeout_handle is not None and not self._busy and not self._awaiting_proxy:
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

    @property
    def _awaiting_proxy(self) -> bool:
        return self._proxy_timeout is not None and self.session is not None and self.session.proxy_data is None

    def _data_too_slow(self) -> None:
        self._data_deadline = None
        if not self._busy and self.transport is not None:
            self._refused("data_timeout")
            self.transport.write(b"421 4.4.2 Message took too long to arrive, closing\r\n")
            self.transport.close()

    # -- envelope addresses ----------------------------------------------------
    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Strict envelope addresses: no control characters (NUL, CR, LF, DEL...) and no
        source routes (<@relay:user@host>, obsolete since RFC 5321 and only useful to abuse
        a relay). aiosmtpd answers a None address with 553 5.1.3."""
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in arg) or arg.lstrip().startswith("<@"):
            return None, None
        # Fast path for the everyday "<dot-atom@domain> PARAMS" (aiosmtpd's parser builds a
        # class per call); anything else - quoting, UTF-8, the null path - goes the full way.
        m = _PLAIN_ADDRESS.match(arg)
        if m:
            return m.group(1), m.group(2) or ""
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
            await self.push("503 5.5.1 Need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        if self.limits.draining:
            self._refused("shutting_down")
            await self.push("421 4.3.2 Service shutting down, try again later")
            return
        reserved = self.limits.reserve(self._declared_size() or self.default_reserve)
        if reserved is None:
            self._refused("busy")
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
                self._refused("line_too_long" if problem.startswith("500") else "too_big")
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
        refused. Bytes the client sent after the terminator are given back to the reader.
        Chunks are joined once at the end, so the message is held at most twice, briefly."""
        chunks: list[bytes] = []
        kept = 0  # bytes in chunks
        tail = b"\r\n"  # the end of what came before: at the start, a line begins
        line = 0  # length of the line still open at the end of the last chunk
        problem: str | None = None
        limit = self.data_size_limit
        while True:
            chunk = await self._reader.read(_CHUNK)
            if not chunk:
                raise ConnectionResetError("connection closed during DATA")
            window = tail + chunk
            i = window.find(_TERMINATOR)
            if i >= 0:
                cut = i + 2 - len(tail)  # where the content ends, relative to this chunk
                leftover = window[i + 5:]
                chunk = chunk[:cut] if cut >= 0 else b""
                if cut < 0 and chunks:  # the terminator began in the previous chunk
                    chunks[-1] = chunks[-1][:cut]
                    kept += cut
            if problem is None:
                problem = self._check_lines(chunk, line)
                nl = chunk.rfind(b"\n")
                line = line + len(chunk) if nl < 0 else len(chunk) - nl - 1
            if problem is None and limit and kept + len(chunk) > limit:
                problem = TOO_MUCH
            if problem is None:
                chunks.append(chunk)
                kept += len(chunk)
            else:
                chunks.clear()  # read on to the terminator, keep nothing
            if i >= 0:
                if leftover:  # pipelined commands: they belong to the command loop
                    self._reader._buffer[0:0] = leftover  # type: ignore[attr-defined]
                if problem:
                    return b"", problem
                content = b"".join(chunks)
                chunks.clear()
                if content.startswith(b"."):
                    content = content[1:]
                return content.replace(b"\r\n.", b"\r\n"), None
            tail = window[-4:]

    def _check_lines(self, chunk: bytes, open_line: int) -> str | None:
        """A line (up to a line feed) longer than the limit, in this chunk or continued into it."""
        first = chunk.find(b"\n")
        head = len(chunk) if first < 0 else first
        if open_line + head > self._max_line or (first >= 0 and self._long_line.search(chunk, first)):
            return LINE_TOO_LONG
        return None

    # -- replies and lifecycle ------------------------------------------------
    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = enhance(status)
        await super().push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not the STARTTLS re-entry
            self.limits.sessions.add(self)
        # STARTTLS starts a new session: the client is still the one the PROXY header named.
        proxy_data = self.session.proxy_data if self.session is not None else None
        super().connection_made(transport)
        if proxy_data is not None:
            self.session.proxy_data = proxy_data

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
