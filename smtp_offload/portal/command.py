"""`smtp-offload portal create|show|revoke|sweep`: the portal for operators with shell access.

Runs the same Portal as the link server against the store the config names, so a session
made here opens on every running link server (it lives in the store, signed with the same
secret). Output is JSON on stdout (or the bare link with `create --url-only`); exit 0 on
success, 1 when refused (bad field, unknown session, storage down), 2 for config problems.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from typing import Any

import structlog

from ..api.keys import Refused
from ..config import Config
from ..errors import ConfigError, StorageError
from ..links.secret import load_secrets
from ..storage import close_store, open_store


def _portal(cfg: Config, log: Any):
    from ..app import build_pipeline, make_portal
    from ..auth import Authenticator
    from ..metrics import Metrics

    hostname = cfg.server.hostname or socket.getfqdn()
    # create=False: a secret generated here would sign links no running server accepts.
    secrets = load_secrets(cfg.links, log, create=False)
    pipeline = build_pipeline(cfg, open_store(cfg), secrets, log, Metrics(), hostname,
                              Authenticator(cfg.auth, hostname, None))
    return make_portal(cfg, pipeline.preparer, secrets, hostname, log)


async def _run(portal, args: argparse.Namespace) -> dict[str, Any]:
    try:
        return await _command(portal, args)
    finally:
        await close_store(portal.records.store)  # an async SDK client left open warns at exit


async def _command(portal, args: argparse.Namespace) -> dict[str, Any]:
    if args.portal_command == "create":
        fields = {"caseId": args.case, "to": args.to, "customerId": args.customer, "subject": args.subject,
                  "inReplyTo": args.in_reply_to, "ttlSeconds": args.ttl}
        return await portal.create({k: v for k, v in fields.items() if v is not None}, None, args.customer)
    if args.portal_command == "revoke":
        if not await portal.revoke(args.session, by="cli"):
            raise Refused(404, "not_found", f"no such upload session: {args.session}")
        return {"sessionId": args.session, "revoked": True}
    if args.portal_command == "sweep":
        await portal.tick()
        await portal.settle()
        return {"swept": True}
    try:
        s = await portal.records.load(args.session)
    except KeyError:
        raise Refused(404, "not_found", f"no such upload session: {args.session}") from None
    return {**s.as_json(), "files": [f.as_json() for f in await portal.records.files(s.id)]}


def run(args: argparse.Namespace, cfg: Config) -> int:
    log = structlog.wrap_logger(structlog.PrintLogger(sys.stderr), processors=[
        structlog.processors.add_log_level, structlog.processors.JSONRenderer()])
    try:
        result = asyncio.run(_run(_portal(cfg, log), args))
    except ConfigError as e:
        print(f"smtp-offload: config error: {e}", file=sys.stderr)
        return 2
    except Refused as r:
        print(f"smtp-offload: {r.message}", file=sys.stderr)
        return 1
    except StorageError as e:
        print(f"smtp-offload: storage unavailable: {e}", file=sys.stderr)
        return 1
    if getattr(args, "url_only", False):
        print(result["uploadUrl"])
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
