"""A recording SMTP server: accepts everything, keeps the last messages with their envelopes.

The sample harness's `send-samples --sink`, and the downstream of the tests, which can script a
reply (rcpt_replies by address, data_reply) that is given instead of accepting."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP

from .. import replies as R


@dataclass
class Received:
    """One accepted message with its envelope."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]


class Recorder:
    """The handler: keeps the last `keep` messages (all of them with None)."""

    def __init__(self, keep: int | None = 100):
        self.messages: deque[Received] = deque(maxlen=keep)
        self.count = 0
        self.arrived = threading.Condition()
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, options):
        return self.rcpt_replies.get(address, MISSING)  # MISSING: accepted as without this hook

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.data_reply:
            return self.data_reply
        with self.arrived:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                          list(envelope.mail_options)))
            self.count += 1
            self.arrived.notify_all()
        return str(R.RECORDED)


class _LongLines(SMTP):
    line_length_limit = 100_000  # a recorder takes what arrives; the proxy's limits are what is shown


class _Controller(Controller):
    def factory(self):
        return _LongLines(self.handler, **self.SMTP_kwargs)


class RecordingSink:
    def __init__(self, host: str, port: int, keep: int | None = 100, **smtp_kwargs):
        """`smtp_kwargs` go to aiosmtpd's SMTP (tls_context, require_starttls, decode_data ...)."""
        self.recorder = Recorder(keep)
        kwargs = {"data_size_limit": None, "enable_SMTPUTF8": True, **smtp_kwargs}
        self.controller = _Controller(self.recorder, hostname=host, port=port, **kwargs)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def wait_for(self, count: int, timeout: float) -> bytes | None:
        """The newest message once `count` have arrived in all, or None after `timeout`."""
        with self.recorder.arrived:
            self.recorder.arrived.wait_for(lambda: self.recorder.count >= count, timeout)
            return self.recorder.messages[-1].content if self.recorder.count >= count else None
