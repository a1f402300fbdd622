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

from .. import replies as R
from ..delivery.pipeline import Envelope, Inbound, Pipeline, downstream_reply
from ..errors import TemporaryError
from ..log import log_context
from .policy import check_recipient, check_sender


def client_ip(session) -> str | None:
    """The client's address: the one the load balancer's PROXY header named when there is
    one (server.proxy_protocol), else the TCP peer. Everything that logs or records the
    client uses this, never session.peer directly."""
    proxied = getattr(session, "proxy_data", None)
    if proxied and isinstance(proxied.src_addr, (IPv4Address, IPv6Address)):
        return str(proxied.src_addr)
    return session.peer[0] if session.peer else None


def _in_step(ds, envelope) -> bool:
    """The downstream transaction is the one the sender was told about: its sender, and
    exactly the recipients the sender got 250 for. Every 250 that relies on it checks this."""
    txn = ds.txn if ds is not None else None
    if txn is None:
        return False
    sender = "" if envelope.mail_from == "<>" else envelope.mail_from
    return txn.sender == sender and txn.recipients == list(envelope.rcpt_tos)


class Handler:
    """aiosmtpd's hooks: map the envelope to the downstream transaction and a message to the
    delivery pipeline, and their answers to replies. `pool` lends downstream connections;
    `metrics` counts refusals and messages."""

    def __init__(self, pipeline: Pipeline, pool, log, metrics, *, accepted_domains: list[str],
                 max_recipients: int, proxy_protocol: bool = False):
        self.pipeline = pipeline
        self.pool = pool
        # Assembled once (log.configure() has run): structlog's lazy proxy assembles a logger
        # on every call, some microseconds even for an event below the level.
        self.log = log.bind() if hasattr(log, "bind") else log
        self.metrics = metrics
        self.max_recipients = max_recipients
        self.proxy_protocol = proxy_protocol
        self.accepted = tuple(d.lower().rstrip(".") for d in accepted_domains)

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
        if self.proxy_protocol and not proxied:  # closed without a valid PROXY header
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
        return str(R.BYE)

    async def handle_RSET(self, server, session, envelope) -> str:
        ds = getattr(session, "downstream", None)
        if ds is not None:
            await ds.rset()
        return str(R.OK)

    async def handle_exception(self, error: Exception) -> str:
        self.log.error("smtp_internal_error", exc_info=error)
        return str(R.INTERNAL)

    # -- envelope ---------------------------------------------------------------
    async def handle_MAIL(self, server, session, envelope, address: str, mail_options: list[str]) -> str:
        refusal = check_sender(address)
        if refusal:
            envelope.smtp_utf8 = False  # aiosmtpd set it from this refused command's parameters
            self.log.info("mail_refused", sender=address, reply=refusal)
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        ds = getattr(session, "downstream", None)
        if ds is not None and ds.txn is not None:
            await ds.rset()
        return str(R.SENDER_OK)

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            self.metrics.refused("too_many_recipients")
            return str(R.TOO_MANY_RECIPIENTS)
        refusal = check_recipient(address, self.accepted)
        if refusal:
            self.log.info("rcpt_refused", rcpt=address, reply=refusal)
            self.metrics.refused("relay_denied")
            return refusal
        ds = getattr(session, "downstream", None)
        if envelope.rcpt_tos and not _in_step(ds, envelope):
            # Never reached by design (a failed replay keeps the transaction): a fresh one here
            # would lose the recipients that already got 250.
            self.log.error("transaction_lost", rcpt=address,
                           recipients=list(envelope.rcpt_tos))
            return str(R.TRANSACTION_LOST)
        try:
            if ds is None:
                ds = session.downstream = self.pool.get()
            if ds.txn is None:  # the first recipient opens the transaction downstream
                options = await self._mail_options(ds, envelope)
                if isinstance(options, str):
                    return options
                sender = "" if envelope.mail_from == "<>" else envelope.mail_from
                mail, rcpt = await ds.mail_rcpt(sender, options, address)
                if rcpt is None:  # MAIL refused downstream: that refusal is the answer
                    return downstream_reply(mail)
                reply = rcpt
            else:
                reply = await ds.rcpt(address)
        except TemporaryError as exc:
            if getattr(session, "client_gone", False):  # the reply goes nowhere; no outage either
                self.log.info("client_gone", command="RCPT", rcpt=address,
                              detail=exc.detail)
            else:
                self.log.warning("downstream_unavailable", rcpt=address, reply=exc.reply, detail=exc.detail)
                self.metrics.refused("downstream_unavailable")  # no message counter moves before DATA
            return exc.reply
        except asyncio.CancelledError:  # aiosmtpd cancels the command when the client sends EOF
            self.log.info("client_gone", command="RCPT", rcpt=address)
            raise
        if reply.ok:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return downstream_reply(reply)

    async def _mail_options(self, ds, envelope) -> list[str] | str:
        """The MAIL parameters for the downstream, or the reply refusing the recipient."""
        options = []
        if not ds.connected:
            await ds.open()  # to learn its extensions before choosing MAIL parameters
        if envelope.smtp_utf8:
            if not ds.supports("smtputf8"):
                return str(R.NO_SMTPUTF8)
            options.append("SMTPUTF8")
        if "BODY=8BITMIME" in envelope.mail_options and ds.supports("8bitmime"):
            options.append("BODY=8BITMIME")
        return options

    # -- message ----------------------------------------------------------------
    async def handle_DATA(self, server, session, envelope) -> str:
        started = time.monotonic()
        queue_id = secrets.token_hex(5).upper()
        info: dict[str, Any] = {
            "helo": session.host_name, "sender": envelope.mail_from, "recipients": list(envelope.rcpt_tos),
            "size": len(envelope.original_content or b""),
        }
        # Every event of this message (attachment, offload_failed, arc_seal_failed ...) carries its
        # queue_id, and the session's client (bound by the server before the session's first hook).
        with log_context(queue_id=queue_id), server.busy():
            try:
                reply, outcome, extra = await self._deliver(session, envelope, queue_id)
            except Exception as exc:  # a bug must not bounce mail: 451 and a traceback
                self.log.error("message_internal_error", exc_info=exc, **info)
                ds = getattr(session, "downstream", None)
                if ds is not None:
                    ds.close()
                reply, outcome, extra = str(R.INTERNAL), "failed", {}
            finally:
                # A spooled message (spool.FileBytes): relayed or not, its file is done with.
                close = getattr(envelope.original_content, "close", None)
                if close is not None:
                    close()
            self.log.info("message", reply=reply, outcome=outcome, ms=round((time.monotonic() - started) * 1000),
                          **info, **extra)
        self.metrics.message(outcome, reply)
        return reply

    async def _deliver(self, session, envelope, queue_id: str) -> tuple[str, str, dict]:
        ds = getattr(session, "downstream", None)
        if not _in_step(ds, envelope):  # the 250 below would be for recipients not sent to
            txn = ds.txn if ds is not None else None
            if ds is not None:
                await ds.rset()
            return str(R.TRANSACTION_LOST), "deferred", {
                "detail": f"downstream transaction: {txn.recipients if txn else None}"[:300]}
        smtputf8 = bool(envelope.smtp_utf8)
        protocol = ("UTF8SMTP" if smtputf8 else "ESMTP" if session.extended_smtp else "SMTP") + \
            ("S" if session.ssl else "")
        inbound = Inbound(envelope.original_content, Envelope(
            client_ip=client_ip(session) or "", helo=session.host_name or "",
            mail_from="" if envelope.mail_from == "<>" else envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos), mail_options=tuple(envelope.mail_options), smtputf8=smtputf8),
            queue_id, protocol)
        delivered = await self.pipeline.deliver(inbound, ds)
        return delivered.reply, delivered.outcome, delivered.fields
