"""A LinkServer served from its own event loop in a daemon thread, for tests whose client
blocks (selenium drives a browser synchronously)."""

from __future__ import annotations

import asyncio
import threading

from smtp_offload.links.server import LinkServer


class ServerThread:
    """`with ServerThread(server) as base_url:` — the server on 127.0.0.1:0 while the block runs."""

    def __init__(self, server: LinkServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop).result(10)
        return f"http://127.0.0.1:{self.server.port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
