"""Who may call the API: bearer keys from links.api_keys, their scopes, their customer, their rate.

Every /api/v1 endpoint (the link API of issue 11 and the file API) asks this one registry.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Sequence

from ..config import ApiKey, Scope

CHALLENGE = 'Bearer realm="smtp-offload"'
POLL_FACTOR = 10


class Refused(Exception):
    """The caller may not go on: `status` (401, 403, 429), a plain `message`, headers to send."""

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None,
                 **extra: object) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers or {}
        self.extra = extra  # more fields for the JSON body


class Bucket:
    """A token bucket: `rate` calls a minute, up to a minute's worth at once."""

    def __init__(self, rate: int, now: float) -> None:
        self.capacity = float(rate)
        self.per_second = rate / 60.0
        self.tokens, self.at = self.capacity, now

    def take(self, now: float) -> float:
        """0 when the call may go on, else the seconds until it could."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.per_second


class Keys:
    def __init__(self, keys: Sequence[ApiKey], default_rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = list(keys)
        self.default_rate = default_rate
        self.clock = clock
        # Compared as digests: equal length whatever was sent, so the comparison time says
        # nothing about a key's length or prefix.
        self._digests = [hashlib.sha256(k.key.encode("utf-8")).digest() for k in self.keys]
        self._buckets: dict[str, Bucket] = {}  # per instance: behind a balancer each enforces its share

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def authenticate(self, authorization: str) -> ApiKey:
        """The key an Authorization header carries; Refused(401) otherwise."""
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Refused(401, "unauthorized", "missing bearer token", {"WWW-Authenticate": CHALLENGE})
        sent = hashlib.sha256(credential.strip().encode("utf-8", "surrogateescape")).digest()
        found = None
        for key, digest in zip(self.keys, self._digests):  # no early exit: timing does not tell which key
            if hmac.compare_digest(sent, digest):
                found = key
        if found is None:
            raise Refused(401, "unauthorized", "invalid API key",
                          {"WWW-Authenticate": CHALLENGE + ', error="invalid_token"'})
        return found

    def admit(self, authorization: str, scope: Scope, *, polls: bool = False) -> ApiKey:
        """authenticate, then the key's scope and rate; Refused(401, 403 or 429). Job polls
        (`polls`) have their own bucket at ten times the rate: a flow polling a large upload's
        job every second must not starve its next uploads."""
        key = self.authenticate(authorization)
        if scope not in key.scopes:
            raise Refused(403, "forbidden", f'this API key may not use the "{scope.value}" API '
                          f"(its scopes: {', '.join(s.value for s in key.scopes)})")
        name = f"{key.id}/polls" if polls else key.id
        bucket = self._buckets.get(name)
        if bucket is None:
            rate = (key.rate_per_minute or self.default_rate) * (POLL_FACTOR if polls else 1)
            bucket = self._buckets[name] = Bucket(rate, self.clock())
        wait = bucket.take(self.clock())
        if wait:
            seconds = max(1, math.ceil(wait))
            raise Refused(429, "rate_limited", f"too many requests for this API key; retry in {seconds} s",
                          {"Retry-After": str(seconds)})
        return key

    @staticmethod
    def customer(key: ApiKey, sent: str | None) -> str | None:
        """The customer a call acts for: the key's own when it is bound to one (a different one
        sent is refused with 403), else what the caller sent."""
        if key.customer:
            if sent and sent.lower() != key.customer.lower():
                raise Refused(403, "forbidden", "this API key is bound to another customer id")
            return key.customer
        return sent or None
