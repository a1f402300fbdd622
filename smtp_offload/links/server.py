"""The link service over HTTP: landing page, download, JSON API, health check.

Routes:
  GET/HEAD /f/{token}           landing page (what the file is, a download button)
  GET      /f/{token}/download  a fresh short-lived URL per click (302), or the bytes
                                themselves when the store cannot presign (local store).
                                HEAD is answered 405 by aiohttp: it would have to mint.
  POST     /f/{token}/renew     "Get a new link" on an expired link's page: an agent the SSO
                                proxy names gets a new link (303 to its landing page)
  /api/v1/links/...             refresh / revoke / show, see links.api
  /api/v1/upload, jobs, inspect the file API (api.files)
  /u/..., /api/v1/portal/...    the customers' upload portal (portal.web)
  /api/v1/quarantine/...        held files: list, show, release, delete (quarantine.web)
  GET      /healthz             "ok": the process is alive
  GET      /readyz              200 when storage and the downstream answer, else 503 (JSON
                                says which); probed at most every few seconds (metrics.Readiness)
  GET      /metrics             Prometheus text format (metrics.Metrics); this process only
                                (/readyz and /metrics only without admin.listen: smtp_offload/admin.py)

Mail-security scanners (Safe Links, Mimecast, Proofpoint) fetch every URL in a message on
delivery, so nothing here consumes or counts a link: expiry and revocation alone end it.
And a long-lived link in a mail must not be a long-lived direct file URL, which is why the
mail points at the landing page and only a click on Download mints a URL to the file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
import re
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from smtp_offload.api.files import FilesApi, json_errors
from smtp_offload.errors import StorageError
from smtp_offload.api.keys import Keys
from smtp_offload.config import ApiConfig, BrandingConfig, LinksConfig
from smtp_offload.links import api, pages
from smtp_offload.links.outcomes import outcome_of
from smtp_offload.links.service import AgentHeaders, Gone, LinkService, Revoked, presigned
from smtp_offload.links.tokens import ExpiredToken, Grant
from smtp_offload.admin import WebServer, healthz_response, metrics_response, readyz_response
from smtp_offload.portal import web as portal_web
from smtp_offload.portal.service import Portal
from smtp_offload.quarantine import web as quarantine_web
from smtp_offload.quarantine.service import Quarantine
from smtp_offload.storage.base import Store, StoredObject, content_disposition

_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-store",
    # The token is a bearer credential: keep it out of Referer headers.
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
}
_PAGE_HEADERS = {**_COMMON_HEADERS, "Content-Security-Policy": pages.CSP, "X-Frame-Options": "DENY"}
# Even a stored text/html or SVG gets no scripts, styles or frames if a browser renders it.
_FILE_HEADERS = {**_COMMON_HEADERS, "Content-Security-Policy": "default-src 'none'; sandbox"}
_REDIRECT_HEADERS = {**_COMMON_HEADERS, "Cache-Control": "no-store"}
_TOK = r"[A-Za-z0-9!#$&^_.+-]+"
# A stored type that is not a well-formed media type must not reach the header as is.
_CONTENT_TYPE_RE = re.compile(rf'{_TOK}/{_TOK}(?:\s*;\s*{_TOK}=(?:{_TOK}|"[^"\\\r\n]*"))*')
_MAX_USER_AGENT = 300  # it is client-chosen; bound what goes into the log

_SERVICE = web.AppKey("service", LinkService)
_AGENTS = web.AppKey("agents", AgentHeaders)
_BRAND = web.AppKey("brand", pages.Brand)
_LOG = web.AppKey("log", Any)
_METRICS = web.AppKey("metrics", Any)
_READINESS = web.AppKey("readiness", Any)


def make_app(store: Store, secrets: Sequence[bytes], cfg_links: LinksConfig, *, log: Any,
             metrics: Any = None, readiness: Any = None, api_cfg: ApiConfig | None = None,
             files: FilesApi | None = None, portal: Portal | None = None,
             quarantine: Quarantine | None = None, admin_routes: bool = True,
             branding: BrandingConfig | None = None) -> web.Application:
    """The aiohttp application; `secrets` = [signing secret, *old secrets] (see load_secrets);
    `metrics` (metrics.Metrics) adds /metrics, `readiness` (metrics.Readiness) adds /readyz
    (not with `admin_routes=False`: the admin listener serves them, smtp_offload/admin.py;
    the link server still counts its views and API calls into `metrics`),
    `files` (api.files.FilesApi) the upload, job and inspect API, `portal` (portal.service.Portal)
    the upload portal's pages and API, `quarantine` (quarantine.service.Quarantine) its API."""
    # Read whole: JSON (under 64 KiB, api.protocol.read_small) and the portal's resumable chunks
    # (aiohttp-tus reads each whole: portal.chunk_bytes). Uploads are streamed (api.body).
    limit = max(api.MAX_BODY_BYTES, portal.cfg.chunk_bytes + 65536 if portal is not None else 0)
    app = web.Application(client_max_size=limit, middlewares=[_forwarded_client, _count_api, json_errors])
    service = LinkService(store, secrets, cfg_links)
    app[_SERVICE], app[_LOG] = service, log
    if metrics is not None:
        app[_METRICS] = metrics
    app[_AGENTS] = AgentHeaders(cfg_links)
    app[_BRAND] = pages.Brand.load(branding)  # the logo is read here, once, not per request
    app.router.add_get("/healthz", _healthz)
    if metrics is not None and admin_routes:
        app.router.add_get("/metrics", _metrics)
    if readiness is not None and admin_routes:
        app[_READINESS] = readiness
        app.router.add_get("/readyz", _readyz)
    app.router.add_get("/f/{token}", _landing)  # add_get also answers HEAD
    app.router.add_get("/f/{token}/download", _download, allow_head=False)
    app.router.add_post("/f/{token}/renew", _renew)
    keys = Keys(cfg_links.api_keys, (api_cfg or ApiConfig()).rate_per_minute)  # one registry: one rate per key
    api.add_routes(app, service, keys, log)
    if files is not None:
        files.add_routes(app, keys)
    if portal is not None:
        portal_web.add_routes(app, portal, keys, log, brand=app[_BRAND])
    if quarantine is not None:
        quarantine_web.add_routes(app, quarantine, keys, log)
    return app


class LinkServer(WebServer):
    def __init__(self, store: Store, secrets: Sequence[bytes], cfg_links: LinksConfig, *, log: Any,
                 metrics: Any = None, readiness: Any = None, api_cfg: ApiConfig | None = None,
                 files: FilesApi | None = None, portal: Portal | None = None,
                 quarantine: Quarantine | None = None, admin_routes: bool = True,
                 branding: BrandingConfig | None = None) -> None:
        # No inflating of request bodies: the API refuses encoded uploads (415), and aiohttp
        # would otherwise inflate (and log) a bad gzip body nobody asked it to read.
        super().__init__(make_app(store, secrets, cfg_links, log=log, metrics=metrics, readiness=readiness,
                                  api_cfg=api_cfg, files=files, portal=portal, quarantine=quarantine,
                                  admin_routes=admin_routes, branding=branding), auto_decompress=False)

    async def start(self, host: str, port: int, *, reuse_port: bool = False, own_port: int | None = None) -> None:
        """Listen on host:port (shared by the workers with reuse_port) and, with `own_port`,
        on host:own_port too: this worker's own address, for /metrics and /readyz.
        No access log: request lines carry the token, i.e. the bearer credential; the audit
        events are the record of who fetched what."""
        await self._serve([(host, port, reuse_port)] + ([(host, own_port, False)] if own_port else []))


@web.middleware
async def _forwarded_client(request: web.Request, handler: Any) -> web.StreamResponse:
    """Behind a trusted reverse proxy (links.trusted_proxies), `request.remote` is the client
    X-Forwarded-For names, so per-client limits (portal.uploads_per_minute) and audit events see
    customers and agents, not the proxy's one address. Anyone else's X-Forwarded-For is ignored."""
    if "X-Forwarded-For" in request.headers:
        client = request.app[_AGENTS].client(_peer(request), request.headers)
        if client != request.remote:
            return await handler(request.clone(remote=client))
    return await handler(request)


@web.middleware
async def _count_api(request: web.Request, handler: Any) -> web.StreamResponse:
    """API calls by route and status (smtp_offload_api_requests_total), errors included."""
    if not request.path.startswith("/api/") or _METRICS not in request.app:
        return await handler(request)
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        # The template, never the path itself: ids and tokens would make a series each.
        route = resource.canonical if resource is not None else "unmatched"
        request.app[_METRICS].api_request(route, status)


async def _healthz(request: web.Request) -> web.Response:
    return healthz_response()


async def _readyz(request: web.Request) -> web.Response:
    return await readyz_response(request.app[_READINESS])


async def _metrics(request: web.Request) -> web.Response:
    return metrics_response(request.app[_METRICS])


class _Audit:
    """The one log event per request: who (address, agent), which link, which file, the outcome.
    Never the token itself: it is the credential.

    Every view, download and refusal names the agent (as the trusted SSO proxy named them, or
    null) beside the customer (the stored object's tenant) and the file, so a SIEM can check
    that agents open only the files of customers they serve. `storage_key` and `tenant` are
    the older names of `key` and `customer`, kept for existing queries."""

    def __init__(self, request: web.Request) -> None:
        agent = request.app[_AGENTS].identify(_peer(request), request.headers)
        self.agent = agent.name
        self.fields: dict[str, Any] = {
            "remote": request.remote, "user_agent": request.headers.get("User-Agent", "")[:_MAX_USER_AGENT],
            "method": request.method, "token_id": None, "storage_key": None, "message_id": None, "tenant": None,
            "agent": agent.name, "customer": None, "key": None, "filename": None, "size": None, "sha256": None,
        }
        if agent.header is not None:
            self.fields["agent_header"] = agent.header
        if agent.ignored is not None:
            # Not an error: a client's forgery, or trusted_proxies not naming the SSO proxy.
            self.fields["agent_ignored"] = agent.ignored

    def grant(self, grant: Grant) -> None:
        self.fields.update(token_id=grant.token_id, storage_key=grant.key, key=grant.key)

    def object(self, obj: StoredObject) -> None:
        self.fields.update(message_id=obj.message_id, tenant=obj.tenant, customer=obj.tenant,
                           filename=obj.filename, size=obj.size, sha256=obj.sha256 or None)

    def emit(self, request: web.Request, event: str, status: int) -> None:
        (request.app[_LOG].warning if status >= 500 else request.app[_LOG].info)(event, status=status, **self.fields)
        metrics = request.app.get(_METRICS)
        if metrics is None:
            return
        if self.fields.get("refusal"):
            metrics.link_refused(self.fields["refusal"])
        elif event == "link_view" and status == 200:
            metrics.link_view()
        elif event == "link_download" and self.fields.get("via"):
            metrics.link_download(self.fields["via"])
        elif event == "link_renew" and status == 303:
            metrics.link_renewed()


def _peer(request: web.Request) -> str | None:
    """The address of whoever holds the connection: only that says a request came through
    the SSO proxy (headers, X-Forwarded-For included, are the client's to write)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None


class _Refused(Exception):
    def __init__(self, status: int, page: str) -> None:
        super().__init__(status)
        self.status, self.page = status, page


def _refused(exc: Exception, audit: _Audit, view: pages.View = pages.View()) -> _Refused:
    """The page for a refusal (links.outcomes); `exc` itself when it is none but a bug."""
    outcome = outcome_of(exc, view)
    if outcome is None:
        raise exc
    audit.fields["refusal"] = outcome.kind
    if outcome.detail is not None:
        audit.fields["error"] = outcome.detail  # for operators; the page says nothing about it
    return _Refused(outcome.page_status, outcome.page)


def _html(status: int, page: str) -> web.Response:
    return web.Response(status=status, text=page, content_type="text/html", headers=_PAGE_HEADERS)


async def _resolve(request: web.Request, audit: _Audit, renew: str | None = None) -> tuple[Grant, StoredObject]:
    """Token -> live grant -> object, or _Refused with the page to show. `renew`: the action of
    the expired page's "Get a new link" form, relative to this request's path; offered to an
    agent the SSO proxy names only, and not for presigned links (they are the store's own).

    With links.require_agent and no trusted identity: the sign-in page, whatever the token,
    so nobody learns anything about the link or its file without signing in. The link is
    still resolved, for the log: who tried to open which customer's file."""
    service = request.app[_SERVICE]
    view = pages.View(brand=request.app[_BRAND], agent=audit.agent is not None,
                      renew=renew if audit.agent is not None and not presigned(service.cfg) else None)
    if service.cfg.require_agent and audit.agent is None:
        try:
            await _resolve_link(service, request.match_info["token"], audit, view)
        except _Refused:
            pass
        audit.fields["refusal"] = "agent_required"
        raise _Refused(401, pages.sign_in(service.cfg.sign_in_url, view.brand))
    return await _resolve_link(service, request.match_info["token"], audit, view)


async def _resolve_link(service: LinkService, token: str, audit: _Audit,
                        view: pages.View = pages.View()) -> tuple[Grant, StoredObject]:
    try:
        grant = await service.grant(token)
    except Exception as e:
        if isinstance(e, ExpiredToken):
            audit.grant(e.grant)
            # The expired page names the file, so the agent knows which one to ask for again.
            view = replace(view, obj=await _describe(service, e.grant, audit))
            if view.renew is not None and await _revoked(service, e.grant):
                view = replace(view, renew=None)  # refresh would refuse it: offer no button
        raise _refused(e, audit, view) from None
    audit.grant(grant)
    try:
        obj = await service.fetch(grant)
    except Exception as e:
        if isinstance(e, Revoked):
            await _describe(service, grant, audit)
        raise _refused(e, audit, replace(view, renew=None)) from None
    audit.object(obj)
    return grant, obj


async def _revoked(service: LinkService, grant: Grant) -> bool:
    """Whether an expired link was revoked too; a store that fails to say counts as no."""
    try:
        return await service.store.is_revoked(grant.token_id, grant.key)
    except (StorageError, OSError):
        return False


async def _describe(service: LinkService, grant: Grant, audit: _Audit) -> StoredObject | None:
    """An expired or revoked link still names a customer's file: the refusal's log says whose."""
    obj = await service.describe(grant)
    if obj is not None:
        audit.object(obj)
    return obj


async def _landing(request: web.Request) -> web.Response:
    audit, status = _Audit(request), 500
    try:
        try:
            token = request.match_info["token"]
            grant, obj = await _resolve(request, audit, renew=f"./{quote(token, safe='')}/renew")
            resp = _html(200, pages.landing(obj, grant, token, request.app[_BRAND]))
        except _Refused as r:
            resp = _html(r.status, r.page)
        status = resp.status
        return resp
    finally:
        audit.emit(request, "link_view", status)


async def _download(request: web.Request) -> web.StreamResponse:
    audit, status = _Audit(request), 500
    try:
        try:
            _, obj = await _resolve(request, audit, renew="./renew")
            url, chunks = await _presign_or_open(request.app[_SERVICE], obj, audit)
        except _Refused as r:
            status = r.status
            return _html(r.status, r.page)
        if url is not None:
            # The URL is a credential too: it goes to the client only, never into the log.
            audit.fields["via"] = "presigned"
            status = 302
            return web.Response(status=302, headers={**_REDIRECT_HEADERS, "Location": url})
        audit.fields["via"] = "stream"
        status = 200
        try:
            resp, aborted = await _stream(request, obj, chunks)
        except BaseException as e:
            # Headers are gone already; the short body is all the client will see, so the log must say so.
            audit.fields["aborted"] = type(e).__name__
            raise
        if aborted:
            audit.fields["aborted"] = aborted
        return resp
    finally:
        audit.emit(request, "link_download", status)


def _cross_site(request: web.Request, base_url: str) -> bool:
    """Did another site's page send this POST (cross-site request forgery)? Browsers say so in
    Sec-Fetch-Site, and send Origin with every POST: it must be this server, as the request's
    Host names it or as links.base_url does (a reverse proxy may not pass Host on). Our pages'
    Referrer-Policy no-referrer makes a browser send "Origin: null" even for our own form: then
    only Sec-Fetch-Site: same-origin vouches for it (a sandboxed frame elsewhere sends null too)."""
    fetch_site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if fetch_site == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not a browser's form post (curl, a script): identity alone decides
    if origin.strip() == "null":
        return fetch_site != "same-origin"
    ours = {request.host.lower(), urlsplit(base_url).netloc.lower()}
    return urlsplit(origin.strip()).netloc.lower() not in ours


async def _renew(request: web.Request) -> web.Response:
    """POST /f/{token}/renew, the expired page's "Get a new link": for an agent the SSO proxy
    names, a new link to the same file (service.refresh, which refuses revoked links and files
    that are gone), answered 303 to the new link's landing page. The old link stays expired."""
    audit, status = _Audit(request), 500
    service, brand = request.app[_SERVICE], request.app[_BRAND]
    token = request.match_info["token"]
    try:
        if _cross_site(request, service.cfg.base_url):
            audit.fields["refusal"] = "cross_site"
            status = 403
            return _html(status, pages.cross_site(brand))
        if presigned(service.cfg):
            # A new link here would be the store's own URL, unrevocable for links.ttl_seconds:
            # the page offers no button in presigned mode, and a hand-made request gets nothing.
            audit.fields["refusal"] = "invalid_request"
            status = 403
            return _html(status, pages.renew_not_here(brand))
        if audit.agent is None:
            audit.fields["refusal"] = "agent_required"
            if service.cfg.require_agent and service.cfg.sign_in_url:
                status = 401
                return _html(status, pages.sign_in(service.cfg.sign_in_url, brand))
            status = 403
            return _html(status, pages.renew_needs_agent(brand))
        view = pages.View(brand=brand)
        try:
            # For the log (which link, whose file) and its refusals; expired is what we are here for.
            await _resolve_link(service, token, audit, view)
        except _Refused as r:
            if audit.fields.get("refusal") != "expired":
                status = r.status
                return _html(status, r.page)
            del audit.fields["refusal"]
        try:
            minted = await service.refresh(token=token)
        except Exception as e:
            r = _refused(e, audit, view)
            status = r.status
            return _html(status, r.page)
        audit.fields["new_token_id"] = minted.token_id
        # The path only: the landing page of the new link on this same server (behind a reverse
        # proxy, base_url's path carries its prefix). A presigned link is the store's own URL.
        location = urlsplit(minted.url).path if minted.token_id else minted.url
        status = 303
        return web.Response(status=status, headers={**_REDIRECT_HEADERS, "Location": location})
    finally:
        audit.emit(request, "link_renew", status)


async def _presign_or_open(service: LinkService, obj: StoredObject,
                           audit: _Audit) -> tuple[str | None, AsyncIterator[bytes] | None]:
    """A fresh short-lived URL for this click, or, when the store cannot make one (local
    store), the opened file. Opened before any header is sent, so a file that vanished
    since stat() still gets a proper 404 page."""
    try:
        url = await service.store.presign(obj, service.cfg.click_ttl_seconds)
        return (url, None) if url else (None, await service.store.open(obj.key))
    except KeyError:
        raise _refused(Gone(obj.key), audit) from None
    except Exception as e:
        raise _refused(e, audit) from None


async def _stream(request: web.Request, obj: StoredObject,
                  chunks: AsyncIterator[bytes]) -> tuple[web.StreamResponse, str | None]:
    """Send the file; also returns why it stopped early, if the client hung up."""
    resp = web.StreamResponse(status=200, headers=_FILE_HEADERS)
    ok = _CONTENT_TYPE_RE.fullmatch(obj.content_type or "")
    resp.headers["Content-Type"] = obj.content_type if ok else "application/octet-stream"
    # From the original name, made safe for a header (no path, no control characters).
    resp.headers["Content-Disposition"] = content_disposition(obj.filename)
    resp.content_length = obj.size
    try:
        await resp.prepare(request)
        async for chunk in chunks:
            await resp.write(chunk)
        await resp.write_eof()
    except ConnectionError as e:
        # Closed tabs and scanners that only wanted the headers are routine, not server
        # errors: return quietly instead of letting aiohttp log a traceback.
        return resp, type(e).__name__
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    return resp, None
