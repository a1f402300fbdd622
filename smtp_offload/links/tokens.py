"""Signed, expiring link tokens: `v2.<payload>.<mac>`, all base64url without padding.

payload = "<expires>.<token_id>.<message_ref>.<storage key>" (UTF-8; the key goes last
because it may contain dots). The MAC (HMAC-SHA256) covers the literal "v2.<payload>"
text, so the version is authenticated too and the payload is never parsed before it is
proven to be ours. Tokens are stateless: checking one needs no database, and fetching a
link (as mail scanners do) changes nothing. The only state is the revocation list, keyed
by token_id, which is why every grant carries one.

Rotation: verify() takes a list of secrets. New tokens are signed with the first one
only; the others keep links that were already mailed working until they expire.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
import time
from collections.abc import Sequence
from dataclasses import dataclass

_VERSION = "v2"
_MAX_TOKEN_LEN = 4096  # a real one is a few hundred chars; don't hash megabytes for an attacker
_TOKEN_RE = re.compile(r"v2\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})")  # 43 = len(b64(32 bytes))
_ID_RE = re.compile(r"[0-9a-f]{16}")


class TokenError(Exception):
    """Base of everything verify() raises."""


class BadToken(TokenError):
    """Not a token we issued: forged, truncated, malformed or signed with an unknown secret."""


class ExpiredToken(TokenError):
    """Genuine, but past its expiry. Carries the grant: refresh and the 410 page need it."""

    def __init__(self, grant: Grant) -> None:
        super().__init__(f"token expired at {grant.expires}")
        self.grant = grant

    @property
    def expires(self) -> int:
        return self.grant.expires


@dataclass(frozen=True)
class Grant:
    """What a token grants: download of `key` until `expires` (unix seconds, exclusive)."""

    key: str
    expires: int
    token_id: str  # 16 hex chars, random; what revocation is recorded under
    message_ref: str | None = None  # first 16 hex chars of sha256(Message-ID)


def message_ref(message_id: str | None) -> str | None:
    """The short, non-reversible reference a token carries instead of the Message-ID itself
    (tokens travel in URLs; a Message-ID can hold a host name or a user's address)."""
    if not message_id:
        return None
    return hashlib.sha256(message_id.strip().encode("utf-8", "surrogateescape")).hexdigest()[:16]


def is_token_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def new_grant(key: str, ttl: int, message_id: str | None = None, now: float | None = None) -> Grant:
    """A fresh grant for `key`, valid for `ttl` seconds from `now`, with a new random token_id."""
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise ValueError("ttl must be a positive int (seconds)")
    expires = int(time.time() if now is None else now) + ttl
    return Grant(key=key, expires=expires, token_id=_random.token_hex(8), message_ref=message_ref(message_id))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _mac(signed: str, secret: bytes) -> str:
    return _b64(hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest())


def sign(grant: Grant, secret: bytes) -> str:
    """The token for `grant`, signed with `secret` (the first of the configured secrets)."""
    if not isinstance(grant.key, str) or not grant.key:
        raise ValueError("key must be a non-empty string")
    if isinstance(grant.expires, bool) or not isinstance(grant.expires, int) or grant.expires < 0:
        raise ValueError("expires must be a non-negative int (unix seconds)")
    if not is_token_id(grant.token_id):
        raise ValueError("token_id must be 16 lower-case hex characters")
    if grant.message_ref is not None and not is_token_id(grant.message_ref):
        raise ValueError("message_ref must be 16 lower-case hex characters")
    if not secret:
        raise ValueError("secret must not be empty")
    payload = f"{grant.expires}.{grant.token_id}.{grant.message_ref or ''}.{grant.key}"
    signed = f"{_VERSION}.{_b64(payload.encode('utf-8'))}"
    return f"{signed}.{_mac(signed, secret)}"


def verify(token: str, secrets: Sequence[bytes], now: float | None = None) -> Grant:
    """The grant a token carries if any of `secrets` signed it; BadToken or ExpiredToken otherwise.

    A forged token is always BadToken, even when its payload says "expired": a forger must
    not learn anything from the answer.
    """
    if isinstance(secrets, (bytes, str)) or not secrets or not all(secrets):
        raise ValueError("secrets must be a non-empty list of non-empty secrets")
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_LEN:
        raise BadToken("malformed token")
    m = _TOKEN_RE.fullmatch(token)
    if m is None:
        raise BadToken("malformed token")
    signed, mac = token[: m.start(2) - 1], m.group(2)
    # Compare against every secret (no early exit), so timing says nothing about which one matched.
    genuine = False
    for secret in secrets:
        genuine |= hmac.compare_digest(_mac(signed, secret), mac)
    if not genuine:
        raise BadToken("bad signature")
    # Authentic from here on; a parse failure now means we minted something broken.
    try:
        expires_text, token_id, ref, key = _unb64(m.group(1)).decode("utf-8").split(".", 3)
    except (binascii.Error, UnicodeDecodeError, ValueError) as e:
        raise BadToken("undecodable payload") from e
    if not (expires_text.isdigit() and expires_text.isascii()) or not is_token_id(token_id) or not key \
            or (ref and not is_token_id(ref)):
        raise BadToken("undecodable payload")
    grant = Grant(key=key, expires=int(expires_text), token_id=token_id, message_ref=ref or None)
    if (time.time() if now is None else now) >= grant.expires:
        raise ExpiredToken(grant)
    return grant
