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
slow work becomes a job, durable in the store (api.jobs) so that any instance answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
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
from .body import CHUNK, Spooled, spool
from .fetch import FetchError, FetchPolicy, fetch
from .jobs import Job, Records, Status
from .keys import Keys, Refused

FAILPOINT_ENV = "SMTP_OFFLOAD_FAILPOINT"  # tests only: "job-accepted" stops the process after a 202
MAX_FILENAME = 1024
MAX_JSON_BYTES = 64 * 1024
MAX_URL = 8192
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_CUSTOMER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # one storage key segment as is (case aside)
_MAX_USER_AGENT = 300
EMPTY = {"error": "empty", "message": "Empty file"}  # the seed's answer for zero bytes


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    after: Callable[[], None] | None = None  # run once the response is sent


@dataclass
class _Beat:
    """A running job's heartbeat and its end, ordered by one lock."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    done: bool = False


def storage_down() -> Refused:
    return Refused(503, "storage_unavailable", "the file store is unavailable; try again later", {"Retry-After": "30"})


def _bad(message: str) -> Refused:
    return Refused(400, "bad_request", message)


# -- request headers ------------------------------------------------------------------------
def filename_of(request: web.Request, required: bool = True) -> str | None:
    raw = request.headers.get("X-Filename")
    if raw is None or not raw.strip():
        if required:
            raise _bad("the X-Filename header is required (the file's name, UTF-8 or percent-encoded)")
        return None
    raw_bytes = raw.encode("utf-8", "surrogateescape")  # aiohttp decodes header bytes this way
    try:
        name = raw_bytes.decode("utf-8")
    except UnicodeError:
        # Not UTF-8: many HTTP clients send a header's non-ASCII characters as ISO-8859-1, the
        # header charset HTTP/1.1 long defined. Read it so rather than refuse the customer's file.
        name = raw_bytes.decode("latin-1")
    if "%" in name:
        try:
            name = urllib.parse.unquote(name, errors="strict")
        except UnicodeError:
            raise _bad("X-Filename must be UTF-8 (or percent-encoded UTF-8)") from None
    name = name.strip()
    if not name or len(name) > MAX_FILENAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _bad(f"X-Filename must be 1 to {MAX_FILENAME} characters without control characters")
    return name


def declared_type_of(request: web.Request) -> str | None:
    value = request.headers.get("X-Declared-Type")
    if value is None:
        value = request.headers.get("Content-Type", "")
        base = value.split(";")[0].strip().lower()
        if not base or base in ("application/octet-stream", "application/json"):
            return None
    value = value.split(";")[0].strip()
    if not value:
        return None
    if not _MEDIA_TYPE.fullmatch(value):
        raise _bad("X-Declared-Type must be a media type such as application/pdf")
    return value.lower()


def customer_of(request: web.Request) -> str | None:
    value = request.headers.get("X-CustomerId")
    if value is None or not value.strip():
        return None
    if not _CUSTOMER.fullmatch(value.strip()):
        raise _bad("X-CustomerId must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value.strip()


def identity_encoding(request: web.Request) -> None:
    """A file's bytes as sent, or base64: a compressed body would be judged after aiohttp
    inflated it, and a truncated gzip stream inflates to a shorter "file" without an error."""
    enc = request.headers.get("Content-Encoding", "").strip().lower()
    if enc not in ("", "identity"):
        raise Refused(415, "unsupported_encoding",
                      "Content-Encoding is not accepted: send the file's bytes (or base64 with "
                      "Content-Transfer-Encoding: base64)")


def base64_body(request: web.Request) -> bool:
    cte = request.headers.get("Content-Transfer-Encoding", "").strip().lower()
    if cte in ("", "binary", "8bit", "7bit"):
        return False
    if cte == "base64":
        return True
    raise _bad('Content-Transfer-Encoding must be "base64" or absent (raw bytes)')


def idempotency_key_of(request: web.Request) -> str | None:
    value = request.headers.get("Idempotency-Key")
    if value is None or value == "":  # a flow template's unset variable sends it empty: none given
        return None
    if not 0 < len(value) <= 255 or not all(33 <= ord(c) < 127 for c in value):
        raise _bad("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return value


def wants_async(request: web.Request) -> bool:
    prefs = request.headers.get("Prefer", "")
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in prefs.split(","))


def api_verdict(v: Verdict) -> str:
    """The API's word for a verdict: an accepted file is "accepted", a refused one says why."""
    return "accepted" if v in (Verdict.KEEP, Verdict.OFFLOAD) else v.value


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers={**_HEADERS, **(headers or {})})


class FilesApi:
    def __init__(self, *, preparer: Preparer, policy: DecidePolicy, cfg: ApiConfig, log: Any,
                 instance: str | None = None) -> None:
        assert preparer.store is not None
        self.preparer, self.policy, self.cfg, self.log = preparer, policy, cfg, log
        self.records = Records(preparer.store, cfg.job_ttl_seconds)
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.fetch_policy = FetchPolicy(allow_hosts=tuple(cfg.fetch_allow_hosts), timeout=cfg.fetch_timeout_seconds,
                                        max_retries=cfg.fetch_max_retries, max_bytes=cfg.max_bytes)
        self.running: dict[str, asyncio.Task | None] = {}  # None: claimed, about to start
        self.idempotent_now: set[str | None] = set()  # Idempotency-Keys at work on this instance
        self.inflight = 0  # bytes of bodies held in memory (api.max_inflight_bytes)
        self.keys: Keys | None = None

    def add_routes(self, app: web.Application, keys: Keys) -> None:
        self.keys = keys
        app.router.add_post("/api/v1/upload/attachment", self._endpoint("upload", Scope.UPLOAD, self.upload))
        app.router.add_get("/api/v1/jobs/{jobId}", self._endpoint("job", Scope.UPLOAD, self.job))
        app.router.add_post("/api/v1/inspect", self._endpoint("inspect", Scope.INSPECT, self.inspect))
        app.router.add_get("/api/v1/openapi.json", _openapi)
        app.on_shutdown.append(self._shutdown)

    # -- the one wrapper: auth, error mapping, the audit event --------------------------------
    def _endpoint(self, action: str, scope: Scope, handler: Callable[..., Awaitable[Answer]]):
        async def endpoint(request: web.Request) -> web.StreamResponse:
            audit: dict[str, Any] = {"action": action, "remote": request.remote, "key_id": None,
                                     "user_agent": request.headers.get("User-Agent", "")[:_MAX_USER_AGENT]}
            status = 500
            try:
                try:
                    assert self.keys is not None
                    if not self.keys.enabled:
                        raise Refused(404, "not_found", "the API is not enabled (no links.api_keys)")
                    key = self.keys.admit(request.headers.get("Authorization", ""), scope, polls=action == "job")
                    audit["key_id"] = key.id
                    answer = await handler(request, key, audit)
                except Refused as r:
                    answer = Answer(r.status, {"error": r.error, "message": r.message, **r.extra},
                                    r.headers)
                except web.HTTPException as e:  # aiohttp's own refusals (413 from read(), 405...)
                    kept = {k: v for k, v in e.headers.items() if k.lower() not in ("content-type", "content-length")}
                    answer = Answer(e.status, {"error": "too_large" if e.status == 413 else "bad_request",
                                               "message": e.reason}, kept)
                except BadHttpMessage as e:  # a body aiohttp could not read (broken chunking, bad gzip)
                    answer = Answer(400, {"error": "bad_request",
                                          "message": f"the request body could not be read: {clip(e.message)}"})
                except (ConnectionError, ClientConnectionError):  # the client went away mid-body
                    # Nobody reads this answer; the audit says 499, nginx's "client closed request".
                    answer = Answer(499, {"error": "client_disconnected", "message": "the client went away"})
                except Exception as e:  # a bug: a JSON 500 and a traceback in our log, nothing leaked
                    self.log.error("api_internal_error", action=action, exc_info=e)
                    answer = Answer(500, {"error": "internal", "message": "internal error"})
                status = answer.status
                if status >= 400:
                    audit["error"] = answer.body.get("error")
                resp = _json(answer.status, answer.body, answer.headers)
                if answer.after is not None:
                    try:  # send the 202 before the work starts (a test may stop the process here) ...
                        await resp.prepare(request)
                        await resp.write_eof()
                    finally:  # ... and start the work even when the client is gone: the job is accepted
                        answer.after()
                return resp
            finally:
                (self.log.warning if status >= 500 else self.log.info)("api", status=status, **audit)

        return endpoint

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
        try:
            if remembered is not None:
                seen = await self._replay(remembered, fingerprint, audit)  # reserves the key when it is new
                if seen is not None:
                    return seen
        except BaseException:
            spooled.remove()
            raise
        try:  # from here on this request owns `remembered` (idempotent_now) until it has answered
            # The storage key follows the Idempotency-Key and the bytes: a retry lands on the same
            # object, and a different file under a reused key can never replace it.
            unique = hashlib.sha256(f"{remembered}\0{spooled.sha256}".encode()).hexdigest()[:32] if remembered \
                else uuid.uuid4().hex
            job = Job(id=uuid.uuid4().hex, key_id=key.id, created=time.time(), unique=unique, filename=filename,
                      declared_type=declared, customer=customer, size=spooled.size, sha256=spooled.sha256,
                      owner=self.instance, idempotency=remembered)
            try:
                if job.size == 0:  # known at once: no job to poll for it
                    return await self._answered(Answer(400, dict(EMPTY)), remembered, fingerprint, audit)
                self._hold(job.size)
                try:
                    data = spooled.read()
                except BaseException:
                    self._release(job.size)
                    raise
            finally:
                spooled.remove()
            if wants_async(request) or job.size > self.cfg.max_sync_bytes:
                return await self._accept(job, data, fingerprint, audit, stop_after=True)
            work = asyncio.ensure_future(self._process(job, data))
            done, _ = await asyncio.wait({work}, timeout=self.cfg.sync_deadline_seconds)
            if not done:  # past the deadline: the work goes on as a job the caller polls
                return await self._accept(job, data, fingerprint, audit, work=work)
            self._release(job.size)
            return await self._answered(work.result(), remembered, fingerprint, audit)
        finally:
            self.idempotent_now.discard(remembered)

    async def _replay(self, remembered: str, fingerprint: str, audit: dict[str, Any]) -> Answer | None:
        """The answer already given for this Idempotency-Key, 409 for another request under it
        (or while the first is still at work on this instance), or None: go on, it is ours."""
        if remembered in self.idempotent_now:
            raise Refused(409, "idempotency_conflict", "a request with this Idempotency-Key is still being "
                          "processed; retry in a moment", {"Retry-After": "1"})
        seen = await self._storage(self.records.remembered(remembered))
        if seen is None:
            self.idempotent_now.add(remembered)
            return None
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

    def _hold(self, size: int) -> None:
        """Count a body read into memory against api.max_inflight_bytes (one may always go)."""
        if self.inflight and self.inflight + size > self.cfg.max_inflight_bytes:
            raise Refused(503, "busy", "too many files are being processed right now; retry shortly",
                          {"Retry-After": "5"})
        self.inflight += size

    def _release(self, size: int) -> None:
        self.inflight -= size

    async def _spool(self, request: web.Request, encoded: bool) -> Spooled:
        identity_encoding(request)
        return await spool(request.content.iter_chunked(CHUNK), limit=self.cfg.max_bytes, base64_encoded=encoded,
                           directory=self.cfg.spool_dir or None, declared_length=request.content_length)

    async def _process(self, job: Job, data: bytes) -> Answer:
        """Judge, then store and link an accepted file: the answer a synchronous call gets."""
        if len(data) < INLINE_BYTES:
            d = decide_file(data, job.filename, job.declared_type, self.policy)
        else:  # sniffing and archive inspection of a big file is CPU work for a thread
            d = await asyncio.to_thread(decide_file, data, job.filename, job.declared_type, self.policy)
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
    async def _accept(self, job: Job, data: bytes, fingerprint: str, audit: dict[str, Any], *,
                      work: asyncio.Future | None = None, stop_after: bool = False) -> Answer:
        """Make the work a durable job: body staged, record PENDING, then 202. The job now owns
        `data` (and its share of api.max_inflight_bytes)."""
        job = replace(job, heartbeat=time.time())
        try:
            await self.records.stage(job.id, data)
            await self.records.save(job)
        except StorageError:
            if work is None:
                self._release(job.size)
                raise storage_down() from None
            # No durable job without the store: finish the work here and answer it.
            answer = await work
            self._release(job.size)
            return await self._answered(answer, job.idempotency, fingerprint, audit)
        body = {"jobId": job.id, "status": Status.PENDING.value}
        location = {"Location": f"/api/v1/jobs/{job.id}"}
        if job.idempotency:
            try:
                await self.records.remember(job.idempotency, fingerprint, 202, body, location)
            except StorageError as exc:  # the job stands; only a retry would not find it
                self.log.warning("api_idempotency_unrecorded", job_id=job.id, error=str(exc)[:200])
        audit["job_id"] = job.id
        if work is not None:
            self._run(job, data, work)
            return Answer(202, body, location)
        return Answer(202, body, location, after=lambda: self._after_accept(job, data, stop_after))

    def _after_accept(self, job: Job, data: bytes, stop_after: bool) -> None:
        if stop_after and os.environ.get(FAILPOINT_ENV) == "job-accepted":
            os.kill(os.getpid(), signal.SIGSTOP)  # the crash test's "dies right after answering"
        self._run(job, data)

    def _run(self, job: Job, data: bytes | None, work: asyncio.Future | None = None) -> None:
        """Finish `job` in the background; with `data`, the job holds its bytes until it ends."""
        task = asyncio.ensure_future(self._finish(job, data, work))
        self.running[job.id] = task
        held = len(data) if data is not None else 0

        def done(_t: asyncio.Task) -> None:
            self.running.pop(job.id, None)
            self._release(held)

        task.add_done_callback(done)

    async def _finish(self, job: Job, data: bytes | None, work: asyncio.Future | None) -> None:
        beat = _Beat()
        beating = asyncio.ensure_future(self._heartbeat(job, beat))
        try:
            answer = await self._outcome(job, data, work)
            status = {200: Status.COMPLETE, 400: Status.REJECTED, 422: Status.REJECTED}.get(answer.status, Status.FAILED)
            async with beat.lock:  # a heartbeat already writing finishes first: PENDING never lands after this
                beat.done = True
                if await self._finished_elsewhere(job):
                    # Another instance took the job over (this one was paused past its lease) and
                    # answered first: its answer stands, the object is the same (same storage key).
                    self.log.info("api_job_already_finished", job_id=job.id)
                    return
                await self.records.save(replace(job, status=status, heartbeat=time.time(), owner=self.instance,
                                                result=answer.body))
            self.log.info("api_job", job_id=job.id, status=status.value, key_id=job.key_id, customer=job.customer,
                          file=job.filename, sha256=job.sha256, verdict=answer.body.get("verdict"),
                          storage_key=answer.body.get("s3Key"))
            await self.records.unstage(job.id)
        except (StorageError, OSError) as exc:
            # The record stays PENDING: when its lease runs out, the next instance asked finishes it.
            self.log.warning("api_job_unfinished", job_id=job.id, error=type(exc).__name__, detail=str(exc)[:200])
        finally:
            beat.done = True
            beating.cancel()

    async def _finished_elsewhere(self, job: Job) -> bool:
        try:
            current = await self.records.load(job.id)
        except KeyError:
            return False
        return current.status is not Status.PENDING

    async def _outcome(self, job: Job, data: bytes | None, work: asyncio.Future | None) -> Answer:
        """The job's answer, whatever happens: a bug becomes FAILED, not a job PENDING forever."""
        try:
            if work is not None:
                return await work
            if data is None:
                try:
                    data = await self.records.staged(job.id)
                except KeyError:
                    return Answer(500, {"error": "lost", "message": "the job's file was lost; upload it again"})
            return await self._process(job, data)
        except StorageError:
            raise
        except Exception as exc:
            self.log.error("api_internal_error", action="job", job_id=job.id, exc_info=exc)
            return Answer(500, {"error": "internal", "message": "internal error"})

    async def _heartbeat(self, job: Job, beat: "_Beat") -> None:
        period = self.cfg.job_lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            async with beat.lock:
                if beat.done:
                    return
                try:
                    await self.records.touch(job, self.instance)
                except StorageError:
                    pass  # the next beat tries again; past the lease another instance may take over

    async def job(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        job_id = request.match_info["jobId"]
        audit["job_id"] = job_id
        try:
            job = await self._storage(self.records.load(job_id))
        except KeyError:
            job = None
        if job is None or job.key_id != key.id:  # another key's job does not exist for this one
            raise Refused(404, "not_found", "no such job (unknown id, or expired)")
        if job.stale(self.cfg.job_lease_seconds) and job.id not in self.running:
            # Its instance died: finish it here, from the staged body, under the same storage key.
            self.running[job.id] = None  # claimed before any await: concurrent polls here take it once
            previous = job.owner
            try:
                job = await self._storage(self.records.touch(job, self.instance))
            except BaseException:
                self.running.pop(job.id, None)
                raise
            self.log.warning("api_job_taken_over", job_id=job.id, previous_owner=previous)
            self._run(job, None)
        audit.update(customer=job.customer, file=job.filename, sha256=job.sha256, verdict=job.result.get("verdict"))
        return Answer(200, job.as_json())

    async def _shutdown(self, app: web.Application) -> None:
        """Let running jobs finish for a while; one cut short stays PENDING for another instance."""
        tasks = [t for t in self.running.values() if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=min(10.0, self.cfg.job_lease_seconds))
            for t in tasks:
                t.cancel()

    # -- inspect ----------------------------------------------------------------------------
    async def inspect(self, request: web.Request, key, audit: dict[str, Any]) -> Answer:
        # JSON asks for a fetch; a JSON file to inspect comes as application/octet-stream.
        if request.headers.get("Content-Type", "").split(";")[0].strip().lower() == "application/json":
            spooled, filename, declared = await self._fetched(request, audit)
        else:
            filename = filename_of(request, required=False)
            if filename is None:
                raise _bad("the X-Filename header is required (or send JSON {\"url\", \"fileName\"})")
            declared = declared_type_of(request)
            spooled = await self._spool(request, base64_body(request))
        audit.update(file=filename, sha256=spooled.sha256, size=spooled.size)
        try:
            self._hold(spooled.size)
            try:
                data = spooled.read()
            except BaseException:
                self._release(spooled.size)
                raise
        finally:
            spooled.remove()
        try:
            if len(data) < INLINE_BYTES:
                d = decide_file(data, filename, declared, self.policy)
            else:
                d = await asyncio.to_thread(decide_file, data, filename, declared, self.policy)
        finally:
            self._release(spooled.size)
        body = {"verdict": api_verdict(d.verdict), "reason": d.reason, "detectedType": d.file.judgement.detected_type,
                "size": d.file.size, "sha256": d.file.sha256, "fileName": filename}
        self._audit_result(audit, body)
        return Answer(200, body)

    async def _fetched(self, request: web.Request, audit: dict[str, Any]) -> tuple[Spooled, str, str | None]:
        identity_encoding(request)
        raw = b""
        async for chunk in request.content.iter_chunked(CHUNK):  # read() alone returns what has arrived so far
            raw += chunk
            if len(raw) > MAX_JSON_BYTES:
                break
        if len(raw) > MAX_JSON_BYTES:
            raise Refused(413, "too_large", f"the JSON body is larger than {MAX_JSON_BYTES} bytes")
        try:
            req = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _bad("the body must be a JSON object {\"url\", \"fileName\", \"declaredType\"}") from None
        if not isinstance(req, dict):
            raise _bad("the body must be a JSON object {\"url\", \"fileName\", \"declaredType\"}")
        unknown = sorted(set(req) - {"url", "fileName", "declaredType"})
        if unknown:
            raise _bad(f"unknown field: {clip(unknown[0])} (expected: url, fileName, declaredType)")
        url, name, declared = req.get("url"), req.get("fileName"), req.get("declaredType")
        if not isinstance(url, str) or not url:
            raise _bad("url is required (the file's https URL)")
        if len(url) > MAX_URL:
            raise _bad(f"url is longer than {MAX_URL} characters")
        if name is None:
            name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]) or "file"
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_FILENAME \
                or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise _bad(f"fileName must be 1 to {MAX_FILENAME} characters without control characters")
        if declared is not None and (not isinstance(declared, str) or not _MEDIA_TYPE.fullmatch(declared.strip())):
            raise _bad("declaredType must be a media type such as application/pdf")
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
        kept = {k: v for k, v in e.headers.items() if k.lower() not in ("content-type", "content-length")}
        message = "no such API endpoint" if e.status == 404 else e.reason
        return _json(e.status, {"error": _ROUTER_ERRORS.get(e.status, "bad_request"), "message": message}, kept)


async def _openapi(request: web.Request) -> web.Response:
    text = resources.files("smtp_offload.api").joinpath("openapi.json").read_text("utf-8")
    return web.Response(text=text, content_type="application/json", headers=_HEADERS)
