"""Signed, expiring download tokens: `v1.<payload>.<mac>`, all base64url without padding.

payload = "<expires unix seconds>.<storage key>" (UTF-8). The MAC covers the literal
"v1.<payload>" text, so the version is authenticated too and the payload is never
parsed before it is proven to be ours. Tokens are stateless on purpose: checking one
needs no database, and fetching it (as mail scanners do) changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time

_VERSION = "v1"
_MAX_TOKEN_LEN = 4096  # a real one is a few hundred chars; don't hash megabytes for an attacker
_TOKEN_RE = re.compile(r"v1\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})")  # 43 = len(b64(32 bytes))


class TokenError(Exception):
    """Base of everything verify() raises."""


class BadToken(TokenError):
    """Not a token we issued: forged, truncated, malformed or signed with another secret."""


class ExpiredToken(TokenError):
    """Genuine, but past its expiry."""

    def __init__(self, key: str, expires: int) -> None:
        super().__init__(f"token expired at {expires}")
        self.key = key
        self.expires = expires


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _mac(signed: str, secret: bytes) -> str:
    return _b64(hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest())


def sign(key: str, expires: int, secret: bytes) -> str:
    """A token granting download of `key` until unix time `expires` (exclusive)."""
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    if isinstance(expires, bool) or not isinstance(expires, int) or expires < 0:
        raise ValueError("expires must be a non-negative int (unix seconds)")
    if not secret:
        raise ValueError("secret must not be empty")
    signed = f"{_VERSION}.{_b64(f'{expires}.{key}'.encode('utf-8'))}"
    return f"{signed}.{_mac(signed, secret)}"


def verify(token: str, secret: bytes, now: float | None = None) -> str:
    """The storage key the token grants; BadToken or ExpiredToken otherwise."""
    if not secret:
        raise ValueError("secret must not be empty")
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_LEN:
        raise BadToken("malformed token")
    m = _TOKEN_RE.fullmatch(token)
    if m is None:
        raise BadToken("malformed token")
    signed = token[: m.start(2) - 1]
    if not hmac.compare_digest(_mac(signed, secret), m.group(2)):
        raise BadToken("bad signature")
    # Authentic from here on; a parse failure now means we minted something broken.
    try:
        expires_text, key = _unb64(m.group(1)).decode("utf-8").split(".", 1)
        expires = int(expires_text)
    except (binascii.Error, UnicodeDecodeError, ValueError) as e:
        raise BadToken("undecodable payload") from e
    if not key or not expires_text.isdigit():
        raise BadToken("undecodable payload")
    if (time.time() if now is None else now) >= expires:
        raise ExpiredToken(key, expires)
    return key
