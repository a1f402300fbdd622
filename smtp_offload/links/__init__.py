"""Expiring download links for offloaded attachments (tokens, secrets, URL building).

The HTTP side lives in `smtp_offload.links.server` (and `.api`, `.pages`), the logic it
shares with the command line in `.service`, so that importing token helpers does not
pull in aiohttp's web stack.
"""

from __future__ import annotations

from urllib.parse import quote

from smtp_offload.links.secret import load_secrets
from smtp_offload.links.tokens import BadToken, ExpiredToken, Grant, TokenError, new_grant, sign, verify

__all__ = ["BadToken", "ExpiredToken", "Grant", "TokenError", "link_url", "load_secrets", "new_grant", "sign",
           "verify"]


def link_url(base_url: str, token: str) -> str:
    """`<base>/f/<token>`: the link that goes into the mail (the landing page, not the file)."""
    return f"{base_url.rstrip('/')}/f/{quote(token, safe='')}"
