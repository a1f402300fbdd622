"""Relay: hand the prepared message to the downstream transaction the SMTP side mirrored
(MAIL and RCPT went through as the client sent them), and turn its answer into ours.

250 only after the downstream accepted; any doubt is a 4xx, so the sender keeps the mail.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .. import replies as R
from ..errors import TemporaryError
from ..metrics import Metrics, reply_class
from ..relay import Downstream, Reply
from ..spool import FileBytes, Pieces


@dataclass(frozen=True)
class Relayed:
    reply: str  # what the client is told
    outcome: str  # relayed | deferred | rejected (the `message` event and the metrics)
    detail: str | None = None  # for our log only
    downstream_reply: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "relayed"


def downstream_reply(reply: Reply) -> str:
    """The downstream's answer as ours. A 421 closes *its* session, not ours: the sender just retries."""
    if reply.code == 421:
        return f"451 {reply.text}"  # text starts with the 4.x.x status (Reply guarantees one)
    return str(reply)


def outcome_of(code: int) -> str:
    return "deferred" if code < 500 else "rejected"


async def relay(ds: Downstream, message: bytes | Pieces | FileBytes, *, smtputf8: bool, queue_id: str,
                metrics: Metrics) -> Relayed:
    # isascii(): a spooled message answers from what its writer saw, without reading it again.
    if not message.isascii() and not ds.supports("8bitmime") and not smtputf8:
        await ds.rset()
        return Relayed(str(R.EIGHT_BIT), "rejected")
    sent = time.monotonic()
    try:
        reply = await ds.data(message)
    except TemporaryError as exc:
        metrics.downstream_data(time.monotonic() - sent, "error")
        return Relayed(exc.reply, "deferred", exc.detail)
    metrics.downstream_data(time.monotonic() - sent, reply_class(reply.code))
    if not reply.ok:
        return Relayed(downstream_reply(reply), outcome_of(reply.code))
    return Relayed(R.QUEUED.format(queue_id=queue_id), "relayed", downstream_reply=str(reply)[:200])
