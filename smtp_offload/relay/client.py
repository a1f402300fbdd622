"""One downstream connection that mirrors the client's transaction, command by command.

Like Postfix's before-queue proxy, each RCPT is passed on as it arrives and the
downstream's verdict goes back to the sender, so no recipient is ever silently dropped.
Commands are written with `execute_command` on purpose: aiosmtplib's `mail()`/`rcpt()`
re-parse addresses with `email.utils.parseaddr`, which must not decide where mail goes
(and would turn the null reverse-path into something else). The envelope is sent verbatim.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field

import aiosmtplib

from ..config import DownstreamConfig
from ..errors import TemporaryError

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
        text = _UNPRINTABLE.sub(" ", " ".join(message.split()))[:300]
        if not _ENHANCED.match(text):
            cls_digit = str(code)[0]
            status = cls_digit + default_status[1:]
            text = f"{status} {text}".rstrip()
        return cls(code, text)


UNAVAILABLE = "Downstream mail server unavailable; try again later"


def _fail(exc: BaseException) -> TemporaryError:
    return TemporaryError(UNAVAILABLE, code=451, status="4.4.1", detail=f"{type(exc).__name__}: {exc}"[:300])


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
        self.txn: Transaction | None = None

    @property
    def connected(self) -> bool:
        return self.smtp is not None and self.smtp.is_connected

    def supports(self, extension: str) -> bool:
        return bool(self.smtp and self.smtp.supports_extension(extension))

    async def open(self) -> None:
        cfg = self.cfg
        start_tls = {"none": False, "opportunistic": None, "required": True}[cfg.tls]
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
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise _fail(exc) from exc
        self.smtp = smtp

    async def _command(self, *args: bytes, default_status: str) -> Reply:
        if not self.connected:
            await self.open()
        assert self.smtp is not None
        try:
            resp = await self.smtp.execute_command(*args)
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.close()
            raise _fail(exc) from exc
        return Reply.from_downstream(resp.code, resp.message, default_status)

    async def mail(self, sender: str, options: list[str]) -> Reply:
        args = (b"MAIL", b"FROM:" + _addr(sender), *(o.encode("ascii") for o in options))
        reused = self.connected
        try:
            reply = await self._command(*args, default_status="2.1.0")
        except TemporaryError:
            if not reused:
                raise
            # A connection kept from an earlier transaction may have been closed by the
            # downstream's idle timeout: one fresh attempt before giving up.
            reply = await self._command(*args, default_status="2.1.0")
        self.txn = Transaction(sender, options) if reply.ok else None
        return reply

    async def rcpt(self, recipient: str) -> Reply:
        reply = await self._command(b"RCPT", b"TO:" + _addr(recipient), default_status="2.1.5")
        if reply.ok and self.txn is not None:
            self.txn.recipients.append(recipient)
        return reply

    async def rset(self) -> None:
        self.txn = None
        if self.connected:
            try:
                await self._command(b"RSET", default_status="2.0.0")
            except TemporaryError:
                pass

    async def data(self, message: bytes) -> Reply:
        """Send the message for the current transaction and return the downstream's verdict.

        If the connection went away while the client was still sending (a slow DATA can
        outlast the downstream's idle timeout), the transaction is replayed once on a new
        connection; if the downstream then answers any recipient differently, nothing is
        sent and the sender is asked to retry — never a partial delivery.
        """
        txn = self.txn
        assert txn is not None and txn.recipients, "DATA without an accepted recipient"
        self.txn = None
        if not self.connected:
            await self._replay(txn)
        assert self.smtp is not None
        try:
            # aiosmtplib's data path does CRLF line ends, dot-stuffing and the final dot.
            resp = await self.smtp.data(message, timeout=self.cfg.data_timeout)
        except aiosmtplib.SMTPResponseException as exc:
            return Reply.from_downstream(exc.code, exc.message, "5.0.0")
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.close()
            raise _fail(exc) from exc
        return Reply.from_downstream(resp.code, resp.message, "2.0.0")

    async def _replay(self, txn: Transaction) -> None:
        reply = await self.mail(txn.sender, txn.options)
        if not reply.ok:
            raise TemporaryError(UNAVAILABLE, code=451, status="4.4.1")
        for r in txn.recipients:
            if not (await self.rcpt(r)).ok:
                await self.rset()
                raise TemporaryError("Downstream changed its answer for a recipient; try again later",
                                     code=451, status="4.4.3")

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
