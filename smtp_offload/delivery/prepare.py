"""Prepare: turn a plan into the bytes to relay. Store the files to offload, mint their links,
render the notice and the rewritten message, add this hop's trace headers, ARC-seal.

Prepare owns the rollback of whatever it stored: `rollback(prepared)` deletes the files of a
message that was not delivered (the sender will retry, and the retry stores them again).
Storage down means fail open (policy.on_storage_failure); a message that then no longer fits
the downstream is deferred (451), never truncated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .. import replies as R
from ..auth import AuthResults, Authenticator, SealError
from ..breaker import CircuitBreaker
from ..config import LinksConfig, LinksMode, TenantFrom
from ..errors import StorageError
from ..links.service import LinkError, mint
from ..metrics import Metrics
from ..mime import rewrite as rw
from ..mime import scan
from ..model import Envelope, FileOutcome, Verdict
from ..notices import Notices
from ..notices import render as render_notice
from ..quarantine.records import Holder, Origin
from ..spool import FileBytes, Pieces, in_thread
from ..storage.base import Store, StoredObject, display_text, make_key
from ..storage.routed import store_for
from ..trace import decision_headers, received
from .decide import OUR_HEADERS, Decision, Plan
from .policy import Fit, PreparePolicy, StorageFailure

INLINE_BYTES = 256 * 1024  # messages below this are rendered on the event loop
_HELD = (Verdict.SPOOFED, Verdict.BLOCKED)  # stripped files policy.quarantine keeps (an empty one is nothing)


@dataclass(frozen=True)
class Prepared:
    # What goes downstream: trace headers (and seal) + the message; for a spooled message a
    # Pieces (literals and ranges of its file), streamed by the relay.
    message: bytes | Pieces
    outcomes: tuple[FileOutcome, ...] = ()
    changed: bool = False  # the body differs from what was received
    stored: tuple[str, ...] = ()  # keys written for this message (rollback deletes them)
    message_id: str | None = None
    held: tuple[str, ...] = ()  # quarantine ids kept for this message (rollback deletes them too)


@dataclass(frozen=True)
class Inbound:
    """One received message as the pipeline sees it, whichever face it came in by."""

    data: bytes | FileBytes  # a large one spooled as it arrived (dot-unstuffed, line ends normalised)
    envelope: Envelope
    queue_id: str
    protocol: str = "ESMTP"  # for the Received line: SMTP, ESMTP, ESMTPS, UTF8SMTPS ...


@dataclass(frozen=True)
class _Context:
    """What every file of one message is stored with."""

    message_id: str | None
    sender: str | None
    received: str  # ISO 8601, now
    day: datetime  # the key's date: the message's own Date when plausible, so retries agree
    tenant: str | None
    from_header: str | None = None  # the visible From and Subject, for the landing page (display only)
    subject: str | None = None


def _context(plan: Plan, envelope: Envelope | None, tenant_from: tuple[TenantFrom, str]) -> _Context:
    an = plan.analysis
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
    kind, header = tenant_from
    tenant = None
    if kind is TenantFrom.RECIPIENT_DOMAIN and envelope and envelope.rcpt_tos:
        tenant = envelope.rcpt_tos[0].rpartition("@")[2]
    elif kind is TenantFrom.HEADER:
        tenant = scan.root_header(an.data, an.root, header)
    return _Context(an.message_id, envelope.mail_from if envelope else None,
                    now.isoformat(timespec="seconds"), day, tenant or None,
                    display_text(scan.display_header(an.data, an.root, "from")),
                    display_text(scan.display_header(an.data, an.root, "subject")))


def as_decided(plan: Plan) -> tuple[FileOutcome, ...]:
    """Each decision as its outcome, before anything is stored (offloaded files have no link yet)."""
    return tuple(FileOutcome(d.file, d.verdict, d.reason) for d in plan.decisions)


def rewrites(plan: Plan, outcomes: tuple[FileOutcome, ...]) -> bool:
    """Will the relayed message differ from the received one?"""
    an = plan.analysis
    return any(o.verdict is not Verdict.KEEP for o in outcomes) or bool(
        an.forged_headers or an.ambiguities or an.renamed)


def render(plan: Plan, outcomes: tuple[FileOutcome, ...] | None = None,
           notices: Notices | None = None) -> bytes | Pieces:
    """The message with removed files replaced by the notice (without our trace headers);
    the notice from `notices` (notices.language), else in English. For a spooled message a
    Pieces: what is kept is read from its file as it is sent."""
    an = plan.analysis
    outcomes = as_decided(plan) if outcomes is None else outcomes
    if not rewrites(plan, outcomes):
        return an.data if isinstance(an.data, bytes) else Pieces(an.data, [(0, len(an.data))])
    changed = [o for o in outcomes if o.verdict is not Verdict.KEEP]
    notice_text = notice_html = None
    if changed:
        notice_text, notice_html = notices.render(changed) if notices is not None else render_notice(changed)
    return rw.rewrite(an.data, an.root, [o.file.part for o in changed], notice_text, notice_html, OUR_HEADERS)


class Preparer:
    def __init__(self, *, store: Store | None, secret: bytes | None, links: LinksConfig, policy: PreparePolicy,
                 fit: Fit, tenant_from: tuple[TenantFrom, str], auth: Authenticator, hostname: str, log: Any,
                 metrics: Metrics | None = None, seal_unchanged: bool = False, holder: Holder | None = None,
                 notices: Notices | None = None):
        self.store = store
        self.holder = holder  # policy.quarantine: stripped spoofed and blocked files are kept here
        self.secret = secret  # the signing secret (links.secret.load_secrets()[0])
        self.links = links
        self.policy = policy
        self.fit = fit
        self.tenant_from = tenant_from
        self.auth = auth
        self.hostname = hostname
        self.log = log
        self.metrics = metrics or Metrics()
        self.seal_unchanged = seal_unchanged
        self.notices = notices or Notices()  # the text put into changed messages (notices.*)
        # One breaker per store: a routed store that keeps failing must not turn offloading off
        # for the customers of the others.
        self.breakers: dict[str, CircuitBreaker] = {}
        self.breaker = self._breaker(None)

    def _breaker(self, tenant: str | None) -> CircuitBreaker:
        name = store_for(self.store, tenant)[0] if self.store is not None else ""
        if name not in self.breakers:
            self.breakers[name] = CircuitBreaker(self.policy.breaker_failures, self.policy.breaker_cooldown_seconds,
                                                 self.log, name=f"storage:{name}" if name else "storage")
            self.metrics.watch_breaker(self.breakers[name])
        return self.breakers[name]

    # -- the message ------------------------------------------------------------------------
    async def prepare(self, plan: Plan, inbound: Inbound, auth: AuthResults) -> Prepared:
        """Store, link, render, trace, seal. Raises TemporaryError (451) when storage failed and
        the message kept whole would not fit the downstream (what was stored is deleted)."""
        outcomes = await self.offload(plan, inbound.envelope)
        stored = tuple(o.storage_key for o in outcomes if o.storage_key)
        failed = any(o.offload_failed for o in outcomes)
        self.metrics.attachments(outcomes)
        for o in outcomes:
            self.log.info("attachment", part=o.file.part.path, name=o.name, declared_type=o.file.declared_type,
                          detected_type=o.file.judgement.detected_type, size=o.size, sha256=o.file.sha256,
                          verdict=o.verdict.value, reason=o.reason, storage_key=o.storage_key,
                          offload_failed=o.offload_failed or None)
        inline = len(plan.analysis.data) < INLINE_BYTES  # a big one is CPU work for a worker thread
        body = render(plan, outcomes, self.notices) if inline \
            else await in_thread(render, plan, outcomes, self.notices)
        if failed and self.policy.on_storage_failure is StorageFailure.KEEP \
                and len(body) > self.fit.max_message_bytes:
            await self.discard(stored)
            raise R.STORAGE_DOWN.error()
        changed = rewrites(plan, outcomes)
        trace = self._received(inbound) + self.auth.results_header(auth)
        trace += decision_headers(outcomes, inbound.queue_id, changed)
        if failed:
            trace += b"X-Smtp-Offload-Warning: offload failed; attachments " + (
                b"kept in the message\r\n" if self.policy.on_storage_failure is StorageFailure.KEEP
                else b"removed\r\n")
        message = trace + body if isinstance(body, bytes) else body.prepend(trace)
        if changed or self.seal_unchanged:
            message = await self._seal(message)
        held = tuple(o.quarantine_id for o in outcomes if o.quarantine_id)
        return Prepared(message, outcomes, changed, stored, plan.analysis.message_id, held)

    def untouched(self, inbound: Inbound, data: bytes | FileBytes, auth: AuthResults) -> Prepared:
        """policy.on_signed = "skip" and a passing signature from a listed domain: the message
        goes on uninspected and unchanged, under our trace headers."""
        head = self._received(inbound) + self.auth.results_header(auth)
        head += b"X-Smtp-Offload: v=1; id=" + inbound.queue_id.encode() + b"; action=skipped-signed\r\n"
        if isinstance(data, FileBytes):  # streamed from its file behind our header
            return Prepared(Pieces(data, [(0, len(data))]).prepend(head))
        return Prepared(head + data)

    def _received(self, inbound: Inbound) -> bytes:
        env = inbound.envelope
        return received(helo=env.helo, client_ip=env.client_ip or "unknown", hostname=self.hostname,
                        protocol=inbound.protocol, queue_id=inbound.queue_id, recipients=env.rcpt_tos)

    async def _seal(self, message: bytes | Pieces) -> bytes | Pieces:
        if self.auth.arc_key is None:
            return message
        try:
            if isinstance(message, bytes):
                return await in_thread(self.auth.seal, message) + message
            # dkimpy signs one buffer: a spooled message is read into memory for the seal (its
            # size, once, while it is sealed) and still relayed from its file.
            return message.prepend(await in_thread(lambda: self.auth.seal(message.read_all())))
        except SealError as exc:  # no seal could be made: relay it unsealed, loudly
            self.log.warning("arc_seal_failed", error=str(exc)[:200])
            self.metrics.arc_seal_failed()
            return message

    # -- the files --------------------------------------------------------------------------
    async def offload(self, plan: Plan, envelope: Envelope | None) -> tuple[FileOutcome, ...]:
        """Each decision's outcome: the files to offload stored and linked, within
        policy.storage_timeout for all of them; a failed one per policy.on_storage_failure."""
        wanted = [d for d in plan.decisions if d.verdict is Verdict.OFFLOAD]
        stripped = [d for d in plan.decisions if d.verdict in _HELD]
        if not wanted and not (stripped and self.holder is not None):
            return as_decided(plan)
        ctx = _context(plan, envelope, self.tenant_from)
        done = await self._store_all(wanted, ctx) if wanted else {}
        outcomes = tuple(done.get(id(d)) or FileOutcome(d.file, d.verdict, d.reason) for d in plan.decisions)
        return await self._hold(plan, outcomes, envelope, ctx)

    async def _hold(self, plan: Plan, outcomes: tuple[FileOutcome, ...], envelope: Envelope | None,
                    ctx: _Context) -> tuple[FileOutcome, ...]:
        """Each stripped spoofed or blocked file kept in the quarantine, its outcome given the
        item's id (None where holding failed: the file is stripped all the same)."""
        todo = [i for i, o in enumerate(outcomes) if o.verdict in _HELD]
        if self.holder is None or not todo:
            return outcomes
        an = plan.analysis
        origin = Origin.of(message_id=ctx.message_id, subject=scan.root_header(an.data, an.root, "subject"),
                           sender=ctx.sender, recipients=envelope.rcpt_tos if envelope else (),
                           from_header=scan.root_header(an.data, an.root, "from"), received=ctx.received,
                           tenant=ctx.tenant)
        ids = await asyncio.gather(*(self.holder.hold(outcomes[i].file, outcomes[i].verdict.value, outcomes[i].reason,
                                                      origin, outcomes[i].file.part.path) for i in todo))
        held = dict(zip(todo, ids))
        return tuple(dataclasses.replace(o, quarantine_id=held[i]) if held.get(i) else o
                     for i, o in enumerate(outcomes))

    async def _store_all(self, wanted: list[Decision], ctx: _Context) -> dict[int, FileOutcome]:
        breaker = self._breaker(ctx.tenant)
        if self.store is None or not breaker.allow():
            for d in wanted:
                self.log.warning("offload_failed", name=d.file.name, size=d.file.size, error="circuit_open")
            return {id(d): self._failed(d) for d in wanted}
        tasks = {asyncio.create_task(self._put(d, ctx)): d for d in wanted}
        done, pending = await asyncio.wait(tasks, timeout=self.policy.storage_timeout)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
        out: dict[int, FileOutcome] = {}
        for task, d in tasks.items():
            exc = None if task in pending else task.exception()
            if task in done and exc is None:
                out[id(d)] = task.result()
                continue
            out[id(d)] = self._failed(d)
            self.log.warning("offload_failed", name=d.file.name, size=d.file.size,
                             error="timeout" if exc is None else type(exc).__name__,
                             detail=str(exc)[:200] if isinstance(exc, (StorageError, LinkError)) else None)
        if any(o.offload_failed for o in out.values()):
            breaker.failure()
        else:
            breaker.success()
        return out

    def _failed(self, d: Decision) -> FileOutcome:
        if self.policy.on_storage_failure is StorageFailure.KEEP:
            return FileOutcome(d.file, Verdict.KEEP, "offload failed; kept in the message", offload_failed=True)
        return FileOutcome(d.file, d.verdict, d.reason, offload_failed=True)

    async def offload_file(self, d: Decision, *, tenant: str | None, unique: str, day: datetime,
                           sender: str | None = None, from_header: str | None = None,
                           subject: str | None = None) -> FileOutcome:
        """Store one file sent to the HTTP side and link it through the link service (never a
        raw presigned URL: the API's caller passes it on). `unique` (from the job or the
        Idempotency-Key) makes a retry land on the same key; `from_header` and `subject` are
        what the landing page shows, when known. Raises StorageError."""
        ctx = _Context(None, sender, datetime.now(timezone.utc).isoformat(timespec="seconds"), day, tenant,
                       display_text(from_header), display_text(subject))
        return await asyncio.wait_for(self._put(d, ctx, unique=unique, redirect=True), self.policy.storage_timeout)

    async def _put(self, d: Decision, ctx: _Context, *, unique: str | None = None,
                   redirect: bool = False) -> FileOutcome:
        assert self.store is not None and self.secret is not None
        f = d.file
        if ctx.message_id:
            # Same message, same file -> same key: a retried delivery overwrites, never duplicates.
            seed = "\0".join((ctx.message_id, f.sha256, f.name, f.part.path, ctx.tenant or ""))
            unique = hashlib.sha256(seed.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        key = make_key(f.name, ctx.day, prefix=self.store.key_prefix, tenant=ctx.tenant, unique=unique)
        started, result = time.monotonic(), "error"
        try:
            obj = await self.store.put(f.data, StoredObject(
                key=key, size=f.size, sha256=f.sha256, content_type=f.judgement.detected_type, filename=f.name,
                message_id=ctx.message_id, sender=ctx.sender, date=ctx.received, tenant=ctx.tenant,
                from_header=ctx.from_header, subject=ctx.subject))
            result = "ok"
        except asyncio.CancelledError:  # policy.storage_timeout ran out
            result = "timeout"
            raise
        finally:
            self.metrics.storage_put(time.monotonic() - started, result, f.size)
        links = dataclasses.replace(self.links, mode=LinksMode.REDIRECT) if redirect else self.links
        link = await mint(self.store, self.secret, links, obj, self.links.ttl_seconds)
        return FileOutcome(f, d.verdict, d.reason, obj.key, link.url, link.expires)

    async def discard(self, keys: tuple[str, ...] | list[str]) -> None:
        """Delete files stored for a message that was not delivered (the sender will retry)."""
        if self.store is None:
            return
        for key in keys:
            try:
                await self.store.delete(key)
            except (StorageError, OSError) as exc:
                self.log.warning("discard_failed", storage_key=key, error=type(exc).__name__)

    async def rollback(self, prepared: Prepared) -> None:
        await self.discard(prepared.stored)
        if self.holder is not None and prepared.held:
            await self.holder.discard(prepared.held)
