"""Upload sessions: the signed link a customer gets, and what the store keeps about it.

A link is `/u/<sid>.<expires>.<mac>`: `sid` 20 random hex digits (the session id, also what
revocation is recorded under), `expires` unix seconds in hex, `mac` the first 16 bytes of
HMAC-SHA256(secret, "portal.<sid>.<expires>") in base64url. The expiry is signed into the
link, so an expired link gets its page even after the sweep removed the session; the MAC is
checked before the store is asked anything, so a forged link costs no storage call. About
50 characters: short enough to paste into a reply.

Records (store.put_record; every instance sees them):
  portal/<sid>.json              the session: case, addressee, limits' counters, delivery state
  portalfile/<sid>-<fid>.json    one file: name, size, state, and once judged its verdict
  portalstaged/<sid>-<fid>       an accepted file's bytes until its message was delivered
  portalcustomer/<hash>.json     one customer's open sessions (sessions_per_customer)
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import secrets as _random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..storage.base import Store
from ..storage.routed import named, store_for, stores_of

_TOKEN_RE = re.compile(r"([0-9a-f]{20})\.([0-9a-f]{1,12})\.([A-Za-z0-9_-]{22})")
SID_RE = re.compile(r"[0-9a-f]{20}")
FID_RE = re.compile(r"[0-9a-f]{16}")


class LinkRefused(Exception):
    """Why a /u/ link opens no session: `tampered` (403), `expired`, `revoked` (410)."""

    def __init__(self, why: str, expires: int | None = None) -> None:
        super().__init__(why)
        self.why, self.expires = why, expires


def _mac(secret: bytes, sid: str, expires: int) -> str:
    digest = hmac.new(secret, f"portal.{sid}.{expires:x}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(secret: bytes, sid: str, expires: int) -> str:
    return f"{sid}.{expires:x}.{_mac(secret, sid, expires)}"


def verify(secrets: Sequence[bytes], token: str, now: float | None = None) -> tuple[str, int]:
    """(sid, expires) of a genuine, unexpired link; LinkRefused otherwise."""
    m = _TOKEN_RE.fullmatch(token or "")
    if m is None:
        raise LinkRefused("tampered")
    sid, expires = m.group(1), int(m.group(2), 16)
    if not any(hmac.compare_digest(_mac(s, sid, expires), m.group(3)) for s in secrets):
        raise LinkRefused("tampered")
    if expires <= (time.time() if now is None else now):
        raise LinkRefused("expired", expires)
    return sid, expires


class State:
    OPEN = "open"  # taking files
    SENDING = "sending"  # one instance is delivering it (owner, lease)
    RETRYING = "retrying"  # the downstream refused or was down; next_attempt says when
    SENT = "sent"  # the downstream accepted the message: the session is closed


@dataclass(frozen=True)
class Session:
    id: str
    case_id: str
    to: str
    expires: int
    created: float
    customer: str | None = None
    subject: str | None = None
    in_reply_to: str | None = None
    key_id: str = ""  # the API key that made it ("cli" from the command line)
    revoked: bool = False
    state: str = State.OPEN
    owner: str = ""  # the instance delivering it, while SENDING
    lease_until: float = 0.0
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""  # the downstream's answer, for the log and the admin (never the page)
    sent_at: float = 0.0

    def message_id(self, domain: str) -> str:
        """One Message-ID for every attempt: a retry after a lost answer is the same message."""
        return f"<portal.{self.id}@{domain}>"

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_(self, **changes: Any) -> Session:
        return dataclasses.replace(self, **changes)


# An upload that sent nothing for this long, or a check that never finished (its instance
# died), no longer holds up Send. Generous: a chunk of 8 MiB on a slow line takes minutes.
ABANDONED = 1800.0


class FileState:
    UPLOADING = "uploading"
    CHECKING = "checking"
    RECEIVED = "received"
    REFUSED = "refused"
    FAILED = "failed"  # could not be stored; the customer is asked to add it again


@dataclass(frozen=True)
class FileEntry:
    id: str
    name: str
    size: int
    created: float
    declared: str | None = None  # the type the browser said
    state: str = FileState.UPLOADING
    message: str = ""  # what the customer reads, in plain words
    upload: str = ""  # the tus upload's id (aiohttp-tus resource uid); "" for the plain form
    verdict: str = ""
    reason: str = ""  # the judge's reason, for the agent's message and the audit log
    detected_type: str = ""
    sha256: str = ""
    link: str = ""  # once promoted (at send)
    link_expires: int = 0
    storage_key: str = ""
    staged_in: str = ""  # the store (storage.stores name, "" = default) holding the staged bytes
    updated: float = 0.0  # the last chunk's arrival, while uploading: an upload quiet too long is abandoned

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_(self, **changes: Any) -> FileEntry:
        return dataclasses.replace(self, **changes)

    def public(self) -> dict[str, Any]:
        """What the page may show: nothing the customer did not send, nothing internal."""
        return {"id": self.id, "name": self.name, "size": self.size, "state": self.state,
                "message": self.message, "upload": self.upload}


def busy(files: list[FileEntry], now: float) -> bool:
    """Is a file still arriving or being checked (so the message would miss it)?"""
    return any(f.state in (FileState.CHECKING, FileState.UPLOADING) and now - f.updated < ABANDONED for f in files)


def new_sid() -> str:
    return _random.token_hex(10)


def new_fid() -> str:
    return _random.token_hex(8)


def _customer_record(customer: str) -> str:
    return "portalcustomer/" + hashlib.sha256(customer.encode("utf-8")).hexdigest()[:40] + ".json"


class Records:
    """The portal's records in the store (see the module doc). Raises StorageError, KeyError."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def save(self, s: Session) -> None:
        await self.store.put_record(f"portal/{s.id}.json", json.dumps(s.as_json()).encode())

    async def load(self, sid: str) -> Session:
        data = json.loads(await self.store.get_record(f"portal/{sid}.json"))
        return Session(**{k: v for k, v in data.items() if k in Session.__dataclass_fields__})

    async def sessions(self) -> list[str]:
        return [n.split("/", 1)[1].removesuffix(".json") for n in await self.store.list_records("portal")]

    async def save_file(self, sid: str, f: FileEntry) -> None:
        await self.store.put_record(f"portalfile/{sid}-{f.id}.json", json.dumps(f.as_json()).encode())

    async def load_file(self, sid: str, fid: str) -> FileEntry:
        data = json.loads(await self.store.get_record(f"portalfile/{sid}-{fid}.json"))
        return FileEntry(**{k: v for k, v in data.items() if k in FileEntry.__dataclass_fields__})

    async def delete_file(self, sid: str, fid: str) -> None:
        await self.store.delete_record(f"portalfile/{sid}-{fid}.json")

    async def files(self, sid: str) -> list[FileEntry]:
        out = []
        for name in await self.store.list_records("portalfile", f"{sid}-"):
            try:
                out.append(await self.load_file(sid, name.rsplit("-", 1)[1].removesuffix(".json")))
            except KeyError:
                continue  # deleted since the listing
        return sorted(out, key=lambda f: (f.created, f.id))

    # A staged file is the customer's data: it waits in the store their files are routed to
    # (storage.routes), not with the session records. The file remembers that store, so a
    # route changed meanwhile does not lose it.
    async def stage(self, s: Session, fid: str, data: bytes) -> str:
        """Stage the bytes; the name of the store they went to (FileEntry.staged_in)."""
        name, store = store_for(self.store, s.customer)
        await store.put_record(f"portalstaged/{s.id}-{fid}", data)
        return name

    async def staged(self, s: Session, f: FileEntry) -> bytes:
        return await named(self.store, f.staged_in).get_record(f"portalstaged/{s.id}-{f.id}")

    async def unstage(self, s: Session, f: FileEntry) -> None:
        try:
            store = named(self.store, f.staged_in)
        except KeyError:
            return  # that store was removed from the config: nothing of it to delete here
        await store.delete_record(f"portalstaged/{s.id}-{f.id}")

    async def open_sessions(self, customer: str, now: float) -> dict[str, int]:
        """sid -> expiry of the customer's sessions that have not expired."""
        try:
            data = json.loads(await self.store.get_record(_customer_record(customer)))
        except KeyError:
            return {}
        return {sid: exp for sid, exp in data.items() if exp > now}

    async def set_open_sessions(self, customer: str, sessions: dict[str, int]) -> None:
        if sessions:
            await self.store.put_record(_customer_record(customer), json.dumps(sessions).encode())
        else:
            await self.store.delete_record(_customer_record(customer))

    async def remove(self, s: Session) -> None:
        """Everything a session left in the store."""
        for kind, store in [("portalfile", self.store), *(("portalstaged", x) for x in stores_of(self.store).values())]:
            for name in await store.list_records(kind, f"{s.id}-"):
                await store.delete_record(name)
        await self.store.delete_record(f"portal/{s.id}.json")
