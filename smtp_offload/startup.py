"""What start-up tells a person: the listen addresses that could not be bound (key and address,
one line), and once running a short summary on stderr of where the proxy listens, where mail
goes and whether that answered, and what to do when it did not.

The JSON `started` event stays for log readers; the summary (log.summary, on by default) is for
whoever started the proxy (`make run`) or reads its journal.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from typing import Any

from .config import Config, parse_hostport
from .errors import StartupError

_MAX_DOMAINS = 5  # more are summed up: the summary stays a few lines


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "not an address of this machine"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)"
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return " ".join(str(exc).split()) or type(exc).__name__


def bind_error(key: str, host: str, port: int, exc: OSError, note: str = "") -> StartupError:
    """'server.listen 127.0.0.1:2525: address already in use' (cli adds "cannot start: ")."""
    return StartupError(f"{key} {address(host, port)}{note}: {_why(exc)}")


_BIND_ADDRESS = re.compile(r"address \('?\[?([^',\]]*)\]?'?, (\d+)")


def failed_port(exc: OSError) -> int | None:
    """The port asyncio names in its "error while attempting to bind on address (...)" error."""
    m = _BIND_ADDRESS.search(str(exc))
    return int(m.group(2)) if m else None


def listen_addresses(cfg: Config, worker: int | None = None) -> list[tuple[str, str, int, str]]:
    """(key, host, port, note) of every address one process binds: the shared ones and, for a
    worker, its own (admin port + i, links.worker_port_base + i)."""
    out = [("server.listen", *parse_hostport("server.listen", cfg.server.listen), ""),
           ("links.listen", *parse_hostport("links.listen", cfg.links.listen), "")]
    if cfg.admin.listen:
        host, port = parse_hostport("admin.listen", cfg.admin.listen)
        if worker is not None and port:
            out.append(("admin.listen", host, port + worker, f" (worker {worker}: port + {worker})"))
        else:
            out.append(("admin.listen", host, port, ""))
    if worker is not None and cfg.links.worker_port_base:
        host = out[1][1]
        out.append(("links.worker_port_base", host, cfg.links.worker_port_base + worker, f" (worker {worker})"))
    return out


def addresses_to_check(cfg: Config) -> list[tuple[str, str, int, str]]:
    """What the starting process checks before anything else: every address, and with
    server.workers > 1 the shared ones and every worker's admin port. Not links.worker_port_base:
    a worker whose own such port is taken says so itself and is retried (README, "Failure
    behaviour"), as it always was."""
    if cfg.server.workers <= 1:
        return listen_addresses(cfg)
    out = listen_addresses(cfg)[:2]
    for i in range(cfg.server.workers):
        out += [a for a in listen_addresses(cfg, i) if a[0] == "admin.listen"]
    return out


def check_binds(addresses: list[tuple[str, str, int, str]]) -> None:
    """Bind each address for a moment, before anything else starts: a second instance (or a
    wrong address) ends the start at once with one line naming the key, instead of after the
    storage check, or as workers dying one after the other. Without SO_REUSEPORT, so a port
    that another process holds even with SO_REUSEPORT (our workers) counts as taken."""
    for key, host, port, note in addresses:
        if not port:
            continue  # any free port: nothing to check
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError as exc:
            raise bind_error(key, host, port, exc, note) from None
        for family, kind, proto, _, sockaddr in infos:
            with socket.socket(family, kind, proto) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does: TIME_WAIT is no owner
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    s.bind(sockaddr)
                except OSError as exc:
                    raise bind_error(key, host, port, exc, note) from None


def _domains(domains: list[str]) -> str:
    shown = ", ".join(domains[:_MAX_DOMAINS])
    return shown + (f" and {len(domains) - _MAX_DOMAINS} more" if len(domains) > _MAX_DOMAINS else "")


def _admin(cfg: Config) -> str:
    if not cfg.admin.listen:
        return f"on {cfg.links.listen} (admin.listen is not set): keep /metrics and /readyz internal there"
    host, port = parse_hostport("admin.listen", cfg.admin.listen)
    if cfg.server.workers > 1 and port:
        return f"{address(host, port)}-{port + cfg.server.workers - 1} (worker i: port + i): /metrics, /healthz, /readyz"
    return f"{cfg.admin.listen}: /metrics, /healthz, /readyz"


def downstream_advice(cfg: Config, reason: str) -> str:
    """What the admin can do about a downstream that did not answer."""
    d = cfg.downstream
    where = address(d.host, d.port)
    then = "until then messages get 451 and senders retry."
    if reason.startswith(("connection refused", "no answer")):
        return f"Nothing answers on {where}: start your MTA there or set downstream.host/port; {then}"
    if reason.startswith("host name not found"):
        return f"downstream.host {d.host!r} does not resolve here: correct the name or the DNS; {then}"
    return f"The downstream {where} did not take our connection ({reason}): fix it there or in [downstream]; {then}"


def for_people(cfg: Config) -> bool:
    """Print the summary? log.summary (on by default: `make run`, a terminal, and the journal
    under systemd all show it; the JSON `started` event stays for log shippers). Off, nothing
    extra is printed and no probe connection reaches the downstream at start; /readyz and
    `systemctl status` (the STATUS line) still say what the summary would."""
    return cfg.log.summary


def summary(cfg: Config, body: dict[str, Any], store: str) -> str:
    """The human start-up summary, a few lines, from a readiness check's body (metrics.Readiness:
    the words /readyz uses)."""
    from . import __version__

    d, reasons = cfg.downstream, body.get("reasons", {})
    workers = f" ({cfg.server.workers} workers)" if cfg.server.workers > 1 else ""
    down = body.get("downstream", "?")
    why = reasons.get("downstream", down)
    answered = "answered" if down == "ok" else f"did not answer: {why}"
    stored = "answered" if body.get("storage") == "ok" else \
        f"did not answer: {reasons.get('storage', body.get('storage', '?'))} (meanwhile files are " \
        f"handled as policy.on_storage_failure = {cfg.policy.prepare.on_storage_failure.value!r} says)"
    base = cfg.links.base_url.rstrip("/")
    lines = [
        f"smtp-offload {__version__} started{workers}",
        f"  SMTP        {cfg.server.listen} for {_domains(cfg.server.accepted_domains)}",
        f"  downstream  {address(d.host, d.port)}: {answered}",
        f"  store       {store}: {stored}",
        f"  links       {base}/f/... served on {cfg.links.listen}",
        f"  admin       {_admin(cfg)}",
    ]
    if down != "ok":
        lines.append("  " + downstream_advice(cfg, why))
    return "\n".join(lines) + "\n"
