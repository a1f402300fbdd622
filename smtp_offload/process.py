"""Message processing between SMTP in and relay: analyse, plan, offload, render.

The pure stages live in pipeline.py; this module adds the one side effect, storage, with
its time budget and the fail-open policy.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from .config import Config
from .errors import PermanentError, StorageError, TemporaryError
from .inspect import InspectPolicy
from .links import link_url
from .links.tokens import sign
from .model import Attachment, Verdict
from .pipeline import Analysis, PlanPolicy, Rejection, analyse, normalize_line_endings, plan, render
from .storage.base import Store

STORAGE_DOWN = "Attachment storage is unavailable and the message is too large to deliver without it; try again later"


def inspect_policy(cfg: Config) -> InspectPolicy:
    p = cfg.policy
    return InspectPolicy(
        blocked_types=frozenset(t.lower() for t in p.blocked_types),
        blocked_extensions=frozenset(e.lower().lstrip(".") for e in p.blocked_extensions),
        allowed_types=frozenset(t.lower() for t in p.allowed_types) or None,
    )


def plan_policy(cfg: Config) -> PlanPolicy:
    p, d = cfg.policy, cfg.downstream
    return PlanPolicy(
        offload_over_bytes=p.offload_over_bytes, max_message_bytes=d.max_message_bytes,
        max_attachments=d.max_attachments,
        actions={Verdict.EMPTY: p.on_empty, Verdict.SPOOFED: p.on_spoofed, Verdict.BLOCKED: p.on_blocked},
    )


@dataclass
class Outcome:
    analysis: Analysis
    message: bytes  # the message to relay, without this hop's trace headers
    stored: list[str] = field(default_factory=list)  # storage keys written for this message
    storage_failed: bool = False

    @property
    def changed(self) -> bool:
        return self.message is not self.analysis.data


class Processor:
    def __init__(self, cfg: Config, store: Store | None, secret: bytes | None, log):
        self.cfg = cfg
        self.store = store
        self.secret = secret
        self.log = log
        self.inspect_policy = inspect_policy(cfg)
        self.plan_policy = plan_policy(cfg)

    def evaluate(self, data: bytes) -> tuple[Analysis, Rejection | None]:
        an = analyse(normalize_line_endings(data), self.inspect_policy)
        return an, plan(an, self.plan_policy)

    def decide(self, data: bytes) -> Analysis:
        """analyse + plan; raises PermanentError when policy rejects the message."""
        an, rejection = self.evaluate(data)
        if rejection is not None:
            raise PermanentError(rejection.text, code=550, status="5.7.1")
        return an

    async def process(self, data: bytes) -> Outcome:
        an = self.decide(data)
        wanted = [a for a in an.attachments if a.verdict is Verdict.OFFLOAD]
        stored, failed = await self._offload(an, wanted) if wanted else ([], [])
        keep_inline = self.cfg.policy.on_storage_failure == "keep"
        for a in failed:
            a.offload_failed = True
            if keep_inline:
                a.verdict, a.reason = Verdict.KEEP, "offload failed; kept in the message"
        message = render(an)
        if failed and keep_inline and len(message) > self.cfg.downstream.max_message_bytes:
            await self.discard(stored)
            raise TemporaryError(STORAGE_DOWN, code=451, status="4.3.0")
        return Outcome(an, message, stored, bool(failed))

    async def _offload(self, an: Analysis, wanted: list[Attachment]) -> tuple[list[str], list[Attachment]]:
        assert self.store is not None and self.secret is not None
        tasks = {asyncio.create_task(self._put(a, an.message_id)): a for a in wanted}
        done, pending = await asyncio.wait(tasks, timeout=self.cfg.policy.storage_timeout)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
        stored, failed = [], []
        for task, a in tasks.items():
            if task in done and task.exception() is None:
                stored.append(a.storage_key)
                continue
            failed.append(a)
            err = "timeout" if task in pending else type(task.exception()).__name__
            self.log.warning("offload_failed", name=a.name, size=len(a.data), error=err)
        return [k for k in stored if k], failed

    async def _put(self, a: Attachment, message_id: str | None) -> None:
        assert self.store is not None and self.secret is not None
        obj = await self.store.put(a.data, filename=a.name, content_type=a.judgement.detected_type,
                                   sha256=a.sha256, message_id=message_id)
        links = self.cfg.links
        a.storage_key = obj.key
        a.link_expires = int(time.time()) + links.ttl_seconds
        a.link = link_url(links.base_url, sign(obj.key, a.link_expires, self.secret), a.name)

    async def discard(self, keys: list[str]) -> None:
        """Delete files stored for a message that was not delivered (the sender will retry)."""
        if self.store is None:
            return
        for key in keys:
            try:
                await self.store.delete(key)
            except (StorageError, OSError) as exc:
                self.log.warning("discard_failed", storage_key=key, error=type(exc).__name__)
