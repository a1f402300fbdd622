"""JSON API for agents' desktops and operators: refresh, revoke and show links.

  POST /api/v1/links/refresh  {"token": T} | {"key": K}, optional "ttl_seconds"
                              -> {"url", "token_id", "expires", "expires_at", "key"}
  POST /api/v1/links/revoke   {"token": T} | {"token_id": ID} -> {"revoked": ID}
  GET  /api/v1/links/show?token=T -> grant (expiry, token_id, revoked) + object metadata

Every call needs `Authorization: Bearer <key>` with a key from `links.api_keys` that has the
"links" scope (api.keys); with no keys configured the API does not exist (404), so nobody can
probe it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientConnectionError, web
from aiohttp.http_exceptions import BadHttpMessage

from smtp_offload.api.keys import Keys, Refused
from smtp_offload.api.protocol import MAX_USER_AGENT, SMALL_BODY, json_response, kept_headers, read_small
from smtp_offload.config import ApiKey, Scope
from smtp_offload.links.outcomes import outcome_of
from smtp_offload.links.service import LinkService
from smtp_offload.units import clip

MAX_BODY_BYTES = SMALL_BODY  # requests are a token and a number; anything bigger is not ours

Handler = Callable[[web.Request, ApiKey], Awaitable[dict[str, Any]]]


class _ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def add_routes(app: web.Application, service: LinkService, keys: Keys, log: Any) -> None:
    api = _Api(service, keys, log)
    app.router.add_post("/api/v1/links/refresh", api.wrap("refresh", api.refresh))
    app.router.add_post("/api/v1/links/revoke", api.wrap("revoke", api.revoke))
    app.router.add_get("/api/v1/links/show", api.wrap("show", api.show))


_HTTP_MESSAGES = {413: f"request body larger than {MAX_BODY_BYTES} bytes"}


class _Api:
    def __init__(self, service: LinkService, keys: Keys, log: Any) -> None:
        self.service, self.keys, self.log = service, keys, log

    def wrap(self, action: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        """Auth, error mapping and the one audit event per call, around a handler that returns JSON."""

        async def endpoint(request: web.Request) -> web.Response:
            audit: dict[str, Any] = {"action": action, "remote": request.remote,
                                     "user_agent": request.headers.get("User-Agent", "")[:MAX_USER_AGENT]}
            status = 500
            try:
                try:
                    key = self._authorize(request)
                    audit["key_id"] = key.id
                    body = await handler(request, key)
                    resp = json_response(200, body)
                except _ApiError as e:
                    resp = json_response(e.status, {"error": e.message}, e.headers)
                    audit["error"] = e.message
                except web.HTTPException as e:  # aiohttp's own refusals, e.g. 413 from read()
                    message = _HTTP_MESSAGES.get(e.status, e.reason)
                    resp = json_response(e.status, {"error": message}, kept_headers(e))
                    audit["error"] = message
                except BadHttpMessage as e:  # a body aiohttp could not read (broken chunking...)
                    message = f"the request body could not be read: {clip(e.message)}"
                    resp = json_response(400, {"error": message})
                    audit["error"] = message
                except (ConnectionError, ClientConnectionError):  # the client went away mid-body
                    resp = json_response(499, {"error": "the client went away"})  # nobody reads it
                    audit["error"] = "client_disconnected"
                except Exception as e:  # a bug: a JSON 500 and a traceback in our log, not aiohttp's page
                    self.log.error("link_api_internal_error", action=action, exc_info=e)
                    resp = json_response(500, {"error": "internal error"})
                    audit["error"] = "internal error"
                status = resp.status
                if status == 200:
                    audit.update(token_id=body.get("token_id") or body.get("revoked"), storage_key=body.get("key"))
                return resp
            finally:
                (self.log.warning if status >= 500 else self.log.info)("link_api", status=status, **audit)

        return endpoint

    def _authorize(self, request: web.Request) -> ApiKey:
        if not self.keys.enabled:
            raise _ApiError(404, "API disabled")
        try:
            return self.keys.admit(request.headers.get("Authorization", ""), Scope.LINKS)
        except Refused as r:
            raise _ApiError(r.status, r.message, r.headers) from None

    @staticmethod
    async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
        raw = await read_small(request, MAX_BODY_BYTES)  # past it: 413, answered by wrap()
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]] nesting
            raise _ApiError(400, "request body must be a JSON object") from None
        if not isinstance(data, dict):
            raise _ApiError(400, "request body must be a JSON object")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise _ApiError(400, f"unknown field: {clip(unknown[0])} (expected: {', '.join(sorted(allowed))})")
        return data

    async def _call(self, work: Awaitable[Any]) -> Any:
        """The service's refusals as HTTP statuses with a plain message (links.outcomes)."""
        try:
            return await work
        except Exception as e:
            outcome = outcome_of(e)
            if outcome is None:
                raise
            raise _ApiError(outcome.api_status, outcome.message) from None

    async def _own(self, key: ApiKey, *, token: Any = None, storage_key: Any = None) -> None:
        """A key bound to a customer acts on that customer's files only; another's are as
        absent to it as files that do not exist (404, nothing to probe)."""
        if not key.customer:
            return
        if token is not None:
            storage_key = await self._call(self._grant_key(token))
        if not isinstance(storage_key, str):
            return  # the service refuses it as malformed
        try:
            obj = await self._call(self.service.store.stat(storage_key))  # store down: 503, as for any call
        except KeyError:
            obj = None
        if obj is None or (obj.tenant or "").lower() != key.customer.lower():
            raise _ApiError(404, "file no longer available")

    async def _grant_key(self, token: Any) -> str:
        if not isinstance(token, str):
            return token
        return (await self.service.grant(token, allow_expired=True)).key

    async def refresh(self, request: web.Request, key: ApiKey) -> dict[str, Any]:
        data = await self._body(request, {"token", "key", "ttl_seconds"})
        await self._own(key, token=data.get("token"), storage_key=data.get("key"))
        minted = await self._call(self.service.refresh(
            token=data.get("token"), key=data.get("key"), ttl=data.get("ttl_seconds")))
        return minted.as_json()

    async def revoke(self, request: web.Request, key: ApiKey) -> dict[str, Any]:
        data = await self._body(request, {"token", "token_id"})
        if key.customer and data.get("token") is None and data.get("token_id") is not None:
            raise _ApiError(403, "a key bound to a customer revokes a link by its token, not by token_id")
        await self._own(key, token=data.get("token"))
        token_id = await self._call(self.service.revoke(token=data.get("token"), token_id=data.get("token_id")))
        return {"revoked": token_id}

    async def show(self, request: web.Request, key: ApiKey) -> dict[str, Any]:
        token = request.query.get("token")
        if not token:
            raise _ApiError(400, "query parameter token is required")
        await self._own(key, token=token)
        return await self._call(self.service.show(token))
