"""The quarantine over HTTP, on the link server (scope quarantine; a key bound to a customer
sees and deletes that customer's items only, another's answer 404 like unknown ones, and it
releases none).

  GET    /api/v1/quarantine                 every held item, oldest first: {"items": [...]}, and
                                            "unavailable": [store names] when some store could not
                                            be read (503 when none could)
  GET    /api/v1/quarantine/{id}            one item
  POST   /api/v1/quarantine/{id}/release    send it to the original recipients (?force=true:
                                            again, though released already); never with a key
                                            bound to a customer (403)
  DELETE /api/v1/quarantine/{id}            delete it and its bytes now
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..api.files import endpoint
from ..api.keys import Keys, Refused
from ..api.protocol import Answer
from ..config import Scope
from .service import Quarantine

_FORCE = {"true": True, "false": False}


def add_routes(app: web.Application, quarantine: Quarantine, keys: Keys, log: Any) -> None:
    api = _Api(quarantine)

    def wrap(action: str, handler):
        return endpoint(action, Scope.QUARANTINE, handler, keys=lambda: keys, log=log)

    app.router.add_get("/api/v1/quarantine", wrap("quarantine_list", api.list))
    app.router.add_get("/api/v1/quarantine/{id}", wrap("quarantine_show", api.show))
    app.router.add_post("/api/v1/quarantine/{id}/release", wrap("quarantine_release", api.release))
    app.router.add_delete("/api/v1/quarantine/{id}", wrap("quarantine_delete", api.delete))


def _customer(key) -> str | None:
    return key.customer or None


class _Api:
    def __init__(self, quarantine: Quarantine) -> None:
        self.q = quarantine

    async def list(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        found = await self.q.list(_customer(key))
        audit["items"] = len(found.items)
        body: dict[str, Any] = {"items": [self.q.public(i) for i in found.items]}
        if found.unavailable:
            # What the stores that answered hold, and which did not: one region's store down
            # must not hide every other customer's items.
            body["unavailable"] = audit["unavailable"] = sorted(found.unavailable)
        return Answer(200, body)

    async def show(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        qid = audit["id"] = request.match_info["id"]
        return Answer(200, self.q.public(await self.q.get(qid, _customer(key))))

    async def release(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        qid = audit["id"] = request.match_info["id"]
        raw = request.query.get("force", "false")
        if raw not in _FORCE:
            raise Refused(400, "bad_request", "force must be true or false")
        item = await self.q.release(qid, key.id, force=_FORCE[raw], customer=_customer(key))
        return Answer(200, self.q.public(item))

    async def delete(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        qid = audit["id"] = request.match_info["id"]
        await self.q.delete(qid, key.id, _customer(key))
        return Answer(200, {"id": qid, "deleted": True})
