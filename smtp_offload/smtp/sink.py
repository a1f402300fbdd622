"""A recording SMTP server for the sample harness: accepts everything, keeps the last messages."""

from __future__ import annotations

import threading
from collections import deque

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class _Recorder:
    def __init__(self, keep: int):
        self.messages: deque[bytes] = deque(maxlen=keep)
        self.count = 0
        self.arrived = threading.Condition()

    async def handle_DATA(self, server, session, envelope) -> str:
        with self.arrived:
            self.messages.append(envelope.original_content)
            self.count += 1
            self.arrived.notify_all()
        return "250 2.0.0 Ok: recorded"


class _LongLines(SMTP):
    line_length_limit = 100_000  # a recorder takes what arrives; the proxy's limits are what is shown


class _Controller(Controller):
    def factory(self):
        return _LongLines(self.handler, **self.SMTP_kwargs)


class RecordingSink:
    def __init__(self, host: str, port: int, keep: int = 100):
        self.recorder = _Recorder(keep)
        self.controller = _Controller(self.recorder, hostname=host, port=port, data_size_limit=None,
                                      enable_SMTPUTF8=True)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def wait_for(self, count: int, timeout: float) -> bytes | None:
        """The newest message once `count` have arrived in all, or None after `timeout`."""
        with self.recorder.arrived:
            self.recorder.arrived.wait_for(lambda: self.recorder.count >= count, timeout)
            return self.recorder.messages[-1] if self.recorder.count >= count else None
