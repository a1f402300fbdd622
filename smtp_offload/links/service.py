"""What a link means, shared by the link server, its JSON API and the `links` command.

Tokens are stateless; the only shared state is the revocation list, kept in the store
(`store.revoke` / `store.is_revoked`) so every instance behind a load balancer and the
command line see the same answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from smtp_offload.config import LinksConfig, LinksMode
from smtp_offload.links import link_url
from smtp_offload.links.tokens import ExpiredToken, Grant, is_token_id, message_ref, new_grant, sign, verify
from smtp_offload.storage.base import Store, StoredObject

# Refresh may set its own lifetime, within reason: an expiry past year 9999 could not
# even be printed, and a link that outlives the mail archive helps nobody.
MAX_TTL_SECONDS = 5 * 366 * 24 * 3600
PRESIGN_MAX_TTL = 7 * 24 * 3600  # S3 SigV4 refuses longer


class LinkError(Exception):
    """A request the service refuses; subclasses say why."""


class InvalidRequest(LinkError, ValueError):
    """Malformed input (missing or conflicting fields, bad ttl)."""


class Revoked(LinkError):
    def __init__(self, grant: Grant) -> None:
        super().__init__("link revoked")
        self.grant = grant


class Gone(LinkError):
    """The object the link names no longer exists (or is not the file the link was made for)."""

    def __init__(self, key: str) -> None:
        super().__init__("file no longer available")
        self.key = key


@dataclass(frozen=True)
class Minted:
    """A new link, as mint (and so refresh) returns it."""

    url: str
    token_id: str | None  # None for a presigned URL: it cannot be revoked
    expires: int
    key: str

    def as_json(self) -> dict[str, Any]:
        return {"url": self.url, "token_id": self.token_id, "expires": self.expires,
                "expires_at": utc(self.expires), "key": self.key}


def utc(ts: int) -> str:
    """ISO 8601 for JSON ("2026-11-30T14:05:00Z"); what people read is units.when."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def presigned(cfg: LinksConfig) -> bool:
    """Whether mails carry the store's own presigned URL rather than a link to our link service.
    The one place links.mode is compared."""
    return cfg.mode is LinksMode.PRESIGNED


async def mint(store: Store, secret: bytes, cfg: LinksConfig, obj: StoredObject, ttl: int) -> Minted:
    """A new link to `obj`, valid for `ttl` seconds: the one place links are made.

    Presigned mode: the store's own URL (token_id None: it cannot be revoked); InvalidRequest
    when this store cannot presign. Redirect mode: a signed token for our link service
    (`cfg.base_url`), signed with `secret`, naming obj's message so the link cannot fetch
    another message's file stored under the same key.
    """
    grant = new_grant(obj.key, ttl, obj.message_id)
    if presigned(cfg):
        url = await store.presign(obj, ttl)
        if url is None:
            raise InvalidRequest("this store cannot make presigned URLs")
        return Minted(url, None, grant.expires, obj.key)
    return Minted(link_url(cfg.base_url, sign(grant, secret)), grant.token_id, grant.expires, obj.key)


def object_json(obj: StoredObject) -> dict[str, Any]:
    return {"key": obj.key, "filename": obj.filename, "size": obj.size, "content_type": obj.content_type,
            "sha256": obj.sha256, "message_id": obj.message_id, "sender": obj.sender, "date": obj.date,
            "tenant": obj.tenant}


class LinkService:
    def __init__(self, store: Store, secrets: Sequence[bytes], cfg: LinksConfig) -> None:
        if isinstance(secrets, (bytes, str)) or not secrets:
            raise ValueError("secrets must be a non-empty list: [signing secret, *old secrets]")
        self.store = store
        self.secrets = list(secrets)
        self.cfg = cfg

    def verify(self, token: str, *, allow_expired: bool = False) -> Grant:
        """The token's grant; BadToken, or ExpiredToken unless `allow_expired`."""
        try:
            return verify(token, self.secrets)
        except ExpiredToken as e:
            if allow_expired:
                return e.grant
            raise

    async def fetch(self, grant: Grant) -> StoredObject:
        """The object a live grant points to; Revoked, Gone or StorageError otherwise."""
        if await self.store.is_revoked(grant.token_id):
            raise Revoked(grant)
        try:
            obj = await self.store.stat(grant.key)
        except KeyError:
            raise Gone(grant.key) from None
        # The token names one message's file: should the key ever hold another message's
        # file, the link must not hand it out.
        if grant.message_ref and obj.message_id and message_ref(obj.message_id) != grant.message_ref:
            raise Gone(grant.key)
        return obj

    async def refresh(self, *, token: str | None = None, key: str | None = None,
                      ttl: int | None = None) -> Minted:
        """A new link to the file behind `token` (expired is fine: that is the point) or `key`.

        A revoked token is refused: revoking must not be undone by whoever still holds the
        link. An operator who means to share the file again refreshes by key.
        """
        _one_of(token=token, key=key)
        ttl = self._ttl(ttl)
        if token is not None:
            grant = self.verify(token, allow_expired=True)
            if await self.store.is_revoked(grant.token_id):
                raise Revoked(grant)
            key = grant.key
        try:
            obj = await self.store.stat(key)
        except KeyError:
            raise Gone(key) from None
        return await mint(self.store, self.secrets[0], self.cfg, obj, ttl)

    async def revoke(self, *, token: str | None = None, token_id: str | None = None) -> str:
        """Revoke one link (expired ones too); returns its token_id. Other links to the same file stay valid."""
        _one_of(token=token, token_id=token_id)
        if token is not None:
            token_id = self.verify(token, allow_expired=True).token_id
        if not is_token_id(token_id):
            raise InvalidRequest("token_id must be 16 lower-case hex characters")
        await self.store.revoke(token_id)
        return token_id

    async def show(self, token: str) -> dict[str, Any]:
        """The grant (even when expired) and the object's metadata (None when it is gone)."""
        if not isinstance(token, str):
            raise InvalidRequest("token must be a string")
        grant = self.verify(token, allow_expired=True)
        try:
            obj: StoredObject | None = await self.store.stat(grant.key)
        except KeyError:
            obj = None
        return {
            "token_id": grant.token_id, "key": grant.key, "expires": grant.expires,
            "expires_at": utc(grant.expires), "expired": grant.expires <= time.time(),
            "revoked": await self.store.is_revoked(grant.token_id), "message_ref": grant.message_ref,
            "object": object_json(obj) if obj is not None else None,
        }

    def _ttl(self, ttl: int | None) -> int:
        if ttl is None:
            ttl = self.cfg.ttl_seconds
        elif isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_TTL_SECONDS:
            raise InvalidRequest(f"ttl_seconds must be an integer between 1 and {MAX_TTL_SECONDS}")
        if presigned(self.cfg) and ttl > PRESIGN_MAX_TTL:
            raise InvalidRequest(f"ttl_seconds cannot exceed {PRESIGN_MAX_TTL} for presigned URLs")
        return ttl


def _one_of(**fields: Any) -> None:
    given = [name for name, value in fields.items() if value is not None]
    if len(given) != 1:
        raise InvalidRequest(f"give exactly one of: {', '.join(fields)}")
    name = given[0]
    if not isinstance(fields[name], str) or not fields[name]:
        raise InvalidRequest(f"{name} must be a non-empty string")
