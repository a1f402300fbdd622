"""Resumable uploads: the tus 1.0.0 protocol, served by aiohttp-tus, guarded here.

  POST  /u/{token}/tus                 a new upload (Upload-Length, Upload-Metadata filename, filetype)
  HEAD  /u/{token}/tus/{uid}           how much of it arrived (Upload-Offset): where a client resumes
  PATCH /u/{token}/tus/{uid}           the next chunk, at most portal.chunk_bytes
  DELETE /u/{token}/tus/{uid}          the customer cancelled it

aiohttp-tus keeps an upload in progress under portal.spool_dir/<token>/ (so the runner can
remove what an expired link left) and calls us once the last chunk arrived. It trusts its
client more than a public page may, so every request passes the guard first:
  - the link is checked (403 forged, 410 expired, revoked or sent) before the library runs;
  - an upload id that is not a UUID is 404 (the library builds paths from it);
  - a new upload must fit the session's limits, and the customer's file name never reaches
    the file system: the library is told our file id instead (it would write to <dir>/<name>);
  - a chunk must say its length and be at most portal.chunk_bytes (the library reads it whole);
  - the library's GET (parses headers it was never given) is not served; Location is
    made relative, so a client behind a TLS-terminating proxy resumes over https.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import signal
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientConnectionError, ClientPayloadError, web
from aiohttp_tus import setup_tus
from aiohttp_tus.data import Resource
from aiohttp_tus.utils import get_resource

from ..api.keys import Refused
from ..api.protocol import MAX_FILENAME, MEDIA_TYPE
from ..errors import StorageError
from ..units import clip
from .session import FileEntry, FileState, LinkRefused, Session, State, new_fid
from .service import Portal

FAILPOINT_ENV = "SMTP_OFFLOAD_FAILPOINT"  # tests only: "portal-half" stops the process mid-upload
_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TUS = {"Tus-Resumable": "1.0.0"}
_DIGITS = re.compile(r"[0-9]{1,18}")
MAX_CHUNKS_AT_ONCE = 16  # each is read whole (portal.chunk_bytes): 128 MiB with the default
SESSION = "portal_session"
COMPLETE = "portal_complete"  # (file id, path) of the upload the last PATCH completed  # the request's checked Session, for the library's callback
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def refusal(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status,
                             headers={**_TUS, "Cache-Control": "no-store", **(headers or {})})


def link_refusal(e: LinkRefused) -> web.Response:
    if e.why == "tampered":
        return refusal(403, "link_not_valid", "this upload link is not valid")
    return refusal(410, f"link_{e.why}", f"this upload link has {'expired' if e.why == 'expired' else 'been withdrawn'}")


def metadata(header: str) -> dict[str, bytes]:
    """Upload-Metadata: `key base64,key base64,key` (tus 1.0.0); ValueError when malformed."""
    out: dict[str, bytes] = {}
    for item in header.split(","):
        parts = item.strip().split(" ")
        if not parts[0]:
            continue
        if len(parts) > 2:
            raise ValueError(item)
        try:
            out[parts[0]] = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
        except binascii.Error:
            raise ValueError(item) from None
    return out


def _name(meta: dict[str, bytes]) -> str:
    try:
        name = meta.get("filename", b"").decode("utf-8").strip()
    except UnicodeDecodeError:
        name = ""
    if not name or len(name) > MAX_FILENAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise Refused(400, "bad_request", "the upload needs its file name (Upload-Metadata filename)")
    return name


def _number(header: str | None) -> int | None:
    """A tus length or offset: ASCII digits only (int() would also take "1_0", "+1", " ١ ")."""
    return int(header) if header is not None and _DIGITS.fullmatch(header) else None


def _resource(request: web.Request) -> Resource | None:
    """The library's record of an upload in progress; None when there is none (any more)."""
    try:
        return get_resource(request)
    except (OSError, ValueError, KeyError):
        return None


def add_tus(app: web.Application, portal: Portal, log: Any) -> None:
    # Per upload; gone with the last request holding or awaiting it.
    locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
    chunks = asyncio.Semaphore(MAX_CHUNKS_AT_ONCE)

    async def done(request: web.Request, resource: Resource, path: Path) -> None:
        """The library's callback, inside the last PATCH and under the upload's lock: the file
        is marked as being checked (so no one takes it for lost), and the judging is left to
        _patch, which runs it once this upload's lock and chunk slot are free again."""
        s = request[SESSION]
        try:
            f = await portal.records.load_file(s.id, resource.file_name)
            f = f.with_(state=FileState.CHECKING, updated=time.time())
            await portal.records.save_file(s.id, f)
        except (KeyError, StorageError) as exc:  # its record is gone: nobody would ever see a verdict
            log.warning("portal_upload_lost", session=s.id, file=resource.file_name, error=type(exc).__name__)
            path.unlink(missing_ok=True)
            return
        request[COMPLETE] = (f, path)

    def guard(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                s = await portal.open(request.match_info["token"])
            except LinkRefused as e:
                return link_refusal(e)
            except StorageError:
                return refusal(503, "unavailable", "uploads are paused by a problem on our side; retrying",
                               {"Retry-After": "10"})
            uid = request.match_info.get("resource_uid")
            if uid is not None and not _UID.fullmatch(uid):
                return refusal(404, "not_found", "no such upload")
            if request.method == "GET":
                return refusal(405, "method_not_allowed", "not a tus request", {"Allow": "POST, OPTIONS"})
            request[SESSION] = s
            try:
                if request.method == "POST":
                    return await _create(request, s, handler)
                if request.method == "PATCH":
                    return await _patch(request, s, handler)
                if request.method == "HEAD":
                    return await _head(request, s, handler)
                return await _delete(request, s, handler)
            except Refused as r:
                return refusal(r.status, r.error, r.message, r.headers)
            except StorageError:
                return refusal(503, "unavailable", "uploads are paused by a problem on our side; retrying",
                               {"Retry-After": "10"})

        return guarded

    async def _create(request: web.Request, s: Session, handler: Handler) -> web.StreamResponse:
        if not request.headers.get("Tus-Resumable"):
            return refusal(412, "not_tus", "this endpoint speaks tus 1.0.0 (Tus-Resumable header)")
        try:
            meta = metadata(request.headers.get("Upload-Metadata", ""))
        except ValueError:
            meta = None
        length = _number(request.headers.get("Upload-Length"))
        if meta is None or length is None:
            raise Refused(400, "bad_request", "Upload-Length and a well-formed Upload-Metadata are required")
        name = _name(meta)
        declared = None
        try:
            filetype = meta.get("filetype", b"").decode("ascii").strip().lower()
            declared = filetype if MEDIA_TYPE.fullmatch(filetype) and filetype != "application/octet-stream" else None
        except UnicodeDecodeError:
            pass
        if length == 0:
            raise Refused(400, "empty", "refused: this file is empty — please choose the file again")
        try:
            await portal.admit(s, name, length, request.remote)
        except Refused as r:
            log.info("portal_upload_refused", session=s.id, name=clip(name, 200), size=length, error=r.error,
                     remote=request.remote)
            raise
        fid = new_fid()
        headers = request.headers.copy()
        headers["Upload-Metadata"] = "filename " + base64.b64encode(fid.encode()).decode()
        resp = await handler(request.clone(headers=headers))
        uid = resp.headers.get("Tus-Temp-Filename", "")
        if resp.status == 201 and _UID.fullmatch(uid):
            await portal.begin(s, name, length, declared, upload=uid, fid=fid)
            resp.headers["Location"] = f"tus/{uid}"  # relative to the endpoint (see the module doc)
        return resp

    async def _finished(s: Session, uid: str) -> FileEntry | None:
        """The file an upload became once complete (the library forgot the upload then). An
        upload the library does not know here but the record says is still arriving was lost
        (a spool gone, a request routed to another instance): its record goes, the client starts
        over."""
        f = next((f for f in await portal.records.files(s.id) if f.upload == uid), None)
        if f is not None and f.state == FileState.UPLOADING:
            await portal.records.delete_file(s.id, f.id)
            log.warning("portal_upload_lost", session=s.id, file=f.id, upload=uid, error="not in this spool")
            return None
        return f

    async def _head(request: web.Request, s: Session, handler: Handler) -> web.StreamResponse:
        uid = request.match_info["resource_uid"]
        if _resource(request) is None:
            # Complete already: say so, so a client whose last answer was lost does not start over.
            f = await _finished(s, uid)
            if f is None:
                return refusal(404, "not_found", "no such upload")
            return web.Response(status=200, headers={**_TUS, "Cache-Control": "no-store", "Upload-Offset": str(f.size),
                                                     "Upload-Length": str(f.size)})
        return await handler(request)

    async def _delete(request: web.Request, s: Session, handler: Handler) -> web.StreamResponse:
        resource = _resource(request)
        resp = await handler(request)
        if resp.status == 204 and resource is not None:
            await portal.records.delete_file(s.id, resource.file_name)
        return resp

    async def _patch(request: web.Request, s: Session, handler: Handler) -> web.StreamResponse:
        uid = request.match_info["resource_uid"]
        size = request.content_length
        if size is None or size > portal.cfg.chunk_bytes:
            return refusal(413, "too_large", f"a chunk must state its length and be at most {portal.cfg.chunk_bytes} "
                           "bytes")
        offset = _number(request.headers.get("Upload-Offset"))
        if offset is None:
            return refusal(400, "bad_request", "Upload-Offset must be a whole number")
        if s.state != State.OPEN:
            return refusal(403, "already_sent", "these files were already sent to your case")
        lock = locks.get(uid)
        if lock is None:
            lock = locks[uid] = asyncio.Lock()
        async with lock, chunks:  # one chunk of an upload at a time; a bounded number in memory
            resource = _resource(request)
            if resource is None:
                f = await _finished(s, uid)
                if f is not None and offset == f.size and size == 0:
                    return web.Response(status=204, headers={**_TUS, "Upload-Offset": str(f.size)})
                return refusal(404 if f is None else 409, "not_found" if f is None else "complete",
                               "no such upload" if f is None else "this upload is complete")
            if offset != resource.offset:
                return refusal(409, "offset_mismatch", "resume from the Upload-Offset a HEAD request gives",
                               {"Upload-Offset": str(resource.offset)})
            if offset + size > resource.file_size:
                return refusal(413, "too_large", "the chunk goes past the upload's Upload-Length")
            await portal.touch(s, resource.file_name)
            try:
                resp = await handler(request)
                if COMPLETE not in request:
                    await portal.touch(s, resource.file_name)  # a slow chunk is alive too
            except (ClientPayloadError, ConnectionError, ClientConnectionError, asyncio.IncompleteReadError):
                # The connection broke mid-chunk: nothing of it was kept, the client resumes
                # from the offset it asks for with HEAD.
                log.info("portal_chunk", session=s.id, upload=uid, offset=offset, aborted=True)
                return refusal(400, "incomplete", "the chunk did not arrive whole; resume from Upload-Offset")
            except OSError as exc:  # the spool's disk: full, gone
                log.warning("portal_spool_failed", session=s.id, upload=uid, error=clip(exc, 200))
                return refusal(503, "unavailable", "uploads are paused by a problem on our side; retrying",
                               {"Retry-After": "30"})
        complete = request.get(COMPLETE)
        if complete is not None:  # the last chunk: judged before it is answered (the page then shows the verdict)
            await portal.judge(s, *complete, request.remote)
        if resp.status == 204:
            log.info("portal_chunk", session=s.id, upload=uid, offset=offset, bytes=size)
            if os.environ.get(FAILPOINT_ENV) == "portal-half" and offset * 2 < resource.file_size <= (offset + size) * 2:
                os.kill(os.getpid(), signal.SIGSTOP)  # the resume test's crash: chunk kept, answer never sent
        return resp

    with warnings.catch_warnings():  # the library keys its config by a string, not a web.AppKey
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        setup_tus(app, upload_path=portal.spool / "{token}", upload_url="/u/{token}/tus", decorator=guard,
                  on_upload_done=done)
