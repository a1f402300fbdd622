"""What a link means, shared by the link server, its JSON API and the `links` command.

Tokens are stateless; the only shared state is the revocation list, kept in the store
(`store.revoke` / `store.is_revoked`) so every instance behind a load balancer and the
command line see the same answer.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from multidict import CIMultiDictProxy

from smtp_offload.config import LinksConfig, LinksMode
from smtp_offload.errors import StorageError
from smtp_offload.links import grants, link_url
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
    when this store cannot presign. Redirect mode: a link to our link service (`cfg.base_url`)
    naming obj's message, so it cannot fetch another message's file stored under the same key:
    a short id whose grant is written to the store (links.short; StorageError when that
    fails), or a self-contained token signed with `secret`.
    """
    grant = new_grant(obj.key, ttl, obj.message_id)
    if presigned(cfg):
        url = await store.presign(obj, ttl)
        if url is None:
            raise InvalidRequest("this store cannot make presigned URLs")
        return Minted(url, None, grant.expires, obj.key)
    if cfg.short:
        link_id = grants.new_id(secret, grants.store_name_of(store, obj.key))
        await grants.save(store, link_id, grant, [secret])
        return Minted(link_url(cfg.base_url, link_id), grant.token_id, grant.expires, obj.key)
    return Minted(link_url(cfg.base_url, sign(grant, secret)), grant.token_id, grant.expires, obj.key)


def object_json(obj: StoredObject) -> dict[str, Any]:
    return {"key": obj.key, "filename": obj.filename, "size": obj.size, "content_type": obj.content_type,
            "sha256": obj.sha256, "message_id": obj.message_id, "sender": obj.sender, "date": obj.date,
            "tenant": obj.tenant, "from_header": obj.from_header, "subject": obj.subject}


class LinkService:
    def __init__(self, store: Store, secrets: Sequence[bytes], cfg: LinksConfig) -> None:
        if isinstance(secrets, (bytes, str)) or not secrets:
            raise ValueError("secrets must be a non-empty list: [signing secret, *old secrets]")
        self.store = store
        self.secrets = list(secrets)
        self.cfg = cfg

    async def grant(self, link: str, *, allow_expired: bool = False) -> Grant:
        """The grant behind a link's short id or token: BadToken, ExpiredToken unless
        `allow_expired`, or StorageError when a short id's record cannot be read now."""
        try:
            if grants.is_link_id(link):
                return await grants.load(self.store, link, self.secrets)
            return verify(link, self.secrets)
        except ExpiredToken as e:
            if allow_expired:
                return e.grant
            raise

    async def fetch(self, grant: Grant) -> StoredObject:
        """The object a live grant points to; Revoked, Gone or StorageError otherwise."""
        if await self.store.is_revoked(grant.token_id, grant.key):
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

    async def describe(self, grant: Grant) -> StoredObject | None:
        """The file a grant names, whether or not the link is expired or revoked; None when it
        is gone, is another message's, or storage fails. For the audit log of a refusal, never to serve."""
        try:
            obj = await self.store.stat(grant.key)
        except (KeyError, StorageError, OSError):
            return None
        if grant.message_ref and obj.message_id and message_ref(obj.message_id) != grant.message_ref:
            return None
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
            grant = await self.grant(token, allow_expired=True)
            if await self.store.is_revoked(grant.token_id, grant.key):
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
        key = None
        if token is not None:
            grant = await self.grant(token, allow_expired=True)
            token_id, key = grant.token_id, grant.key
        if not is_token_id(token_id):
            raise InvalidRequest("token_id must be 16 lower-case hex characters")
        # With the token the file's store is known; by id alone a routed store records it in every store.
        await self.store.revoke(token_id, key)
        return token_id

    async def show(self, token: str) -> dict[str, Any]:
        """The grant (even when expired) and the object's metadata (None when it is gone)."""
        if not isinstance(token, str):
            raise InvalidRequest("token must be a string")
        grant = await self.grant(token, allow_expired=True)
        try:
            obj: StoredObject | None = await self.store.stat(grant.key)
        except KeyError:
            obj = None
        return {
            "token_id": grant.token_id, "key": grant.key, "expires": grant.expires,
            "expires_at": utc(grant.expires), "expired": grant.expires <= time.time(),
            "revoked": await self.store.is_revoked(grant.token_id, grant.key), "message_ref": grant.message_ref,
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


# What an SSO proxy puts in its identity header: an address or a user name. Anything else
# (spaces, quotes, control or invisible characters, a list) is not an identity to write into
# an audit log that a SIEM parses. 254: the longest usable address (RFC 5321 path limit).
MAX_AGENT_CHARS = 254
_SPECIALS = r'\s@<>()\[\]\\,;:"'
_AGENT_RE = re.compile(rf"[^{_SPECIALS}]{{1,64}}@[^{_SPECIALS}/]{{1,253}}|[\w.+-]{{1,64}}")


@dataclass(frozen=True)
class Agent:
    """Who is asking, as a trusted SSO proxy named them (`name`), or why nobody is named."""

    name: str | None = None
    header: str | None = None  # the header that named them
    ignored: str | None = None  # an identity header was sent but not believed: "untrusted_peer" | "invalid"


def valid_agent(value: str) -> bool:
    """Whether a header value looks like an address or a user name, safe to log as is."""
    return (len(value) <= MAX_AGENT_CHARS and value.isprintable()
            and _AGENT_RE.fullmatch(value) is not None)


class AgentHeaders:
    """Reads the agent's identity from links.agent_headers, believed only from links.trusted_proxies.

    The peer is the TCP peer, never X-Forwarded-For: anyone can write that, and only the
    connection says whether the request really passed through the SSO proxy. The first
    configured header present decides; when its value is not a valid identity nobody is
    named (falling through to the next header would let a header the proxy does not
    overwrite win over the one it does)."""

    def __init__(self, cfg: LinksConfig) -> None:
        self.headers = list(cfg.agent_headers)
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in cfg.trusted_proxies]

    def trusts(self, peer: str | None) -> bool:
        if not peer or not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(peer.split("%", 1)[0])  # an IPv6 peer may carry a zone
        except ValueError:
            return False  # a Unix socket, or no peer at all
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 proxies as ::ffff:a.b.c.d
        return any(ip in net for net in self.trusted)

    def client(self, peer: str | None, headers: CIMultiDictProxy[str]) -> str | None:
        """The client's address: the TCP peer, or, when the peer is a trusted proxy, the last
        address in X-Forwarded-For that is not one of the trusted proxies. Each proxy appends the
        address it saw, so only the hops right of the first untrusted one are vouched for; a
        malformed entry there ends the trust (the peer is given)."""
        if not self.trusts(peer):
            return peer
        hops = [hop.strip() for value in headers.getall("X-Forwarded-For", []) for hop in value.split(",")]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer
            if not self.trusts(hop):
                return hop
        return peer

    def identify(self, peer: str | None, headers: CIMultiDictProxy[str]) -> Agent:
        """The agent named by the first identity header present, if `peer` is trusted."""
        for name in self.headers:
            values = headers.getall(name, [])
            if not values:
                continue
            if not self.trusts(peer):
                return Agent(header=name, ignored="untrusted_peer")
            value = values[0].strip()
            # Two values: the proxy appended instead of replacing, so one may be the client's.
            if len(values) > 1 or not valid_agent(value):
                return Agent(header=name, ignored="invalid")
            return Agent(name=value, header=name)
        return Agent()


def _one_of(**fields: Any) -> None:
    given = [name for name, value in fields.items() if value is not None]
    if len(given) != 1:
        raise InvalidRequest(f"give exactly one of: {', '.join(fields)}")
    name = given[0]
    if not isinstance(fields[name], str) or not fields[name]:
        raise InvalidRequest(f"{name} must be a non-empty string")
