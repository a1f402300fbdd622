"""Expiring download links for offloaded attachments (tokens, secret, URL building).

The HTTP server lives in `smtp_offload.links.server` so that importing token helpers
does not pull in aiohttp's web stack.
"""

from __future__ import annotations

from urllib.parse import quote

from smtp_offload.links.secret import load_secret
from smtp_offload.links.tokens import BadToken, ExpiredToken, TokenError, sign, verify
from smtp_offload.storage.base import safe_filename

__all__ = ["BadToken", "ExpiredToken", "TokenError", "link_url", "load_secret", "sign", "verify"]


def link_url(base_url: str, token: str, filename: str) -> str:
    """`<base>/f/<token>/<name>`; the name is cosmetic but must stay one path segment."""
    # safe_filename drops "/" and "\" first: routers may decode %2F and then see two segments.
    name = quote(safe_filename(filename), safe="")
    return f"{base_url.rstrip('/')}/f/{quote(token, safe='')}/{name}"
