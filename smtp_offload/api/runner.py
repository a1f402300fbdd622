"""Jobs at work: accepted (body staged, record PENDING, 202), finished in the background under a
heartbeat, taken over by any instance once their own instance stopped beating, swept when old.

A job's answer is its own record (api.jobs), which no heartbeat or takeover rewrites; a finish
that finds the job already answered (by an instance that took it over while this one was
paused) leaves that answer alone: both wrote the same object, under the job's storage key.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import ApiConfig
from ..errors import StorageError
from .body import Budget
from .jobs import Job, Records, Status
from .protocol import Answer

FAILPOINT_ENV = "SMTP_OFFLOAD_FAILPOINT"  # tests only: "job-accepted" stops the process after a 202
_STATUS = {200: Status.COMPLETE, 400: Status.REJECTED, 422: Status.REJECTED}

Process = Callable[[Job, bytes], Awaitable[Answer]]


@dataclass
class _Beat:
    """A running job's heartbeat and its end, ordered by one lock."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    done: bool = False


class JobRunner:
    def __init__(self, *, records: Records, cfg: ApiConfig, log: Any, instance: str, process: Process,
                 budget: Budget) -> None:
        self.records, self.cfg, self.log, self.instance = records, cfg, log, instance
        self.process = process  # the synchronous call's work: judge, store, link
        self.budget = budget  # a job holds its bytes' share of api.max_inflight_bytes until it ends
        self.running: dict[str, asyncio.Task | None] = {}  # None: claimed, about to start
        self.sweeper: asyncio.Future | None = None

    async def accept(self, job: Job, data: bytes, *, work: asyncio.Future | None = None,
                     stop_after: bool = False) -> Answer:
        """Stage the body and record the job PENDING (StorageError when the store cannot), then
        the 202. The job owns `data` from here; its work is `work` when already running, else
        it starts once the 202 is sent."""
        job = replace(job, heartbeat=time.time())
        await self.records.stage(job.id, data)
        await self.records.save(job)
        body = {"jobId": job.id, "status": Status.PENDING.value}
        location = {"Location": f"/api/v1/jobs/{job.id}"}
        if work is not None:
            self._run(job, data, work)
            return Answer(202, body, location)
        return Answer(202, body, location, after=lambda: self._after_accept(job, data, stop_after))

    def _after_accept(self, job: Job, data: bytes, stop_after: bool) -> None:
        if stop_after and os.environ.get(FAILPOINT_ENV) == "job-accepted":
            os.kill(os.getpid(), signal.SIGSTOP)  # the crash test's "dies right after answering"
        self._run(job, data)

    async def take_over_if_stale(self, job: Job) -> Job:
        """A PENDING job whose instance stopped beating is finished here, from its staged body."""
        if not job.stale(self.cfg.job_lease_seconds) or job.id in self.running or not self.budget.fits(job.size):
            return job  # (with no room for its bytes now, a later poll takes it over)
        self.running[job.id] = None  # claimed before any await: concurrent polls here take it once
        self.budget.hold(job.size)
        previous = job.owner
        try:
            job = await self.records.touch(job, self.instance)
        except BaseException:
            self.running.pop(job.id, None)
            self.budget.release(job.size)
            raise
        self.log.warning("api_job_taken_over", job_id=job.id, previous_owner=previous)
        self._run(job, None, held=job.size)
        return job

    def _run(self, job: Job, data: bytes | None, work: asyncio.Future | None = None, *, held: int | None = None) -> None:
        """Finish `job` in the background; it holds its bytes' budget (`held`, else len(data))
        until it ends."""
        task = asyncio.ensure_future(self._finish(job, data, work))
        self.running[job.id] = task
        held = len(data) if held is None and data is not None else held or 0

        def done(_t: asyncio.Task) -> None:
            self.running.pop(job.id, None)
            self.budget.release(held)

        task.add_done_callback(done)

    async def _finish(self, job: Job, data: bytes | None, work: asyncio.Future | None) -> None:
        beat = _Beat()
        beating = asyncio.ensure_future(self._heartbeat(job, beat))
        try:
            answer = await self._outcome(job, data, work)
            status = _STATUS.get(answer.status, Status.FAILED)
            async with beat.lock:  # a heartbeat already writing finishes first: PENDING never lands after this
                beat.done = True
                if await self.records.answer(job.id) is not None:
                    self.log.info("api_job_already_finished", job_id=job.id)
                    return
                await self.records.answered(job, status, answer.body, self.instance)
            if status is Status.FAILED and job.idempotency:
                await self.records.forget(job.idempotency)  # a retry under the same key works again
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

    async def _outcome(self, job: Job, data: bytes | None, work: asyncio.Future | None) -> Answer:
        """The job's answer, whatever happens: a bug becomes FAILED, not a job PENDING forever."""
        try:
            if work is not None:
                return await work
            if data is None:
                try:
                    data = await self.records.staged(job.id)
                except KeyError:  # gone with its answer (an owner that finished meanwhile), or lost
                    return Answer(500, {"error": "lost", "message": "the job's file was lost; upload it again"})
            return await self.process(job, data)
        except StorageError:
            raise
        except Exception as exc:
            self.log.error("api_internal_error", action="job", job_id=job.id, exc_info=exc)
            return Answer(500, {"error": "internal", "message": "internal error"})

    async def _heartbeat(self, job: Job, beat: _Beat) -> None:
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

    # -- start and stop ---------------------------------------------------------------------
    def start_sweeping(self, sweep: Callable[[float], Awaitable[int]] | None) -> None:
        """`sweep`: the store's sweep_records (the local store; S3 has a lifecycle rule instead)."""
        if sweep is not None:
            self.sweeper = asyncio.ensure_future(self._sweep(sweep))

    async def _sweep(self, sweep: Callable[[float], Awaitable[int]]) -> None:
        """Records past api.job_ttl_seconds go, at start and then hourly: they answer nothing any
        more (Records checks the same age), and a staged body nobody came back for must not stay."""
        while True:
            try:
                n = await sweep(self.cfg.job_ttl_seconds)
                if n:
                    self.log.info("api_records_swept", deleted=n)
            except StorageError as exc:
                self.log.warning("api_records_sweep_failed", error=str(exc)[:200])
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        """Let running jobs finish for a while; one cut short stays PENDING for another instance."""
        if self.sweeper is not None:
            self.sweeper.cancel()
        tasks = [t for t in self.running.values() if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=min(10.0, self.cfg.job_lease_seconds))
            for t in tasks:
                t.cancel()
