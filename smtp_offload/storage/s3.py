"""S3 and S3-compatible object storage (the only module that imports boto3).

boto3 is synchronous: every call runs in a worker thread, uploads are bounded by a
semaphore shared by all messages, and botocore's own connect/read timeouts bound each
request, so a slow or hanging endpoint costs one worker slot, never the event loop.
Uploads above `multipart_threshold` go through boto3's transfer manager as multipart.
A spooled file (FileBytes) is uploaded by its name, so each request reads its bytes from
the file as it sends them: memory stays at a read buffer per request, whatever the size.
"""

from __future__ import annotations

import asyncio
import io
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from typing import Any

import boto3
import botocore.config
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from ..config import S3StorageConfig
from ..errors import StorageError
from .base import (CHUNK_SIZE, RECORDS, Body, StoredObject, Workers, check_key, check_range, check_record_name,
                   META_FIELDS, content_disposition, from_metadata, metadata_of, open_body)



def _meta_name(field: str) -> str:
    # Metadata travels as x-amz-meta-* headers; proxies drop header names with underscores.
    return field.replace("_", "-")
REVOKED = ".revoked"  # a dot segment: make_key never produces one, so no object can collide


def describe(exc: BaseException, bucket: str, endpoint: str) -> str:
    """One line an operator can act on, for the usual ways S3 access goes wrong."""
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found (environment, shared profile, or instance/task role)"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach the S3 endpoint {endpoint or 'of the configured region'}"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket", "404", "NotFound"):
            return f"bucket {bucket!r} does not exist"
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
            return (f"access denied to bucket {bucket!r} (the credentials need s3:PutObject, s3:GetObject "
                    "and s3:DeleteObject on it)")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return f"the AWS credentials were refused ({code})"
        if code == "PermanentRedirect":
            return f"bucket {bucket!r} is in another region: set storage.s3.region"
        return f"S3 error {code or 'unknown'} on bucket {bucket!r}"
    return f"S3 request failed ({type(exc).__name__})"


_PERMANENT_HINTS = ("does not exist", "access denied", "credentials", "another region")


class S3Store:
    def __init__(self, cfg: S3StorageConfig):
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.key_prefix = cfg.prefix.strip("/")
        self.session = boto3.session.Session()
        self.client = self.session.client(
            "s3", region_name=cfg.region or None, endpoint_url=cfg.endpoint_url or None,
            config=botocore.config.Config(
                signature_version="s3v4", connect_timeout=cfg.connect_timeout, read_timeout=cfg.read_timeout,
                retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": cfg.addressing_style},
                max_pool_connections=max(10, cfg.max_concurrent_uploads * 4),
            ),
        )
        self.transfer = TransferConfig(multipart_threshold=cfg.multipart_threshold, multipart_chunksize=cfg.part_size,
                                       max_concurrency=4, use_threads=True)
        self._uploads: asyncio.Semaphore | None = None
        self._workers = Workers("s3", max(8, cfg.max_concurrent_uploads * 2 + 4))

    def _sse(self) -> dict[str, str]:
        if not self.cfg.sse:
            return {}
        return {"ServerSideEncryption": self.cfg.sse, **({"SSEKMSKeyId": self.cfg.kms_key_id} if self.cfg.kms_key_id else {})}

    def _error(self, exc: BaseException) -> StorageError:
        reason = describe(exc, self.bucket, self.cfg.endpoint_url)
        return StorageError(reason, permanent=any(h in reason for h in _PERMANENT_HINTS))

    async def _call(self, fn, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._workers.run(fn, *args, **kwargs)
        except ClientError as exc:
            missing = str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")
            if missing and "Key" in kwargs:  # a missing object, not a missing bucket
                raise KeyError(kwargs["Key"]) from None
            raise self._error(exc) from exc
        except BotoCoreError as exc:
            raise self._error(exc) from exc

    # -- Store API ----------------------------------------------------------
    async def _upload(self, data: Body, key: str, extra: dict[str, Any]) -> None:
        if isinstance(data, bytes):
            await self._call(self.client.upload_fileobj, io.BytesIO(data), self.bucket, key, ExtraArgs=extra,
                             Config=self.transfer)
            return
        # By name, not as a file object: boto3 reads a file object's multipart parts into
        # memory (up to max_in_memory_upload_chunks of part_size each, queued), but opens a
        # named file once per request and streams it, re-reading it from its start when a
        # request is retried. The name is our own descriptor of the file (open_body, opened
        # here on the loop), closed only when the upload is over: never one reused meanwhile.
        fh = open_body(data)

        def upload() -> None:
            with fh, create_transfer_manager(self.client, self.transfer) as manager:
                # The manager's own call, as upload_fileobj makes it: boto3's upload_file
                # would turn a ClientError into an S3UploadFailedError that _call cannot read.
                manager.upload(f"/proc/self/fd/{fh.fileno()}", self.bucket, key, extra).result()

        await self._call(upload)

    async def put(self, data: Body, obj: StoredObject) -> StoredObject:
        if obj.size != len(data):
            raise ValueError("size does not match the data")
        extra: dict[str, Any] = {
            "ContentType": obj.content_type,
            "ContentDisposition": content_disposition(obj.filename),
            "Metadata": {_meta_name(k): v for k, v in metadata_of(obj).items()},
            **self._sse(),
        }
        if self._uploads is None:
            self._uploads = asyncio.Semaphore(self.cfg.max_concurrent_uploads)
        async with self._uploads:
            await self._upload(data, check_key(obj.key), extra)
        return obj

    async def stat(self, key: str) -> StoredObject:
        head = await self._call(self.client.head_object, Bucket=self.bucket, Key=check_key(key))
        meta = {k: urllib.parse.unquote(v) for k, v in head.get("Metadata", {}).items()}
        return from_metadata(key, int(head["ContentLength"]), head.get("ContentType"),
                             {k: meta.get(_meta_name(k)) for k in META_FIELDS})

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        if end is not None and end == start:
            await self.stat(key)  # KeyError when absent, as for any other range
            return _BodyReader(io.BytesIO(b""), self._workers)
        ranged = {} if not start and end is None else {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        resp = await self._call(self.client.get_object, Bucket=self.bucket, Key=check_key(key), **ranged)
        return _BodyReader(resp["Body"], self._workers)

    async def delete(self, key: str) -> None:
        await self._call(self.client.delete_object, Bucket=self.bucket, Key=check_key(key))

    async def check(self) -> None:
        """The bucket exists and takes writes: write and delete a small probe object."""
        probe = "/".join(p for p in (self.key_prefix, ".probe", uuid.uuid4().hex) if p)
        await self._call(self.client.head_bucket, Bucket=self.bucket)
        await self._call(self.client.put_object, Bucket=self.bucket, Key=probe, Body=b"")
        await self._call(self.client.delete_object, Bucket=self.bucket, Key=probe)

    async def presign(self, obj: StoredObject, ttl: int) -> str | None:
        params = {"Bucket": self.bucket, "Key": obj.key, "ResponseContentType": obj.content_type,
                  "ResponseContentDisposition": content_disposition(obj.filename)}
        # Signing is local computation, no request: cheap enough for the event loop.
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl)

    def _revoked_key(self, token_id: str) -> str:
        if not token_id.isalnum() or len(token_id) > 64:
            raise KeyError(token_id)
        return "/".join(p for p in (self.key_prefix, REVOKED, token_id) if p)

    async def revoke(self, token_id: str, key: str | None = None) -> None:
        await self._call(self.client.put_object, Bucket=self.bucket, Key=self._revoked_key(token_id), Body=b"")

    async def is_revoked(self, token_id: str, key: str | None = None) -> bool:
        try:
            await self._call(self.client.head_object, Bucket=self.bucket, Key=self._revoked_key(token_id))
        except KeyError:
            return False
        return True

    def _record_key(self, name: str) -> str:
        return "/".join(p for p in (self.key_prefix, RECORDS, check_record_name(name)) if p)

    async def put_record(self, name: str, data: Body) -> None:
        await self._upload(data, self._record_key(name), self._sse())

    async def get_record(self, name: str) -> bytes:
        key = self._record_key(name)
        resp = await self._call(self.client.get_object, Bucket=self.bucket, Key=key)
        try:
            return await self._workers.run(resp["Body"].read)
        except (BotoCoreError, OSError) as exc:
            raise self._error(exc) from exc

    async def delete_record(self, name: str) -> None:
        await self._call(self.client.delete_object, Bucket=self.bucket, Key=self._record_key(name))

    async def list_records(self, kind: str, prefix: str = "") -> list[str]:
        """The names (`kind/name`) of the records of one kind whose name starts with `prefix`."""
        base = self._record_key(f"{kind}/x")[:-1]
        names: list[str] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            resp = await self._call(self.client.list_objects_v2, Bucket=self.bucket, Prefix=base + prefix, **extra)
            names += [f"{kind}/{o['Key'][len(base):]}" for o in resp.get("Contents", ())]
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return sorted(names)

    async def close(self) -> None:
        self._workers.close()

    def credentials(self) -> tuple[bool, bool]:
        """(credentials found, credentials are temporary: STS session, role, SSO)."""
        creds = self.session.get_credentials()
        if creds is None:
            return False, False
        frozen = creds.get_frozen_credentials()
        return True, bool(frozen.token) or getattr(creds, "method", "") in (
            "iam-role", "container-role", "assume-role", "assume-role-with-web-identity", "sso")


class _BodyReader:
    """Async iterator over a botocore StreamingBody, read in a worker thread."""

    def __init__(self, body: Any, workers: Workers) -> None:
        self._body = body
        self._workers = workers

    def __aiter__(self) -> "_BodyReader":
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._workers.run(self._body.read, CHUNK_SIZE)
        if not chunk:
            self._body.close()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self._body.close()
