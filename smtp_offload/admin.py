"""The admin listener (admin.listen): GET /metrics, /healthz and /readyz on an address of their
own, apart from the public link pages, so the reverse proxy in front of the links need not
filter them and Prometheus and the load balancer reach them directly.

Without admin.listen the link server serves the same three paths with the same handlers
(`metrics_response`, `readyz_response`), as it always did.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .metrics import CONTENT_TYPE_LATEST

_METRICS = web.AppKey("metrics", Any)
_READINESS = web.AppKey("readiness", Any)


def metrics_response(metrics: Any) -> web.Response:
    """This process's metrics (metrics.Metrics) in the Prometheus text format."""
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def readyz_response(readiness: Any) -> web.Response:
    """200 when this instance can take mail, else 503; the JSON names each check, and the
    reason of any that failed (metrics.Readiness)."""
    ready, body = await readiness.check()
    return web.json_response(body, status=200 if ready else 503, headers={"Cache-Control": "no-store"})


def healthz_response() -> web.Response:
    return web.Response(text="ok")  # the process answers: alive, whatever its dependencies do


async def _metrics(request: web.Request) -> web.Response:
    return metrics_response(request.app[_METRICS])


async def _readyz(request: web.Request) -> web.Response:
    return await readyz_response(request.app[_READINESS])


async def _healthz(request: web.Request) -> web.Response:
    return healthz_response()


def make_admin_app(metrics: Any, readiness: Any) -> web.Application:
    """/metrics, /healthz and /readyz; anything else is a plain 404."""
    app = web.Application(client_max_size=1024)  # GETs only: no body worth reading
    app[_METRICS], app[_READINESS] = metrics, readiness
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


class WebServer:
    """An aiohttp application served on one or more addresses: started once, stopped, its port.
    No access log: the link server's request lines carry the link (a credential), and the
    admin paths are scraped every few seconds."""

    def __init__(self, app: web.Application, **runner_options: Any) -> None:
        self._app, self._options = app, runner_options
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    async def _serve(self, sites: list[tuple[str, int, bool]]) -> None:
        """Listen on every (host, port, reuse_port); none when one fails."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        runner = web.AppRunner(self._app, access_log=None, **self._options)
        await runner.setup()
        try:
            for host, port, reuse_port in sites:
                await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        return self._port


class AdminServer(WebServer):
    """The admin listener of one process (with server.workers > 1: worker i on port + i)."""

    def __init__(self, metrics: Any, readiness: Any) -> None:
        super().__init__(make_admin_app(metrics, readiness))

    async def start(self, host: str, port: int) -> None:
        await self._serve([(host, port, False)])
