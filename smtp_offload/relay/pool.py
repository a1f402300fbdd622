"""Downstream connections kept between sessions.

Connecting (TCP, greeting, EHLO, maybe STARTTLS) costs more than relaying a small
message, so a connection whose session ended cleanly goes back to a small pool and the
next session takes it. Only a provably idle one (Downstream.idle: no transaction, no
command in flight, no byte unread) is kept or handed out: a reply left on it would answer
the next session's command. A pooled connection that the downstream closed meanwhile is
noticed on first use, where Downstream.mail() reconnects once.
"""

from __future__ import annotations

import time
from typing import Callable

from .client import Downstream


class DownstreamPool:
    def __init__(self, factory: Callable[[], Downstream], size: int, idle_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.factory = factory
        self.size = size
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._idle: list[tuple[float, Downstream]] = []

    def get(self) -> Downstream:
        now = self.clock()
        while self._idle:
            since, ds = self._idle.pop()
            # Checked again on the way out: while it waited, the downstream may have said
            # something nobody asked for (or hung up), and that must not reach a session.
            if now - since < self.idle_seconds and ds.idle:
                return ds
            ds.close()
        return self.factory()

    def put(self, ds: Downstream) -> None:
        """Keep a provably idle connection; close anything else (a session that ended while
        waiting for a reply leaves that reply on its connection)."""
        if ds.idle and len(self._idle) < self.size:
            self._idle.append((self.clock(), ds))
        else:
            ds.close()

    def close(self) -> None:
        for _, ds in self._idle:
            ds.close()
        self._idle.clear()
