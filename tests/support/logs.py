"""A logger that keeps what it is given: the audit sink injected into in-process servers."""

from __future__ import annotations

import asyncio
from typing import Any


class RecordingLog:
    """A structlog-compatible logger that keeps what it is given (the injected audit sink)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def _record(self, level: str, event: str, **fields: Any) -> None:
        self.events.append({"level": level, "event": event, **fields})

    def debug(self, event: str, **kw: Any) -> None:
        self._record("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._record("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._record("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._record("error", event, **kw)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    async def settle(self) -> None:
        """The server logs after the last byte is sent, so the client can be a moment ahead."""
        for _ in range(200):
            before = len(self.events)
            await asyncio.sleep(0.01)
            if len(self.events) == before:
                return
