"""`smtp-offload quarantine list|show|release|delete|purge`: the quarantine for operators with
shell access.

Runs the same Quarantine as the link server against the stores the config names (and the
same downstream for a release), so what is done here every instance sees. `list` prints a
table (`--json`: a JSON array), the others JSON; exit 0 on success, 1 when refused (unknown
id, already released, downstream refused, storage down), 2 for config problems. Audit events
name the actor "cli:<OS user>".
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
from typing import Any

import structlog

from ..api.keys import Refused
from ..config import Config
from ..errors import ConfigError, StorageError
from ..links.secret import load_secrets
from ..storage import open_store
from .records import Item
from .service import Quarantine


def _quarantine(cfg: Config, log: Any) -> Quarantine:
    from ..app import build_pipeline, make_quarantine
    from ..auth import Authenticator
    from ..metrics import Metrics

    hostname = cfg.server.hostname or socket.getfqdn()
    # create=False: a secret generated here would sign links no running server accepts.
    secrets = load_secrets(cfg.links, log, create=False)
    pipeline = build_pipeline(cfg, open_store(cfg), secrets, log, Metrics(), hostname,
                              Authenticator(cfg.auth, hostname, None))
    return make_quarantine(cfg, pipeline.preparer, hostname, log)


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container's arbitrary user)
        return "cli"


async def _run(q: Quarantine, args: argparse.Namespace) -> Any:
    cmd = args.quarantine_command
    if cmd == "list":
        return await q.list()
    if cmd == "purge":
        return {"purged": await q.purge()}
    if cmd == "release":
        return q.public(await q.release(args.id, actor(), force=args.force))
    if cmd == "delete":
        await q.delete(args.id, actor())
        return {"id": args.id, "deleted": True}
    return q.public(await q.get(args.id))


def table(items: list[Item]) -> str:
    """The list as people read it: one line per item, the reason last (it is the longest)."""
    if not items:
        return "nothing is held in quarantine"
    head = ("id", "received", "from", "to", "file", "verdict", "reason")
    rows = [head] + [(i.id, i.received_at.strftime("%Y-%m-%d %H:%M"), _cut(i.from_header or i.sender or "-", 40),
                      _cut(", ".join(i.recipients), 40), _cut(i.filename, 40),
                      i.verdict + (" (released)" if i.released_at else ""), i.reason) for i in items]
    widths = [max(len(r[c]) for r in rows) for c in range(len(head) - 1)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def run(args: argparse.Namespace, cfg: Config) -> int:
    # stdout is for the answer; anything logged (the audit events too) goes to stderr.
    log = structlog.wrap_logger(structlog.PrintLogger(sys.stderr), processors=[
        structlog.processors.add_log_level, structlog.processors.JSONRenderer()])
    sys.stdout.reconfigure(errors="backslashreplace")  # names and subjects come from senders
    try:
        q = _quarantine(cfg, log)
        result = asyncio.run(_run(q, args))
    except ConfigError as e:
        print(f"smtp-offload: config error: {e}", file=sys.stderr)
        return 2
    except Refused as r:
        print(f"smtp-offload: {r.message}", file=sys.stderr)
        return 1
    except StorageError as e:
        print(f"smtp-offload: storage unavailable: {e}", file=sys.stderr)
        return 1
    if args.quarantine_command == "list":
        print(json.dumps([q.public(i) for i in result], indent=2, ensure_ascii=False) if args.json else table(result))
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
