"""Google Cloud Storage (the only module that imports google).

google-cloud-storage is synchronous: every call runs in a worker thread, uploads are bounded
by a semaphore shared by all messages, and each call gets `timeout` seconds per request and
the same again as the deadline of its retries, so a slow or dead endpoint costs one worker
slot for a bounded time, never the event loop.

Credentials are resolved on first use, in a worker thread: Application Default Credentials
may ask the metadata server, which must neither block the loop nor fail the constructor
(check() reports it, with a reason an operator can act on).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any, Callable

import google.auth
import google.auth.credentials
import google.auth.exceptions
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.transport.requests import AuthorizedSession, Request
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account

from ..config import GcsStorageConfig
from ..errors import StorageError
from .base import (CHUNK_SIZE, RECORDS, Body, StoredObject, Workers, check_key, check_range, check_record_name,
                   META_FIELDS, content_disposition, from_metadata, metadata_of, open_body, sha256_of)

_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
GOOGLE_ENDPOINT = "https://storage.googleapis.com"
REVOKED = ".revoked"  # a dot segment: make_key never produces one, so no object can collide
# A file's upload: the SDK reads each request's bytes into memory (one request up to 8 MiB, its
# _MAX_MULTIPART_SIZE; above, a resumable upload in chunks of 100 MiB unless told): 8 MiB chunks.
_UPLOAD_CHUNK = 8 * 1024 * 1024  # a multiple of 256 KiB, as resumable uploads want


def _meta_name(field: str) -> str:
    # Custom metadata also travels as x-goog-meta-* headers (XML API, signed URLs), where
    # proxies drop header names with underscores: the same names as the S3 store uses.
    return field.replace("_", "-")


class _NoSuchBucket(Exception):
    """A 404 that names the bucket, not the object."""


def describe(exc: BaseException, bucket: str, endpoint: str) -> str:
    """One line an operator can act on, for the usual ways GCS access goes wrong."""
    if isinstance(exc, gexc.RetryError) and exc.cause is not None:
        exc = exc.cause  # the deadline ran out: what kept failing is the story
    where = endpoint or GOOGLE_ENDPOINT
    if isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
        return ("no Google credentials found (set storage.gcs.credentials_file or GOOGLE_APPLICATION_CREDENTIALS, "
                "run `gcloud auth application-default login`, or attach a service account to the VM/pod)")
    if isinstance(exc, google.auth.exceptions.RefreshError):
        return f"the Google credentials were refused ({_first_line(exc)})"
    if isinstance(exc, google.auth.exceptions.TransportError):
        return f"cannot reach Google's token service to authenticate ({_first_line(exc)})"
    if isinstance(exc, _NoSuchBucket) or isinstance(exc, gexc.NotFound):
        return f"bucket {bucket!r} does not exist"
    if isinstance(exc, gexc.Forbidden):
        return (f"permission denied on bucket {bucket!r} (the credentials need storage.objects.create, .get, "
                ".delete and .list on it, e.g. roles/storage.objectAdmin)")
    if isinstance(exc, gexc.Unauthorized):
        return f"the Google credentials were refused by {where}"
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return f"cannot reach the GCS endpoint {where}"
    if isinstance(exc, gexc.GoogleAPICallError):
        return f"GCS error {exc.code or 'unknown'} on bucket {bucket!r}"
    return f"GCS request failed ({type(exc).__name__})"


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0] if exc.args else exc)
    return (text.splitlines() or [type(exc).__name__])[0][:200]


_PERMANENT_HINTS = ("does not exist", "permission denied", "credentials", "cannot read")


def _bucket_missing(exc: gexc.NotFound) -> bool:
    # A 404 on an object means "no such object" unless Google says the bucket is what is
    # missing ("The specified bucket does not exist."). Asking for the bucket instead would
    # need storage.buckets.get, which an object-level role does not grant.
    return "bucket" in str(exc.message or "").lower()


class GcsStore:
    def __init__(self, cfg: GcsStorageConfig):
        self.cfg = cfg
        self.bucket_name = cfg.bucket
        self.key_prefix = cfg.prefix.strip("/")
        self.endpoint = cfg.endpoint_url.rstrip("/")
        # Per-request timeouts bound each HTTP exchange; the retry deadline bounds the call.
        self._retry: Retry = DEFAULT_RETRY.with_timeout(cfg.timeout)
        self._lock = threading.Lock()
        self._client: storage.Client | None = None
        self._session: AuthorizedSession | None = None
        self._signer: Any = None  # credentials that sign, None when nothing can
        self._uploads: asyncio.Semaphore | None = None
        self._workers = Workers("gcs", max(8, cfg.max_concurrent_uploads * 2 + 4))

    # -- plumbing -------------------------------------------------------------
    def _connect(self) -> storage.Client:
        """The client, made on first use (in a worker thread: ADC may ask the metadata server)."""
        with self._lock:
            if self._client is None:
                creds, self._signer = self._credentials()
                options = {"api_endpoint": self.endpoint} if self.endpoint else None
                self._client = storage.Client(project=self.cfg.project or None, credentials=creds,
                                              client_options=options)
                self._session = AuthorizedSession(creds)
                # Downloads stream over this session; one pooled connection per concurrent reader.
                adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(10, self.cfg.max_concurrent_uploads * 4))
                self._session.mount("https://", adapter)
                self._session.mount("http://", adapter)
            return self._client

    def _credentials(self) -> tuple[google.auth.credentials.Credentials, Any]:
        """(credentials for requests, credentials for signing URLs or None)."""
        key = self._key_file()
        signer = None
        if key:
            try:
                signer = service_account.Credentials.from_service_account_file(key, scopes=_SCOPES)
            except (OSError, ValueError, KeyError) as exc:
                where = "storage.gcs.credentials_file" if self.cfg.credentials_file else "GOOGLE_APPLICATION_CREDENTIALS"
                raise _KeyFileError(f"cannot read {where} {key}: {_first_line(exc)}") from exc
        if self.endpoint:
            # An emulator takes no tokens; a key only signs the links that point at it.
            return google.auth.credentials.AnonymousCredentials(), signer
        if signer is not None:
            return signer, signer
        creds, _ = google.auth.default(scopes=_SCOPES)
        if isinstance(creds, google.auth.credentials.Signing) or getattr(creds, "service_account_email", None):
            signer = creds  # a key signs locally; a VM/pod service account through IAM signBlob
        return creds, signer

    def _key_file(self) -> str:
        if self.cfg.credentials_file:
            return self.cfg.credentials_file
        # Only a service-account key can sign; ADC handles any other kind of file itself.
        env = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
        return env if self.endpoint and env and _is_service_account_key(env) else ""

    def _error(self, exc: BaseException) -> StorageError:
        reason = str(exc) if isinstance(exc, _KeyFileError) else describe(exc, self.bucket_name, self.endpoint)
        return StorageError(reason, permanent=any(h in reason for h in _PERMANENT_HINTS))

    async def _call(self, fn: Callable[[storage.Bucket], Any], key: str | None = None) -> Any:
        """Run fn(bucket) in a worker thread. A 404 is KeyError(key) when `key` names what was
        asked for (an object), a StorageError naming the bucket otherwise."""
        def run() -> Any:
            return fn(self._connect().bucket(self.bucket_name))

        try:
            return await self._workers.run(run)
        except gexc.NotFound as exc:
            if key is not None and not _bucket_missing(exc):
                raise KeyError(key) from None
            raise self._error(_NoSuchBucket()) from exc
        except (gexc.GoogleAPIError, google.auth.exceptions.GoogleAuthError, requests.RequestException,
                _KeyFileError, OSError) as exc:
            raise self._error(exc) from exc

    def _path(self, *parts: str) -> str:
        return "/".join(p for p in (self.key_prefix, *parts) if p)

    def _upload(self, name: str, data: Body, content_type: str = "application/octet-stream",
                sha256: str | None = None, **attrs: Any) -> Callable[[storage.Bucket], None]:
        """The upload of `data` as `name`, to run in a worker. A spooled file is read from a file
        of its own (opened now, see open_body; closed by the run, or with it when it never runs),
        a chunk per request, each chunk kept for that request's retries; with `sha256`, it is
        hashed first and nothing is sent when it disagrees."""
        fh = None if isinstance(data, bytes) else open_body(data)

        def run(bucket: storage.Bucket) -> None:
            blob = bucket.blob(name, chunk_size=_UPLOAD_CHUNK)
            for attr, value in attrs.items():
                setattr(blob, attr, value)
            # Retried within the deadline: a key is written whole or not at all, and a key
            # written twice holds the same bytes (keys are deterministic for a retried message).
            if fh is None:
                blob.upload_from_string(data, content_type=content_type, timeout=self.cfg.timeout, retry=self._retry)
                return
            with fh:
                if sha256 is not None and sha256_of(fh) != sha256:
                    raise ValueError("sha256 does not match the data")
                blob.upload_from_file(fh, size=len(data), content_type=content_type, timeout=self.cfg.timeout,
                                      retry=self._retry)
        return run

    # -- Store API ----------------------------------------------------------
    async def put(self, data: Body, obj: StoredObject) -> StoredObject:
        if obj.size != len(data):
            raise ValueError("size does not match the data")
        # A wrong hash would be shown to users as the file's: bytes are hashed here, a spooled
        # file by the upload itself, before it sends anything.
        if isinstance(data, bytes) and await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest()) != obj.sha256:
            raise ValueError("sha256 does not match the data")
        # Percent-encoded although the JSON API takes UTF-8: the same values come back as HTTP
        # headers on XML and signed-URL downloads.
        meta = {_meta_name(k): v for k, v in metadata_of(obj).items()}
        upload = self._upload(check_key(obj.key), data, content_type=obj.content_type, sha256=obj.sha256,
                              metadata=meta, content_disposition=content_disposition(obj.filename))
        if self._uploads is None:
            self._uploads = asyncio.Semaphore(self.cfg.max_concurrent_uploads)
        async with self._uploads:
            await self._call(upload)
        return obj

    async def stat(self, key: str) -> StoredObject:
        def run(bucket: storage.Bucket) -> storage.Blob:
            blob = bucket.blob(key)
            blob.reload(timeout=self.cfg.timeout, retry=self._retry)
            return blob

        blob = await self._call(run, key=check_key(key))
        meta = {k: urllib.parse.unquote(v) for k, v in (blob.metadata or {}).items()}
        return from_metadata(key, int(blob.size or 0), blob.content_type,
                             {k: meta.get(_meta_name(k)) for k in META_FIELDS})

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        check_key(key)
        if end is not None and end == start:
            await self.stat(key)  # KeyError when absent, as for any other range
            return _BodyReader(None, self._workers)
        headers = {} if not start and end is None else {"Range": f"bytes={start}-{'' if end is None else end - 1}"}

        def run(bucket: storage.Bucket) -> requests.Response:
            # One streamed GET (the SDK's readers would fetch each chunk with a request of its own).
            url = self._media_url(key)
            assert self._session is not None
            resp = self._session.get(url, headers=headers, stream=True, timeout=self.cfg.timeout)
            if resp.status_code not in (200, 206):
                error = gexc.from_http_response(resp)
                resp.close()
                raise error
            return resp

        return _BodyReader(await self._call(run, key=key), self._workers, self._error)

    def _media_url(self, key: str) -> str:
        base = self.endpoint or GOOGLE_ENDPOINT
        bucket = urllib.parse.quote(self.bucket_name, safe="")
        return f"{base}/download/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}?alt=media"

    async def delete(self, key: str) -> None:
        await self._delete(check_key(key))

    async def _delete(self, name: str) -> None:
        def run(bucket: storage.Bucket) -> None:
            bucket.blob(name).delete(timeout=self.cfg.timeout, retry=self._retry)

        try:
            await self._call(run, key=name)
        except KeyError:
            pass  # already gone: deleting is idempotent

    async def check(self) -> None:
        """The bucket exists and takes writes: write and delete a small probe object. (Not a
        bucket GET: that needs storage.buckets.get, which object-level roles do not grant.)"""
        probe = self._path(".probe", uuid.uuid4().hex)
        await self._call(self._upload(probe, b""))
        await self._delete(probe)

    async def presign(self, obj: StoredObject, ttl: int) -> str | None:
        await self._call(lambda bucket: None)  # credentials resolved (and errors reported) first
        if self._signer is None:
            return None

        def run(bucket: storage.Bucket) -> str:
            blob = bucket.blob(check_key(obj.key))
            signing: dict[str, Any] = {"credentials": self._signer}
            if not isinstance(self._signer, google.auth.credentials.Signing):
                # A VM/pod service account has no key: Google signs for it (IAM signBlob),
                # which needs a fresh access token and roles/iam.serviceAccountTokenCreator.
                if not self._signer.valid:
                    self._signer.refresh(Request())
                signing = {"service_account_email": self._signer.service_account_email,
                           "access_token": self._signer.token}
            return blob.generate_signed_url(
                version="v4", expiration=timedelta(seconds=ttl), method="GET",
                api_access_endpoint=self.endpoint or GOOGLE_ENDPOINT,
                response_disposition=content_disposition(obj.filename), response_type=obj.content_type,
                **signing)

        return await self._call(run)

    async def presign_problem(self) -> str | None:
        """Why this store cannot sign URLs (links.mode = "presigned" needs it), or None."""
        try:
            await self._call(lambda bucket: None)
        except StorageError as exc:
            return str(exc)
        if self._signer is not None:
            return None
        if self.endpoint:
            return ("an emulator's anonymous access cannot sign URLs: set storage.gcs.credentials_file "
                    "(or GOOGLE_APPLICATION_CREDENTIALS) to a service-account key")
        return ("these credentials cannot sign URLs (user credentials from gcloud?): use a service account "
                "(storage.gcs.credentials_file, or one attached to the VM/pod), or links.mode = \"redirect\"")

    def _revoked_key(self, token_id: str) -> str:
        if not token_id.isalnum() or len(token_id) > 64:
            raise KeyError(token_id)
        return self._path(REVOKED, token_id)

    async def revoke(self, token_id: str, key: str | None = None) -> None:
        await self._call(self._upload(self._revoked_key(token_id), b""))

    async def is_revoked(self, token_id: str, key: str | None = None) -> bool:
        name = self._revoked_key(token_id)

        def run(bucket: storage.Bucket) -> None:
            bucket.blob(name).reload(timeout=self.cfg.timeout, retry=self._retry)

        try:
            await self._call(run, key=name)
        except KeyError:
            return False
        return True

    def _record_key(self, name: str) -> str:
        return self._path(RECORDS, check_record_name(name))

    async def put_record(self, name: str, data: Body) -> None:
        await self._call(self._upload(self._record_key(name), data))

    async def get_record(self, name: str) -> bytes:
        key = self._record_key(name)

        def run(bucket: storage.Bucket) -> bytes:
            return bucket.blob(key).download_as_bytes(timeout=self.cfg.timeout, retry=self._retry)

        try:
            return await self._call(run, key=key)
        except KeyError:
            raise KeyError(name) from None

    async def delete_record(self, name: str) -> None:
        await self._delete(self._record_key(name))

    async def list_records(self, kind: str, prefix: str = "") -> list[str]:
        """The names (`kind/name`) of the records of one kind whose name starts with `prefix`."""
        base = self._record_key(f"{kind}/x")[:-1]

        def run(bucket: storage.Bucket) -> list[str]:
            blobs = bucket.list_blobs(prefix=base + prefix, timeout=self.cfg.timeout, retry=self._retry)
            return [b.name for b in blobs]  # the iterator follows the pages

        return sorted(f"{kind}/{n[len(base):]}" for n in await self._call(run))

    async def close(self) -> None:
        with self._lock:
            client, session, self._client, self._session = self._client, self._session, None, None
        if client is not None:
            client.close()
        if session is not None:
            session.close()
        self._workers.close()


class _KeyFileError(Exception):
    """A configured key file that cannot be read: permanent, and its own message says why."""


def _is_service_account_key(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return json.load(f).get("type") == "service_account"
    except (OSError, ValueError, AttributeError):
        return False


class _BodyReader:
    """Async iterator over a streamed download, read in a worker thread."""

    def __init__(self, resp: requests.Response | None, workers: Workers,
                 error: Callable[[BaseException], StorageError] | None = None) -> None:
        self._resp = resp
        self._workers = workers
        self._chunks: Iterator[bytes] = resp.iter_content(CHUNK_SIZE) if resp is not None else iter(())
        self._error = error

    def __aiter__(self) -> "_BodyReader":
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._workers.run(next, self._chunks, b"")
        except requests.RequestException as exc:
            await self.aclose()
            raise (self._error(exc) if self._error else exc) from exc
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
