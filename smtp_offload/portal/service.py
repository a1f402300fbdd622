"""The upload portal's work, whoever asks (the API, the page, the command line, the runner).

  create   a session for a case: checked fields, the customer's open-session limit, a link
  open     a link -> its live session, or why not (LinkRefused: tampered, expired, revoked)
  admit    may this session take one more file of this name and size from this address?
  judge    a complete upload: decide_file (the mail rules), staged in the store when accepted
  send     promote the accepted files (stored and linked as offloaded attachments), one
           message to the case through the downstream; on refusal or outage a retry later
  run      every few seconds: due retries, quiet periods, deliveries whose instance died,
           expired sessions and their leftovers (store records and the resumable spool)

Everything a session is lives in the store (portal.session.Records), so any instance serves
any step; only an upload in progress is local (see portal.tus).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import socket
import time
import unicodedata
import uuid
import weakref
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..api.keys import Bucket, Refused
from ..config import ApiKey, LinksConfig, PortalConfig
from ..delivery.decide import DecidePolicy, decide_file
from ..delivery.prepare import INLINE_BYTES, Preparer
from ..errors import SmtpReplyError, StorageError
from ..inspect.names import file_extension
from ..links.service import utc
from ..metrics import Metrics
from ..model import Verdict
from ..relay import Downstream
from ..units import clip, human_size
from . import message, words
from .session import (FID_RE, FileEntry, FileState, LinkRefused, Records, Session, State, busy, new_fid, new_sid,
                      sign, verify)

_CASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:#/-]{0,63}")
_CUSTOMER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@([A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+)")
_MSGID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,250}>")
_FIELDS = {"caseId", "to", "customerId", "subject", "inReplyTo", "ttlSeconds"}
LEASE = 120.0  # a delivery whose instance stopped renewing for this long is taken over
RETRY_AFTER_EXPIRY = 24 * 3600  # a session still undelivered at expiry is retried this much longer
MIN_TTL = 60

DELIVERY_WORDS = {
    State.OPEN: "",
    State.SENDING: "Sending your files to your case…",
    State.RETRYING: "Your files are received and stored safely, but we could not pass them to your case yet. "
                    "We keep trying; you do not need to do anything.",
    State.SENT: "Your files were sent to your case.",
}


def _bad(message: str) -> Refused:
    return Refused(400, "bad_request", message)


class Portal:
    def __init__(self, *, preparer: Preparer, policy: DecidePolicy, cfg: PortalConfig, links: LinksConfig,
                 secrets: list[bytes], downstream: Callable[[], Downstream], accepted_domains: list[str],
                 hostname: str, log: Any, metrics: Metrics | None = None, instance: str | None = None) -> None:
        assert preparer.store is not None
        self.preparer, self.policy, self.cfg, self.links, self.secrets = preparer, policy, cfg, links, secrets
        self.records = Records(preparer.store)
        self.downstream = downstream
        self.domains = {d.lower().rstrip(".") for d in accepted_domains}
        self.sender = cfg.sender or f"portal@{hostname}"
        self.log = log
        self.metrics = metrics or Metrics()
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.spool = Path(cfg.spool_dir)
        self._buckets: dict[str, Bucket] = {}
        # One per session (and per customer) on this instance; gone with the last task holding it.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._sending: set[str] = set()  # sessions this instance is delivering now
        self._scheduled: set[str] = set()  # ... or is about to (the runner's background sends)
        self._tasks: set[asyncio.Task] = set()
        self._runner: asyncio.Task | None = None
        # Files are judged and promoted whole, in memory: two at a time bound that memory.
        self._judging = asyncio.Semaphore(2)

    # -- sessions ----------------------------------------------------------------------------
    async def create(self, fields: Any, key: ApiKey | None, customer: str | None) -> dict[str, Any]:
        """POST /api/v1/portal/sessions and `portal create`: {uploadUrl, expiresAt, sessionId}."""
        req = self._checked(fields)
        customer = customer if customer is not None else req.get("customerId")
        now = time.time()
        ttl = req.get("ttlSeconds", self.cfg.ttl_seconds)
        s = Session(id=new_sid(), case_id=req["caseId"], to=req["to"], expires=int(now) + ttl, created=now,
                    customer=customer, subject=req.get("subject"), in_reply_to=req.get("inReplyTo"),
                    key_id=key.id if key else "cli")
        if customer:
            async with self._lock(f"customer:{customer}"):
                open_now = await self.records.open_sessions(customer, now)
                if len(open_now) >= self.cfg.sessions_per_customer:
                    wait = max(1, int(min(open_now.values()) - now))
                    raise Refused(429, "too_many_sessions", f"this customer already has {len(open_now)} open upload "
                                  "links; revoke one or wait until one expires", {"Retry-After": str(wait)})
                await self.records.save(s)
                await self.records.set_open_sessions(customer, {**open_now, s.id: s.expires})
        else:
            await self.records.save(s)
        self.log.info("portal_session", action="create", session=s.id, case=s.case_id, to=s.to, customer=customer,
                      key_id=s.key_id, expires=utc(s.expires))
        return {"uploadUrl": self.url(s), "expiresAt": utc(s.expires), "sessionId": s.id}

    def url(self, s: Session) -> str:
        return f"{self.links.base_url.rstrip('/')}/u/{sign(self.secrets[0], s.id, s.expires)}"

    def _checked(self, fields: Any) -> dict[str, Any]:
        if not isinstance(fields, dict):
            raise _bad("the body must be a JSON object {caseId, to, customerId?, subject?, inReplyTo?, ttlSeconds?}")
        # A flow fills every input of its action: an empty optional field is an absent one.
        fields = {k: v for k, v in fields.items() if not (k != "caseId" and k != "to" and v in ("", None))}
        unknown = sorted(set(fields) - _FIELDS)
        if unknown:
            raise _bad(f"unknown field: {clip(unknown[0], 40)} (expected: {', '.join(sorted(_FIELDS))})")
        out: dict[str, Any] = {}
        case = fields.get("caseId")
        if not isinstance(case, str) or not _CASE.fullmatch(case):
            raise _bad("caseId is required: 1 to 64 letters, digits or . _ : # / -, starting with a letter or digit")
        out["caseId"] = case
        to = fields.get("to")
        m = _ADDRESS.fullmatch(to) if isinstance(to, str) and len(to) <= 254 else None
        if m is None:
            raise _bad("to is required: the case's mailbox address, like support@example.com")
        if self.domains and m.group(1).lower() not in self.domains:
            raise Refused(422, "domain_not_accepted", "to must be an address in one of server.accepted_domains")
        out["to"] = to
        customer = fields.get("customerId")
        if customer is not None:
            if not isinstance(customer, str) or not _CUSTOMER.fullmatch(customer):
                raise _bad("customerId must be 1 to 63 letters, digits, '.', '_' or '-'")
            out["customerId"] = customer
        subject = fields.get("subject")
        if subject is not None:
            # No control, format or line/paragraph separator characters (U+2028 breaks a header);
            # spaces of any kind are fine.
            if not isinstance(subject, str) or len(subject) > 200 or not all(
                    c.isprintable() or unicodedata.category(c) == "Zs" for c in subject):
                raise _bad("subject must be at most 200 characters, without control characters or line breaks")
            out["subject"] = subject.strip() or None
        reply_to = fields.get("inReplyTo")
        if reply_to is not None:
            if not isinstance(reply_to, str) or not _MSGID.fullmatch(reply_to.strip()):
                raise _bad("inReplyTo must be a Message-ID in angle brackets, like <abc@example.com>")
            out["inReplyTo"] = reply_to.strip()
        ttl = fields.get("ttlSeconds")
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_TTL <= ttl <= self.cfg.max_ttl_seconds:
                raise _bad(f"ttlSeconds must be a whole number from {MIN_TTL} to {self.cfg.max_ttl_seconds}")
            out["ttlSeconds"] = ttl
        return out

    async def open(self, token: str) -> Session:
        """The live session behind a link; LinkRefused (tampered, expired, revoked), StorageError."""
        sid, _ = verify(self.secrets, token)
        try:
            s = await self.records.load(sid)
        except KeyError:
            raise LinkRefused("revoked") from None  # signed by us and unexpired: withdrawn since
        if s.revoked:
            raise LinkRefused("revoked")
        return s

    async def revoke(self, sid: str, by: str) -> bool:
        """Withdraw a session: its link answers 410 and what it staged is deleted."""
        async with self._lock(sid):
            try:
                s = await self.records.load(sid)
            except KeyError:
                return False
            await self.records.save(s.with_(revoked=True))
        for f in await self.records.files(sid):
            await self.records.unstage(s, f)
        await self._forget_customer(s)
        self.log.info("portal_session", action="revoke", session=sid, case=s.case_id, by=by)
        return True

    async def status(self, s: Session) -> dict[str, Any]:
        files = await self.records.files(s.id)
        received = [f for f in files if f.state == FileState.RECEIVED]
        return {"state": s.state, "message": DELIVERY_WORDS.get(s.state, ""), "caseId": s.case_id,
                "expiresAt": utc(s.expires), "files": [f.public() for f in files],
                "canSend": s.state == State.OPEN and bool(received) and not busy(files, time.time())}

    # -- files -------------------------------------------------------------------------------
    async def admit(self, s: Session, name: str, size: int, remote: str | None) -> None:
        """Refused (with the customer's words as message) unless one more file may come."""
        if s.state != State.OPEN:
            # 403, not 409: tus clients retry a 409 (an offset conflict), and this answer is final.
            raise Refused(403, "already_sent", "these files were already sent to your case; ask for a new link to "
                          "send more")
        if size > self.cfg.max_file_bytes:
            raise Refused(413, "too_large", words.too_large(self.cfg.max_file_bytes))
        ext = file_extension(name)
        if self.cfg.accepted_types and (ext or "") not in self.cfg.accepted_types:
            raise Refused(415, "type_not_accepted", words.not_accepted(ext, self.cfg.accepted_types))
        files = await self.records.files(s.id)
        if len(files) >= self.cfg.max_files:
            raise Refused(403, "too_many_files", f"refused: one link takes at most {self.cfg.max_files} "
                          f"file{'s' if self.cfg.max_files != 1 else ''}")
        total = sum(f.size for f in files if f.state != FileState.REFUSED) + size
        if total > self.cfg.max_session_bytes:
            raise Refused(413, "session_full", f"refused: all files together may be at most "
                          f"{human_size(self.cfg.max_session_bytes)}")
        bucket = self._buckets.setdefault(remote or "", Bucket(self.cfg.uploads_per_minute, time.monotonic()))
        wait = bucket.take(time.monotonic())
        if wait:
            raise Refused(429, "too_many_uploads", "too many files from your address just now; please wait a "
                          "minute and try again", {"Retry-After": str(max(1, round(wait)))})
        if len(self._buckets) > 10_000:  # bounded: forget the addresses of a past burst
            self._buckets = {k: b for k, b in self._buckets.items() if b.tokens < b.capacity}

    async def begin(self, s: Session, name: str, size: int, declared: str | None, upload: str = "",
                    fid: str | None = None) -> FileEntry:
        now = time.time()
        f = FileEntry(id=fid or new_fid(), name=name, size=size, created=now, declared=declared, upload=upload,
                      updated=now)
        await self.records.save_file(s.id, f)
        return f

    async def touch(self, s: Session, fid: str) -> None:
        """A chunk of this upload is arriving: it is alive (see session.busy)."""
        try:
            f = await self.records.load_file(s.id, fid)
        except KeyError:
            return
        if f.state == FileState.UPLOADING:
            await self.records.save_file(s.id, f.with_(updated=time.time()))

    async def judge(self, s: Session, f: FileEntry, path: Path, remote: str | None) -> FileEntry:
        """A complete upload at `path` (removed here): judged, staged when accepted, recorded.
        One file at a time per pair of cores: each is read whole (at most portal.max_file_bytes)."""
        try:
            await self.records.save_file(s.id, f.with_(state=FileState.CHECKING, updated=time.time()))
            async with self._judging:
                data = await asyncio.to_thread(path.read_bytes)
                d = decide_file(data, f.name, f.declared, self.policy) if len(data) < INLINE_BYTES \
                    else await asyncio.to_thread(decide_file, data, f.name, f.declared, self.policy)
                j = d.file.judgement
                judged = f.with_(size=len(data), verdict=d.verdict.value, reason=d.reason,
                                 detected_type=j.detected_type, sha256=d.file.sha256, updated=time.time())
                if d.verdict is Verdict.OFFLOAD:
                    where = await self.records.stage(s, f.id, data)
                    judged = judged.with_(state=FileState.RECEIVED, message=words.RECEIVED, staged_in=where)
                else:
                    judged = judged.with_(state=FileState.REFUSED,
                                          message=words.refusal(d.verdict, d.reason, j.detected_type, f.name))
                del data
        except Exception as exc:  # the store, the spool's disk, or a bug: the file must not stay "checking"
            if isinstance(exc, (StorageError, OSError)):
                self.log.warning("portal_stage_failed", session=s.id, file=f.id, error=clip(exc, 200))
            else:
                self.log.error("portal_judge_failed", session=s.id, file=f.id, exc_info=exc)
            judged = f.with_(state=FileState.FAILED, message="not received: a problem on our side — please add "
                             "this file again in a few minutes")
        finally:
            path.unlink(missing_ok=True)
        try:
            # Under the session's lock, against its current state: a file that completes while
            # (or after) the files are sent must not be taken for sent.
            async with self._lock(s.id):
                current = await self.records.load(s.id)
                if current.state != State.OPEN and judged.state == FileState.RECEIVED:
                    await self.records.unstage(s, judged)
                    judged = judged.with_(state=FileState.REFUSED, message="not sent: it arrived after your files "
                                          "were sent to your case — please ask for a new upload link")
                    self.log.warning("portal_upload_late", session=s.id, file=f.id, state=current.state)
                await self.records.save_file(s.id, judged)
        except (StorageError, KeyError) as exc:
            self.log.warning("portal_record_failed", session=s.id, file=f.id, error=clip(exc, 200))
        self.metrics.portal_upload(judged.state)
        self.log.info("portal_upload", session=s.id, case=s.case_id, file=f.id, name=clip(f.name, 200),
                      size=judged.size, sha256=judged.sha256 or None, state=judged.state, verdict=judged.verdict or None,
                      reason=judged.reason or None, remote=remote)
        return judged

    # -- delivery ----------------------------------------------------------------------------
    async def send(self, sid: str, trigger: str) -> Session:
        """Deliver the session's files (see the module doc); the session as it stands after.
        `trigger`: customer (Send), quiet, expired, retry, takeover."""
        async with self._lock(sid):
            s = await self.records.load(sid)
            now = time.time()
            if s.state == State.SENT or s.revoked or sid in self._sending:
                return s  # done, withdrawn, or being delivered by this instance right now
            if s.state == State.SENDING and s.owner != self.instance and s.lease_until > now:
                return s  # another instance is at it
            if s.state == State.RETRYING and trigger == "customer" and s.next_attempt > now:
                return s  # pressing Send again does not hurry the downstream: the backoff stands
            files = await self.records.files(sid)
            if s.state == State.OPEN:
                if not any(f.state == FileState.RECEIVED for f in files):
                    if trigger == "customer":
                        raise Refused(409, "nothing_to_send", "add at least one file that was received first")
                    return s
                if trigger != "expired" and busy(files, now):
                    if trigger == "customer":
                        raise Refused(409, "uploads_in_progress", "some files are still uploading or being checked; "
                                      "send them once every file shows its result")
                    return s
            s = s.with_(state=State.SENDING, owner=self.instance, lease_until=now + LEASE, attempts=s.attempts + 1)
            await self.records.save(s)
            self._sending.add(sid)
        done = asyncio.Event()
        beat = asyncio.ensure_future(self._heartbeat(sid, done))
        try:
            return await self._deliver(s, files, trigger, done, beat)
        finally:
            done.set()
            self._sending.discard(sid)

    async def _heartbeat(self, sid: str, done: asyncio.Event) -> None:
        """Renew the delivery's lease while it runs (promoting 500 MB can outlast one). Stopped
        by `done`, never cancelled: a renewal half written must not land after the outcome."""
        while True:
            try:
                await asyncio.wait_for(done.wait(), LEASE / 4)
                return
            except asyncio.TimeoutError:
                pass
            try:
                async with self._lock(sid):
                    current = await self.records.load(sid)
                    if current.state != State.SENDING or current.owner != self.instance:
                        return
                    await self.records.save(current.with_(lease_until=time.time() + LEASE))
            except (StorageError, KeyError) as exc:
                self.log.warning("portal_lease_failed", session=sid, error=clip(exc, 200))

    async def _deliver(self, s: Session, files: list[FileEntry], trigger: str, done: asyncio.Event,
                       beat: asyncio.Future) -> Session:
        reply_text, ok = "", False
        try:
            files = [await self._promote(s, f) if f.state == FileState.RECEIVED and not f.link else f for f in files]
            body = message.render(s, files, sender=self.sender, sender_name=self.cfg.sender_name, now=time.time())
            reply = await message.send(self.downstream(), self.sender, s.to, body)
            ok, reply_text = reply.ok, str(reply)
        except (StorageError, asyncio.TimeoutError, KeyError) as exc:
            reply_text = f"storage: {clip(exc, 160)}"
        except SmtpReplyError as exc:
            reply_text = exc.reply
        except Exception as exc:  # a bug: retried like an outage (the files stay staged), never a lost session
            self.log.error("portal_send_failed", session=s.id, exc_info=exc)
            reply_text = f"internal error: {type(exc).__name__}"
        done.set()
        await beat  # a renewal in progress finishes before the outcome is written
        sent = [f for f in files if f.state == FileState.RECEIVED]
        fields = dict(session=s.id, case=s.case_id, to=s.to, trigger=trigger, attempt=s.attempts, files=len(sent),
                      refused=sum(f.state == FileState.REFUSED for f in files), downstream_reply=clip(reply_text, 200))
        async with self._lock(s.id):
            current = await self.records.load(s.id)  # merged: a revocation meanwhile stays one
            if ok:
                s = current.with_(state=State.SENT, sent_at=time.time(), owner="", last_error="")
            else:
                delay = min(self.cfg.max_retry_seconds, self.cfg.retry_seconds * 2 ** max(0, s.attempts - 1))
                s = current.with_(state=State.RETRYING, owner="", next_attempt=time.time() + delay,
                                  last_error=clip(reply_text, 200))
            await self.records.save(s)
        self.metrics.portal_delivery("delivered" if ok else "deferred")
        if not ok:
            self.log.warning("portal_send", outcome="deferred", retry_in=round(s.next_attempt - time.time(), 1),
                             **fields)
            return s
        self.log.info("portal_send", outcome="delivered", **fields)
        for f in sent:
            await self.records.unstage(s, f)
        await self._forget_customer(s)
        return s

    async def _promote(self, s: Session, f: FileEntry) -> FileEntry:
        """An accepted file out of staging: stored and linked like an offloaded attachment. The
        key follows the session and the file, so a retried promotion lands on the same object."""
        async with self._judging:
            data = await self.records.staged(s, f)
            d = await asyncio.to_thread(decide_file, data, f.name, f.declared, self.policy)
            del data
        if d.verdict is not Verdict.OFFLOAD:  # the policy changed since: judged again, refused now
            f = f.with_(state=FileState.REFUSED, verdict=d.verdict.value, reason=d.reason,
                      message=words.refusal(d.verdict, d.reason, d.file.judgement.detected_type, f.name))
        else:
            unique = hashlib.sha256(f"portal\0{s.id}\0{f.id}".encode()).hexdigest()[:32]
            out = await self.preparer.offload_file(d, tenant=s.customer, unique=unique,
                                                   day=datetime.fromtimestamp(s.created, timezone.utc),
                                                   subject=s.subject)
            assert out.link is not None and out.link_expires is not None and out.storage_key is not None
            f = f.with_(link=out.link, link_expires=out.link_expires, storage_key=out.storage_key)
        await self.records.save_file(s.id, f)
        return f

    async def _forget_customer(self, s: Session) -> None:
        if not s.customer:
            return
        async with self._lock(f"customer:{s.customer}"):
            open_now = await self.records.open_sessions(s.customer, time.time())
            open_now.pop(s.id, None)
            await self.records.set_open_sessions(s.customer, open_now)

    # -- the runner --------------------------------------------------------------------------
    def start(self) -> None:
        self._runner = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self._runner, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def settle(self) -> None:
        """Wait for the deliveries the last tick started (the command line's sweep)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def interval(self) -> float:
        return max(0.5, min(15.0, self.cfg.retry_seconds, self.cfg.quiet_seconds or 15.0))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except StorageError as exc:
                self.log.warning("portal_runner_failed", error=clip(exc, 200))
            except Exception as exc:  # a bug must not end the retries for good
                self.log.error("portal_runner_failed", exc_info=exc)

    async def tick(self, now: float | None = None) -> None:
        """One round: what is due is sent (in the background), what expired is removed."""
        now = time.time() if now is None else now
        for sid in await self.records.sessions():
            if sid in self._sending or sid in self._scheduled:
                continue
            try:
                s = await self.records.load(sid)
                trigger = await self._due(s, now)
            except KeyError:
                continue
            if trigger == "remove":
                await self._expire(s)
            elif trigger is not None:
                self._background(sid, trigger)
        await asyncio.to_thread(self._sweep_spool, now)

    async def _due(self, s: Session, now: float) -> str | None:
        undelivered = s.state in (State.RETRYING, State.SENDING)
        if now >= s.expires + (RETRY_AFTER_EXPIRY if undelivered else 0):
            if s.state == State.OPEN and not s.revoked and any(
                    f.state == FileState.RECEIVED for f in await self.records.files(s.id)):
                return "expired"  # received files the customer never sent: delivered, not dropped
            return "remove"
        if s.revoked:
            return None
        if s.state == State.RETRYING and s.next_attempt <= now:
            return "retry"
        if s.state == State.SENDING and s.lease_until <= now:
            return "takeover"  # its instance died mid-delivery
        if s.state == State.OPEN and self.cfg.quiet_seconds:
            files = await self.records.files(s.id)
            last = max((f.updated for f in files if f.state == FileState.RECEIVED), default=0.0)
            if last and now - last >= self.cfg.quiet_seconds and not busy(files, now):
                return "quiet"
        return None

    def _background(self, sid: str, trigger: str) -> None:
        async def go() -> None:
            try:
                await self.send(sid, trigger)
            except Refused:
                pass
            except (StorageError, KeyError) as exc:
                self.log.warning("portal_send_failed", session=sid, trigger=trigger, error=clip(exc, 200))
            except Exception as exc:  # a bug: logged, and the next tick tries again
                self.log.error("portal_send_failed", session=sid, trigger=trigger, exc_info=exc)

        self._scheduled.add(sid)  # until it ran: the next tick must not start a twin
        task = asyncio.ensure_future(go())
        self._tasks.add(task)
        task.add_done_callback(lambda t: (self._tasks.discard(t), self._scheduled.discard(sid)))

    async def _expire(self, s: Session) -> None:
        files = await self.records.files(s.id)
        lost = [f.name for f in files if f.state == FileState.RECEIVED and s.state != State.SENT]
        if lost and not s.revoked:
            self.log.error("portal_expired_undelivered", session=s.id, case=s.case_id, to=s.to, files=len(lost),
                           last_error=s.last_error)
        await self.records.remove(s)
        await self._forget_customer(s)
        self.log.info("portal_session", action="expire", session=s.id, case=s.case_id, state=s.state)

    def _sweep_spool(self, now: float) -> None:
        """Resumable uploads of expired links: their directories go (aiohttp-tus keeps one per link)."""
        try:
            entries = list(self.spool.iterdir())
        except FileNotFoundError:
            return
        for d in entries:
            try:
                verify(self.secrets, d.name, now)
            except LinkRefused as why:
                if why.why == "expired" or why.why == "tampered":
                    shutil.rmtree(d, ignore_errors=True)

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock


def is_fid(value: str) -> bool:
    return FID_RE.fullmatch(value) is not None
