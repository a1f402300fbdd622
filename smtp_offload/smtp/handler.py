"""aiosmtpd handler hooks. Each returns the reply string; none touches the socket.

The reply rule: 250 to DATA only after the downstream accepted the (rewritten) message;
any doubt is a 4xx, so the sender keeps the mail and retries.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from ..config import Config
from ..errors import PermanentError, TemporaryError
from ..model import Envelope
from ..process import Processor
from ..relay import Downstream, Reply
from ..relay.pool import DownstreamPool
from ..trace import decision_headers, received
from .policy import check_recipient

INTERNAL = "451 4.3.0 Internal error; try again later"


def _downstream_reply(reply: Reply) -> str:
    # A 421 from the downstream closes *its* session, not ours: the sender just retries.
    if reply.code == 421:
        return f"451 {reply.text}"  # text starts with the 4.x.x status (Reply guarantees one)
    return str(reply)


class Handler:
    def __init__(self, cfg: Config, processor: Processor, pool: DownstreamPool, log, hostname: str):
        self.cfg = cfg
        self.processor = processor
        self.pool = pool
        self.log = log
        self.hostname = hostname
        self.accepted = tuple(d.lower().rstrip(".") for d in cfg.server.accepted_domains)

    # -- session ----------------------------------------------------------------
    async def handle_EHLO(self, server, session, envelope, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return responses[:-1] + ["250-ENHANCEDSTATUSCODES"] + responses[-1:]

    def session_closed(self, session) -> None:
        ds = getattr(session, "downstream", None)
        if ds is not None:
            session.downstream = None
            self.pool.put(ds)  # kept only when no transaction is open on it

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
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        ds = getattr(session, "downstream", None)
        if ds is not None and ds.txn is not None:
            await ds.rset()
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.cfg.server.max_recipients:
            return "452 4.5.3 Too many recipients"
        refusal = check_recipient(address, self.accepted)
        if refusal:
            self.log.info("rcpt_refused", client=session.peer[0] if session.peer else None, rcpt=address,
                          reply=refusal)
            return refusal
        try:
            ds = getattr(session, "downstream", None)
            if ds is None:
                ds = session.downstream = self.pool.get()
            if ds.txn is None:
                reply = await self._downstream_mail(ds, envelope)
                if reply is not None:
                    return reply
            reply = await ds.rcpt(address)
        except TemporaryError as exc:
            self.log.warning("downstream_unavailable", client=session.peer[0] if session.peer else None,
                             rcpt=address, reply=exc.reply, detail=exc.detail)
            return exc.reply
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
            "queue_id": queue_id, "client": session.peer[0] if session.peer else None,
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
        return reply

    async def _deliver(self, server, session, envelope, queue_id: str) -> tuple[str, dict]:
        ds: Downstream | None = getattr(session, "downstream", None)
        if ds is None or ds.txn is None:
            return "451 4.3.0 Downstream transaction lost; try again later", {"outcome": "deferred"}
        try:
            outcome = await self.processor.process(envelope.original_content, Envelope(
                client_ip=session.peer[0] if session.peer else "", helo=session.host_name or "",
                mail_from="" if envelope.mail_from == "<>" else envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos), mail_options=tuple(envelope.mail_options),
                smtputf8=envelope.smtp_utf8))
        except (PermanentError, TemporaryError) as exc:
            await ds.rset()
            kind = "rejected" if isinstance(exc, PermanentError) else "deferred"
            return exc.reply, {"outcome": kind}
        an = outcome.analysis
        self._log_attachments(an.attachments, queue_id)
        proto = ("UTF8SMTP" if envelope.smtp_utf8 else "ESMTP" if session.extended_smtp else "SMTP") + \
            ("S" if session.ssl else "")
        trace = received(helo=session.host_name or "", client_ip=session.peer[0] if session.peer else "unknown",
                         hostname=self.hostname, protocol=proto, queue_id=queue_id,
                         recipients=tuple(envelope.rcpt_tos))
        trace += decision_headers(an.attachments, queue_id, outcome.changed)
        if outcome.storage_failed:
            trace += b"X-Smtp-Offload-Warning: offload failed; attachments kept in the message\r\n" \
                if self.cfg.policy.on_storage_failure == "keep" else \
                b"X-Smtp-Offload-Warning: offload failed; attachments removed\r\n"
        message = trace + outcome.message
        extra = {"message_id": an.message_id, "size_out": len(message), "changed": outcome.changed,
                 "attachments": len(an.attachments)}
        if not message.isascii() and not ds.supports("8bitmime") and not envelope.smtp_utf8:
            await ds.rset()
            await self.processor.discard(outcome.stored)
            return ("554 5.6.3 Message has 8-bit content the destination cannot accept",
                    {**extra, "outcome": "rejected"})
        try:
            reply = await ds.data(message)
        except TemporaryError as exc:
            await self.processor.discard(outcome.stored)
            return exc.reply, {**extra, "outcome": "deferred", "detail": exc.detail}
        if not reply.ok:
            await self.processor.discard(outcome.stored)
            return _downstream_reply(reply), {**extra, "outcome": "deferred" if reply.code < 500 else "rejected"}
        text = f"250 2.0.0 Ok: queued as {queue_id}"
        return text, {**extra, "outcome": "relayed", "downstream_reply": str(reply)[:200]}

    def _log_attachments(self, attachments, queue_id: str) -> None:
        for a in attachments:
            self.log.info(
                "attachment", queue_id=queue_id, part=a.part.path, name=a.name, declared_type=a.declared_type,
                detected_type=a.judgement.detected_type, size=len(a.data), sha256=a.sha256,
                verdict=a.verdict.value, reason=a.reason, storage_key=a.storage_key,
                offload_failed=a.offload_failed or None,
            )
