"""Operations: Prometheus metrics and the readiness check, served by the admin listener
(admin.listen, smtp_offload/admin.py) or, without one, by the link server (GET /metrics,
GET /readyz).

Metrics live in a registry owned by the App (one per process), never in prometheus-client's
global one, and are reached through a `Metrics` object passed to whoever counts, so the
SMTP and processing code only says what happened: `metrics.message("relayed", reply)`.

With `server.workers > 1` every worker is its own process with its own registry: scrape
each worker on its own port (admin.listen's port + i, or `links.worker_port_base`), not the
shared link port, which the kernel hands to an arbitrary worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import platform
import socket
import ssl
import time
from typing import Any, Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for smtp_offload.admin)
from prometheus_client import ProcessCollector, disable_created_metrics

from . import __version__

from .errors import StorageError
from .model import Verdict
from .storage.routed import stores_of

PREFIX = "smtp_offload_"
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
REFUSAL_REASONS = ("max_sessions", "busy", "shutting_down", "data_timeout", "too_big", "line_too_long",
                   "relay_denied", "too_many_recipients", "proxy_header",
                   "command_timeout", "envelope_timeout", "max_sessions_per_client", "tls_failed",
                   "downstream_unavailable")
# Every counter's `_created` twin doubles the series for no use (rate() needs none of them).
disable_created_metrics()
# Why the link server refused a page or a download (links.outcomes kinds, and agent_required).
LINK_REFUSALS = ("bad_token", "expired", "revoked", "gone", "invalid_request", "storage_unavailable",
                 "agent_required", "cross_site")
QUARANTINE_ACTIONS = ("hold", "hold_failed", "release", "delete", "purge")
_STORAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_DOWNSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def reply_class(reply: str | int) -> str:
    """'250 2.0.0 Ok' or 250 -> '2xx'."""
    first = str(reply)[:1]
    return f"{first}xx" if first in ("2", "4", "5") else "other"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)  # process_* : memory, CPU, open file descriptors of this process
        self._messages = Counter(
            PREFIX + "messages", "Messages that reached the end of DATA, by outcome "
            "(relayed|rejected|deferred|failed) and the class of the reply sent to the client.",
            ["outcome", "reply_class"], registry=r)
        self._attachments = Counter(
            PREFIX + "attachments", "Attachments judged, by final verdict (keep|offload|empty|spoofed|blocked); "
            "includes those of messages refused by policy.", ["verdict"], registry=r)
        self._offloaded_bytes = Counter(
            PREFIX + "offloaded_bytes", "Decoded attachment bytes written to storage.", registry=r)
        self._storage = Histogram(
            PREFIX + "storage_put_seconds", "Time to store one offloaded file, by result (ok|error|timeout).",
            ["result"], buckets=_STORAGE_BUCKETS, registry=r)
        self._downstream = Histogram(
            PREFIX + "downstream_data_seconds", "Time from sending a message to the downstream to its "
            "final reply, by reply class (2xx|4xx|5xx, or error when no reply came).",
            ["result"], buckets=_DOWNSTREAM_BUCKETS, registry=r)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}  # see _child
        self._watched: list[Any] = []  # the storage breakers, one per store
        self._breaker = Gauge(
            PREFIX + "storage_breaker_state", "Storage circuit breaker: 0 closed, 1 half-open, 2 open.", registry=r)
        self._sessions = Gauge(PREFIX + "smtp_sessions", "SMTP sessions open now.", registry=r)
        self._in_flight = Gauge(
            PREFIX + "messages_in_flight", "Messages arriving (DATA) or being processed and relayed now.", registry=r)
        self._inflight_bytes = Gauge(
            PREFIX + "inflight_bytes", "Message bytes reserved from server.max_inflight_bytes now.", registry=r)
        self._inflight_bytes_limit = Gauge(  # the cap, for alerts and dashboards: inflight_bytes / this
            PREFIX + "inflight_bytes_limit", "server.max_inflight_bytes: past it, new messages get 451 4.3.2.",
            registry=r)
        self._refusals = Counter(
            PREFIX + "refusals", "Connections, recipients or messages refused before processing, by reason.",
            ["reason"], registry=r)
        self._arc_seal_failures = Counter(
            PREFIX + "arc_seal_failures", "Changed messages that could not be ARC-sealed and were relayed "
            "unsealed (log event arc_seal_failed has the reason).", registry=r)
        self._portal_uploads = Counter(
            PREFIX + "portal_uploads", "Files the upload portal received whole, by result (received|refused|failed).",
            ["result"], registry=r)
        self._portal_deliveries = Counter(
            PREFIX + "portal_deliveries", "Upload-portal messages handed to the downstream, by outcome "
            "(delivered|deferred: to be retried).", ["outcome"], registry=r)
        self._quarantine = Counter(
            PREFIX + "quarantine", "Quarantine actions (smtp_offload/quarantine), by action: hold (a stripped file "
            "kept), hold_failed (stripped, not kept: the store failed), release, delete, purge (retention).",
            ["action"], registry=r)
        self._link_views = Counter(
            PREFIX + "link_views", "Link landing pages shown (200) to agents; refusals are counted apart.", registry=r)
        self._link_downloads = Counter(
            PREFIX + "link_downloads", "Downloads started from a link, by how (presigned: redirected to the "
            "store's short-lived URL; stream: the bytes sent by the link server).", ["via"], registry=r)
        self._link_refusals = Counter(
            PREFIX + "link_refusals", "Link pages and downloads refused, by reason (" + "|".join(LINK_REFUSALS) + ").",
            ["reason"], registry=r)
        self._link_renewals = Counter(
            PREFIX + "link_renewals", "New links made from an expired link's page (\"Get a new link\") by an "
            "identified agent.", registry=r)
        self._api_requests = Counter(
            PREFIX + "api_requests", "Calls to /api/v1/..., by route (its template, e.g. /api/v1/jobs/{id}; "
            "unmatched for unknown paths) and HTTP status.", ["route", "status"], registry=r)
        build = Gauge(PREFIX + "build_info", "Always 1; the labels say which smtp-offload and Python run.",
                      ["version", "python"], registry=r)
        build.labels(__version__, platform.python_version()).set(1)
        # Series that exist from the start read 0 instead of being absent.
        for reason in LINK_REFUSALS:
            self._link_refusals.labels(reason)
        for via in ("presigned", "stream"):
            self._link_downloads.labels(via)
        for action in QUARANTINE_ACTIONS:
            self._quarantine.labels(action)
        for result in ("received", "refused", "failed"):
            self._portal_uploads.labels(result)
        for outcome in ("delivered", "deferred"):
            self._portal_deliveries.labels(outcome)
        for outcome, cls in (("relayed", "2xx"), ("rejected", "5xx"), ("deferred", "4xx"), ("failed", "4xx")):
            self._messages.labels(outcome, cls)
        for v in Verdict:
            self._attachments.labels(v.value)
        for reason in REFUSAL_REASONS:
            self._refusals.labels(reason)
        self._breaker.set(0)

    # -- what the SMTP side and the processor report -----------------------------
    def _child(self, metric: Any, *labels: str) -> Any:
        """metric.labels(*labels), remembered: labels() checks and locks on every call, and
        the per-message ones run for every message."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def message(self, outcome: str, reply: str) -> None:
        self._child(self._messages, outcome, reply_class(reply)).inc()

    def attachments(self, attachments: Iterable[Any]) -> None:
        for a in attachments:
            self._attachments.labels(a.verdict.value).inc()

    def storage_put(self, seconds: float, result: str, size: int = 0) -> None:
        self._storage.labels(result).observe(seconds)
        if result == "ok":
            self._offloaded_bytes.inc(size)

    def downstream_data(self, seconds: float, result: str) -> None:
        self._child(self._downstream, result).observe(seconds)

    def arc_seal_failed(self) -> None:
        self._arc_seal_failures.inc()

    def portal_upload(self, result: str) -> None:
        self._portal_uploads.labels(result).inc()

    def portal_delivery(self, outcome: str) -> None:
        self._portal_deliveries.labels(outcome).inc()

    def quarantine(self, action: str) -> None:
        self._quarantine.labels(action).inc()

    def link_view(self) -> None:
        self._link_views.inc()

    def link_download(self, via: str) -> None:
        self._link_downloads.labels(via).inc()

    def link_renewed(self) -> None:
        self._link_renewals.inc()

    def link_refused(self, reason: str) -> None:
        self._link_refusals.labels(reason).inc()

    def api_request(self, route: str, status: int) -> None:
        self._api_requests.labels(route, str(status)).inc()

    def refused(self, reason: str) -> None:
        self._refusals.labels(reason).inc()

    def breaker_changed(self, state: str) -> None:
        # One breaker per store (data residency): the gauge shows the worst of them.
        states = [b.state for b in self._watched] or [state]
        self._breaker.set(max(BREAKER_STATES.get(s, 2) for s in states))

    def watch_breaker(self, breaker: Any) -> None:
        self._watched.append(breaker)
        self.breaker_changed(breaker.state)
        breaker.on_change.append(self.breaker_changed)

    def watch_limits(self, limits: Any) -> None:
        """Gauges read from the process-wide session limits at scrape time."""
        self._sessions.set_function(lambda: len(limits.sessions))
        self._in_flight.set_function(lambda: sum(1 for p in list(limits.sessions) if p.in_flight))
        self._inflight_bytes.set_function(lambda: limits.inflight_bytes)
        self._inflight_bytes_limit.set(limits.max_inflight_bytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ProbeFailed(Exception):
    """A dependency did not answer as it should; the message is the reason, phrased for an
    admin (it goes into /readyz and the start-up summary)."""


class Readiness:
    """Can this instance take mail now? Storage (`store.check()`) and the downstream (connect,
    greeting, EHLO, QUIT) are probed concurrently, each within `budget` seconds. The answer
    is kept `cache_seconds` and concurrent requests share one probe, so a load balancer (or
    anyone else) polling /readyz never multiplies the load on the dependencies."""

    def __init__(self, store: Any, downstream_probe: Callable[[], Awaitable[None]], *, log: Any = None,
                 draining: Callable[[], bool] = lambda: False, budget: float = 2.0, cache_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.downstream_probe = downstream_probe
        self.log = log
        self.draining = draining
        self.budget = budget
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._result: tuple[bool, dict[str, str], dict[str, str]] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body): body = {"status": "ready"|"not ready"|"draining",
        "storage": "ok"|"failed"|"timeout", "downstream": ..., "storage_<name>": ...} and, when a
        check did not pass, "reasons": {check: why, in words for an admin}."""
        if self.draining():
            return False, {"status": "draining"}
        async with self._lock:
            if self._result is None or self.clock() - self._at >= self.cache_seconds:
                # Named stores (data residency) are reported but do not make this instance
                # unready: their failure stays with their own customers (fail open).
                named = {n: s for n, s in stores_of(self.store).items() if n}
                names = ["storage", "downstream", *(f"storage_{n}" for n in named)]
                results = await asyncio.gather(
                    self._probe(self.store.check), self._probe(self.downstream_probe),
                    *(self._probe(s.check) for s in named.values()))
                checks = {k: r for k, (r, _) in zip(names, results)}
                reasons = {k: why for k, (_, why) in zip(names, results) if why}
                ready = checks["storage"] == checks["downstream"] == "ok"
                was = self._result[1] if self._result is not None else {k: "ok" for k in checks}
                self._result, self._at = (ready, checks, reasons), self.clock()
                if self.log is not None and checks != was:  # log changes only, with what failed
                    details = {f"{k}_detail": why for k, why in reasons.items()}
                    (self.log.info if ready else self.log.warning)("readiness", ready=ready, **checks, **details)
            ready, checks, reasons = self._result
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", **checks}
        if reasons:
            body["reasons"] = dict(reasons)
        return ready, body

    async def _probe(self, probe: Callable[[], Awaitable[None]]) -> tuple[str, str | None]:
        try:
            await asyncio.wait_for(probe(), self.budget)
        except asyncio.TimeoutError:
            return "timeout", f"no answer within {self.budget:g} s"
        except Exception as exc:  # any failure means "not ready"
            return "failed", explain(exc)
        return "ok", None


def explain(exc: BaseException, where: str = "", within: float | None = None) -> str:
    """Why a probe failed, in words for an admin rather than a Python repr: "connection refused
    by 127.0.0.1:2526", "no answer from 127.0.0.1:2526 within 2 s", or the store's own message.
    `where` names the peer ("host:port"), `within` the time it was given."""
    at = f" {where}" if where else ""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen and len(seen) < 10:  # the cause chain, outermost first
        seen.append(e)
        e = e.__cause__ or e.__context__
    for e in seen:
        if isinstance(e, (ProbeFailed, StorageError)):  # already said for an admin
            return " ".join(str(e).split())[:300]
        code, message = getattr(e, "code", None), getattr(e, "message", None)
        if isinstance(code, int) and isinstance(message, str) and 100 <= code < 600:  # an SMTP reply
            return f"{where or 'it'} answered {code} {' '.join(message.split())}"[:300]
    for e in reversed(seen):  # the root cause says it best
        if isinstance(e, ConnectionRefusedError):
            return f"connection refused by{at}" if at else "connection refused"
        if isinstance(e, socket.gaierror):
            return f"host name not found: {where}" if where else "host name not found"
        if isinstance(e, (TimeoutError, asyncio.TimeoutError)):
            return f"no answer from{at}" + (f" within {within:g} s" if within else " in time")
        if isinstance(e, ssl.SSLError):
            return f"TLS with{at} failed: {e.reason or type(e).__name__}"[:300]
        if isinstance(e, (ConnectionResetError, BrokenPipeError)) or type(e).__name__ == "SMTPServerDisconnected":
            return f"{where or 'the peer'} closed the connection"
        if isinstance(e, OSError) and e.strerror:
            return f"{where + ': ' if where else ''}{e.strerror[:1].lower()}{e.strerror[1:]}"[:300]
    # Otherwise the innermost words there are (ours wrap the library's, which say what happened).
    text = next((" ".join(str(e).split()) for e in reversed(seen) if str(e).strip()), type(exc).__name__)
    return f"{where + ': ' if where else ''}{text}"[:300]


def downstream_probe(cfg: Any, helo: str, budget: float = 2.0) -> Callable[[], Awaitable[None]]:
    """A probe using the relay's own connection code: connect, greeting, EHLO (STARTTLS as
    configured), QUIT, every step bounded by `budget`. A failure is raised as ProbeFailed
    naming the downstream's address."""
    from .relay import Downstream

    quick = dataclasses.replace(cfg, connect_timeout=min(cfg.connect_timeout, budget),
                                command_timeout=min(cfg.command_timeout, budget))
    where = f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"

    async def probe() -> None:
        ds = Downstream(quick, helo)
        try:
            await ds.open()
            await ds.quit()
        except Exception as exc:
            raise ProbeFailed(explain(exc, where, budget)) from exc
        finally:
            ds.close()

    return probe
