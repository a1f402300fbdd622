"""aiosmtpd handler hooks. Each returns the reply string; none touches the socket.

The reply rule: 250 to DATA only after the downstream accepted the (rewritten) message;
any doubt is a 4xx, so the sender keeps the mail and retries.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from ..config import Config
from ..auth import Authenticator, SealError, skip_signed, strip_forged
from ..errors import PermanentError, TemporaryError
from ..metrics import Metrics, reply_class
from ..model import Envelope
from ..process import Processor
from ..relay import Downstream, Reply
from ..relay.pool import DownstreamPool
from ..trace import decision_headers, received
from .policy import check_recipient, check_sender

INTERNAL = "451 4.3.0 Internal error; try again later"
LOST = "451 4.4.3 Downstream transaction lost; try again later"


def client_ip(session) -> str | None:
    """The client's address: the one the load balancer's PROXY header named when there is
    one (server.proxy_protocol), else the TCP peer. Everything that logs or records the
    client uses this, never session.peer directly."""
    proxied = getattr(session, "proxy_data", None)
    if proxied and isinstance(proxied.src_addr, (IPv4Address, IPv6Address)):
        return str(proxied.src_addr)
    return session.peer[0] if session.peer else None


def _downstream_reply(reply: Reply) -> str:
    # A 421 from the downstream closes *its* session, not ours: the sender just retries.
    if reply.code == 421:
        return f"451 {reply.text}"  # text starts with the 4.x.x status (Reply guarantees one)
    return str(reply)


def _in_step(ds: Downstream | None, envelope) -> bool:
    """The downstream transaction is the one the sender was told about: its sender, and
    exactly the recipients the sender got 250 for. Every 250 that relies on it checks this."""
    txn = ds.txn if ds is not None else None
    if txn is None:
        return False
    sender = "" if envelope.mail_from == "<>" else envelope.mail_from
    return txn.sender == sender and txn.recipients == list(envelope.rcpt_tos)


class Handler:
    def __init__(self, cfg: Config, processor: Processor, pool: DownstreamPool, log, hostname: str,
                 metrics: Metrics | None = None, auth: Authenticator | None = None):
        self.cfg = cfg
        self.auth = auth or Authenticator(cfg.auth, hostname)
        self.metrics = metrics or Metrics()
        self.processor = processor
        self.pool = pool
        self.log = log
        self.hostname = hostname
        self.accepted = tuple(d.lower().rstrip(".") for d in cfg.server.accepted_domains)

    # -- session ----------------------------------------------------------------
    async def handle_EHLO(self, server, session, envelope, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return responses[:-1] + ["250-ENHANCEDSTATUSCODES"] + responses[-1:]

    async def handle_PROXY(self, server, session, envelope, proxy_data) -> bool:
        """A valid PROXY header (aiosmtpd closes the connection on a malformed one before
        asking). UNKNOWN (v1) or LOCAL (v2) carries no address: the load balancer's own
        connection, e.g. a health check; the TCP peer is the client then."""
        return bool(proxy_data)

    def session_closed(self, session) -> None:
        proxied = getattr(session, "proxy_data", None)
        if self.cfg.server.proxy_protocol and not proxied:  # closed without a valid PROXY header
            peer = session.peer[0] if session.peer else None
            if proxied is None:  # nothing, or too late (a load balancer's plain TCP check looks like this)
                self.log.info("proxy_refused", peer=peer, error="no PROXY header")
            else:
                self.log.warning("proxy_refused", peer=peer, error=proxied.error or "malformed PROXY header")
            self.metrics.refused("proxy_header")
        # A reset connection ends the session without cancelling a command in flight (only
        # EOF does): closing its downstream connection here makes that command fail, and the
        # failure is the client's doing, not a downstream fault.
        session.client_gone = True
        ds = getattr(session, "downstream", None)
        if ds is not None:
            session.downstream = None
            self.pool.put(ds)  # kept only when provably idle: a reply still due closes it

    async def handle_QUIT(self, server, session, envelope) -> str:
        ds = getattr(session, "downstream", None)
        if ds is not None:
            session.downstream = None
            if ds.txn is not None:
                await ds.rset()
            self.pool.put(ds)
        return "221 2.0.0 Bye"

    async def handle_RSET(self, server, session, envelope) -> str:
        ds = getattr(session, "downstream", None)
        if ds is not None:
            await ds.rset()
        return "250 2.0.0 Ok"

    async def handle_exception(self, error: Exception) -> str:
        self.log.error("smtp_internal_error", exc_info=error)
        return INTERNAL

    # -- envelope ---------------------------------------------------------------
    async def handle_MAIL(self, server, session, envelope, address: str, mail_options: list[str]) -> str:
        refusal = check_sender(address)
        if refusal:
            envelope.smtp_utf8 = False  # aiosmtpd set it from this refused command's parameters
            self.log.info("mail_refused", client=client_ip(session), sender=address, reply=refusal)
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        ds = getattr(session, "downstream", None)
        if ds is not None and ds.txn is not None:
            await ds.rset()
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.cfg.server.max_recipients:
            self.metrics.refused("too_many_recipients")
            return "452 4.5.3 Too many recipients"
        refusal = check_recipient(address, self.accepted)
        if refusal:
            self.log.info("rcpt_refused", client=client_ip(session), rcpt=address, reply=refusal)
            self.metrics.refused("relay_denied")
            return refusal
        ds = getattr(session, "downstream", None)
        if envelope.rcpt_tos and not _in_step(ds, envelope):
            # Never reached by design (a failed replay keeps the transaction): a fresh one here
            # would lose the recipients that already got 250.
            self.log.error("transaction_lost", client=client_ip(session), rcpt=address,
                           recipients=list(envelope.rcpt_tos))
            return LOST
        try:
            if ds is None:
                ds = session.downstream = self.pool.get()
            if ds.txn is None:
                reply = await self._downstream_mail(ds, envelope)
                if reply is not None:
                    return reply
            reply = await ds.rcpt(address)
        except TemporaryError as exc:
            if getattr(session, "client_gone", False):  # the reply goes nowhere; no outage either
                self.log.info("client_gone", client=client_ip(session), command="RCPT", rcpt=address,
                              detail=exc.detail)
            else:
                self.log.warning("downstream_unavailable", client=client_ip(session),
                                 rcpt=address, reply=exc.reply, detail=exc.detail)
            return exc.reply
        except asyncio.CancelledError:  # aiosmtpd cancels the command when the client sends EOF
            self.log.info("client_gone", client=client_ip(session), command="RCPT", rcpt=address)
            raise
        if reply.ok:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return _downstream_reply(reply)

    async def _downstream_mail(self, ds: Downstream, envelope) -> str | None:
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        options = []
        if not ds.connected:
            await ds.open()  # to learn its extensions before choosing MAIL parameters
        if envelope.smtp_utf8:
            if not ds.supports("smtputf8"):
                return "553 5.6.7 The destination does not accept internationalized (SMTPUTF8) mail"
            options.append("SMTPUTF8")
        if "BODY=8BITMIME" in envelope.mail_options and ds.supports("8bitmime"):
            options.append("BODY=8BITMIME")
        reply = await ds.mail(sender, options)
        return None if reply.ok else _downstream_reply(reply)

    # -- message ----------------------------------------------------------------
    async def handle_DATA(self, server, session, envelope) -> str:
        started = time.monotonic()
        queue_id = secrets.token_hex(5).upper()
        info: dict[str, Any] = {
            "queue_id": queue_id, "client": client_ip(session),
            "helo": session.host_name, "sender": envelope.mail_from, "recipients": list(envelope.rcpt_tos),
            "size": len(envelope.original_content or b""),
        }
        with server.busy():
            try:
                reply, extra = await self._deliver(server, session, envelope, queue_id)
            except Exception as exc:  # a bug must not bounce mail: 451 and a traceback
                self.log.error("message_internal_error", exc_info=exc, **info)
                ds = getattr(session, "downstream", None)
                if ds is not None:
                    ds.close()
                reply, extra = INTERNAL, {"outcome": "failed"}
        info.update(extra)
        self.log.info("message", reply=reply, ms=round((time.monotonic() - started) * 1000), **info)
        self.metrics.message(info.get("outcome", "failed"), reply)
        return reply

    async def _deliver(self, server, session, envelope, queue_id: str) -> tuple[str, dict]:
        ds: Downstream | None = getattr(session, "downstream", None)
        if not _in_step(ds, envelope):  # the 250 below would be for recipients not sent to
            txn = ds.txn if ds is not None else None
            if ds is not None:
                await ds.rset()
            return LOST, {"outcome": "deferred",
                          "detail": f"downstream transaction: {txn.recipients if txn else None}"[:300]}
        data = strip_forged(envelope.original_content, self.auth)
        dkim_results = await self.auth.verify(data)
        if skip_signed(dkim_results, self.cfg.policy):  # a passing signature from a listed domain only
            return await self._relay_untouched(ds, session, envelope, queue_id, data, dkim_results)
        try:
            outcome = await self.processor.process(data, Envelope(
                client_ip=client_ip(session) or "", helo=session.host_name or "",
                mail_from="" if envelope.mail_from == "<>" else envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos), mail_options=tuple(envelope.mail_options),
                smtputf8=envelope.smtp_utf8))
        except (PermanentError, TemporaryError) as exc:
            await ds.rset()
            kind = "rejected" if isinstance(exc, PermanentError) else "deferred"
            return exc.reply, {"outcome": kind}
        an = outcome.analysis
        self._log_attachments(an.attachments, queue_id)
        trace = self._received(session, envelope, queue_id) + self.auth.results_header(dkim_results)
        trace += decision_headers(an.attachments, queue_id, outcome.changed)
        if outcome.storage_failed:
            trace += b"X-Smtp-Offload-Warning: offload failed; attachments kept in the message\r\n" \
                if self.cfg.policy.on_storage_failure == "keep" else \
                b"X-Smtp-Offload-Warning: offload failed; attachments removed\r\n"
        message = trace + outcome.message
        if self.auth.arc_key is not None and (outcome.changed or self.cfg.auth.arc.seal_unchanged):
            try:
                message = await asyncio.to_thread(self.auth.seal, message) + message
            except SealError as exc:  # no seal could be made: relay it unsealed, loudly
                self.log.warning("arc_seal_failed", queue_id=queue_id, error=str(exc)[:200])
                self.metrics.arc_seal_failed()
        extra = {"message_id": an.message_id, "size_out": len(message), "changed": outcome.changed,
                 "attachments": len(an.attachments)}
        if not message.isascii() and not ds.supports("8bitmime") and not envelope.smtp_utf8:
            await ds.rset()
            await self.processor.discard(outcome.stored)
            return ("554 5.6.3 Message has 8-bit content the destination cannot accept",
                    {**extra, "outcome": "rejected"})
        sent = time.monotonic()
        try:
            reply = await ds.data(message)
        except TemporaryError as exc:
            self.metrics.downstream_data(time.monotonic() - sent, "error")
            await self.processor.discard(outcome.stored)
            return exc.reply, {**extra, "outcome": "deferred", "detail": exc.detail}
        self.metrics.downstream_data(time.monotonic() - sent, reply_class(reply.code))
        if not reply.ok:
            await self.processor.discard(outcome.stored)
            return _downstream_reply(reply), {**extra, "outcome": "deferred" if reply.code < 500 else "rejected"}
        text = f"250 2.0.0 Ok: queued as {queue_id}"
        return text, {**extra, "outcome": "relayed", "downstream_reply": str(reply)[:200]}

    def _received(self, session, envelope, queue_id: str) -> bytes:
        proto = ("UTF8SMTP" if envelope.smtp_utf8 else "ESMTP" if session.extended_smtp else "SMTP") + \
            ("S" if session.ssl else "")
        return received(helo=session.host_name or "", client_ip=client_ip(session) or "unknown",
                        hostname=self.hostname, protocol=proto, queue_id=queue_id,
                        recipients=tuple(envelope.rcpt_tos))

    async def _relay_untouched(self, ds, session, envelope, queue_id: str, data: bytes, dkim_results) -> tuple[str, dict]:
        """policy.on_signed = "skip" and a passing signature from policy.skip_signed_domains:
        the message goes on uninspected and unchanged."""
        head = self._received(session, envelope, queue_id) + self.auth.results_header(dkim_results)
        head += b"X-Smtp-Offload: v=1; id=" + queue_id.encode() + b"; action=skipped-signed\r\n"
        try:
            reply = await ds.data(head + data)
        except TemporaryError as exc:
            return exc.reply, {"outcome": "deferred", "detail": exc.detail}
        if not reply.ok:
            return _downstream_reply(reply), {"outcome": "deferred" if reply.code < 500 else "rejected"}
        return f"250 2.0.0 Ok: queued as {queue_id}", {"outcome": "relayed", "skipped": "dkim-signed"}

    def _log_attachments(self, attachments, queue_id: str) -> None:
        for a in attachments:
            self.log.info(
                "attachment", queue_id=queue_id, part=a.part.path, name=a.name, declared_type=a.declared_type,
                detected_type=a.judgement.detected_type, size=len(a.data), sha256=a.sha256,
                verdict=a.verdict.value, reason=a.reason, storage_key=a.storage_key,
                offload_failed=a.offload_failed or None,
            )
