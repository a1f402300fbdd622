"""Held files in the store's records, and the hold itself (what the delivery pipeline calls).

One held file is two records: `quarantine/<id>.json`, what it is and where it came from (an
Item), and `quarantined/<id>`, its bytes. Records live under `.records/`, which no object key
and so no link can reach: a held file is never downloadable until an administrator releases it.

A held file is customer data, so it stays where the customer's files go: both records are
written in the store the file's tenant is routed to (storage.routed), not in the default store
that holds the service's own records. The id carries that store's name (`<name>-<16 hex>`; the
default store's are bare `<16 hex>`), so any instance finds an item from its id alone, even
after the routing table changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.policy
import hashlib
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import StorageError
from ..units import clip
from ..model import File
from ..storage.base import Body, Store, tenant_segment
from ..storage.routed import named, store_for, stores_of

META, DATA = "quarantine", "quarantined"  # record kinds
_CREATED_REMEMBERED = 10_000
ID_RE = re.compile(r"(?:([a-z0-9]{1,16})-)?([0-9a-f]{16})")


def parse_id(qid: object) -> tuple[str, str]:
    """(store name, id) of a quarantine id; KeyError for anything that is none (it comes from
    a command line or a URL, so a malformed one is simply unknown)."""
    m = ID_RE.fullmatch(qid) if isinstance(qid, str) else None
    if m is None:
        raise KeyError(qid)
    return m.group(1) or "", qid  # type: ignore[return-value]


def new_id(store_name: str, seed: str | None) -> str:
    """`seed` (from the message and the file) makes a retried delivery hold the same item
    again instead of a second copy; without one (no Message-ID) the id is random."""
    digest = hashlib.sha256(seed.encode("utf-8", "surrogateescape")).hexdigest() if seed else uuid.uuid4().hex
    return f"{store_name}-{digest[:16]}" if store_name else digest[:16]


def _text(value: str | None, limit: int) -> str | None:
    """A header value as a person reads it: encoded-words decoded, no control characters
    (it goes into a JSON answer, a table on a terminal and the released message's headers)."""
    if value is None:
        return None
    try:
        # Read as unstructured text (decoded, never parsed as addresses): it is only shown.
        value = str(email.policy.default.header_factory("subject", value))
    except (ValueError, LookupError, UnicodeError, IndexError, TypeError):
        pass
    value = "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in value)
    return " ".join(value.split())[:limit] or None


@dataclass(frozen=True)
class Origin:
    """The message a held file came with (delivery/prepare.py fills it in)."""

    message_id: str | None
    subject: str | None
    sender: str | None  # envelope sender
    recipients: tuple[str, ...]  # envelope recipients: whom a release goes to
    from_header: str | None  # the visible From
    received: str  # ISO 8601 UTC
    tenant: str | None

    @classmethod
    def of(cls, *, message_id: str | None, subject: str | None, sender: str | None, recipients: tuple[str, ...],
           from_header: str | None, received: str, tenant: str | None) -> "Origin":
        return cls(message_id, _text(subject, 300), sender, tuple(recipients), _text(from_header, 300), received,
                   tenant)


@dataclass(frozen=True)
class Item:
    id: str
    message_id: str | None
    subject: str | None
    sender: str | None
    recipients: tuple[str, ...]
    from_header: str | None
    filename: str
    size: int
    sha256: str
    detected_type: str
    verdict: str  # "spoofed" or "blocked"
    reason: str
    received: str  # ISO 8601 UTC
    tenant: str | None
    released_at: str | None = None
    released_by: str | None = None

    @property
    def received_at(self) -> datetime:
        return datetime.fromisoformat(self.received)

    def expires(self, retention_days: int) -> datetime:
        """Always from the retention configured now, so shortening it applies to what is held."""
        return self.received_at + timedelta(days=retention_days)

    def public(self, retention_days: int) -> dict[str, Any]:
        """What the API and `quarantine show` answer (never the bytes, never a storage key)."""
        return {"id": self.id, "messageId": self.message_id, "subject": self.subject, "sender": self.sender,
                "recipients": list(self.recipients), "from": self.from_header, "fileName": self.filename,
                "fileSize": self.size, "sha256": self.sha256, "detectedType": self.detected_type,
                "verdict": self.verdict, "reason": self.reason, "receivedAt": _iso(self.received_at),
                "expiresAt": _iso(self.expires(retention_days)), "tenant": self.tenant,
                "released": self.released_at is not None, "releasedAt": self.released_at,
                "releasedBy": self.released_by}

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Item":
        """ValueError or TypeError for a record that is not an item."""
        fields = json.loads(raw)
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in fields.items() if k in names}  # a newer writer's extra fields are skipped
        item = cls(**{**known, "recipients": tuple(known.get("recipients") or ())})
        # Checked here rather than where it is used: a bad time would otherwise fail the whole
        # list's answer (public) or the purge (expires compares it with an aware now).
        if not isinstance(item.received, str) or item.received_at.tzinfo is None:
            raise ValueError(f"received is not an ISO 8601 time with a zone: {item.received!r}")
        return item

    def belongs_to(self, customer: str | None) -> bool:
        """May a key bound to `customer` see this item? (None: a key bound to none sees all.)"""
        if customer is None:
            return True
        return bool(self.tenant) and tenant_segment(self.tenant or "") == tenant_segment(customer)


def _iso(d: datetime) -> str:
    return d.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Held:
    """The items in every store, by id."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _store(self, qid: str) -> Store:
        name, _ = parse_id(qid)
        return named(self.store, name)  # KeyError: a store this config does not name

    async def put(self, item: Item, data: Body, where: Store) -> None:
        # The bytes first: an item listed must be releasable. A half-written one is undone.
        await where.put_record(f"{DATA}/{item.id}", data)
        try:
            await where.put_record(f"{META}/{item.id}.json", item.to_bytes())
        except BaseException:
            await _quietly(where.delete_record(f"{DATA}/{item.id}"))
            raise

    async def get(self, qid: str) -> Item:
        """KeyError when unknown (or malformed), StorageError when the store is unusable or the
        record unreadable."""
        raw = await self._store(qid).get_record(f"{META}/{qid}.json")
        try:
            item = Item.from_bytes(raw)
        except (ValueError, TypeError) as exc:
            raise StorageError(f"quarantine record {qid} is unreadable: {exc}") from None
        if item.id != qid:
            # Deleting or saving it would act on another item (the id inside names the records).
            raise StorageError(f"quarantine record {qid} is unreadable: it names another id ({clip(item.id, 40)})")
        return item

    async def data(self, qid: str) -> bytes:
        return await self._store(qid).get_record(f"{DATA}/{qid}")

    async def save(self, item: Item) -> None:
        await self._store(item.id).put_record(f"{META}/{item.id}.json", item.to_bytes())

    async def delete(self, qid: str) -> None:
        """Idempotent. The metadata first: what is no longer listed is gone for everyone."""
        where = self._store(qid)
        await where.delete_record(f"{META}/{qid}.json")
        await where.delete_record(f"{DATA}/{qid}")

    async def scan(self) -> "Listing":
        """Every held item that can be read, oldest first, and what could not be: one store
        down or one bad record must not hide every other customer's items (nor stop retention
        for them). An item vanishing meanwhile (purged, deleted) is simply not there."""
        found = Listing()
        for name, where in stores_of(self.store).items():
            try:
                names = await where.list_records(META)
            except (StorageError, OSError) as exc:
                found.unavailable[store_label(name)] = clip(exc, 200)
                continue
            for record in names:
                if not record.endswith(".json"):
                    continue
                qid = record[len(META) + 1:-len(".json")]
                try:
                    found.items.append(await self.get(qid))
                except KeyError:
                    continue
                except (StorageError, OSError) as exc:
                    found.unreadable[qid] = clip(exc, 200)
        found.items.sort(key=lambda i: (i.received_at, i.id))
        return found


def store_label(name: str) -> str:
    """A store's name as answers and logs give it ("" is the default store, [storage])."""
    return name or "default"


@dataclass
class Listing:
    items: list[Item] = dataclasses.field(default_factory=list)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)  # store label -> error
    unreadable: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> error


async def _quietly(aw: Any) -> None:
    try:
        await aw
    except (StorageError, OSError):
        pass


class Holder:
    """What the delivery pipeline calls for every spoofed or blocked file it strips
    (policy.quarantine = true)."""

    def __init__(self, store: Store, *, timeout: float, log: Any, metrics: Any = None) -> None:
        self.held = Held(store)
        self.store = store
        self.timeout = timeout
        self.log = log
        self.metrics = metrics
        # Ids this process wrote, so a failed delivery discards only its own; bounded (oldest
        # forgotten first) because a delivered message never tells the holder it is done. One
        # forgotten is merely not discarded: retention purges it.
        self._created: dict[str, None] = {}

    async def hold(self, f: File, verdict: str, reason: str, origin: Origin, part: str) -> str | None:
        """The new item's id, or None when it could not be kept (logged as a warning: the file is
        stripped all the same, and the notice then promises no copy). Never raises but for
        cancellation. f.data may be a spooled file (FileBytes): the store copies it a chunk at a
        time; it must stay open until this returns."""
        name, where = store_for(self.store, origin.tenant)
        seed = "\0".join((origin.message_id, f.sha256, f.name, part, origin.tenant or "")) \
            if origin.message_id else None
        item = Item(id=new_id(name, seed), message_id=origin.message_id, subject=origin.subject,
                    sender=origin.sender, recipients=origin.recipients, from_header=origin.from_header,
                    filename=f.name, size=f.size, sha256=f.sha256, detected_type=f.judgement.detected_type,
                    verdict=verdict, reason=reason, received=origin.received, tenant=origin.tenant)
        try:
            kept = await asyncio.wait_for(self._put_new(item, f.data, where), self.timeout)
        except (StorageError, OSError, asyncio.TimeoutError) as exc:
            self.log.warning("quarantine_hold_failed", name=f.name, size=f.size, sha256=f.sha256,
                             message_id=origin.message_id, error=type(exc).__name__, detail=str(exc)[:200] or None)
            self._count("hold_failed")
            return None
        if kept:
            # The id is derived from what the sender chose (Message-ID, file, tenant): the same
            # message sent again, to other recipients, finds the first item and must not rewrite
            # its recipients nor clear its released state.
            self.log.info("quarantine_hold_exists", id=item.id, name=f.name, sha256=f.sha256,
                          message_id=origin.message_id, sender=origin.sender, tenant=origin.tenant)
            # No longer this delivery's alone: neither one failing may discard it.
            self._created.pop(item.id, None)
            return item.id
        self._created[item.id] = None
        while len(self._created) > _CREATED_REMEMBERED:
            self._created.pop(next(iter(self._created)))
        self.log.info("quarantine_hold", id=item.id, name=f.name, size=f.size, sha256=f.sha256, verdict=verdict,
                      reason=reason, message_id=origin.message_id, sender=origin.sender, tenant=origin.tenant,
                      store=name or None)
        self._count("hold")
        return item.id

    async def _put_new(self, item: Item, data: Body, where: Store) -> bool:
        """Write the item unless one with its id is there already; True when it was (kept as it
        is). Not atomic across instances (the stores have no create-if-absent for records):
        two deliveries racing with one Message-ID can still both write, the later one winning."""
        try:
            await where.get_record(f"{META}/{item.id}.json")
        except KeyError:
            await self.held.put(item, data, where)
            return False
        return True

    async def discard(self, ids: tuple[str, ...]) -> None:
        """Items held for a message that was not delivered (the sender will retry, and the
        retry holds them again under the same id). Only items this holder wrote: one that was
        there before belongs to an earlier delivery of the same message (a copy sent to other
        recipients, say), which did arrive."""
        for qid in ids:
            if qid not in self._created:
                continue
            del self._created[qid]
            try:
                await self.held.delete(qid)
            except (StorageError, OSError, KeyError) as exc:
                self.log.warning("quarantine_discard_failed", id=qid, error=type(exc).__name__)

    def _count(self, action: str) -> None:
        if self.metrics is not None:
            self.metrics.quarantine(action)
