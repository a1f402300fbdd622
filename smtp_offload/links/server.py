"""The HTTP side of offloading: turns a signed link back into the stored file.

Downloads are idempotent on purpose: mail security gateways and link previewers
fetch every URL in a message, so a link that counted or consumed fetches would be
dead before the recipient clicked it. Expiry alone bounds a link's life.
"""

from __future__ import annotations

import html
import re
import unicodedata
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from aiohttp import web

from smtp_offload.errors import StorageError
from smtp_offload.links.tokens import BadToken, ExpiredToken, verify
from smtp_offload.storage.base import Store, StoredObject

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-store",
    # Even a stored text/html or SVG gets no scripts, styles or frames if a browser renders it.
    "Content-Security-Policy": "default-src 'none'",
    # The token is a bearer credential: keep it out of Referer headers.
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
}
_TOK = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE_RE = re.compile(rf'{_TOK}/{_TOK}(?:\s*;\s*{_TOK}=(?:{_TOK}|"[^"\\\r\n]*"))*')
_FALLBACK_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-+()[],@&=!~'")

_STORE = web.AppKey("store", Store)
_SECRET = web.AppKey("secret", bytes)
_LOG = web.AppKey("log", Any)


def make_app(store: Store, secret: bytes, *, log: Any) -> web.Application:
    app = web.Application()
    app[_STORE], app[_SECRET], app[_LOG] = store, secret, log
    # add_get also answers HEAD.
    app.router.add_get("/f/{token}", _download)
    app.router.add_get("/f/{token}/{name}", _download)  # the name only makes the URL readable
    app.router.add_get("/healthz", _healthz)
    return app


class LinkServer:
    def __init__(self, store: Store, secret: bytes, *, log: Any) -> None:
        self._app = make_app(store, secret, log=log)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    async def start(self, host: str, port: int) -> None:
        if self._runner is not None:
            raise RuntimeError("LinkServer already started")
        # No access log: request lines carry the token, i.e. the bearer credential.
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LinkServer not started")
        return self._port


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _download(request: web.Request) -> web.StreamResponse:
    app = request.app
    store, log = app[_STORE], app[_LOG]
    key: str | None = None
    status = 500
    extra: dict[str, str] = {}
    try:
        try:
            key = verify(request.match_info["token"], app[_SECRET])
        except ExpiredToken as e:
            key, status = e.key, 410
            when = datetime.fromtimestamp(e.expires, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            return _page(410, "Link expired", f"This download link expired on {when}. Please ask "
                         "the sender (or the support agent who sent it) to send you the file again.")
        except BadToken:
            status = 403
            return _page(403, "Link not valid", "This download link is not valid. If you copied it "
                         "from an email, make sure you copied the whole link.")
        try:
            obj = await store.stat(key)
            chunks = None if request.method == "HEAD" else await store.open(key)
        except KeyError:
            status = 404
            return _page(404, "File not available", "The file behind this link is no longer available. "
                         "Please ask the sender for the file again.")
        except (StorageError, OSError) as e:
            status = 503
            log.warning("link_store_error", key=key, error=str(e))
            return _page(503, "Temporarily unavailable", "The file cannot be downloaded right now "
                         "because of a temporary problem on our side. Please try again in a few minutes.")
        status = 200
        try:
            resp, aborted = await _stream(request, obj, chunks)
            if aborted:
                extra["aborted"] = aborted
            return resp
        except BaseException as e:
            # Headers are gone already; the short body is all the client will see, so the log must say so.
            extra["aborted"] = type(e).__name__
            raise
    finally:
        log.info("link_served", key=key, status=status, method=request.method, remote=request.remote, **extra)


async def _stream(
    request: web.Request, obj: StoredObject, chunks: Any
) -> tuple[web.StreamResponse, str | None]:
    """Send the file; also returns why it stopped early, if the client hung up."""
    resp = web.StreamResponse(status=200, headers=_SECURITY_HEADERS)
    ctype = obj.content_type if _CONTENT_TYPE_RE.fullmatch(obj.content_type) else ""
    resp.headers["Content-Type"] = ctype or "application/octet-stream"
    resp.headers["Content-Disposition"] = content_disposition(obj.filename)
    resp.content_length = obj.size
    try:
        await resp.prepare(request)
        if chunks is not None:
            async for chunk in chunks:
                await resp.write(chunk)
        await resp.write_eof()
    except ConnectionError as e:
        # Closed tabs and scanners that only wanted the headers are routine, not server
        # errors: return quietly instead of letting aiohttp log a traceback.
        return resp, type(e).__name__
    finally:
        if chunks is not None:
            await chunks.aclose()
    return resp, None


def content_disposition(filename: str) -> str:
    """RFC 6266 attachment header: an ASCII `filename` for old clients, the real one in `filename*`."""
    decomposed = unicodedata.normalize("NFKD", filename)
    ascii_name = "".join(
        c if c in _FALLBACK_SAFE else "_" for c in decomposed if not unicodedata.combining(c)
    )
    stem, dot, ext = ascii_name.rpartition(".")
    if not dot:
        stem, ext = ascii_name, ""
    if not any(c.isalnum() for c in stem):  # e.g. an all-Cyrillic name
        ascii_name = "download" + (f".{ext}" if ext.isalnum() else "")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _page(status: int, title: str, message: str) -> web.Response:
    # Self-contained (CSP forbids anything else anyway) and free of keys, paths and tracebacks.
    body = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title></head>"
        "<body style=\"font-family:sans-serif;max-width:36em;margin:3em auto;padding:0 1em\">"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html", headers=_SECURITY_HEADERS)
