"""The quarantine's work, whoever asks (the command line, the HTTP API, the app's purger).

  list      every held item (of one customer, for a key bound to one), oldest first
  get       one item by id
  release   the file to the original recipients, through the downstream, then marked released
  delete    the item and its bytes, at once
  purge     items older than policy.quarantine_retention_days; every instance runs it hourly

A released item is kept (marked released, with who and when) until retention purges it, so the
audit trail and a second look stay possible; releasing it again is refused as
"already released" unless forced (a recipient who lost the first message). Nothing is marked
released unless the downstream accepted the message for every original recipient.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import weakref
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..api.keys import Refused
from ..delivery.decide import Decision
from ..delivery.policy import HoldPolicy
from ..delivery.prepare import Preparer
from ..errors import SmtpReplyError, StorageError
from ..metrics import Metrics
from ..model import File, FileOutcome, Judgement, Part, Verdict
from ..relay import Downstream
from ..storage.routed import stores_of
from ..units import clip
from . import message
from .records import Held, Item, Listing, parse_id

PURGE_SECONDS = 3600.0  # retention is counted in days: hourly is ample, and cheap for the store


def _storage_down(exc: Exception) -> Refused:
    return Refused(503, "storage_unavailable", "the file store is unavailable; try again later",
                   {"Retry-After": "30"})


def _unknown(qid: str) -> Refused:
    return Refused(404, "not_found", f"no such quarantined file: {clip(qid, 80)}")


@dataclasses.dataclass
class Purged:
    purged: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)  # ids whose delete failed
    unavailable: list[str] = dataclasses.field(default_factory=list)  # stores that could not be listed
    unreadable: list[str] = dataclasses.field(default_factory=list)  # ids whose record could not be read

    @property
    def complete(self) -> bool:
        return not (self.failed or self.unavailable or self.unreadable)


class Quarantine:
    def __init__(self, *, store: Any, policy: HoldPolicy, preparer: Preparer | None, offload_over_bytes: int,
                 downstream: Callable[[], Downstream], hostname: str, log: Any,
                 metrics: Metrics | None = None) -> None:
        self.held = Held(store)
        self.policy = policy
        self.preparer = preparer  # stores and links a released file too large to attach
        self.offload_over_bytes = offload_over_bytes
        self.downstream = downstream
        self.sender = policy.quarantine_sender or f"postmaster@{hostname}"
        self.log = log
        self.metrics = metrics or Metrics()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._runner: asyncio.Task | None = None

    @property
    def retention_days(self) -> int:
        return self.policy.quarantine_retention_days

    def public(self, item: Item) -> dict[str, Any]:
        return item.public(self.retention_days)

    # -- reading ----------------------------------------------------------------------------
    async def list(self, customer: str | None = None) -> Listing:
        """What every store that answered holds (of `customer`'s, for a key bound to one), and
        the names of the stores that did not; Refused 503 only when none answered."""
        found = await self.held.scan()
        self._report(found, "quarantine_list")
        if found.unavailable and len(found.unavailable) == len(stores_of(self.held.store)):
            raise _storage_down(StorageError("; ".join(found.unavailable.values())))
        found.items = [i for i in found.items if i.belongs_to(customer)]
        return found

    def _report(self, found: Listing, action: str) -> None:
        for name, error in found.unavailable.items():
            self.log.warning(f"{action}_store_unavailable", store=name, error=error)
        for qid, error in found.unreadable.items():
            self.log.warning(f"{action}_unreadable", id=qid, error=error)

    async def get(self, qid: str, customer: str | None = None) -> Item:
        """The item, or Refused 404 (unknown, malformed, or another customer's: the same answer,
        so a bound key learns nothing of other customers' ids)."""
        try:
            parse_id(qid)
            item = await self.held.get(qid)
        except KeyError:
            raise _unknown(qid) from None
        except StorageError as exc:
            raise _storage_down(exc) from None
        if not item.belongs_to(customer):
            raise _unknown(qid)
        return item

    # -- release ----------------------------------------------------------------------------
    async def release(self, qid: str, by: str, *, force: bool = False, customer: str | None = None) -> Item:
        """Send the file to the original recipients and mark the item released; the item as it
        stands after. Refused: 404 unknown, 409 already released (unless `force`), 502 the
        downstream refused or could not be reached (nothing marked), 503 storage; 403 for a
        key bound to a customer (`customer`): releasing what the gateway judged malicious is an
        administrator's decision, not the recipient organisation's."""
        if customer is not None:
            raise Refused(403, "forbidden", "an administrator releases quarantined files: "
                          "use a key not bound to a customer")
        async with self._lock(qid):  # a double click on this instance sends once
            item = await self.get(qid, customer)
            if item.released_at and not force:
                raise Refused(409, "already_released", f"already released on {item.released_at} by "
                              f"{item.released_by}; release it again with force to send it once more",
                              releasedAt=item.released_at, releasedBy=item.released_by)
            if not item.recipients:
                raise Refused(409, "no_recipients", "the held message had no recipients to release it to")
            try:
                data = await self.held.data(qid)
            except KeyError:
                raise Refused(410, "gone", "the quarantined file's bytes are gone (purged or deleted)") from None
            except StorageError as exc:
                raise _storage_down(exc) from None
            if hashlib.sha256(data).hexdigest() != item.sha256:
                self.log.error("quarantine_corrupt", id=qid, sha256=item.sha256)
                raise Refused(409, "corrupt", "the quarantined file does not match its checksum; not released")
            now = datetime.now(timezone.utc)
            link = await self._link(item, data) if len(data) > self.offload_over_bytes else None
            body = message.render(item, None if link else data, link, sender=self.sender, by=by, released_at=now)
            del data
            await self._send(item, body, link, by)
            stamp = {"released_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "released_by": by}
            released = dataclasses.replace(item, **stamp)
            try:
                # Read again: another instance (or the command line) may have deleted it while
                # the message was on its way, and saving the copy read before would bring it back.
                released = dataclasses.replace(await self.held.get(qid), **stamp)
                await self.held.save(released)
            except KeyError:
                self.log.warning("quarantine_release_unrecorded", id=qid, by=by,
                                 error="deleted or purged while it was being released; not recorded")
            except StorageError as exc:
                # Delivered already: say so loudly rather than pretend it was not.
                self.log.error("quarantine_release_unrecorded", id=qid, by=by, error=clip(exc, 200))
        self.log.info("quarantine_release", id=qid, by=by, forced=force or None, recipients=list(item.recipients),
                      name=item.filename, sha256=item.sha256, verdict=item.verdict, reason=item.reason,
                      message_id=item.message_id, tenant=item.tenant, via="link" if link else "attachment")
        self.metrics.quarantine("release")
        return released

    async def _link(self, item: Item, data: bytes) -> FileOutcome:
        """The file stored and linked as an offloaded attachment (the portal's way)."""
        if self.preparer is None or self.preparer.store is None:
            raise Refused(409, "too_large", "the file is over policy.offload_over_bytes and no store can link it")
        part = Part(path="1", start=0, end=len(data), header_end=0, body_start=0, body_end=len(data),
                    content_type=item.detected_type, params={}, disposition="attachment", filename=item.filename,
                    cte="binary", names=[item.filename])
        judged = Judgement(Verdict.KEEP, "released from quarantine", item.detected_type)
        d = Decision(File(part=part, data=data, sha256=item.sha256, judgement=judged, wire_size=len(data)),
                     Verdict.OFFLOAD, "released from quarantine")
        # The same key for the same item: a retried release overwrites instead of copying.
        unique = hashlib.sha256(f"quarantine\0{item.id}".encode()).hexdigest()[:32]
        try:
            return await self.preparer.offload_file(d, tenant=item.tenant, unique=unique,
                                                    day=datetime.now(timezone.utc), sender=item.sender,
                                                    from_header=item.from_header, subject=item.subject)
        except (StorageError, asyncio.TimeoutError) as exc:
            raise _storage_down(exc if isinstance(exc, StorageError) else StorageError("timeout")) from None

    async def _send(self, item: Item, body: bytes, link: FileOutcome | None, by: str) -> None:
        try:
            reply = await message.send(self.downstream(), self.sender, item.recipients, body)
        except SmtpReplyError as exc:
            reply_text = exc.reply
        else:
            if reply.ok:
                return
            reply_text = str(reply)
        if link is not None and link.storage_key and self.preparer is not None:
            await self.preparer.discard([link.storage_key])
        self.log.warning("quarantine_release_failed", id=item.id, by=by, downstream_reply=clip(reply_text, 200))
        raise Refused(502, "downstream_refused", f"the downstream did not take the released message: "
                      f"{clip(reply_text, 200)}; nothing was marked released")

    # -- delete and purge -------------------------------------------------------------------
    async def delete(self, qid: str, by: str, customer: str | None = None) -> Item:
        async with self._lock(qid):  # after a release in flight here, not under it (it would save it back)
            item = await self.get(qid, customer)
            try:
                await self.held.delete(qid)
            except StorageError as exc:
                raise _storage_down(exc) from None
        self.log.info("quarantine_delete", id=qid, by=by, name=item.filename, sha256=item.sha256,
                      tenant=item.tenant, released=item.released_at is not None)
        self.metrics.quarantine("delete")
        return item

    async def purge(self, now: datetime | None = None) -> Purged:
        """Delete what is past retention, in every store that answers, item by item: one store
        down or one item failing leaves the others' retention running (logged as warnings, and
        reported in what is returned)."""
        now = now or datetime.now(timezone.utc)
        found = await self.held.scan()
        self._report(found, "quarantine_purge")
        done = Purged(unavailable=sorted(found.unavailable), unreadable=sorted(found.unreadable))
        for item in found.items:
            if item.expires(self.retention_days) > now:
                continue
            try:
                async with self._lock(item.id):  # not under a release in flight here
                    await self.held.delete(item.id)
            except (StorageError, OSError) as exc:
                done.failed.append(item.id)
                self.log.warning("quarantine_purge_failed", id=item.id, error=clip(exc, 200))
                continue
            done.purged.append(item.id)
            self.log.info("quarantine_purge", id=item.id, name=item.filename, sha256=item.sha256,
                          received=item.received, tenant=item.tenant, released=item.released_at is not None,
                          retention_days=self.retention_days)
            self.metrics.quarantine("purge")
        return done

    def start(self) -> None:
        """Retention on every instance: purge at start, then hourly (purging twice is harmless)."""
        self._runner = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None

    async def _run(self) -> None:
        while True:
            try:
                await self.purge()
            except (StorageError, OSError) as exc:
                self.log.warning("quarantine_purge_failed", error=clip(exc, 200))
            except Exception as exc:  # a bug must not end retention for good
                self.log.error("quarantine_purge_failed", exc_info=exc)
            await asyncio.sleep(PURGE_SECONDS)

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock
