"""The aiosmtpd protocol with the few changes a gateway needs (aiosmtpd is imported only in smtp/).

- Idle timeout, not per-command timeout: aiosmtpd arms its timer once per command, so a
  slow 30 MB DATA would be cut off mid-transfer; here every received byte re-arms it.
- While a message is being processed (inspect, store, relay) the timer is held: the work
  has its own budgets, and a fired timer would cancel handle_DATA mid-relay.
- Every reply gets an enhanced status code.
- Closing the connection closes the session's downstream connection too.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiosmtpd.smtp import SMTP

from .replies import enhance


class GatewaySMTP(SMTP):
    def __init__(self, handler: Any, *, line_length_limit: int, **kwargs: Any):
        # The StreamReader limit is taken from this attribute inside SMTP.__init__.
        self.line_length_limit = line_length_limit + 1  # + the transparency dot
        self._busy = 0
        super().__init__(handler, **kwargs)

    @contextlib.contextmanager
    def busy(self):
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy and self.transport is not None:
                self._reset_timeout()

    def data_received(self, data: bytes) -> None:
        if self._timeout_handle is not None and not self._busy:
            self._reset_timeout()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        if self._busy:
            self._reset_timeout()
            return
        super()._timeout_cb()

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = enhance(status)
        await super().push(status)

    def connection_lost(self, error: Exception | None) -> None:
        closed = getattr(self.event_handler, "session_closed", None)
        if closed is not None and self.session is not None:
            closed(self.session)
        super().connection_lost(error)
