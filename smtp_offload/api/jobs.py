"""Durable API state in the configured store, so any instance behind the balancer answers:
job records, the staged bodies of jobs, and the results kept for an Idempotency-Key.

A job is PENDING until the instance working on it writes its answer (COMPLETE, REJECTED or
FAILED). While it works it renews `heartbeat`; a PENDING job whose heartbeat is older than
the lease was left by an instance that died (or stalled), and whichever instance is asked
about it next finishes it from the staged body. The file's storage key comes from the job
(`unique`, `created`), so a job finished twice still leaves one object.

The answer is its own record (`answers/<id>.json`), apart from the job record that heartbeats
and takeovers rewrite: once written, no late heartbeat of a stalled instance can turn it back
into PENDING, and the answer always wins when both are read.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..storage.base import Store


class Status(enum.StrEnum):
    PENDING = "PENDING"
    COMPLETE = "COMPLETE"
    REJECTED = "REJECTED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Job:
    id: str  # 32 lower-case hex
    key_id: str  # only the key that made it may read it
    created: float  # unix time; dates the storage key
    unique: str  # the storage key's unique segment
    filename: str
    declared_type: str | None
    customer: str | None
    size: int
    sha256: str
    status: Status = Status.PENDING
    owner: str = ""  # the instance working on it
    heartbeat: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)  # the response fields once finished
    idempotency: str | None = None  # the idempotency record to complete with the result

    def as_json(self) -> dict[str, Any]:
        return {"jobId": self.id, "status": self.status.value, **self.result}

    def stale(self, lease: float, now: float | None = None) -> bool:
        return self.status is Status.PENDING and (now or time.time()) - self.heartbeat > lease


def is_job_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


class Records:
    def __init__(self, store: Store, ttl: float) -> None:
        self.store, self.ttl = store, ttl

    # -- jobs -------------------------------------------------------------------------------
    async def save(self, job: Job) -> None:
        data = asdict(job)
        data["status"] = job.status.value
        await self.store.put_record(f"jobs/{job.id}.json", json.dumps(data).encode())

    async def load(self, job_id: str) -> Job:
        """The job with its answer when it has one; KeyError when unknown or past api.job_ttl_seconds."""
        if not is_job_id(job_id):
            raise KeyError(job_id)
        raw = json.loads(await self.store.get_record(f"jobs/{job_id}.json"))
        job = Job(**{**raw, "status": Status(raw["status"])})
        if time.time() - job.created > self.ttl:
            raise KeyError(job_id)
        answer = await self.answer(job_id)
        if answer is not None:
            job = replace(job, status=Status(answer["status"]), result=answer["result"], owner=answer["owner"])
        return job

    async def answer(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(await self.store.get_record(f"answers/{job_id}.json"))
        except KeyError:
            return None

    async def answered(self, job: Job, status: Status, result: dict[str, Any], owner: str) -> None:
        """Record the job's answer (the job record itself is left to heartbeats and takeovers)."""
        data = {"status": status.value, "result": result, "owner": owner, "at": time.time()}
        await self.store.put_record(f"answers/{job.id}.json", json.dumps(data).encode())

    async def touch(self, job: Job, owner: str) -> Job:
        job = replace(job, owner=owner, heartbeat=time.time())
        await self.save(job)
        return job

    async def stage(self, job_id: str, data: bytes) -> None:
        await self.store.put_record(f"bodies/{job_id}", data)

    async def staged(self, job_id: str) -> bytes:
        return await self.store.get_record(f"bodies/{job_id}")

    async def unstage(self, job_id: str) -> None:
        await self.store.delete_record(f"bodies/{job_id}")

    # -- idempotency ------------------------------------------------------------------------
    async def remembered(self, name: str) -> dict[str, Any] | None:
        try:
            raw = json.loads(await self.store.get_record(f"idem/{name}.json"))
        except KeyError:
            return None
        return raw if time.time() - raw.get("at", 0) <= self.ttl else None

    async def forget(self, name: str) -> None:
        """A job under this Idempotency-Key failed: a retry must do the work again, not get it."""
        await self.store.delete_record(f"idem/{name}.json")

    async def remember(self, name: str, fingerprint: str, status: int, body: dict[str, Any],
                       headers: dict[str, str] | None = None) -> None:
        record = {"at": time.time(), "fingerprint": fingerprint, "status": status, "body": body,
                  "headers": headers or {}}
        await self.store.put_record(f"idem/{name}.json", json.dumps(record).encode())
