"""A circuit breaker for storage: stop waiting on a store that keeps failing.

After `failures` consecutive failures the breaker opens: offloads fail at once (and the
fail-open policy applies) instead of each message spending the whole storage budget.
After `cooldown` seconds one message is let through as a probe (half-open); its success
closes the breaker, its failure opens it again. State changes are logged.
"""

from __future__ import annotations

import time
from typing import Any, Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    def __init__(self, failures: int, cooldown: float, log: Any = None,
                 clock: Callable[[], float] = time.monotonic, name: str = "storage"):
        self.threshold = failures
        self.cooldown = cooldown
        self.log = log
        self.clock = clock
        self.name = name
        self.state = CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.on_change: list[Callable[[str], None]] = []  # e.g. a metrics gauge

    def _set(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if self.log is not None:
            self.log.warning("circuit_breaker", breaker=self.name, state=state, failures=self.consecutive)
        for cb in self.on_change:
            cb(state)

    def allow(self) -> bool:
        """May a request go to the store now? In half-open state only the one probe may."""
        if self.state == OPEN and self.clock() - self.opened_at >= self.cooldown:
            self._set(HALF_OPEN)
            return True
        return self.state == CLOSED

    def success(self) -> None:
        self.consecutive = 0
        self._set(CLOSED)

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == HALF_OPEN or self.consecutive >= self.threshold:
            self.opened_at = self.clock()
            self._set(OPEN)
