"""Message processing between SMTP in and relay: analyse, plan, offload, render.

The pure stages live in pipeline.py; this module adds the one side effect, storage, with
its time budget and the fail-open policy.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from .breaker import CircuitBreaker
from .config import INSPECT_KEYS, Config
from .errors import PermanentError, StorageError, TemporaryError
from .inspect import InspectPolicy
from .links import link_url
from .links.tokens import new_grant, sign
from .metrics import Metrics
from .mime import scan
from .model import Attachment, Envelope, Verdict
from .pipeline import (Analysis, PlanPolicy, Rejection, analyse, has_bare_newlines, normalize_line_endings, plan,
                       render)
from .storage.base import Store, StoredObject, make_key

INLINE_BYTES = 256 * 1024  # messages below this are parsed on the event loop
BARE_NEWLINES = "Message has bare CR or LF line endings; lines must end with CRLF (RFC 5321 2.3.8)"
STORAGE_DOWN = "Attachment storage is unavailable and the message is too large to deliver without it; try again later"


def inspect_policy(cfg: Config) -> InspectPolicy:
    p = cfg.policy
    return InspectPolicy(blocked_types=p.blocked_types, blocked_extensions=p.blocked_extensions,
                         allowed_types=p.allowed_types or None, **{k: getattr(p, k) for k in INSPECT_KEYS})


def plan_policy(cfg: Config) -> PlanPolicy:
    p, d = cfg.policy, cfg.downstream
    return PlanPolicy(
        offload_over_bytes=p.offload_over_bytes, max_message_bytes=d.max_message_bytes,
        max_attachments=d.max_attachments,
        actions={Verdict.EMPTY: p.on_empty, Verdict.SPOOFED: p.on_spoofed, Verdict.BLOCKED: p.on_blocked},
        on_tnef=p.on_tnef, on_partial=p.on_partial, on_encrypted=p.on_encrypted, on_uuencode=p.on_uuencode,
    )


@dataclass
class Outcome:
    analysis: Analysis
    message: bytes  # the message to relay, without this hop's trace headers
    stored: list[str] = field(default_factory=list)  # storage keys written for this message
    storage_failed: bool = False

    @property
    def changed(self) -> bool:
        return self.message is not self.analysis.data


@dataclass(frozen=True)
class _ObjectContext:
    """What every file of one message is stored with."""

    message_id: str | None
    sender: str | None
    received: str  # ISO 8601, now
    day: datetime  # the key's date: the message's own Date when plausible, so retries agree
    tenant: str | None

    @classmethod
    def of(cls, an: Analysis, envelope: Envelope | None, tenant_from: str) -> "_ObjectContext":
        now = datetime.now(timezone.utc)
        day = now
        date_header = scan.root_header(an.data, an.root, "date")
        if date_header:
            try:
                parsed = email.utils.parsedate_to_datetime(date_header)
                if parsed.tzinfo is not None and abs(parsed - now) < timedelta(days=3):
                    day = parsed
            except (TypeError, ValueError, IndexError):
                pass
        tenant = None
        if tenant_from == "recipient-domain" and envelope and envelope.rcpt_tos:
            tenant = envelope.rcpt_tos[0].rpartition("@")[2]
        elif tenant_from.startswith("header:"):
            tenant = scan.root_header(an.data, an.root, tenant_from[len("header:"):])
        return cls(an.message_id, envelope.mail_from if envelope else None,
                   now.isoformat(timespec="seconds"), day, tenant or None)


class Processor:
    def __init__(self, cfg: Config, store: Store | None, secret: list[bytes] | None, log,
                 metrics: Metrics | None = None):
        self.cfg = cfg
        self.store = store
        self.secrets = secret  # [signing secret, *old secrets] (links.secret.load_secrets)
        self.log = log
        self.metrics = metrics or Metrics()
        self.breaker = CircuitBreaker(cfg.policy.breaker_failures, cfg.policy.breaker_cooldown_seconds, log)
        self.metrics.watch_breaker(self.breaker)
        self.inspect_policy = inspect_policy(cfg)
        p = cfg.policy
        self.mime_limits = scan.Limits(max_depth=p.max_mime_depth, max_parts=p.max_mime_parts,
                                       max_header_bytes=p.max_header_bytes, max_params=p.max_header_params,
                                       max_encoded_words=p.max_encoded_words)
        self.plan_policy = plan_policy(cfg)

    def evaluate(self, data: bytes) -> tuple[Analysis, Rejection | None]:
        if self.cfg.server.bare_newlines == "reject" and has_bare_newlines(data):
            raise PermanentError(BARE_NEWLINES, code=554, status="5.5.2")
        try:
            an = analyse(normalize_line_endings(data), self.inspect_policy, self.mime_limits)
        except scan.MimeError as exc:
            raise PermanentError(f"Message structure refused: {exc}", code=550, status="5.6.0") from None
        if an.ambiguities and self.cfg.policy.on_ambiguous_mime == "reject":
            raise PermanentError(f"Ambiguous MIME structure: {an.ambiguities[0]}", code=550, status="5.6.0")
        return an, plan(an, self.plan_policy)

    def decide(self, data: bytes) -> Analysis:
        """analyse + plan; raises PermanentError when policy rejects the message."""
        an, rejection = self.evaluate(data)
        if rejection is not None:
            self.metrics.attachments(an.attachments)
            raise PermanentError(rejection.text, code=550, status="5.7.1")
        return an

    async def process(self, data: bytes, envelope: Envelope | None = None) -> Outcome:
        # Parsing and rewriting a big message is CPU work for a worker thread, so it never holds
        # the event loop every other session shares; a small one (bounded by the structure
        # limits) is done inline: handing it to a thread would cost more than the work.
        inline = len(data) < INLINE_BYTES
        an = self.decide(data) if inline else await asyncio.to_thread(self.decide, data)
        wanted = [a for a in an.attachments if a.verdict is Verdict.OFFLOAD]
        stored, failed = await self._offload(an, wanted, envelope) if wanted else ([], [])
        keep_inline = self.cfg.policy.on_storage_failure == "keep"
        for a in failed:
            a.offload_failed = True
            if keep_inline:
                a.verdict, a.reason = Verdict.KEEP, "offload failed; kept in the message"
        self.metrics.attachments(an.attachments)
        message = render(an) if inline else await asyncio.to_thread(render, an)
        if failed and keep_inline and len(message) > self.cfg.downstream.max_message_bytes:
            await self.discard(stored)
            raise TemporaryError(STORAGE_DOWN, code=451, status="4.3.0")
        return Outcome(an, message, stored, bool(failed))

    async def _offload(self, an: Analysis, wanted: list[Attachment],
                       envelope: Envelope | None) -> tuple[list[str], list[Attachment]]:
        assert self.store is not None
        if not self.breaker.allow():
            for a in wanted:
                self.log.warning("offload_failed", name=a.name, size=len(a.data), error="circuit_open")
            return [], list(wanted)
        ctx = _ObjectContext.of(an, envelope, self.cfg.storage.tenant)
        tasks = {asyncio.create_task(self._put(a, ctx)): a for a in wanted}
        done, pending = await asyncio.wait(tasks, timeout=self.cfg.policy.storage_timeout)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
        stored, failed = [], []
        for task, a in tasks.items():
            if task in done and task.exception() is None:
                stored.append(a.storage_key)
                continue
            failed.append(a)
            exc = None if task in pending else task.exception()
            self.log.warning("offload_failed", name=a.name, size=len(a.data),
                             error="timeout" if exc is None else type(exc).__name__,
                             detail=str(exc)[:200] if isinstance(exc, StorageError) else None)
        if failed:
            self.breaker.failure()
        else:
            self.breaker.success()
        return [k for k in stored if k], failed

    async def _put(self, a: Attachment, ctx: "_ObjectContext") -> None:
        assert self.store is not None and self.secrets is not None
        unique = None
        if ctx.message_id:
            # Same message, same file -> same key: a retried delivery overwrites, never duplicates.
            seed = "\0".join((ctx.message_id, a.sha256, a.name, a.part.path, ctx.tenant or ""))
            unique = hashlib.sha256(seed.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        key = make_key(a.name, ctx.day, prefix=self.store.key_prefix, tenant=ctx.tenant, unique=unique)
        started, result = time.monotonic(), "error"
        try:
            obj = await self.store.put(a.data, StoredObject(
                key=key, size=len(a.data), sha256=a.sha256, content_type=a.judgement.detected_type, filename=a.name,
                message_id=ctx.message_id, sender=ctx.sender, date=ctx.received, tenant=ctx.tenant))
            result = "ok"
        except asyncio.CancelledError:  # policy.storage_timeout ran out
            result = "timeout"
            raise
        finally:
            self.metrics.storage_put(time.monotonic() - started, result, len(a.data))
        links = self.cfg.links
        a.storage_key = obj.key
        if links.mode == "presigned":  # the store's own URL goes into the mail; nothing to sign
            a.link_expires = int(time.time()) + links.ttl_seconds
            a.link = await self.store.presign(obj, links.ttl_seconds)
            if a.link is None:
                raise StorageError("this store cannot presign URLs")
        else:  # the mail links to the link service, which mints a short-lived URL per click
            grant = new_grant(obj.key, links.ttl_seconds, ctx.message_id)
            a.link_expires = grant.expires
            a.link = link_url(links.base_url, sign(grant, self.secrets[0]))

    async def discard(self, keys: list[str]) -> None:
        """Delete files stored for a message that was not delivered (the sender will retry)."""
        if self.store is None:
            return
        for key in keys:
            try:
                await self.store.delete(key)
            except (StorageError, OSError) as exc:
                self.log.warning("discard_failed", storage_key=key, error=type(exc).__name__)
