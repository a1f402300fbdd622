"""One downstream connection that mirrors the client's transaction, command by command.

Like Postfix's before-queue proxy, each RCPT is passed on as it arrives and the
downstream's verdict goes back to the sender, so no recipient is ever silently dropped.
Commands are written with `execute_command` on purpose: aiosmtplib's `mail()`/`rcpt()`
re-parse addresses with `email.utils.parseaddr`, which must not decide where mail goes
(and would turn the null reverse-path into something else). The envelope is sent verbatim.

A connection outlives the session that opened it (relay.pool), so it must never carry a
reply into the next session: a reply read for the wrong command is how a sender gets
someone else's `554`, or a `250` for a message nobody sent. Hence, like Postfix's smtp
client, a connection is reused only when it is provably idle — no command in flight and
every byte the downstream sent read as the reply to a command we sent. Any interruption
(the client gone, a timeout, a cancellation) closes it, and a reply that breaks the
protocol (`250` to DATA, a reply nobody asked for, bytes that are no SMTP reply) gives
the sender `451 4.4.2` and closes it too.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.protocol import MAX_LINE_LENGTH

from .. import replies as R
from ..config import DownstreamConfig, DownstreamTls
from ..errors import SmtpReplyError, TemporaryError
from ..linestream import data_block_chunks
from ..spool import FileBytes, Pieces

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")  # never inside a command line (aiosmtplib refuses them too)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\b")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class Reply:
    code: int
    text: str  # with an enhanced status code

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def __str__(self) -> str:
        return f"{self.code} {self.text}"

    @classmethod
    def from_downstream(cls, code: int, message: str, default_status: str) -> "Reply":
        """The downstream's answer in a form safe to show the sender: one printable line,
        with an enhanced status code (ours when the downstream gave none)."""
        if _UNPRINTABLE.search(message) or "  " in message or message != message.strip():
            message = _UNPRINTABLE.sub(" ", " ".join(message.split()))
        text = message[:300]  # (the everyday one-line reply is already that)
        if not _ENHANCED.match(text):
            cls_digit = str(code)[0]
            status = cls_digit + default_status[1:]
            text = f"{status} {text}".rstrip()
        return cls(code, text)


def _fail(exc: BaseException) -> SmtpReplyError:
    """451 4.4.1: a TemporaryError (the catalogue's 4xx replies raise as one)."""
    return R.DOWNSTREAM_UNAVAILABLE.error(detail=f"{type(exc).__name__}: {exc}"[:300])


def _protocol_error(detail: str) -> SmtpReplyError:
    """451 4.4.2: a TemporaryError."""
    return R.DOWNSTREAM_PROTOCOL.error(detail=detail[:300])


class ReplyCounter:
    """Counts the complete replies in the bytes a downstream sends, as they arrive.

    aiosmtplib drops bytes that arrive while no command waits for a reply, and keeps
    bytes that came with a reply for the next command: either way a reply nobody asked
    for would go unnoticed, or be read as the answer to the next command. Counting every
    reply on the wire, whatever aiosmtplib does with it, tells whether each command got
    exactly one. A line is the last of its reply unless its fourth byte is "-" (the rule
    aiosmtplib parses by, bare LF included)."""

    def __init__(self) -> None:
        self.replies = 0
        self._head = b""  # the first bytes (at most 4) of a line not yet ended

    @property
    def mid_line(self) -> bool:
        return bool(self._head)

    def feed(self, data: bytes) -> None:
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            head = (self._head + data[start:min(start + 4, nl + 1)])[:4]
            if head[3:4] != b"-":
                self.replies += 1
            self._head = b""
            start = nl + 1
        if start < len(data):
            self._head = (self._head + data[start:start + 4])[:4]


class _Collector:
    """Reads the replies to commands written together (RFC 2920 pipelining), which
    aiosmtplib cannot: it reads one reply per command written, and drops bytes that arrive
    while it holds a reply not yet picked up. While a collector is active the connection's
    bytes come here instead. Parsed as aiosmtplib parses (a line is the last of its reply
    unless its fourth byte is "-"); `done` gets the replies once `n` are complete, or the
    first that is a 421 (the downstream is closing: no later reply will come)."""

    def __init__(self, n: int, done: "asyncio.Future[list[SMTPResponse]]"):
        self.n = n
        self.done = done
        self.replies: list[SMTPResponse] = []
        self._buffer = bytearray()
        self._lines: list[bytes] = []

    def feed(self, data: bytes) -> None:
        if self.done.done():
            return  # past the last reply asked for: the reply counter tells
        self._buffer += data
        while not self.done.done() and (nl := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:nl + 1])
            del self._buffer[:nl + 1]
            if len(line) > MAX_LINE_LENGTH or not line[:3].isdigit():
                self.fail(aiosmtplib.SMTPResponseException(
                    aiosmtplib.SMTPStatus.invalid_response, f"Malformed SMTP response line: {line[:80]!r}"))
                return
            self._lines.append(line)
            if line[3:4] == b"-":
                continue
            text = b"\n".join(l[4:].strip(b" \t\r\n") for l in self._lines)
            self.replies.append(SMTPResponse(int(line[:3]), text.decode("utf-8", "surrogateescape")))
            self._lines = []
            if len(self.replies) == self.n or self.replies[-1].code == 421:
                self.done.set_result(self.replies)
        if len(self._buffer) > MAX_LINE_LENGTH:
            self.fail(aiosmtplib.SMTPResponseException(aiosmtplib.SMTPStatus.invalid_response, "Response too long"))

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")


def _data_block(message: bytes) -> bytes:
    """The message as it goes on the wire after DATA: CRLF line ends, dot-stuffed, with the
    final dot (what aiosmtplib's data() does; we send it ourselves to check the 354 first).
    It runs on the event loop: what the pipeline relays already has CRLF line ends, so the
    regex pass is only for what does not, and dot-stuffing is a plain replace (a 25 MB
    message costs milliseconds, not a third of a second of every session's time)."""
    crlf = message.count(b"\r\n")
    if message.count(b"\r") != crlf or message.count(b"\n") != crlf:
        message = _LINE_ENDS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    return (b"." + stuffed if stuffed.startswith(b".") else stuffed) + b".\r\n"


async def _stream(protocol, chunks, timeout: float) -> tuple[SMTPResponse, bool]:
    """Write the DATA block for `chunks` with flow control, and read the reply: (the reply,
    whether it came before the whole block was written). The same bytes as _data_block().

    The reply is awaited from before the first byte, and while a block drains, so one sent
    early (a downstream that refuses a message too big for it and stops reading) is the answer,
    rather than dropped or waited past. aiosmtplib offers no public drain: `_drain_helper` is
    its FlowControlMixin's (stdlib's StreamWriter.drain() waits on the same), pinned below 6 in
    pyproject.toml with the parse buffer read in open()."""
    reply = asyncio.ensure_future(protocol.read_response())
    try:
        async with asyncio.timeout(timeout):
            for block in data_block_chunks(chunks):
                if reply.done():
                    return reply.result(), True
                protocol.write(block)
                drained = asyncio.ensure_future(protocol._drain_helper())  # the transport took it
                try:
                    await asyncio.wait((drained, reply), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not drained.done():
                        drained.cancel()
                if drained.done() and not drained.cancelled():
                    error = drained.exception()  # (retrieved, even when the reply makes it moot)
                    if error is not None and not reply.done():
                        raise error  # ConnectionResetError: the connection is gone
            return await reply, False
    except TimeoutError:
        raise aiosmtplib.SMTPReadTimeoutError("Timed out sending the message or waiting for its reply") from None
    finally:
        if not reply.done():
            reply.cancel()
        elif not reply.cancelled():
            reply.exception()  # retrieved: a lost connection raised above is not reported twice


def _line(*args: bytes) -> bytes:
    """One command line; a control character in an argument would be a second command."""
    if any(_CONTROL.search(a) for a in args):
        raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(args) + b"\r\n"


def _addr(address: str) -> bytes:
    return b"<" + address.encode("utf-8", "surrogateescape") + b">"


@dataclass
class Transaction:
    sender: str
    options: list[str]
    recipients: list[str] = field(default_factory=list)


class Downstream:
    def __init__(self, cfg: DownstreamConfig, local_hostname: str):
        self.cfg = cfg
        self.local_hostname = local_hostname
        self.smtp: aiosmtplib.SMTP | None = None
        # The sender's transaction as it was told: its sender and every recipient it got 250
        # for. It lives until the sender ends it (RSET, a new MAIL, DATA), whatever happens to
        # the connection: a connection lost mid-envelope only means it must be opened again.
        self.txn: Transaction | None = None
        # The connection self.txn is open on, with all its recipients. Tied to the connection
        # object, not a flag: a downstream that closes between two of our commands leaves
        # nothing open, and the next command must replay the transaction on a new connection.
        self._open_on: aiosmtplib.SMTP | None = None
        self._counter = ReplyCounter()
        self._asked = 0  # replies asked for on this connection (since EHLO)
        self._busy = False  # a command is in flight: its reply is not read yet
        self._verified = False  # the bytes left after EHLO could be checked
        # The connection's bytes go to the collector in it while replies to pipelined
        # commands are read; one slot per connection (a new one at each open()).
        self._slot: list[_Collector | None] = [None]

    @property
    def connected(self) -> bool:
        return self.smtp is not None and self.smtp.is_connected

    @property
    def idle(self) -> bool:
        """Provably idle, so safe for another session: connected, no transaction open, no
        command in flight, and every byte the downstream sent read as a reply we asked for."""
        return (self.connected and self._verified and self.txn is None and not self._busy
                and not self._unread())

    @property
    def _open(self) -> bool:
        return self._open_on is not None and self._open_on is self.smtp and self.connected

    def _unread(self) -> bool:
        counter = self._counter
        return counter.replies != self._asked or bool(counter._head)  # (mid_line, without the call)

    def supports(self, extension: str) -> bool:
        return bool(self.smtp and self.smtp.supports_extension(extension))

    async def open(self) -> None:
        cfg = self.cfg
        start_tls = {DownstreamTls.NONE: False, DownstreamTls.OPPORTUNISTIC: None, DownstreamTls.REQUIRED: True}[cfg.tls]
        ctx = None
        if not cfg.tls_verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        smtp = aiosmtplib.SMTP(
            hostname=cfg.host, port=cfg.port, local_hostname=self.local_hostname,
            timeout=cfg.command_timeout, start_tls=start_tls, validate_certs=cfg.tls_verify,
            tls_context=ctx,
        )
        try:
            await smtp.connect(timeout=cfg.connect_timeout)
            if smtp.last_ehlo_response is None and smtp.last_helo_response is None:
                await smtp.ehlo()
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            if exc.code == aiosmtplib.SMTPStatus.invalid_response:  # bytes that are no SMTP reply
                raise _protocol_error(f"{type(exc).__name__}: {exc}") from exc
            raise _fail(exc) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise _fail(exc) from exc
        except BaseException:  # cancelled: nobody will ever close it otherwise
            smtp.close()
            raise
        protocol = smtp.protocol
        if protocol is None:
            smtp.close()
            raise _fail(aiosmtplib.SMTPServerDisconnected("Connection lost after EHLO"))
        # Bytes that came with the greeting or EHLO reply and were not part of it: aiosmtplib
        # would read them as the reply to our next command. `_buffer` is its parse buffer,
        # the one internal read here (aiosmtplib is pinned below 6 in pyproject.toml for it);
        # should it ever go, the connection still serves this session but is never pooled.
        leftover = getattr(protocol, "_buffer", None)
        if leftover:
            smtp.close()
            raise _protocol_error("unexpected bytes after the greeting or EHLO reply")
        self._verified = leftover is not None
        self._counter, self._asked, self._busy = ReplyCounter(), 0, False
        counter, received, lost = self._counter, protocol.data_received, protocol.connection_lost
        slot: list[_Collector | None] = [None]
        self._slot = slot

        def data_received(data: bytes) -> None:
            counter.feed(data)
            if slot[0] is not None:
                slot[0].feed(data)
            else:
                received(data)

        def connection_lost(exc: Exception | None) -> None:
            if slot[0] is not None:
                slot[0].fail(aiosmtplib.SMTPServerDisconnected("Connection lost"))
            lost(exc)

        # The transport calls the protocol's data_received for every chunk (TLS too: the
        # SSL layer calls the same attribute), so the counter sees every byte.
        protocol.data_received = data_received  # type: ignore[method-assign]
        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        self.smtp = smtp

    async def _exchange(self, send: Callable[[aiosmtplib.SMTP], Awaitable[Any]], replies: int = 1) -> Any:
        """One command and its reply (or `replies` pipelined commands and theirs), on a
        connection that must end this provably in step with the downstream, or closed."""
        smtp = self.smtp
        if smtp is None:
            # Closed under us: the session ended (its client hung up) while this command's
            # coroutine was about to go on, which Python 3.11's wait_for can let happen
            # instead of delivering the cancellation.
            raise _fail(aiosmtplib.SMTPServerDisconnected("connection closed by the session"))
        if self._unread():  # something arrived that no command of ours asked for
            self.close()
            raise _protocol_error("reply nobody asked for waiting before a command")
        self._busy = True
        self._asked += replies
        try:
            resp = await send(smtp)
        except aiosmtplib.SMTPResponseException as exc:  # garbage, an over-long line
            self.close()
            raise _protocol_error(f"{type(exc).__name__}: {exc}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.close()
            raise _fail(exc) from exc
        except BaseException:  # cancelled (the client went away) or a bug: the reply stays unread
            self.close()
            raise
        if isinstance(resp, list) and len(resp) < replies:  # a 421 ended them: no more will come
            self.close()
            return resp
        last = resp[-1] if isinstance(resp, list) else resp
        if self._unread():  # more than one reply came: which one answered us is anyone's guess
            self.close()
            raise _protocol_error(f"more than one reply to one command (first: {last.code})")
        self._busy = False
        if last.code == 421:  # the downstream is closing this connection: never hand it on
            self.close()
        return resp

    async def _command(self, *args: bytes, default_status: str) -> Reply:
        if not self.connected:
            await self.open()
        resp = await self._exchange(lambda smtp: smtp.execute_command(*args))
        if not (200 <= resp.code < 300 or 400 <= resp.code < 600):
            self.close()
            raise _protocol_error(f"{resp.code} to {args[0].decode()}")
        return Reply.from_downstream(resp.code, resp.message, default_status)

    async def mail(self, sender: str, options: list[str]) -> Reply:
        """Begin the sender's transaction (the caller reset any earlier one)."""
        reply = await self._mail(sender, options)
        self.txn = Transaction(sender, options) if reply.ok else None
        self._open_on = self.smtp if reply.ok else None
        return reply

    async def _mail(self, sender: str, options: list[str]) -> Reply:
        args = (b"MAIL", b"FROM:" + _addr(sender), *(o.encode("ascii") for o in options))
        reused = self.connected
        try:
            return await self._command(*args, default_status="2.1.0")
        except TemporaryError:
            if not reused:
                raise
            # A connection kept from an earlier transaction may have been closed by the
            # downstream's idle timeout: one fresh attempt before giving up.
            return await self._command(*args, default_status="2.1.0")

    async def mail_rcpt(self, sender: str, options: list[str], recipient: str) -> tuple[Reply, Reply | None]:
        """Begin the transaction with its first recipient: MAIL's reply and RCPT's (None when
        MAIL was refused). A downstream that offers PIPELINING (RFC 2920) gets both in one
        write and answers both in one; the replies mean exactly what they mean one by one.
        A reply too many that arrives with them is a protocol error, as for one command; one
        that comes before them in a write of its own (a downstream repeating itself) shifts
        both, as it shifts the answer to a single command: the reply still due is then
        found unread before the next command (DATA included), which gets 451 4.4.2 and
        closes the connection, so nothing is relayed on a shifted transaction."""
        reused = self.connected
        if not reused:
            await self.open()
        if not self.supports("pipelining"):
            mail = await self.mail(sender, options)
            return mail, (await self.rcpt(recipient) if mail.ok else None)
        lines = (_line(b"MAIL", b"FROM:" + _addr(sender), *(o.encode("ascii") for o in options)),
                 _line(b"RCPT", b"TO:" + _addr(recipient)))
        try:
            mail, rcpt = await self._pipelined(lines, ("2.1.0", "2.1.5"))
        except TemporaryError:
            if not reused:
                raise
            # As in _mail(): a pooled connection the downstream closed while idle; one fresh try.
            self.close()
            await self.open()
            if not self.supports("pipelining"):
                mail = await self.mail(sender, options)
                return mail, (await self.rcpt(recipient) if mail.ok else None)
            mail, rcpt = await self._pipelined(lines, ("2.1.0", "2.1.5"))
        if not mail.ok:
            if rcpt is not None and rcpt.ok:  # a recipient without a sender: nobody knows what is open
                self.close()
            self.txn, self._open_on = None, None
            return mail, None
        assert rcpt is not None
        self.txn = Transaction(sender, options, [recipient] if rcpt.ok else [])
        self._open_on = self.smtp
        return mail, rcpt

    async def _pipelined(self, lines: tuple[bytes, ...], statuses: tuple[str, ...]) -> list[Reply | None]:
        """Write the command lines at once and read their replies. A 421 ends it early (the
        downstream closes; the replies after it are None), and the connection is closed."""
        done: asyncio.Future[list[SMTPResponse]] = asyncio.get_running_loop().create_future()

        async def send(smtp: aiosmtplib.SMTP) -> list[SMTPResponse]:
            protocol = smtp.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
            self._slot[0] = collector = _Collector(len(lines), done)
            try:
                protocol.write(b"".join(lines))
                async with asyncio.timeout(self.cfg.command_timeout):
                    return await done
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from None
            finally:
                if self._slot[0] is collector:
                    self._slot[0] = None

        responses = await self._exchange(send, replies=len(lines))
        out: list[Reply | None] = []
        for resp, status in zip(responses, statuses):
            if not (200 <= resp.code < 300 or 400 <= resp.code < 600):
                self.close()
                raise _protocol_error(f"{resp.code} to {lines[len(out)].split(b' ', 1)[0].decode()}")
            out.append(Reply.from_downstream(resp.code, resp.message, status))
        return out + [None] * (len(lines) - len(out))

    async def rcpt(self, recipient: str) -> Reply:
        if self.txn is not None and not self._open:
            # The connection went away mid-transaction (downstream timeout, protocol error), or
            # an earlier replay failed: a RCPT alone would get "503 need MAIL", a 5xx for a good
            # recipient, and a new transaction would drop the recipients already told 250.
            await self._replay(self.txn)
            self._open_on = self.smtp
        reply = await self._command(b"RCPT", b"TO:" + _addr(recipient), default_status="2.1.5")
        if reply.ok and self.txn is not None:
            self.txn.recipients.append(recipient)
        return reply

    async def rset(self) -> None:
        """The sender ended its transaction (RSET, a new MAIL, a message refused here)."""
        self.txn = None
        await self._reset()

    async def _reset(self) -> None:
        """Leave no transaction open on this connection (closed if RSET is not answered 250)."""
        self._open_on = None
        if self.connected:
            try:
                reply = await self._command(b"RSET", default_status="2.0.0")
            except TemporaryError:
                return
            if not reply.ok:  # a transaction may still be open on it: never hand it on
                self.close()

    async def data(self, message: bytes | Pieces | FileBytes) -> Reply:
        """Send the message for the current transaction and return the downstream's verdict.

        A message in memory (bytes) is written at once; a large one (a spool.Pieces or
        FileBytes) is read, dot-stuffed and written a window at a time, each written only when
        the connection has taken the one before (flow control), so it is never held whole.

        If the connection went away while the client was still sending (a slow DATA can
        outlast the downstream's idle timeout), the transaction is replayed once on a new
        connection; if the downstream then answers any recipient differently, nothing is
        sent and the sender is asked to retry — never a partial delivery.
        """
        txn = self.txn
        assert txn is not None and txn.recipients, "DATA without an accepted recipient"
        replay = not self._open
        self.txn, self._open_on = None, None  # DATA ends the transaction, whatever its outcome
        if replay:
            await self._replay(txn)
        # DATA and the message are sent in two steps, not with aiosmtplib's data(): it turns
        # any reply to DATA other than 354 into an SMTPDataError, a 250 included, which
        # cannot be told from a 250 to the final dot.
        start = await self._exchange(lambda smtp: smtp.execute_command(b"DATA"))
        if 400 <= start.code < 600:  # a refusal, passed on; the transaction may still be open
            reply = Reply.from_downstream(start.code, start.message, "5.0.0")
            await self.rset()
            return reply
        if start.code != 354:
            self.close()
            raise _protocol_error(f"{start.code} to DATA")
        early = False  # the downstream answered before the end of the message

        async def send(smtp: aiosmtplib.SMTP) -> SMTPResponse:
            nonlocal early
            protocol = smtp.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
            if isinstance(message, (bytes, bytearray)):
                protocol.write(_data_block(message))
                return await protocol.read_response(timeout=self.cfg.data_timeout)
            resp, early = await _stream(protocol, message.chunks(), self.cfg.data_timeout)
            return resp

        resp = await self._exchange(send)
        if early:  # the rest of our DATA block is still due: the connection is good for nothing
            self.close()
            if resp.code < 400:
                raise _protocol_error(f"{resp.code} before the end of the message")
        if 200 <= resp.code < 300 or 400 <= resp.code < 600:
            return Reply.from_downstream(resp.code, resp.message, "2.0.0" if resp.code < 300 else "5.0.0")
        self.close()
        raise _protocol_error(f"{resp.code} to the end of the message")

    async def _replay(self, txn: Transaction) -> None:
        """Open the sender's transaction (again) on this connection, or a new one: MAIL and
        every recipient it was told 250 for. Any other answer raises a 4xx and leaves nothing
        of it open downstream, while `txn` stays as it was: the next command of the
        transaction replays it again, and the sender never loses a recipient it was told 250
        for to a fresh transaction."""
        reply = await self._mail(txn.sender, txn.options)
        if not reply.ok:  # nothing opened downstream
            raise R.DOWNSTREAM_UNAVAILABLE.error(detail=f"replayed MAIL: {reply}"[:300])
        for r in txn.recipients:
            reply = await self._command(b"RCPT", b"TO:" + _addr(r), default_status="2.1.5")
            if not reply.ok:
                await self._reset()
                raise R.DOWNSTREAM_CHANGED.error(detail=f"replayed RCPT: {reply}"[:300])

    async def quit(self) -> None:
        if self.connected:
            assert self.smtp is not None
            try:
                await self.smtp.quit(timeout=5)
            except (aiosmtplib.SMTPException, OSError):
                pass
        self.close()

    def close(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
        self.smtp = None
        self._open_on = None
