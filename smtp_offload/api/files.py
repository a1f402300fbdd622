"""The file API that contact-center flows call: upload (offload) a file, poll its job, inspect one.

  POST /api/v1/upload/attachment  scope upload   the file judged, stored and linked (200), refused
                                                 (400 empty, 422 spoofed/blocked), or a job (202)
  GET  /api/v1/jobs/{jobId}       scope upload   PENDING, COMPLETE, REJECTED or FAILED
  POST /api/v1/inspect            scope inspect  the same judgement, nothing stored; the file in
                                                 the body, or fetched from {"url": ...}
  GET  /api/v1/openapi.json                      the contract (smtp_offload/api/openapi.json)

A file is judged by delivery.decide (the same rules as an attachment) and stored by the
delivery Preparer (the same keys, metadata and link minter as mail). The platforms time out
(Genesys data actions after 1-60 s, CXone REST actions after 90 s at most), so a large body or
slow work becomes a job, durable in the store (api.jobs) so that any instance answers, and run
by api.runner. Request headers are read by api.protocol, bodies spooled by api.body.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from aiohttp import ClientConnectionError, web
from aiohttp.http_exceptions import BadHttpMessage

from ..config import ApiConfig, Scope
from ..delivery.decide import DecidePolicy, decide_file
from ..delivery.prepare import INLINE_BYTES, Preparer
from ..errors import StorageError
from ..links.service import utc
from ..model import Verdict
from ..units import clip
from .body import CHUNK, Budget, Spooled, spool
from .fetch import FetchError, FetchPolicy, fetch
from .jobs import Job, Records
from .keys import Keys, Refused
from .protocol import (EMPTY, read_small, HEADERS, MAX_FILENAME, MAX_USER_AGENT, MEDIA_TYPE, Answer, json_response, kept_headers, api_verdict, bad, base64_body, customer_of,
                       declared_type_of, filename_of, idempotency_key_of, identity_encoding, storage_down,
                       wants_async)
from .runner import JobRunner

MAX_URL = 8192


class FilesApi:
    def __init__(self, *, preparer: Preparer, policy: DecidePolicy, cfg: ApiConfig, log: Any,
                 instance: str | None = None) -> None:
        assert preparer.store is not None
        self.preparer, self.policy, self.cfg, self.log = preparer, policy, cfg, log
        self.records = Records(preparer.store, cfg.job_ttl_seconds)
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.fetch_policy = FetchPolicy(allow_hosts=tuple(cfg.fetch_allow_hosts), timeout=cfg.fetch_timeout_seconds,
                                        max_retries=cfg.fetch_max_retries, max_bytes=cfg.max_bytes)
        self.idempotent_now: set[str] = set()  # Idempotency-Keys at work on this instance
        self.budget = Budget(cfg.max_inflight_bytes)
        self.runner = JobRunner(records=self.records, cfg=cfg, log=log, instance=self.instance, process=self._process,
                                budget=self.budget)
        self.keys: Keys | None = None

    def add_routes(self, app: web.Application, keys: Keys) -> None:
        self.keys = keys
        app.router.add_post("/api/v1/upload/attachment", self._endpoint("upload", Scope.UPLOAD, self.upload))
        app.router.add_get("/api/v1/jobs/{jobId}", self._endpoint("job", Scope.UPLOAD, self.job))
        app.router.add_post("/api/v1/inspect", self._endpoint("inspect", Scope.INSPECT, self.inspect))
        app.router.add_get("/api/v1/openapi.json", _openapi)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._stop)

    def _endpoint(self, action: str, scope: Scope, handler: Callable[..., Awaitable[Answer]]):
        return endpoint(action, scope, handler, keys=lambda: self.keys, log=self.log)

    # -- upload -----------------------------------------------------------------------------
    async def upload(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        assert self.keys is not None
        filename = filename_of(request)
        declared = declared_type_of(request)
        customer = self.keys.customer(key, customer_of(request))
        encoded = base64_body(request)
        idem = idempotency_key_of(request)
        audit.update(customer=customer, file=filename)
        spooled = await self._spool(request, encoded)
        audit.update(sha256=spooled.sha256, size=spooled.size)
        fingerprint = hashlib.sha256(json.dumps([spooled.sha256, filename, customer, declared]).encode()).hexdigest()
        remembered = hashlib.sha256(f"{key.id}\0{idem}".encode()).hexdigest()[:64] if idem is not None else None
        reserved = False  # this request holds `remembered` in idempotent_now until it has answered
        try:
            if remembered is not None:
                seen = await self._replay(remembered, fingerprint, audit)  # reserves the key when it is new
                if seen is not None:
                    return seen
                reserved = True
            # The storage key follows the Idempotency-Key and the bytes: a retry lands on the same
            # object, and a different file under a reused key can never replace it.
            unique = hashlib.sha256(f"{remembered}\0{spooled.sha256}".encode()).hexdigest()[:32] if remembered \
                else uuid.uuid4().hex
            job = Job(id=uuid.uuid4().hex, key_id=key.id, created=time.time(), unique=unique, filename=filename,
                      declared_type=declared, customer=customer, size=spooled.size, sha256=spooled.sha256,
                      owner=self.instance, idempotency=remembered)
            if job.size == 0:  # known at once: no job to poll for it
                return await self._answered(Answer(400, dict(EMPTY)), remembered, fingerprint, audit)
            data = self._read(spooled)
            if wants_async(request) or job.size > self.cfg.max_sync_bytes:
                return await self._to_job(job, data, fingerprint, audit, stop_after=True)
            work = asyncio.ensure_future(self._process(job, data))
            done, _ = await asyncio.wait({work}, timeout=self.cfg.sync_deadline_seconds)
            if not done:  # past the deadline: the work goes on as a job the caller polls
                return await self._to_job(job, data, fingerprint, audit, work=work)
            self.budget.release(job.size)
            return await self._answered(work.result(), remembered, fingerprint, audit)
        finally:
            spooled.remove()
            if reserved:
                self.idempotent_now.discard(remembered)

    async def _replay(self, remembered: str, fingerprint: str, audit: dict[str, Any]) -> Answer | None:
        """The answer already given for this Idempotency-Key, 409 for another request under it
        (or while the first is still at work on this instance), or None: go on, it is ours."""
        if remembered in self.idempotent_now:
            raise Refused(409, "idempotency_conflict", "a request with this Idempotency-Key is still being "
                          "processed; retry in a moment", {"Retry-After": "1"})
        self.idempotent_now.add(remembered)  # before the await below: a concurrent twin sees it
        try:
            seen = await self._storage(self.records.remembered(remembered))
        except BaseException:
            self.idempotent_now.discard(remembered)
            raise
        if seen is None:
            return None
        self.idempotent_now.discard(remembered)
        if seen["fingerprint"] != fingerprint:
            raise Refused(409, "idempotency_conflict", "this Idempotency-Key was used for a different request")
        audit["replayed"] = True
        self._audit_result(audit, seen["body"])
        return Answer(seen["status"], seen["body"], seen["headers"])

    async def _answered(self, answer: Answer, remembered: str | None, fingerprint: str,
                        audit: dict[str, Any]) -> Answer:
        self._audit_result(audit, answer.body)
        if remembered and answer.status < 500:
            await self._storage(self.records.remember(remembered, fingerprint, answer.status, answer.body))
        return answer

    def _read(self, spooled: Spooled) -> bytes:
        """The spooled body in memory, counted against the in-flight budget (the caller
        releases it); the spool file is gone either way."""
        try:
            self.budget.hold(spooled.size)
            try:
                return spooled.read()
            except BaseException:
                self.budget.release(spooled.size)
                raise
        finally:
            spooled.remove()

    async def _judge(self, data: bytes, filename: str, declared: str | None):
        if len(data) < INLINE_BYTES:
            return decide_file(data, filename, declared, self.policy)
        # Sniffing and archive inspection of a big file is CPU work for a thread.
        return await asyncio.to_thread(decide_file, data, filename, declared, self.policy)

    async def _spool(self, request: web.Request, encoded: bool) -> Spooled:
        identity_encoding(request)
        return await spool(request.content.iter_chunked(CHUNK), limit=self.cfg.max_bytes, base64_encoded=encoded,
                           directory=self.cfg.spool_dir or None, declared_length=request.content_length)

    async def _process(self, job: Job, data: bytes) -> Answer:
        """Judge, then store and link an accepted file: the answer a synchronous call gets."""
        d = await self._judge(data, job.filename, job.declared_type)
        j = d.file.judgement
        if d.verdict is Verdict.EMPTY:
            return Answer(400, dict(EMPTY))
        if d.verdict is not Verdict.OFFLOAD:
            return Answer(422, {"error": d.verdict.value, "message": d.reason, "verdict": d.verdict.value,
                                "reason": d.reason, "detectedType": j.detected_type, "fileName": job.filename,
                                "fileSize": d.file.size, "sha256": d.file.sha256})
        try:
            outcome = await self.preparer.offload_file(
                d, tenant=job.customer, unique=job.unique, day=datetime.fromtimestamp(job.created, timezone.utc))
        except (StorageError, asyncio.TimeoutError) as exc:
            self.log.warning("api_offload_failed", file=job.filename, error=type(exc).__name__, detail=str(exc)[:200])
            down = storage_down()
            return Answer(down.status, {"error": down.error, "message": down.message}, down.headers)
        assert outcome.link is not None and outcome.link_expires is not None
        return Answer(200, {"downloadUrl": outcome.link, "fileName": job.filename, "fileSize": d.file.size,
                            "s3Key": outcome.storage_key, "verdict": api_verdict(d.verdict),
                            "detectedType": j.detected_type, "sha256": d.file.sha256,
                            "expiresAt": utc(outcome.link_expires)})

    # -- jobs -------------------------------------------------------------------------------
    async def _to_job(self, job: Job, data: bytes, fingerprint: str, audit: dict[str, Any], *,
                      work: asyncio.Future | None = None, stop_after: bool = False) -> Answer:
        """The work as a durable job (api.runner), answered 202; the job owns `data` now."""
        try:
            answer = await self.runner.accept(job, data, work=work, stop_after=stop_after)
        except StorageError:
            if work is None:
                self.budget.release(job.size)
                raise storage_down() from None
            # No durable job without the store: finish the work here and answer it.
            try:
                answer = await work
            finally:
                self.budget.release(job.size)
            return await self._answered(answer, job.idempotency, fingerprint, audit)
        if job.idempotency:
            try:
                await self.records.remember(job.idempotency, fingerprint, 202, answer.body, answer.headers)
            except StorageError as exc:  # the job stands; only a retry would not find it
                self.log.warning("api_idempotency_unrecorded", job_id=job.id, error=str(exc)[:200])
        audit["job_id"] = job.id
        return answer

    async def job(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        job_id = request.match_info["jobId"]
        audit["job_id"] = job_id
        try:
            job = await self._storage(self.records.load(job_id))
        except KeyError:
            job = None
        if job is None or job.key_id != key.id:  # another key's job does not exist for this one
            raise Refused(404, "not_found", "no such job (unknown id, or expired)")
        job = await self._storage(self.runner.take_over_if_stale(job))
        audit.update(customer=job.customer, file=job.filename, sha256=job.sha256, verdict=job.result.get("verdict"))
        return Answer(200, job.as_json())

    async def _start(self, app: web.Application) -> None:
        self.runner.start_sweeping(getattr(self.preparer.store, "sweep_records", None))

    async def _stop(self, app: web.Application) -> None:
        await self.runner.stop()

    # -- inspect ----------------------------------------------------------------------------
    async def inspect(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        # JSON asks for a fetch; a JSON file to inspect comes as application/octet-stream.
        if request.headers.get("Content-Type", "").split(";")[0].strip().lower() == "application/json":
            spooled, filename, declared = await self._fetched(request, audit)
        else:
            filename = filename_of(request, required=False)
            if filename is None:
                raise bad("the X-Filename header is required (or send JSON {\"url\", \"fileName\"})")
            declared = declared_type_of(request)
            spooled = await self._spool(request, base64_body(request))
        audit.update(file=filename, sha256=spooled.sha256, size=spooled.size)
        data = self._read(spooled)
        try:
            d = await self._judge(data, filename, declared)
        finally:
            self.budget.release(spooled.size)
        body = {"verdict": api_verdict(d.verdict), "reason": d.reason, "detectedType": d.file.judgement.detected_type,
                "size": d.file.size, "sha256": d.file.sha256, "fileName": filename}
        self._audit_result(audit, body)
        return Answer(200, body)

    async def _fetched(self, request: web.Request, audit: dict[str, Any]) -> tuple[Spooled, str, str | None]:
        identity_encoding(request)
        raw = await read_small(request)  # the whole body (past 64 KiB: 413, answered as JSON)
        try:
            req = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise bad("the body must be a JSON object {\"url\", \"fileName\", \"declaredType\"}") from None
        if not isinstance(req, dict):
            raise bad("the body must be a JSON object {\"url\", \"fileName\", \"declaredType\"}")
        unknown = sorted(set(req) - {"url", "fileName", "declaredType"})
        if unknown:
            raise bad(f"unknown field: {clip(unknown[0])} (expected: url, fileName, declaredType)")
        url, name, declared = req.get("url"), req.get("fileName"), req.get("declaredType")
        if not isinstance(url, str) or not url:
            raise bad("url is required (the file's https URL)")
        if len(url) > MAX_URL:
            raise bad(f"url is longer than {MAX_URL} characters")
        if name is None:
            name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]) or "file"
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_FILENAME \
                or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise bad(f"fileName must be 1 to {MAX_FILENAME} characters without control characters")
        if declared is not None and (not isinstance(declared, str) or not MEDIA_TYPE.fullmatch(declared.strip())):
            raise bad("declaredType must be a media type such as application/pdf")
        audit["url_host"] = clip(urllib.parse.urlsplit(url).hostname or "", 255)
        fd, path = tempfile.mkstemp(prefix="api-", suffix=".fetch", dir=self.cfg.spool_dir or None)
        try:
            with os.fdopen(fd, "wb") as fh:
                size = await fetch(url, fh, self.fetch_policy)
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        except FetchError as e:
            os.unlink(path)
            raise Refused(e.status, e.error, e.message) from None
        except BaseException:
            os.unlink(path)
            raise
        return Spooled(path, size, digest), name.strip(), declared.strip().lower() if declared else None

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _audit_result(audit: dict[str, Any], body: dict[str, Any]) -> None:
        audit.update(verdict=body.get("verdict"), storage_key=body.get("s3Key"))

    @staticmethod
    async def _storage(work: Awaitable[Any]) -> Any:
        try:
            return await work
        except StorageError:
            raise storage_down() from None


def endpoint(action: str, scope: Scope, handler: Callable[..., Awaitable[Answer]], *,
             keys: Callable[[], Keys | None], log: Any) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The one wrapper of every API endpoint: the key admitted for `scope`, refusals and
    errors as JSON, and one audit event `api` per call. `handler(request, key, audit)`."""
    async def endpoint(request: web.Request) -> web.StreamResponse:
        audit: dict[str, Any] = {"action": action, "remote": request.remote, "key_id": None,
                                 "user_agent": request.headers.get("User-Agent", "")[:MAX_USER_AGENT]}
        status = 500
        try:
            try:
                registry = keys()
                if registry is None or not registry.enabled:
                    raise Refused(404, "not_found", "the API is not enabled (no links.api_keys)")
                key = registry.admit(request.headers.get("Authorization", ""), scope, polls=action == "job")
                audit["key_id"] = key.id
                answer = await handler(request, key, audit)
            except Refused as r:
                answer = Answer(r.status, {"error": r.error, "message": r.message, **r.extra},
                                r.headers)
            except web.HTTPException as e:  # aiohttp's own refusals (413 from read(), 405...)
                answer = Answer(e.status, {"error": "too_large" if e.status == 413 else "bad_request",
                                           "message": e.reason}, kept_headers(e))
            except BadHttpMessage as e:  # a body aiohttp could not read (broken chunking, bad gzip)
                answer = Answer(400, {"error": "bad_request",
                                      "message": f"the request body could not be read: {clip(e.message)}"})
            except (ConnectionError, ClientConnectionError):  # the client went away mid-body
                # Nobody reads this answer; the audit says 499, nginx's "client closed request".
                answer = Answer(499, {"error": "client_disconnected", "message": "the client went away"})
            except Exception as e:  # a bug: a JSON 500 and a traceback in our log, nothing leaked
                log.error("api_internal_error", action=action, exc_info=e)
                answer = Answer(500, {"error": "internal", "message": "internal error"})
            status = answer.status
            if status >= 400:
                audit["error"] = answer.body.get("error")
            resp = json_response(answer.status, answer.body, answer.headers)
            if answer.after is not None:
                try:  # send the 202 before the work starts (a test may stop the process here) ...
                    await resp.prepare(request)
                    await resp.write_eof()
                except (ConnectionError, ClientConnectionError):
                    status = 499  # the client never got its 202; the job is accepted all the same
                finally:  # ... and start the work even when the client is gone
                    answer.after()
            return resp
        finally:
            (log.warning if status >= 500 else log.info)("api", status=status, **audit)

    return endpoint


_ROUTER_ERRORS = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """The router's own refusals under /api/ (no such path, wrong method) as JSON, like every
    other API answer; pages keep aiohttp's."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or not request.path.startswith("/api/"):
            raise
        message = "no such API endpoint" if e.status == 404 else e.reason
        return json_response(e.status, {"error": _ROUTER_ERRORS.get(e.status, "bad_request"), "message": message},
                             kept_headers(e))


async def _openapi(request: web.Request) -> web.Response:
    text = resources.files("smtp_offload.api").joinpath("openapi.json").read_text("utf-8")
    return web.Response(text=text, content_type="application/json", headers=HEADERS)
