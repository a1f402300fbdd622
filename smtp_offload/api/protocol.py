"""What an API request says and what an answer is: the header readers (each refuses a
malformed value with a 400 that names the header) and the Answer the handlers return."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..model import Verdict
from .keys import Refused

MAX_FILENAME = 1024
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_CUSTOMER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # one storage key segment as is (case aside)
EMPTY = {"error": "empty", "message": "Empty file"}  # the seed's answer for zero bytes
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}  # on every API answer
MAX_USER_AGENT = 300  # it is client-chosen; bound what goes into the audit log


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    after: Callable[[], None] | None = None  # run once the response is sent


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers={**HEADERS, **(headers or {})})


def kept_headers(e: web.HTTPException) -> dict[str, str]:
    """An aiohttp refusal's headers that still apply (Allow on a 405...); the body is ours."""
    return {k: v for k, v in e.headers.items() if k.lower() not in ("content-type", "content-length")}


SMALL_BODY = 64 * 1024  # a JSON request: fields, a URL; anything bigger is not ours


async def read_small(request: web.Request, limit: int = SMALL_BODY) -> bytes:
    """A JSON request's body, whole, or 413 past `limit`. Not aiohttp's read(): its limit is the
    app's client_max_size, which the portal's resumable chunks (portal.chunk_bytes) set higher."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = bytearray()
    async for chunk in request.content.iter_chunked(16384):
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return bytes(body)


def storage_down() -> Refused:
    return Refused(503, "storage_unavailable", "the file store is unavailable; try again later", {"Retry-After": "30"})


def bad(message: str) -> Refused:
    return Refused(400, "bad_request", message)


# -- request headers ------------------------------------------------------------------------
def filename_of(request: web.Request, required: bool = True) -> str | None:
    raw = request.headers.get("X-Filename")
    if raw is None or not raw.strip():
        if required:
            raise bad("the X-Filename header is required (the file's name, UTF-8 or percent-encoded)")
        return None
    raw_bytes = raw.encode("utf-8", "surrogateescape")  # aiohttp decodes header bytes this way
    try:
        name = raw_bytes.decode("utf-8")
    except UnicodeError:
        # Not UTF-8: many HTTP clients send a header's non-ASCII characters as ISO-8859-1, the
        # header charset HTTP/1.1 long defined. Read it so rather than refuse the customer's file.
        name = raw_bytes.decode("latin-1")
    if "%" in name:
        try:
            name = urllib.parse.unquote(name, errors="strict")
        except UnicodeError:
            raise bad("X-Filename must be UTF-8 (or percent-encoded UTF-8)") from None
    name = name.strip()
    if not name or len(name) > MAX_FILENAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise bad(f"X-Filename must be 1 to {MAX_FILENAME} characters without control characters")
    return name


def declared_type_of(request: web.Request) -> str | None:
    value = request.headers.get("X-Declared-Type")
    if value is None:
        value = request.headers.get("Content-Type", "")
        base = value.split(";")[0].strip().lower()
        if not base or base in ("application/octet-stream", "application/json"):
            return None
    value = value.split(";")[0].strip()
    if not value:
        return None
    if not MEDIA_TYPE.fullmatch(value):
        raise bad("X-Declared-Type must be a media type such as application/pdf")
    return value.lower()


def customer_of(request: web.Request) -> str | None:
    value = request.headers.get("X-CustomerId")
    if value is None or not value.strip():
        return None
    if not _CUSTOMER.fullmatch(value.strip()):
        raise bad("X-CustomerId must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value.strip()


def identity_encoding(request: web.Request) -> None:
    """A file's bytes as sent, or base64: a compressed body would be judged after aiohttp
    inflated it, and a truncated gzip stream inflates to a shorter "file" without an error."""
    enc = request.headers.get("Content-Encoding", "").strip().lower()
    if enc not in ("", "identity"):
        raise Refused(415, "unsupported_encoding",
                      "Content-Encoding is not accepted: send the file's bytes (or base64 with "
                      "Content-Transfer-Encoding: base64)")


def base64_body(request: web.Request) -> bool:
    cte = request.headers.get("Content-Transfer-Encoding", "").strip().lower()
    if cte in ("", "binary", "8bit", "7bit"):
        return False
    if cte == "base64":
        return True
    raise bad('Content-Transfer-Encoding must be "base64" or absent (raw bytes)')


def idempotency_key_of(request: web.Request) -> str | None:
    value = request.headers.get("Idempotency-Key")
    if value is None or value == "":  # a flow template's unset variable sends it empty: none given
        return None
    if not 0 < len(value) <= 255 or not all(33 <= ord(c) < 127 for c in value):
        raise bad("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return value


def wants_async(request: web.Request) -> bool:
    prefs = request.headers.get("Prefer", "")
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in prefs.split(","))


def api_verdict(v: Verdict) -> str:
    """The API's word for a verdict: an accepted file is "accepted", a refused one says why."""
    return "accepted" if v in (Verdict.KEEP, Verdict.OFFLOAD) else v.value
