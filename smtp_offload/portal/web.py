"""The portal over HTTP, on the link server.

  POST   /api/v1/portal/sessions         scope portal  a session for a case: {uploadUrl, expiresAt, sessionId}
  GET    /api/v1/portal/sessions/{id}    scope portal  its state and files (what the agent may ask)
  DELETE /api/v1/portal/sessions/{id}    scope portal  withdraw it (the link answers 410)
  GET    /u/{token}                      the page: limits, the files so far, Send
  GET    /u/{token}/status               the same as JSON, for the page's script
  POST   /u/{token}/form                 the plain upload form (browsers without JavaScript)
  POST   /u/{token}/send                 deliver the files to the case
  *      /u/{token}/tus[/{uid}]          resumable uploads (portal.tus)
  GET    /portal/static/{name}           the page's script, tus client and style

The page is server-rendered (jinja2, autoescaped) and complete without JavaScript; the
script adds drag and drop, progress and resumable uploads. Its headers are the landing
page's, with a CSP that lets the page load its own script and talk to its own origin.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import BodyPartReader, ClientPayloadError, web
from aiohttp.http_exceptions import BadHttpMessage

from .. import __version__
from ..api.body import CHUNK, spool
from ..api.files import endpoint
from ..api.keys import Keys, Refused
from ..api.protocol import Answer, read_small
from ..config import Scope
from ..errors import StorageError
from ..links.pages import DEFAULT_BRAND, Brand, accent_css
from ..links.service import utc
from ..units import human_size, when
from .service import DELIVERY_WORDS, Portal
from .session import SID_RE, LinkRefused, Session, State
from .tus import add_tus

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store",
                "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow",
                "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}
# The page's own calls (status, send): not cached, not sniffed, no Referer with the link in it.
JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_STATIC = {"portal.js": "text/javascript", "tus.min.js": "text/javascript", "portal.css": "text/css"}
_PORTAL = web.AppKey("portal", Portal)
_BRAND = web.AppKey("portal_brand", Brand)
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("smtp_offload.portal", "templates"),
                          autoescape=True, trim_blocks=True, lstrip_blocks=True)


def add_routes(app: web.Application, portal: Portal, keys: Keys, log: Any, brand: Brand | None = None) -> None:
    """`brand`: branding.* as the link pages show it (links.pages.Brand; its logo read once)."""
    app[_PORTAL] = portal
    app[_BRAND] = brand or DEFAULT_BRAND
    api = _Api(portal, keys, log)
    app.router.add_post("/api/v1/portal/sessions", endpoint("portal_create", Scope.PORTAL, api.create,
                                                            keys=lambda: keys, log=log))
    app.router.add_get("/api/v1/portal/sessions/{sessionId}", endpoint("portal_show", Scope.PORTAL, api.show,
                                                                       keys=lambda: keys, log=log))
    app.router.add_delete("/api/v1/portal/sessions/{sessionId}", endpoint("portal_revoke", Scope.PORTAL, api.revoke,
                                                                          keys=lambda: keys, log=log))
    app.router.add_get("/portal/static/{name}", _static)
    app.router.add_get("/u/{token}", _page)
    app.router.add_get("/u/{token}/status", _status)
    app.router.add_post("/u/{token}/form", _form)
    app.router.add_post("/u/{token}/send", _send)
    add_tus(app, portal, log)

    async def start(app: web.Application) -> None:
        portal.start()

    async def stop(app: web.Application) -> None:
        await portal.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


class _Api:
    def __init__(self, portal: Portal, keys: Keys, log: Any) -> None:
        self.portal, self.keys, self.log = portal, keys, log

    async def create(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        try:
            fields = json.loads(await read_small(request))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Refused(400, "bad_request", "the body must be a JSON object {caseId, to, ...}") from None
        sent = fields.get("customerId") if isinstance(fields, dict) else None
        customer = self.keys.customer(key, sent if isinstance(sent, str) else None)
        if isinstance(fields, dict) and customer is not None:
            fields = {**fields, "customerId": customer}
        try:
            answer = await self.portal.create(fields, key, customer)
        except StorageError:
            raise Refused(503, "storage_unavailable", "the file store is unavailable; try again later",
                          {"Retry-After": "30"}) from None
        audit.update(session=answer["sessionId"], customer=customer)
        return Answer(201, answer)

    async def _session(self, request: web.Request, key) -> Session:
        sid = request.match_info["sessionId"]
        try:
            s = await self.portal.records.load(sid) if SID_RE.fullmatch(sid) else None
        except KeyError:
            s = None
        except StorageError:
            raise Refused(503, "storage_unavailable", "the file store is unavailable; try again later",
                          {"Retry-After": "30"}) from None
        if s is None or (key.customer and (s.customer or "").lower() != key.customer.lower()):
            raise Refused(404, "not_found", "no such upload session (unknown id, expired, or another customer's)")
        return s

    async def show(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        s = await self._session(request, key)
        audit["session"] = s.id
        files = await self.portal.records.files(s.id)
        return Answer(200, {"sessionId": s.id, "caseId": s.case_id, "to": s.to, "customerId": s.customer,
                            "state": "revoked" if s.revoked else s.state, "expiresAt": utc(s.expires),
                            "attempts": s.attempts, "lastError": s.last_error or None,
                            "files": [{**f.public(), "verdict": f.verdict or None, "reason": f.reason or None,
                                       "detectedType": f.detected_type or None, "sha256": f.sha256 or None,
                                       "downloadUrl": f.link or None} for f in files]})

    async def revoke(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        s = await self._session(request, key)
        audit["session"] = s.id
        await self.portal.revoke(s.id, by=key.id)
        return Answer(200, {"sessionId": s.id, "revoked": True})


# -- the pages ---------------------------------------------------------------------------------
def _html(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/html", headers=PAGE_HEADERS)


def _render(request: web.Request, template: str, **context: Any) -> str:
    # Relative to the page (/u/<token>[/...]), so it works behind a proxy's path prefix too.
    static = "../" * (request.path.count("/") - 1) + "portal/static"
    return _ENV.get_template(template).render(static=static, version=__version__, brand=request.app[_BRAND],
                                              **context)


def _refused_page(request: web.Request, status: int, title: str, *lines: str) -> web.Response:
    return _html(status, _render(request, "refused.html", title=title, lines=lines))


ASK = "Please ask the person handling your case for a new upload link."


def _gone(request: web.Request, e: LinkRefused) -> web.Response:
    if e.why == "tampered":
        return _refused_page(request, 403, "This upload link is not valid",
                             "If you copied it from an email, make sure you copied the whole link.", ASK)
    if e.why == "expired":
        return _refused_page(request, 410, "This upload link has expired", f"It expired on {when(e.expires or 0)}.",
                             "Files you sent before it expired are not affected.", ASK)
    return _refused_page(request, 410, "This upload link is no longer valid",
                         "It was withdrawn by the person handling your case.", ASK)


def _unavailable(request: web.Request) -> web.Response:
    return _refused_page(request, 503, "Temporarily unavailable",
                         "Uploads are paused by a problem on our side. Please try again in a few minutes.")


async def _open(request: web.Request) -> Session:
    return await request.app[_PORTAL].open(request.match_info["token"])


async def _page(request: web.Request) -> web.Response:
    portal = request.app[_PORTAL]
    try:
        s = await _open(request)
        status = await portal.status(s)
    except LinkRefused as e:
        return _gone(request, e)
    except StorageError:
        return _unavailable(request)
    cfg = portal.cfg
    token = request.match_info["token"]
    files = [{**f, "size_text": human_size(f["size"])} for f in status["files"]]
    return _html(200, _render(
        request, "page.html", title=f"Send files for case {s.case_id}", case_id=s.case_id, token=token,
        state=s.state, files=files,
        delivery=DELIVERY_WORDS.get(s.state, ""), can_send=status["canSend"], expires=when(s.expires),
        max_file=human_size(cfg.max_file_bytes), max_session=human_size(cfg.max_session_bytes),
        max_files=cfg.max_files, max_file_bytes=cfg.max_file_bytes, chunk=cfg.chunk_bytes,
        accepted_text=", ".join(e.upper() for e in cfg.accepted_types) or "any document or picture",
        accepted_csv=",".join(cfg.accepted_types), accept_attr=",".join(f".{e}" for e in cfg.accepted_types),
        form_max=human_size(cfg.form_max_bytes)))


async def _status(request: web.Request) -> web.Response:
    try:
        s = await _open(request)
        return web.json_response(await request.app[_PORTAL].status(s), headers=JSON_HEADERS)
    except LinkRefused as e:
        return _json_refusal(410 if e.why != "tampered" else 403, f"link_{e.why}", "this upload link is not valid "
                             "any more")
    except StorageError:
        return _json_refusal(503, "unavailable", "a problem on our side; trying again")


def _json_refusal(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status,
                             headers={**JSON_HEADERS, **(headers or {})})


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _back(request: web.Request) -> web.Response:
    # Relative to /u/<token>/form or /send: back to the page, also behind a path prefix.
    return web.Response(status=303, headers={"Location": f"../{request.match_info['token']}",
                                             "Cache-Control": "no-store"})


async def _form(request: web.Request) -> web.StreamResponse:
    """The plain form: each file part spooled (portal.form_max_bytes at most), then judged like
    a resumable upload. Refusals are recorded as the file's result, shown on the page; parts
    past the session's portal.max_files are not read at all."""
    portal = request.app[_PORTAL]
    try:
        s = await _open(request)
        room = portal.cfg.max_files - len(await portal.records.files(s.id))
        if s.state != State.OPEN:
            return _back(request)
        reader = await request.multipart()
        while room > 0:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader) or part.name != "file" or not part.filename:
                continue
            room -= 1
            await _form_file(request, portal, s, part)
    except LinkRefused as e:
        return _gone(request, e)
    except StorageError:
        return _unavailable(request)
    except (ValueError, AssertionError, KeyError, BadHttpMessage, ClientPayloadError):  # not a whole form
        return _refused_page(request, 400, "Nothing was uploaded", "The upload did not arrive whole. Please choose "
                             "the file again and press Upload.")
    return _back(request)


async def _form_file(request: web.Request, portal: Portal, s: Session, part: BodyPartReader) -> None:
    name = part.filename.replace("\\", "/").rsplit("/", 1)[-1].strip() or "file"
    declared = (part.headers.get("Content-Type") or "").split(";")[0].strip().lower() or None
    try:
        spooled = await spool(_chunks(part), limit=portal.cfg.form_max_bytes, base64_encoded=False,
                              directory=None, declared_length=None)
    except Refused:
        await _record_refusal(portal, s, name, f"refused: the form takes files up to "
                              f"{human_size(portal.cfg.form_max_bytes)}; larger files need JavaScript on")
        return
    try:
        if spooled.size == 0:
            await _record_refusal(portal, s, name, "refused: this file is empty — please choose the file again")
            return
        try:
            await portal.admit(s, name, spooled.size, request.remote)
        except Refused as r:
            await _record_refusal(portal, s, name, r.message)
            return
        f = await portal.begin(s, name, spooled.size, declared if declared != "application/octet-stream" else None)
        await portal.judge(s, f, Path(spooled.path), request.remote)
    finally:
        spooled.remove()


async def _chunks(part: BodyPartReader):
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def _record_refusal(portal: Portal, s: Session, name: str, message: str) -> None:
    f = await portal.begin(s, name, 0, None)
    await portal.records.save_file(s.id, f.with_(state="refused", message=message, reason=message))
    portal.metrics.portal_upload("refused")
    portal.log.info("portal_upload", session=s.id, case=s.case_id, file=f.id, name=name[:200], state="refused",
                    reason=message)


async def _send(request: web.Request) -> web.StreamResponse:
    portal = request.app[_PORTAL]
    try:
        s = await _open(request)
        s = await portal.send(s.id, "customer")
    except LinkRefused as e:
        if not _wants_json(request):
            return _gone(request, e)
        return _json_refusal(403 if e.why == "tampered" else 410, f"link_{e.why}", "this upload link is not valid")
    except Refused as r:
        return _json_refusal(r.status, r.error, r.message) if _wants_json(request) else _back(request)
    except StorageError:
        if not _wants_json(request):
            return _unavailable(request)
        return _json_refusal(503, "unavailable", "a problem on our side; please try again in a minute")
    if _wants_json(request):
        return web.json_response({"state": s.state, "message": DELIVERY_WORDS.get(s.state, "")},
                                 status=200 if s.state in (State.SENT, State.SENDING) else 202,
                                 headers=JSON_HEADERS)
    return _back(request)


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "brand.css":  # made from branding.*: the CSP allows no inline style here
        return web.Response(text=accent_css(request.app[_BRAND]), content_type="text/css", headers={
            "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
    if name not in _STATIC:
        raise web.HTTPNotFound()
    body = resources.files("smtp_offload.portal").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=_STATIC[name], headers={
        "Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})
