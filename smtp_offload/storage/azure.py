"""Azure Blob Storage (the only module that imports azure).

The SDK's async client runs on the event loop itself. Uploads are bounded by a semaphore
shared by all messages; the transport's connect/read timeouts bound each request, and the
retry policy is shortened from the SDK's (15 s, then 18 s, then 42 s of backoff) so that an
endpoint that is down fails a message in seconds, well within policy.storage_timeout.

Credentials: storage.azure.connection_string, else storage.azure.account_url with
DefaultAzureCredential (what the file says wins over the environment), else
AZURE_STORAGE_CONNECTION_STRING. DefaultAzureCredential tries the environment, workload or
managed identity, the Azure CLI... Presigned URLs are SAS URLs signed with the account key when the
connection string holds one, else with a user delegation key of the identity.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from azure.core.exceptions import (AzureError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError,
                                   ServiceRequestError, ServiceResponseError)
from azure.storage.blob import BlobSasPermissions, ContentSettings, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient, LinearRetry

from ..config import AzureStorageConfig
from ..errors import StorageError
from .base import (CHUNK_SIZE, RECORDS, Body, StoredObject, check_key, check_range, check_record_name,
                   content_disposition, from_metadata, metadata_of, open_body, sha256_of)

# Metadata names must be C# identifiers (no dashes), so the field names are used as they are.
REVOKED = ".revoked"  # a dot segment: make_key never produces one, so no object can collide
_DOWNLOAD_REQUEST = 4 * 1024 * 1024  # bytes per GET while streaming: held in memory per download
# Bytes per PUT: the SDK reads each request's bytes into memory (a blob up to max_single_put_size
# in one read: 64 MiB by default), so a larger blob goes as blocks of this size, one at a time.
_UPLOAD_REQUEST = 4 * 1024 * 1024
_MAX_DELEGATION = timedelta(days=7)  # Azure refuses user delegation keys that live longer
_CLOCK_SKEW = timedelta(minutes=5)
_AUTH_CODES = ("AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation",
               "InvalidHeaderValue")
_DENIED_CODES = ("AuthorizationFailure", "AuthorizationPermissionMismatch", "AuthorizationResourceTypeMismatch",
                 "AuthorizationProtocolMismatch", "InsufficientAccountPermissions", "AccountIsDisabled")

T = TypeVar("T")


def describe(exc: BaseException, container: str, endpoint: str) -> str:
    """One line an operator can act on, for the usual ways Azure Blob access goes wrong."""
    code = getattr(exc, "error_code", None) or ""
    code = str(getattr(code, "value", code))  # the SDK gives a StorageErrorCode enum, or the raw string
    if type(exc).__name__ == "CredentialUnavailableError":  # azure.identity's: no identity on this host
        return ("no Azure credentials found (set storage.azure.connection_string or AZURE_STORAGE_CONNECTION_STRING, "
                "or give this host an identity: environment, managed identity, Azure CLI)")
    if code == "ContainerNotFound":
        return f"container {container!r} does not exist at {endpoint}"
    if code in _DENIED_CODES:
        return (f"access denied to container {container!r} ({code}): the identity needs the Storage Blob Data "
                "Contributor role on it, and the account's network rules must admit this host")
    if code in _AUTH_CODES or isinstance(exc, ClientAuthenticationError):
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return f"the Azure credentials were refused ({code or first or 'authentication failed'})"
    if isinstance(exc, ServiceRequestError):
        return f"cannot reach the Azure Blob endpoint {endpoint}"
    if isinstance(exc, ServiceResponseError):
        return f"the Azure Blob endpoint {endpoint} did not answer (timed out or closed the connection)"
    if isinstance(exc, HttpResponseError):
        return f"Azure error {code or exc.status_code or 'unknown'} on container {container!r}"
    return f"Azure request failed ({type(exc).__name__})"


_PERMANENT_HINTS = ("does not exist", "access denied", "credentials", "connection string")


def _connection_string(cfg: AzureStorageConfig) -> str:
    if cfg.connection_string or cfg.account_url:
        return cfg.connection_string
    return os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")


def _bare(url: str) -> str:
    """A URL without its query or fragment: where a SAS token would be."""
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, u.path, "", ""))


def endpoint_of(cfg: AzureStorageConfig) -> str:
    """The blob endpoint the config points at, for logs and messages (never the key or SAS)."""
    conn = _connection_string(cfg)
    if not conn:
        return _bare(cfg.account_url)
    parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
    if parts.get("BlobEndpoint"):
        return _bare(parts["BlobEndpoint"])
    account = parts.get("AccountName", "<account>")
    return (f"{parts.get('DefaultEndpointsProtocol', 'https')}://{account}.blob."
            f"{parts.get('EndpointSuffix', 'core.windows.net')}")


class AzureStore:
    def __init__(self, cfg: AzureStorageConfig):
        self.cfg = cfg
        self.container = cfg.container
        self.key_prefix = cfg.prefix.strip("/")
        self._credential: Any = None  # DefaultAzureCredential when this store made one: closed with the client
        self._broken: StorageError | None = None
        self._delegation: Any = None  # the cached user delegation key, for SAS URLs without an account key
        self._delegation_lock: asyncio.Lock | None = None
        self._uploads: asyncio.Semaphore | None = None
        options: dict[str, Any] = dict(
            connection_timeout=cfg.connect_timeout, read_timeout=cfg.read_timeout,
            # Three tries about a second apart, as botocore's standard mode does for S3.
            retry_policy=LinearRetry(backoff=1, retry_total=2, random_jitter_range=1),
            max_single_get_size=_DOWNLOAD_REQUEST, max_chunk_get_size=_DOWNLOAD_REQUEST,
            max_single_put_size=_UPLOAD_REQUEST, max_block_size=_UPLOAD_REQUEST)
        conn = _connection_string(cfg)
        try:
            if conn:
                self.client = BlobServiceClient.from_connection_string(conn, **options)
            else:
                from azure.identity.aio import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
                self.client = BlobServiceClient(cfg.account_url, credential=self._credential, **options)
        except ValueError as exc:
            # Not raised here: the store is made before the start checks it, and check() turns
            # this into one line that stops the start (instead of a traceback).
            self._broken = StorageError(f"the Azure connection string is malformed ({exc})", permanent=True)
            self.client = None
        # client.url carries a SAS given in the connection string: never in a message or a log.
        self.endpoint = _bare(self.client.url) if self.client is not None else (_bare(cfg.account_url) or "(none)")

    def _error(self, exc: BaseException) -> StorageError:
        reason = describe(exc, self.container, self.endpoint)
        return StorageError(reason, permanent=any(h in reason for h in _PERMANENT_HINTS))

    async def _call(self, request: Awaitable[T], key: str | None = None) -> T:
        """Await an SDK request; a missing blob becomes KeyError(key) when `key` is given."""
        try:
            return await request
        except ResourceNotFoundError as exc:
            if key is not None and getattr(exc.error_code, "value", exc.error_code) != "ContainerNotFound":
                raise KeyError(key) from None
            raise self._error(exc) from exc
        except AzureError as exc:
            raise self._error(exc) from exc

    def _blob(self, name: str) -> Any:
        if self._broken is not None:
            raise self._broken
        return self.client.get_blob_client(self.container, name)

    def _internal(self, *segments: str) -> str:
        return "/".join(p for p in (self.key_prefix, *segments) if p)

    # -- Store API ----------------------------------------------------------
    async def put(self, data: Body, obj: StoredObject) -> StoredObject:
        if obj.size != len(data):
            raise ValueError("size does not match the data")
        blob = self._blob(check_key(obj.key))
        settings = ContentSettings(content_type=obj.content_type, content_disposition=content_disposition(obj.filename))
        meta = metadata_of(obj)  # names with underscores: Azure wants C# identifiers
        # A spooled file is read from a file of our own (see open_body), closed whatever happens.
        fh = None if isinstance(data, bytes) else open_body(data)
        try:
            # A wrong hash would later be shown to users as the file's: nothing is sent when it
            # disagrees (hashed off the loop, files are large; a file in one pass, read again to send).
            digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest() if fh is None else sha256_of(fh))
            if digest != obj.sha256:
                raise ValueError("sha256 does not match the data")
            if self._uploads is None:
                self._uploads = asyncio.Semaphore(self.cfg.max_concurrent_uploads)
            async with self._uploads:
                await self._call(blob.upload_blob(data if fh is None else _Reader(fh), length=len(data), overwrite=True,
                                                  content_settings=settings, metadata=meta))
        finally:
            if fh is not None:
                fh.close()
        return obj

    async def stat(self, key: str) -> StoredObject:
        props = await self._call(self._blob(check_key(key)).get_blob_properties(), key)
        meta = {k.lower(): urllib.parse.unquote(v) for k, v in (props.metadata or {}).items()}
        return from_metadata(key, int(props.size), props.content_settings.content_type, meta)

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        blob = self._blob(check_key(key))
        if end is not None and end == start:
            await self.stat(key)  # KeyError when absent, as for any other range
            return _ChunkReader(None)
        # No offset for a whole read: only then does the SDK read an empty blob without a 416.
        offset = None if not start and end is None else start
        length = None if end is None else end - start
        try:
            downloader = await self._call(blob.download_blob(offset=offset, length=length), key)
        except StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, HttpResponseError) and cause.status_code == 416:
                return _ChunkReader(None)  # start is the object's size: nothing left to read
            raise
        return _ChunkReader(downloader.chunks(), self._error)

    async def delete(self, key: str) -> None:
        blob = self._blob(check_key(key))  # outside the try: an InvalidKey is a KeyError too
        try:
            await self._call(blob.delete_blob(delete_snapshots="include"), key)
        except KeyError:
            pass

    async def check(self) -> None:
        """The container exists and takes writes: write and delete a small probe blob."""
        probe = self._blob(self._internal(".probe", uuid.uuid4().hex))
        await self._call(probe.upload_blob(b"", overwrite=True))
        await self._call(probe.delete_blob())

    async def presign(self, obj: StoredObject, ttl: int) -> str | None:
        blob = self._blob(check_key(obj.key))
        now = datetime.now(timezone.utc)
        expiry = now + timedelta(seconds=ttl)
        signing: dict[str, Any] = {}
        credential = self.client.credential
        if getattr(credential, "account_key", None):
            signing["account_key"] = credential.account_key  # signing is local computation, no request
        elif self._credential is not None:
            key = await self._delegation_key(expiry)
            signing["user_delegation_key"] = key
            # Never past the key's own end (7 days at most): a SAS outliving its key is refused.
            expiry = min(expiry, datetime.fromisoformat(key.signed_expiry.replace("Z", "+00:00")))
        else:
            return None  # a connection string with a SAS token: it cannot sign another one
        sas = generate_blob_sas(
            self.client.account_name, self.container, blob.blob_name, permission=BlobSasPermissions(read=True),
            expiry=expiry, content_disposition=content_disposition(obj.filename), content_type=obj.content_type,
            **signing)
        return f"{blob.url}?{sas}"

    async def presign_problem(self) -> str | None:
        """Why this store cannot sign URLs (links.mode = "presigned" needs it), or None."""
        if self._broken is not None:
            return str(self._broken)
        if getattr(self.client.credential, "account_key", None):
            return None
        if self._credential is None:
            return ("a connection string holding a SAS cannot sign URLs: use one with the account key "
                    '(AccountKey=), or storage.azure.account_url with an identity, or links.mode = "redirect"')
        try:
            await self._delegation_key(datetime.now(timezone.utc))
        except StorageError as exc:
            if exc.permanent:  # unreachable right now is not a reason to refuse the start
                return f"cannot get a user delegation key to sign URLs: {exc}"
        return None

    async def _delegation_key(self, expiry: datetime) -> Any:
        """A user delegation key valid until `expiry`, reused while it still covers it (getting
        one is a request to the account, and every link minted or clicked needs one)."""
        if self._delegation_lock is None:
            self._delegation_lock = asyncio.Lock()
        async with self._delegation_lock:
            key = self._delegation
            if key is None or datetime.fromisoformat(key.signed_expiry.replace("Z", "+00:00")) < expiry:
                now = datetime.now(timezone.utc)
                # Start a little in the past and end a little short of the 7-day limit: the
                # service judges both by its own clock.
                key = await self._call(self.client.get_user_delegation_key(
                    now - _CLOCK_SKEW, now + _MAX_DELEGATION - _CLOCK_SKEW))
                self._delegation = key
            return key

    def _revoked_key(self, token_id: str) -> str:
        if not token_id.isalnum() or len(token_id) > 64:
            raise KeyError(token_id)
        return self._internal(REVOKED, token_id)

    async def revoke(self, token_id: str, key: str | None = None) -> None:
        await self._call(self._blob(self._revoked_key(token_id)).upload_blob(b"", overwrite=True))

    async def is_revoked(self, token_id: str, key: str | None = None) -> bool:
        name = self._revoked_key(token_id)
        try:
            await self._call(self._blob(name).get_blob_properties(), name)
        except KeyError:
            return False
        return True

    def _record_key(self, name: str) -> str:
        return self._internal(RECORDS, check_record_name(name))

    async def put_record(self, name: str, data: Body) -> None:
        blob = self._blob(self._record_key(name))
        fh = None if isinstance(data, bytes) else open_body(data)
        try:
            await self._call(blob.upload_blob(data if fh is None else _Reader(fh), length=len(data), overwrite=True))
        finally:
            if fh is not None:
                fh.close()

    async def get_record(self, name: str) -> bytes:
        key = self._record_key(name)
        downloader = await self._call(self._blob(key).download_blob(), key)
        return await self._call(downloader.readall())

    async def delete_record(self, name: str) -> None:
        key = self._record_key(name)  # outside the try: an InvalidKey is a KeyError too
        try:
            await self._call(self._blob(key).delete_blob(), key)
        except KeyError:
            pass

    async def list_records(self, kind: str, prefix: str = "") -> list[str]:
        """The names (`kind/name`) of the records of one kind whose name starts with `prefix`."""
        base = self._record_key(f"{kind}/x")[:-1]
        if self._broken is not None:
            raise self._broken
        container = self.client.get_container_client(self.container)

        async def names() -> list[str]:
            return [f"{kind}/{n[len(base):]}" async for n in container.list_blob_names(name_starts_with=base + prefix)]

        return sorted(await self._call(names()))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self._credential is not None:
            await self._credential.close()


class _Reader:
    """A file the SDK reads for an upload, each read in a worker thread (a request's worth,
    _UPLOAD_REQUEST, from the disk must not stall the loop). No seek: the SDK then reads block
    by block, each block's bytes kept for that request's retries."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    async def read(self, size: int = -1) -> bytes:
        return await asyncio.to_thread(self._fh.read, size)


class _ChunkReader:
    """Async iterator over a download's chunks (one request each), cut to CHUNK_SIZE pieces."""

    def __init__(self, chunks: AsyncIterator[bytes] | None, error: Any = None) -> None:
        self._chunks = chunks
        self._error = error
        self._pending = memoryview(b"")

    def __aiter__(self) -> "_ChunkReader":
        return self

    async def __anext__(self) -> bytes:
        while not self._pending:
            if self._chunks is None:
                raise StopAsyncIteration
            try:
                self._pending = memoryview(await self._chunks.__anext__())
            except StopAsyncIteration:
                self._chunks = None
                raise
            except AzureError as exc:
                self._chunks = None
                raise self._error(exc) from exc
        piece, self._pending = self._pending[:CHUNK_SIZE], self._pending[CHUNK_SIZE:]
        return bytes(piece)

    async def aclose(self) -> None:
        # Each chunk is read whole by its request: there is no open response to release.
        self._chunks = None
        self._pending = memoryview(b"")
