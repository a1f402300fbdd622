"""Data residency: several stores by name, and which tenant's files go to which one.

A file routed to a named store gets a key that starts with `@<name>/`, then that store's own
key. Links, refresh, revoke and the API therefore find a file wherever it went, even after
the routing table changed; a key without the mark is the default store's, so links mailed
before routing was configured keep working. `@` never starts a key make_key produces (nor a
prefix: config refuses one), so no key can be read as another store's.

Records (jobs, idempotency, portal sessions) stay in the default store: they are this
service's state, shared by every instance. A revocation is written beside its file when the
link's key is known, so one store being down never blocks another customer's links.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping

from .base import Body, InvalidKey, Store, StoredObject, tenant_segment

MARK = "@"


class RoutedStore:
    def __init__(self, default: Store, named: Mapping[str, Store], routes: Mapping[str, str]) -> None:
        self.default = default
        self.named = dict(named)
        # Tenants compared as their key segment: "Example.DE" and "example.de" are one customer.
        self.routes = {tenant_segment(t): name for t, name in routes.items()}
        self.key_prefix = default.key_prefix

    # -- routing ----------------------------------------------------------------------------

    def route(self, tenant: str | None) -> str:
        """The name of the store `tenant`'s files go to ("" = the default store)."""
        return self.routes.get(tenant_segment(tenant), "") if tenant else ""

    def store(self, name: str) -> Store:
        return self.named[name] if name else self.default

    def locate(self, key: str) -> tuple[str, Store, str]:
        """(store name, store, that store's own key) of a key this store handed out."""
        if not isinstance(key, str) or not key.startswith(MARK):
            return "", self.default, key
        name, _, inner = key[len(MARK):].partition("/")
        if name not in self.named or not inner:
            raise InvalidKey(key)
        return name, self.named[name], inner

    def _outer(self, name: str, obj: StoredObject) -> StoredObject:
        return obj if not name else _with_key(obj, f"{MARK}{name}/{obj.key}")

    def _inner_key(self, name: str, key: str) -> str:
        """A key made with our key_prefix (the default store's) as the named store's own key."""
        prefix = self.key_prefix.strip("/")
        tail = key[len(prefix) + 1:] if prefix and key.startswith(prefix + "/") else key
        own = self.named[name].key_prefix.strip("/")
        return f"{own}/{tail}" if own else tail

    # -- Store API --------------------------------------------------------------------------

    async def put(self, data: Body, obj: StoredObject) -> StoredObject:
        name = self.route(obj.tenant)
        if not name:
            return await self.default.put(data, obj)
        stored = await self.named[name].put(data, _with_key(obj, self._inner_key(name, obj.key)))
        return self._outer(name, stored)

    async def stat(self, key: str) -> StoredObject:
        name, store, inner = self.locate(key)
        return self._outer(name, await store.stat(inner))

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        _, store, inner = self.locate(key)
        return await store.open(inner, start, end)

    async def delete(self, key: str) -> None:
        _, store, inner = self.locate(key)
        await store.delete(inner)

    async def check(self) -> None:
        """The default store: readiness must not fail every customer for one region's store
        (each named store is checked at start, and its failures stay with its customers)."""
        await self.default.check()

    async def presign(self, obj: StoredObject, ttl: int) -> str | None:
        name, store, inner = self.locate(obj.key)
        return await store.presign(_with_key(obj, inner), ttl)

    async def revoke(self, token_id: str, key: str | None = None) -> None:
        if key is not None:
            await self.locate(key)[1].revoke(token_id)
            return
        # Only the id is known: record it everywhere the file could be (all or an error).
        failed: Exception | None = None
        for store in self.all().values():
            try:
                await store.revoke(token_id)
            except Exception as exc:  # noqa: BLE001 - try every store, then report the first failure
                failed = failed or exc
        if failed is not None:
            raise failed

    async def is_revoked(self, token_id: str, key: str | None = None) -> bool:
        if key is not None:
            return await self.locate(key)[1].is_revoked(token_id)
        for store in self.all().values():
            if await store.is_revoked(token_id):
                return True
        return False

    async def put_record(self, name: str, data: Body) -> None:
        await self.default.put_record(name, data)

    async def get_record(self, name: str) -> bytes:
        return await self.default.get_record(name)

    async def delete_record(self, name: str) -> None:
        await self.default.delete_record(name)

    async def list_records(self, kind: str, prefix: str = "") -> list[str]:
        return await self.default.list_records(kind, prefix)

    def all(self) -> dict[str, Store]:
        """Every store by name, the default one as ""."""
        return {"": self.default, **self.named}

    async def close(self) -> None:
        for store in self.all().values():
            await close_store(store)


def _with_key(obj: StoredObject, key: str) -> StoredObject:
    return dataclasses.replace(obj, key=key)


def stores_of(store: Store) -> dict[str, Store]:
    """Every store behind `store` by name ("" = the default one)."""
    return store.all() if isinstance(store, RoutedStore) else {"": store}


def store_for(store: Store, tenant: str | None) -> tuple[str, Store]:
    """(name, store) that `tenant`'s files go to."""
    if isinstance(store, RoutedStore):
        name = store.route(tenant)
        return name, store.store(name)
    return "", store


def named(store: Store, name: str) -> Store:
    """The store called `name` ("" = the default); KeyError when there is none."""
    if not name:
        return store.default if isinstance(store, RoutedStore) else store
    if isinstance(store, RoutedStore):
        return store.named[name]
    raise KeyError(name)


async def close_store(store: Store) -> None:
    """Release a store's connections (the async SDK clients hold sessions); a no-op for others."""
    close = getattr(store, "close", None)
    if close is not None:
        await close()
