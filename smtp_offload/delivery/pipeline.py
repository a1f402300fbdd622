"""One message, one way through: arrival checks -> decide -> prepare -> relay -> reply.

Both faces call this: the SMTP adapter (smtp/handler.py) for a whole message, the HTTP side
for files (it calls decide and prepare itself). Each step returns a value the next one reads;
none reaches back into an earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..auth import Authenticator, signed_by, strip_forged
from ..errors import SmtpReplyError
from ..metrics import Metrics
from ..model import Envelope
from ..relay import Downstream
from ..spool import FileBytes, in_thread
from .decide import DecidePolicy, Plan, decide
from .policy import Signed, SignedPolicy
from .prepare import INLINE_BYTES, Inbound, Prepared, Preparer
from .relay import downstream_reply, outcome_of, relay

__all__ = ["Delivered", "Envelope", "Inbound", "Pipeline", "downstream_reply"]  # what an adapter needs, from one place


@dataclass(frozen=True)
class Delivered:
    reply: str
    outcome: str  # relayed | deferred | rejected
    fields: dict[str, Any] = field(default_factory=dict)  # for the `message` event


class Pipeline:
    def __init__(self, *, decide_policy: DecidePolicy, signed: SignedPolicy, preparer: Preparer,
                 auth: Authenticator, metrics: Metrics | None = None):
        self.policy = decide_policy
        self.signed = signed
        self.preparer = preparer
        self.auth = auth
        self.metrics = metrics or Metrics()

    async def deliver(self, inbound: Inbound, ds: Downstream) -> Delivered:
        """A spooled message (inbound.data a FileBytes, which its adapter closes) is read from
        its file throughout; the spool files made on the way (a copy without forged fields,
        the decoded large files) are closed here when the message is done, on every path."""
        made: list[FileBytes | Plan] = []
        try:
            return await self._deliver(inbound, ds, made)
        finally:
            for x in made:
                x.close()

    async def _deliver(self, inbound: Inbound, ds: Downstream, made: list[FileBytes | Plan]) -> Delivered:
        data = strip_forged(inbound.data, self.auth)  # only this hop writes its Authentication-Results
        if isinstance(data, FileBytes) and data is not inbound.data:
            made.append(data)
        results = await self.auth.verify(data)
        if self.signed.on_signed is Signed.SKIP and signed_by(results, self.signed.skip_signed_domains):
            prepared = self.preparer.untouched(inbound, data, results)
            return await self._relay(ds, inbound, prepared, {"skipped": "dkim-signed"})
        try:
            # Parsing a big message is CPU work for a worker thread, so it never holds the event
            # loop every session shares; a small one is decided inline (a thread costs more).
            plan = decide(data, self.policy) if len(data) < INLINE_BYTES \
                else await in_thread(decide, data, self.policy, orphan=Plan.close)
            made.append(plan)
            if plan.refusal is not None:
                self.metrics.attachments(plan.decisions)
                await ds.rset()
                return Delivered(plan.refusal, "rejected")
            prepared = await self.preparer.prepare(plan, inbound, results)
        except SmtpReplyError as exc:  # refused before anything was stored, or storage down and no fit
            await ds.rset()
            return Delivered(exc.reply, outcome_of(exc.code))
        fields = {"message_id": prepared.message_id, "size_out": len(prepared.message),
                  "changed": prepared.changed, "attachments": len(prepared.outcomes)}
        return await self._relay(ds, inbound, prepared, fields)

    async def _relay(self, ds: Downstream, inbound: Inbound, prepared: Prepared, fields: dict) -> Delivered:
        relayed = await relay(ds, prepared.message, smtputf8=inbound.envelope.smtputf8,
                              queue_id=inbound.queue_id, metrics=self.metrics)
        if not relayed.ok:
            await self.preparer.rollback(prepared)
        extra = {"detail": relayed.detail} if relayed.detail else {}
        if relayed.downstream_reply:
            extra["downstream_reply"] = relayed.downstream_reply
        return Delivered(relayed.reply, relayed.outcome, {**fields, **extra})
