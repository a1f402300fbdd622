"""The aiosmtpd protocol with the few changes a gateway needs (aiosmtpd is imported only in smtp/).

- Idle timeout, not per-command timeout: aiosmtpd arms its timer once per command, so a
  slow 30 MB DATA would be cut off mid-transfer; here every received byte re-arms it.
  A separate DATA deadline bounds how long one message may take to arrive.
- Because bytes re-arm the idle timer, a stranger could trickle one byte at a time and hold a
  session forever. Two deadlines no byte re-arms close that: one for a whole command line
  (first byte to its line feed) and one for the dialogue before DATA (from connect, or from
  the end of the previous message, until DATA is accepted). Past either: 421 4.4.2, closed.
- While a message is being processed (inspect, store, relay) the timers are held: the work
  has its own budgets, and a fired timer would cancel handle_DATA mid-relay.
- Backpressure: a session limit (excess connections get 421 4.3.2 and are closed), a limit
  per client address (421 4.7.0; the PROXY header's address when there is one, so it is
  checked once the header is read), and a budget of message bytes in flight (DATA gets
  451 4.3.2 when it is spent), so memory stays bounded under a burst of large messages.
  The budget is charged for the bytes that really arrive, not the SIZE the client declared:
  the declared SIZE, at most the default reserve, is reserved at DATA and grown as bytes come.
- Drain: on shutdown idle sessions get 421 at once; a session with a message arriving or
  being processed gets its reply first, then 421.
- A session we end is over within CLOSE_GRACE, whatever the client does: close() alone waits
  for our unsent replies to flush, forever when the client reads nothing, and the session
  would stay counted. A reply that cannot be delivered for an idle period ends it too.
- A client that half-closes (SHUT_WR, `nc -N`) after a message or pipelined commands still
  gets every reply: what it sent is processed, then the connection is closed.
- STARTTLS: refused (503 5.5.1) when TLS is already on or a transaction has started; the
  session before the handshake is closed through the handler's session_closed hook, like
  any other; a failed handshake is the client's problem, logged as tls_failed.
- AUTH is neither offered nor accepted (502 5.5.1): this hop does not authenticate clients.
- Every reply gets an enhanced status code.
- PROXY protocol (with proxy_protocol_timeout): the header must arrive within that time,
  however it trickles in, and it survives STARTTLS (aiosmtpd starts a new session then).
- Refusals are counted by reason when a metrics object is given.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiosmtpd.smtp import MISSING, SMTP, TLSSetupException, syntax

from .. import replies as R
from ..replies import Reply
from ..spool import FileBytes
from .handler import client_ip
from .incoming import SpooledData
from .replies import enhance

# Imported by the dry run (cli.py) and the composition root (app.py), as they use them.
TOO_MUCH = str(R.TOO_BIG)
LINE_TOO_LONG = str(R.LINE_TOO_LONG)  # a protocol refusal, not an internal error
TOO_MANY = R.TOO_MANY.line
# What _read_data() refuses a message with, and the refusal reason counted for it.
_REFUSED_AS = {R.LINE_TOO_LONG: "line_too_long", R.BUSY: "busy", R.TOO_BIG: "too_big"}
_CHUNK = 256 * 1024
_TERMINATOR = b"\r\n.\r\n"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"\s*<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:\s+(.*?))?\s*$")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes "²" (int() then fails) and "١٢٣"
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A session we end gets this long to take our last reply before the connection is aborted;
# with more than CLOSE_AT_ONCE_BYTES of replies still unread it is aborted at once.
CLOSE_GRACE = 2.0
CLOSE_AT_ONCE_BYTES = 64 * 1024


def declared_size(mail_options: Any) -> int | None:
    """The SIZE= a client declared on MAIL, when it is a number in ASCII digits."""
    for opt in mail_options or ():
        name, _, value = opt.partition("=")
        if name.upper() == "SIZE" and _DIGITS.fullmatch(value):
            return int(value)
    return None


def long_line_after(chunk: bytes, first: int, max_line: int, pattern: re.Pattern) -> bool:
    """Does a line that starts after the line feed at `first` run past `max_line` bytes
    within `chunk`? (`pattern` is rb"\n[^\n]{max_line + 1}", the exact answer.)

    The regex tries every line feed of a 36 MiB message (30 ms). A line feed in every stretch
    of max_line // 2 bytes proves every line shorter than max_line; a find() per stretch costs
    a few bytes each, and only a stretch without one asks the regex."""
    step = max(max_line // 2, 1)
    for at in range(first, len(chunk) - step + 1, step):
        if chunk.find(b"\n", at, at + step) < 0:
            return pattern.search(chunk, first) is not None
    # Past the last whole stretch: the line open there began in (or after) the stretch before
    # it, which had a line feed, so it is shorter than 2 * step <= max_line.
    return False


def printable(reply: str) -> str:
    """A reply line as printable ASCII: aiosmtpd echoes the client's bytes (`command "X<CR>Y"
    not recognized`), and a CR, NUL or undecodable byte must never go back on the wire."""
    return _NOT_PRINTABLE.sub("?", reply)


_WIRE: dict[str, bytes] = {}  # reply text -> its bytes on the wire; most replies recur


def _wire(reply: str) -> bytes:
    """A reply line as it is sent: printable ASCII, an enhanced status code, CRLF."""
    line = _WIRE.get(reply)
    if line is None:
        line = enhance(printable(reply)).encode("ascii") + b"\r\n"
        if len(_WIRE) >= 512:  # queue ids and downstream texts vary: bounded, not a leak
            _WIRE.clear()
        _WIRE[reply] = line
    return line


def client_key(address: str | None) -> str | None:
    """What max_sessions_per_client counts by: an IPv4 address, or the /64 of an IPv6 one
    (one site gets a whole /64, so counting single IPv6 addresses would limit nobody)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class Limits:
    """Process-wide counters shared by every session."""

    max_sessions: int
    max_inflight_bytes: int
    data_timeout: float
    command_timeout: float = 60.0
    envelope_timeout: float = 300.0
    max_sessions_per_client: int = 0  # 0: no limit per client address
    sessions: set = field(default_factory=set)
    clients: dict[str, int] = field(default_factory=dict)  # client_key -> sessions
    inflight_bytes: int = 0
    draining: bool = False

    def reserve(self, n: int) -> int | None:
        n = min(n, self.max_inflight_bytes)  # one huge message may still go when nothing else is in flight
        if self.inflight_bytes + n > self.max_inflight_bytes:
            return None
        self.inflight_bytes += n
        return n

    def grow(self, held: int, n: int) -> bool:
        """Charge n more bytes to a message already holding `held`. As in reserve(), a message
        alone in flight may pass the budget (else a message between max_inflight_bytes and
        max_message_bytes could never be taken)."""
        if self.inflight_bytes + n > self.max_inflight_bytes and self.inflight_bytes > held:
            return False
        self.inflight_bytes += n
        return True

    def release(self, n: int) -> None:
        self.inflight_bytes -= n

    def admit(self, client: str) -> bool:
        """Count one more session for this client, unless it already has its share."""
        n = self.clients.get(client, 0)
        if self.max_sessions_per_client and n >= self.max_sessions_per_client:
            return False
        self.clients[client] = n + 1
        return True

    def leave(self, client: str) -> None:
        n = self.clients.pop(client, 0) - 1
        if n > 0:
            self.clients[client] = n


class Refuse(asyncio.Protocol):
    """Stands in for a session past the limit: one 421 line, then close."""

    def __init__(self, line: bytes):
        self.line = line

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.line)  # type: ignore[attr-defined]
        transport.close()


class _Busy:
    """GatewaySMTP.busy(): a class, not a generator-based context manager (once per message)."""

    __slots__ = ("server",)

    def __init__(self, server: "GatewaySMTP"):
        self.server = server

    def __enter__(self) -> None:
        server = self.server
        server._busy += 1
        server._cancel_data_deadline()

    def __exit__(self, *exc: object) -> None:
        server = self.server
        server._busy -= 1
        if not server._busy and server.transport is not None:
            server._reset_timeout()


class GatewaySMTP(SMTP):
    def __init__(self, handler: Any, *, limits: Limits, line_length_limit: int, default_reserve: int,
                 metrics: Any = None, log: Any = None, spool_over_bytes: int = 0, spool_dir: str = "",
                 **kwargs: Any):
        # The StreamReader limit is taken from this attribute inside SMTP.__init__.
        self.line_length_limit = line_length_limit + 1  # + the transparency dot
        # A line is what lies between line feeds (bare ones too: they become line ends later);
        # with CR and the transparency dot a line may take limit + 2 bytes before its LF.
        # The pattern starts at a line feed so the search costs about one pass, not one per byte.
        self._max_line = line_length_limit + 2
        self._long_line = re.compile(rb"\n[^\n]{%d}" % (self._max_line + 1))
        self.limits = limits
        self.default_reserve = default_reserve
        self.spool_over_bytes = spool_over_bytes  # 0: never spooled (server.spool_over_bytes)
        self.spool_dir = spool_dir
        self.metrics = metrics  # smtp_offload.metrics.Metrics, or None
        self.log = log
        self._busy = 0
        self._receiving = False
        self._data_deadline: asyncio.TimerHandle | None = None
        self._command_deadline: asyncio.TimerHandle | None = None
        self._envelope_deadline: asyncio.TimerHandle | None = None
        self._client: str | None = None  # the key this session is counted under in limits.clients
        self._turned_away = False  # refused in connection_made: aiosmtpd never saw the connection
        self._charged = 0  # bytes of the in-flight budget held by the message arriving now
        self._abort_handle: asyncio.TimerHandle | None = None  # the end of CLOSE_GRACE
        self._lost = False  # connection_lost has run: the slot is released
        self._tls_up = False  # the STARTTLS handshake completed
        self._eof = False  # the client half-closed: answer what it sent, then close
        self._answered = False  # ... and that is done: nothing more is said
        self._client_bound = False  # the session's client is in its log context (structlog contextvars)
        self._idle_until = 0.0  # the idle deadline (loop time); see _reset_timeout
        self._idle_armed: float | None = None  # when the pending idle timer fires; None: none pending
        self._held: list[bytes] = []  # replies to pipelined commands not written yet (push)
        super().__init__(handler, **kwargs)

    # -- timers ------------------------------------------------------------
    def busy(self) -> "_Busy":
        """`with server.busy():` while a message is processed: the timers are held."""
        return _Busy(self)

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer, moved rather than replaced. aiosmtpd cancels and creates a
        timer for every command, and bytes re-arm it here too: a heap entry each, several per
        message. Instead the deadline moves, and the one timer, should it fire before the
        deadline it now serves, sleeps on to it (_idle_timer)."""
        self._idle_until = until = self.loop.time() + (duration or self._timeout_duration)
        armed = self._idle_armed
        if armed is not None and armed <= until:
            return
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._idle_armed = until
        self._timeout_handle = self.loop.call_at(until, self._idle_timer)

    def _idle_timer(self) -> None:
        self._idle_armed = None
        if self.loop.time() < self._idle_until:  # the session was active since it was set
            self._idle_armed = self._idle_until
            self._timeout_handle = self.loop.call_at(self._idle_until, self._idle_timer)
            return
        self._timeout_cb()

    def _refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.refused(reason)

    def data_received(self, data: bytes) -> None:
        # Bytes re-arm the idle timer, but not the PROXY header's deadline.
        if self._timeout_handle is not None and not self._busy and not self._awaiting_proxy:
            self._reset_timeout()
        if not self._receiving and not self._awaiting_proxy:
            self._track_command_line(data)
        super().data_received(data)

    def _track_command_line(self, data: bytes) -> None:
        """Command bytes (not DATA content): a line feed ends the open line; bytes after the
        last one open a new line, whose deadline starts now. Lines are what aiosmtpd reads
        (up to a line feed), so a bare LF ends one here too."""
        nl = data.rfind(b"\n")
        if nl >= 0 and self._command_deadline is not None:
            self._cancel("_command_deadline")
        if nl < len(data) - 1 and self._command_deadline is None and self.transport is not None:
            self._command_deadline = self.loop.call_later(self.limits.command_timeout, self._command_too_slow)

    def _command_too_slow(self) -> None:
        self._command_deadline = None
        # A message being processed has its reply come first; and if we stopped reading (a
        # client that pipelined past the reader's buffer), the line is late by our doing.
        if self._busy or getattr(self._reader, "_paused", False):
            self._command_deadline = self.loop.call_later(self.limits.command_timeout, self._command_too_slow)
            return
        self._cut("command_timeout", R.COMMAND_TOO_SLOW)

    def _arm_envelope_deadline(self) -> None:
        self._cancel("_envelope_deadline")
        if self.transport is not None:
            self._envelope_deadline = self.loop.call_later(self.limits.envelope_timeout, self._envelope_too_slow)

    def _envelope_too_slow(self) -> None:
        self._envelope_deadline = None
        if not self.in_flight:  # a message arriving or processed has its own deadlines
            self._cut("envelope_timeout", R.ENVELOPE_TOO_SLOW)

    def _cut(self, reason: str, reply: Reply) -> None:
        """421 and close, from a timer. A command being handled is cancelled with the session
        (connection_lost cancels aiosmtpd's task), as when the client hangs up."""
        if self.transport is not None and not self.transport.is_closing():
            self._refused(reason)
        self.end(reply)

    def end(self, reply: Reply | None = None) -> None:
        """Say `reply` (a 421) and close; abort if the connection is not gone within
        CLOSE_GRACE. close() alone waits until every byte we wrote is sent: a client that reads
        nothing would hold its session, counted, forever."""
        transport = self.transport
        if transport is None or self._lost:
            return
        if self._tls_protocol is not None and not self._tls_up:  # mid-handshake: nothing can be said
            self.abort_session()
            return
        if transport.get_write_buffer_size() > CLOSE_AT_ONCE_BYTES:  # it would never read the 421
            self.abort_session()
            return
        if self._held and not transport.is_closing():  # replies to commands before the end
            transport.write(b"".join(self._held))  # type: ignore[attr-defined]
        self._held.clear()
        if reply is not None and not transport.is_closing():
            transport.write(reply.line)  # type: ignore[attr-defined]
        transport.close()
        if self._abort_handle is None:
            self._abort_handle = self.loop.call_later(CLOSE_GRACE, self.abort_session)

    def abort_session(self) -> None:
        """End the connection now, unsent bytes and all, and release the session. The TCP
        transport is the one aborted (under TLS the TLS layer would first try to say goodbye);
        and as the TLS layer tells us nothing of a connection lost mid-handshake, the session
        is released here if nobody else did it."""
        self._cancel("_abort_handle")
        raw = self._original_transport or self.transport
        if raw is not None:
            raw.abort()
        if not self._lost and self.transport is not None:
            self.loop.call_soon(self._lost_anyway)

    def _lost_anyway(self) -> None:
        if not self._lost and self.transport is not None:
            self.connection_lost(None)

    def _cancel(self, name: str) -> None:
        handle = getattr(self, name)
        if handle is not None:
            handle.cancel()
            setattr(self, name, None)

    def _timeout_cb(self) -> None:
        if self._busy:
            self._reset_timeout()
            return
        if self.transport is None:
            return
        if self.transport.is_closing():  # a close asked for an idle period ago is still not done
            self.abort_session()
            return
        # No SMTP line to a peer that has not sent its PROXY header: it may be no SMTP client.
        self.end(None if self._awaiting_proxy else R.IDLE_TOO_LONG)

    def _cancel_data_deadline(self) -> None:
        self._cancel("_data_deadline")

    @property
    def _awaiting_proxy(self) -> bool:
        return self._proxy_timeout is not None and self.session is not None and self.session.proxy_data is None

    def _data_too_slow(self) -> None:
        self._data_deadline = None
        if not self._busy:
            self._cut("data_timeout", R.DATA_TOO_SLOW)

    # -- envelope addresses ----------------------------------------------------
    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Strict envelope addresses: no control characters (NUL, CR, LF, DEL...) and no
        source routes (<@relay:user@host>, obsolete since RFC 5321 and only useful to abuse
        a relay). aiosmtpd answers a None address with 553 5.1.3."""
        if _CONTROL.search(arg) or arg.lstrip().startswith("<@"):
            return None, None
        # Fast path for the everyday "<dot-atom@domain> PARAMS" (aiosmtpd's parser builds a
        # class per call); anything else - quoting, UTF-8, the null path - goes the full way.
        m = _PLAIN_ADDRESS.match(arg)
        if m:
            return m.group(1), m.group(2) or ""
        try:
            return super()._getaddr(arg)
        except Exception:  # the stdlib header parser fails on "<", '"', "\\@[ " ...
            return None, None  # ... with IndexError, AttributeError: it is a malformed address

    def _getparams(self, params: Any) -> Any:
        """aiosmtpd's parameter check, with SIZE in ASCII digits only (its isdigit() lets
        "²" through to int(), which fails, and takes "١٢٣" as 123)."""
        result = super()._getparams(params)
        size = result.get("SIZE") if result else None
        if isinstance(size, str) and not _DIGITS.fullmatch(size):
            return None  # the syntax reply, 501 5.5.4
        return result

    # -- DATA with a byte budget --------------------------------------------
    def _declared_size(self) -> int | None:
        return declared_size(self.envelope.mail_options if self.envelope else ())

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's own checks and replies, in its order.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not (self.envelope and self.envelope.rcpt_tos):
            await self.push(R.NEED_RCPT)
            return
        if arg:
            await self.push(R.DATA_SYNTAX)
            return
        if self.limits.draining:
            self._refused("shutting_down")
            await self.push(R.SHUTTING_DOWN)
            return
        # At most the default reserve, whatever SIZE says: the real bytes grow it as they come,
        # so a declared 100 MiB cannot hold the budget before a byte of it has arrived.
        reserved = self.limits.reserve(min(self._declared_size() or self.default_reserve, self.default_reserve))
        if reserved is None:
            self._refused("busy")
            await self.push(R.BUSY)
            return
        self._charged = reserved
        content: bytes | FileBytes = b""
        try:
            self._cancel("_envelope_deadline")  # DATA is accepted: the DATA deadline takes over
            await self.push(R.DATA_GO_AHEAD)
            self._data_deadline = self.loop.call_later(self.limits.data_timeout, self._data_too_slow)
            self._receiving = True
            self._cancel("_command_deadline")  # bytes pipelined after DATA were content, not a command
            try:
                content, problem = await self._read_data()
            finally:
                self._receiving = False
                self._cancel_data_deadline()
            if problem:
                self._refused(_REFUSED_AS[problem])
                self._set_post_data_state()
                await self.push(problem)
                return
            self.envelope.content = self.envelope.original_content = content
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push(R.HOOKLESS_OK if status is MISSING else status)
        finally:
            if isinstance(content, FileBytes):  # a spooled message: its file goes whatever happened
                content.close()
            self.limits.release(self._charged)  # exactly what reserve() and grow() charged
            self._charged = 0
            self._arm_envelope_deadline()  # the next message's dialogue starts now
            if self.limits.draining:  # the reply to this message is out: now say goodbye
                self.shutdown()

    async def _read_data(self) -> tuple[bytes | FileBytes, Reply | None]:
        """The DATA payload, read in large chunks instead of aiosmtpd's line by line (several
        times faster for big messages), with aiosmtpd's semantics kept exactly: only
        CRLF.CRLF ends the data (a bare CR or LF never does), the first dot of every line is
        removed, and an over-long line or an over-size message is read to its end and then
        refused. Bytes the client sent after the terminator are given back to the reader.
        Chunks are joined once at the end, so the message is held at most twice, briefly.
        Bytes past what was reserved are charged to the in-flight budget as they arrive; when
        it cannot grow, the message is read to its end, kept nowhere, and refused with
        451 4.3.2 - like an over-size one, so the session stays in step and the sender
        simply retries, rather than a 421 that would also drop its other messages.

        Past server.spool_over_bytes of content (or from the start, when the SIZE declared on
        MAIL is past it) the message is not held at all: what came so
        far, then every chunk as it comes, goes to a spool file (smtp/incoming.py), and the
        content returned is a FileBytes, unstuffed and with its line ends already normalised.
        Its bytes stay charged to the budget. A spool that fails (a full disk) refuses the
        message like a spent budget; a refused or interrupted message's file is closed here."""
        chunks: list[bytes] = []
        kept = 0  # bytes of content so far (held in chunks, or spooled)
        arrived = 0  # bytes read, as charged to the budget
        tail = b"\r\n"  # the end of what came before: at the start, a line begins
        line = 0  # length of the line still open at the end of the last chunk
        problem: Reply | None = None
        limit = self.data_size_limit
        spooled: SpooledData | None = None
        # A message declared larger than the threshold (SIZE=) goes to the spool from its
        # first byte: ten such arriving at once would otherwise each be held up to the threshold.
        declared = self._declared_size() or 0
        try:
            while True:
                chunk = await self._reader.read(_CHUNK)
                if not chunk:
                    raise ConnectionResetError("connection closed during DATA")
                arrived += len(chunk)
                if arrived > self._charged and problem is None:
                    if self.limits.grow(self._charged, arrived - self._charged):
                        self._charged = arrived
                    else:
                        problem = R.BUSY
                window = tail + chunk
                i = window.find(_TERMINATOR)
                if i >= 0:
                    cut = i + 2 - len(tail)  # where the content ends, relative to this chunk
                    leftover = window[i + 5:]
                    chunk = chunk[:cut] if cut >= 0 else b""
                    if cut < 0 and spooled is not None:  # the terminator began in what was spooled
                        try:
                            await spooled.drop_tail(-cut)
                        except OSError as exc:
                            problem = self._spool_failed(exc)
                        kept += cut
                    elif cut < 0 and chunks:  # the terminator began in the previous chunk
                        chunks[-1] = chunks[-1][:cut]
                        kept += cut
                if problem is None:
                    problem = self._check_lines(chunk, line)
                    nl = chunk.rfind(b"\n")
                    line = line + len(chunk) if nl < 0 else len(chunk) - nl - 1
                if problem is None and limit and kept + len(chunk) > limit:
                    problem = R.TOO_BIG
                if problem is None:
                    try:
                        if spooled is None and 0 < self.spool_over_bytes < max(kept + len(chunk), declared):
                            spooled = SpooledData(self.spool_dir)
                            for held in chunks:
                                await spooled.feed(held)
                            chunks.clear()
                        if spooled is not None:
                            await spooled.feed(chunk)
                        else:
                            chunks.append(chunk)
                        kept += len(chunk)
                    except OSError as exc:
                        problem = self._spool_failed(exc)
                if problem is not None:  # read on to the terminator, keep nothing
                    chunks.clear()
                    if spooled is not None:
                        await spooled.discard()
                        spooled = None
                if i >= 0:
                    if leftover:  # pipelined commands: they belong to the command loop
                        self._reader._buffer[0:0] = leftover  # type: ignore[attr-defined]
                    if problem:
                        return b"", problem
                    if spooled is not None:
                        try:
                            content = await spooled.finish()
                        except OSError as exc:
                            return b"", self._spool_failed(exc)  # (closed by the finally below)
                        spooled = None
                        return content, None
                    content = b"".join(chunks)
                    chunks.clear()
                    if content.startswith(b"."):
                        content = content[1:]
                    return content.replace(b"\r\n.", b"\r\n"), None
                tail = window[-4:]
        finally:
            if spooled is not None:  # refused, reset, cancelled or failed: the file goes now
                spooled.abort()

    def _spool_failed(self, exc: OSError) -> Reply:
        """The spool file could not be written (a full or read-only disk): the message is
        refused like one over the budget (451 4.3.2, counted as busy); the admin reads why."""
        if self.log is not None:
            self.log.error("spool_failed", directory=self.spool_dir, error=f"{type(exc).__name__}: {exc}"[:300])
        return R.BUSY

    def _check_lines(self, chunk: bytes, open_line: int) -> Reply | None:
        """A line (up to a line feed) longer than the limit, in this chunk or continued into it."""
        first = chunk.find(b"\n")
        head = len(chunk) if first < 0 else first
        if open_line + head > self._max_line or (first >= 0 and long_line_after(chunk, first, self._max_line,
                                                                                 self._long_line)):
            return R.LINE_TOO_LONG
        return None

    # -- replies and lifecycle ------------------------------------------------
    async def _handle_client(self) -> None:
        try:
            await super()._handle_client()
        except ConnectionResetError:
            # aiosmtpd logs the reset (at info) and re-raises it out of the session task,
            # which asyncio would report as "Task exception was never retrieved" with a
            # traceback: a client hanging up is not an error of ours.
            pass

    async def push(self, status: Any) -> None:
        """aiosmtpd's push, with an enhanced status code, printable ASCII only, and a drain
        bounded by the idle timeout: a client that reads none of our replies for that long is
        gone (its session is aborted), not a session to keep forever."""
        if self._answered:  # half-closed and answered: the session is over
            raise ConnectionResetError("the client closed its side; every command was answered")
        if isinstance(status, Reply):
            status = str(status)
        if isinstance(status, str):
            line = _wire(status)
        else:
            line = status + b"\r\n"
        if self._may_hold(line):
            self._held.append(line)
            return
        if self._held:
            line = b"".join(self._held) + line
            self._held.clear()
        self._writer.write(line)
        if not self._paused:  # (FlowControlMixin) the transport's buffer is below its high mark
            await self._writer.drain()
            return
        try:
            await asyncio.wait_for(self._writer.drain(), self._timeout_duration)
        except asyncio.TimeoutError:
            self.abort_session()
            raise ConnectionResetError("the client read no reply for an idle period") from None

    def _may_hold(self, line: bytes) -> bool:
        """A client that pipelines gets the replies to what it sent together in one write, not
        one write (and drain) each as aiosmtpd does: a reply waits while the next command is
        already here, so the command loop reads it without waiting for the client. Only a
        positive 25x, after which the loop always reads on: never 354 (the message follows),
        220, 221 or 421 (TLS, the end), nor a refusal (some are followed by a close)."""
        return (line[:2] == b"25" and line[2:3] in b"012" and not self._receiving
                and b"\n" in self._reader._buffer)  # type: ignore[attr-defined]

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # A client that rejects our certificate or speaks no TLS: its problem, not a bug.
            # (aiosmtpd closes the connection; the reply goes nowhere.)
            cause = error.__cause__ or error
            self._refused("tls_failed")
            if self.log is not None:
                self.log.info("tls_failed", client=client_ip(self.session) if self.session else None,
                              reason=f"{type(cause).__name__}: {cause}"[:300])
            return str(R.TLS_FAILED)
        if isinstance(error, asyncio.IncompleteReadError) and self._eof:
            # The end of what a half-closed client sent: every command before it is answered.
            self._answered = True
            self.end()
            return ""  # not said: push() ends the command loop
        if isinstance(error, (asyncio.IncompleteReadError, ConnectionError)):
            # The client closed or reset the connection mid-line: its own doing, not a bug.
            # (aiosmtpd usually cancels the session instead; this is the race where the
            # read fails first.) The reply goes nowhere; nothing was accepted.
            if self.log is not None:
                self.log.info("client_gone", error=type(error).__name__)
            return str(R.CONNECTION_CLOSED)
        return await super().handle_exception(error)

    def eof_received(self) -> bool | None:
        """The client half-closed (SHUT_WR), or closed. aiosmtpd cancels the command in
        progress, so a message already relayed got no reply (and would be sent again on
        retry), and pipelined commands none. Here, when a message has arrived (or is
        arriving) or more commands wait in the buffer, the reader just ends where the
        client's bytes end: all of it is processed and answered, then handle_exception()
        closes. A FIN does not tell a half-close from a hang-up, so with nothing but one plain
        command in progress aiosmtpd's way stays: a client that hung up mid-RCPT costs no
        more downstream work (no reply depends on it). Likewise under TLS (no half-close)
        and before the PROXY header."""
        if (self.session is None or self.session.ssl is not None or self._awaiting_proxy
                or not (self.in_flight or self._reader._buffer)):  # type: ignore[attr-defined]
            return super().eof_received()
        self._eof = True
        return asyncio.StreamReaderProtocol.eof_received(self)  # EOF to the reader; stay open for replies

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._tls_protocol is not None:  # RFC 3207 4.2; aiosmtpd would nest TLS inside TLS
            await self.push(R.TLS_ACTIVE)
            return
        if self.envelope is not None and self.envelope.mail_from:
            # aiosmtpd starts a new session at the handshake: the transaction (and the
            # downstream one mirroring it) would be orphaned. Postfix says the same.
            await self.push(R.TLS_IN_TRANSACTION)
            return
        await super().smtp_STARTTLS(arg)
        if not self._tls_up:  # the connection ended during the handshake (we closed it)
            self.abort_session()

    async def smtp_AUTH(self, arg: str) -> None:
        """This hop does not authenticate clients (the MTA in front does): AUTH is neither
        advertised nor accepted, so a sender configured with credentials does not try them
        here forever."""
        await self.push(R.AUTH_DISABLED)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # not the STARTTLS re-entry
        if first and self._proxy_timeout is None:  # with PROXY protocol: once the header is read
            peer = transport.get_extra_info("peername")
            if not self._admit(peer[0] if peer else None):
                # Before aiosmtpd sets anything up: nothing of it runs for this connection.
                self._turned_away = True
                transport.write(R.TOO_MANY_FROM_CLIENT.line)  # type: ignore[attr-defined]
                transport.close()
                return
        if first:
            self.limits.sessions.add(self)
        else:
            self._new_session_after_starttls()
        # STARTTLS starts a new session: the client is still the one the PROXY header named.
        proxy_data = self.session.proxy_data if self.session is not None else None
        super().connection_made(transport)
        if proxy_data is not None:
            self.session.proxy_data = proxy_data
        if first:
            self._arm_envelope_deadline()
        else:  # aiosmtpd discarded the bytes sent before the handshake: no line is open
            self._cancel("_command_deadline")

    def _new_session_after_starttls(self) -> None:
        """aiosmtpd replaces the session at the handshake: the old one ends here, through the
        same hook as at the end of a connection, so what it held (a pooled downstream
        connection) is released instead of orphaned."""
        self._tls_up = True
        closed = getattr(self.event_handler, "session_closed", None)
        if closed is not None and self.session is not None:
            closed(self.session)

    def _admit(self, address: str | None) -> bool:
        """Count this session for its client address; False (and counted as a refusal) when
        that address already has server.max_sessions_per_client sessions."""
        key = client_key(address)
        if key is None:
            return True
        if not self.limits.admit(key):
            self._refused("max_sessions_per_client")
            if self.log is not None:
                self.log.warning("session_refused", reason="max_sessions_per_client", client=address,
                                 sessions=self.limits.clients.get(key, 0))
            return False
        self._client = key
        return True

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if not self._client_bound:
            # The session's task runs every hook: bound once here, before the first (PROXY when
            # the load balancer sends one, so the address it names), every event of the session
            # and of its messages carries the client.
            structlog.contextvars.bind_contextvars(client=client_ip(self.session))
            self._client_bound = True
        if command == "EHLO":  # aiosmtpd offers AUTH after STARTTLS; see smtp_AUTH
            args = (args[0], [r for r in args[1] if not r.startswith("250-AUTH")])
        status = await super()._call_handler_hook(command, *args)
        if command == "PROXY" and status is not MISSING and status:
            # The header names the real client: only now can it be counted. UNKNOWN/LOCAL
            # headers carry no address; the load balancer itself is the client then.
            src = getattr(args[0], "src_addr", None)
            address = str(src) if isinstance(src, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else \
                (self.session.peer[0] if self.session.peer else None)
            if not self._admit(address):
                if self.transport is not None:
                    self.transport.write(R.TOO_MANY_FROM_CLIENT.line)
                return False  # aiosmtpd closes the connection without a greeting
        return status

    def connection_lost(self, error: Exception | None) -> None:
        if self._turned_away or self._lost:  # (abort_session may have got here first)
            return
        self._lost = True
        self._cancel("_abort_handle")
        if self._client is not None:
            self.limits.leave(self._client)
            self._client = None
        self.limits.sessions.discard(self)
        self._cancel_data_deadline()
        self._cancel("_command_deadline")
        self._cancel("_envelope_deadline")
        closed = getattr(self.event_handler, "session_closed", None)
        if closed is not None and self.session is not None:
            closed(self.session)
        super().connection_lost(error)

    def shutdown(self) -> None:
        """Drain: an idle session is told 421 now; one with a message in flight (arriving or
        being processed) after the reply to that message."""
        if not self.in_flight and self.transport is not None:
            self.end(R.SHUTTING_DOWN)

    @property
    def in_flight(self) -> bool:
        return bool(self._busy) or self._receiving
