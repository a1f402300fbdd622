"""Short links: `<base_url>/f/<id>`, a random id whose grant is kept in the store.

A self-contained token (`tokens.py`) carries its grant and needs no lookup, but it is a few
hundred characters long: as link text it overflows the notice, and in text/plain it makes a
line that mail clients break. A short id is 32 characters (43 with a store name), so with a
30-character base_url the link stays well under 100.

    id   = [<store name> "."] b64url(16 random bytes || first 8 bytes of HMAC(secret, ...))

The MAC (over the store name and the random bytes) lets the link server refuse a made-up
id without asking the store, so guessing ids costs no storage requests; rotation works as for
tokens (any configured secret verifies). The grant itself is a record `link/<id body>` in the
store that holds the file (data residency: a customer's link record stays in their region),
written when the link is minted. It is kept after expiry, so the expired page can name the
file and "Get a new link" can find it; retention is the store's (README, "Links").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets as _random
import time
from collections.abc import Sequence

from smtp_offload.errors import StorageError
from smtp_offload.links.tokens import BadToken, ExpiredToken, Grant, is_token_id
from smtp_offload.storage.base import Store
from smtp_offload.storage.routed import RoutedStore, named

RECORD_KIND = "link"
_RANDOM_BYTES, _MAC_BYTES = 16, 8
_BODY = 32  # len(b64(24 bytes))
_ID_RE = re.compile(r"(?:([a-z][a-z0-9]{0,15})\.)?([A-Za-z0-9_-]{32})")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _mac(store_name: str, random: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, b"link1." + store_name.encode("ascii") + b"." + random, hashlib.sha256).digest()[:_MAC_BYTES]


def new_id(secret: bytes, store_name: str = "") -> str:
    """A fresh id for a file kept in the store called `store_name` ("" = the default one)."""
    if not secret:
        raise ValueError("secret must not be empty")
    while True:
        random = _random.token_bytes(_RANDOM_BYTES)
        # Not starting with "-": given bare to `smtp-offload links show <id>`, it would read as an option.
        if _b64(random[:3])[0] != "-":
            break
    body = _b64(random + _mac(store_name, random, secret))
    return f"{store_name}.{body}" if store_name else body


def is_link_id(text: object) -> bool:
    """Whether `text` has the shape of a short id (a token never has: it starts "v2.")."""
    return isinstance(text, str) and _ID_RE.fullmatch(text) is not None


def _check(link_id: str, secrets: Sequence[bytes]) -> tuple[str, str]:
    """(store name, body) of an id one of `secrets` made; BadToken otherwise."""
    m = _ID_RE.fullmatch(link_id)
    if m is None:
        raise BadToken("malformed link id")
    store_name, body = m.group(1) or "", m.group(2)
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    random, mac = raw[:_RANDOM_BYTES], raw[_RANDOM_BYTES:]
    if not any(hmac.compare_digest(mac, _mac(store_name, random, s)) for s in secrets):
        raise BadToken("link id not ours")
    return store_name, body


def _home(store: Store, store_name: str) -> Store:
    try:
        return named(store, store_name)
    except KeyError:  # the store was removed from the config since: its links cannot work
        raise BadToken("link id names no configured store") from None


def _redacted(exc: StorageError, body: str) -> StorageError:
    """The store's error without the record's name: the id in it is the link, a credential
    that must not reach the audit log or an operator's terminal."""
    return StorageError(str(exc).replace(body, "<link id>"), permanent=exc.permanent)


def store_name_of(store: Store, key: str) -> str:
    """The name of the store that holds `key` ("" = the default), where its link record goes."""
    return store.locate(key)[0] if isinstance(store, RoutedStore) else ""


async def save(store: Store, link_id: str, grant: Grant, secrets: Sequence[bytes]) -> None:
    """Keep `grant` for `link_id` (StorageError when the store fails: the link is then not made)."""
    store_name, body = _check(link_id, secrets)
    record = {"v": 1, "key": grant.key, "expires": grant.expires, "token_id": grant.token_id,
              "message_ref": grant.message_ref}
    try:
        await _home(store, store_name).put_record(f"{RECORD_KIND}/{body}", json.dumps(record).encode())
    except StorageError as exc:
        raise _redacted(exc, body) from None


async def load(store: Store, link_id: str, secrets: Sequence[bytes], now: float | None = None) -> Grant:
    """The grant behind `link_id`: BadToken (not ours, or no such link), ExpiredToken, or
    StorageError when the store cannot answer (the caller says "try again later")."""
    store_name, body = _check(link_id, secrets)
    try:
        raw = await _home(store, store_name).get_record(f"{RECORD_KIND}/{body}")
    except KeyError:
        raise BadToken("no such link") from None
    except StorageError as exc:
        raise _redacted(exc, body) from None
    try:
        record = json.loads(raw)
        grant = Grant(key=record["key"], expires=int(record["expires"]), token_id=record["token_id"],
                      message_ref=record.get("message_ref"))
    except (ValueError, KeyError, TypeError):
        raise BadToken("unreadable link record") from None
    if not isinstance(grant.key, str) or not grant.key or not is_token_id(grant.token_id):
        raise BadToken("unreadable link record")
    if grant.expires <= (time.time() if now is None else now):
        raise ExpiredToken(grant)
    return grant
