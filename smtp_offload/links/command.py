"""`smtp-offload links refresh|revoke|show`: the link API for operators with shell access.

Runs the same LinkService as the HTTP API against the store the config names, so a
revocation made here is seen by every running link server (it lives in the store).
A link is given as it appears in the mail (the whole URL) or as its bare token.
Output is the API's JSON on stdout; exit 0 on success, 1 when the service refuses
(bad token, revoked, file gone, storage down), 2 for config problems.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog

from smtp_offload.config import Config
from smtp_offload.errors import ConfigError
from smtp_offload.links.outcomes import outcome_of
from smtp_offload.links.secret import load_secrets
from smtp_offload.links.service import LinkService
from smtp_offload.storage import close_store, open_store


def token_of(link: str | None) -> str | None:
    """The token in a link as it appears in the mail — `http://host:port/f/<token>`, maybe with
    `/download` (or `/renew`), a query string, a fragment or a trailing slash — or a bare token as given.
    Only the path is read (never the host: any server of ours may have minted it)."""
    if link is None:
        return None
    link = link.strip()
    if "/f/" not in link:
        return link  # a bare token; a malformed one is the service's to refuse
    path = urlsplit(link).path if "://" in link else link.split("?", 1)[0].split("#", 1)[0]
    token = path.rsplit("/f/", 1)[1].strip("/")
    for action in ("/download", "/renew"):
        if token.endswith(action):
            token = token[:-len(action)]
    return unquote(token)


async def _run(service: LinkService, args: argparse.Namespace) -> dict[str, Any]:
    try:
        token = token_of(args.link if args.link is not None else args.token)
        if args.links_command == "refresh":
            return (await service.refresh(token=token, key=args.key, ttl=args.ttl)).as_json()
        if args.links_command == "revoke":
            return {"revoked": await service.revoke(token=token, token_id=args.token_id)}
        return await service.show(token)
    finally:
        await close_store(service.store)  # an async SDK client left open warns at exit


def run(args: argparse.Namespace, cfg: Config) -> int:
    # stdout is for the JSON answer; anything logged goes to stderr.
    log = structlog.wrap_logger(structlog.PrintLogger(sys.stderr), processors=[
        structlog.processors.add_log_level, structlog.processors.JSONRenderer()])
    try:
        # create=False: a secret generated here would mint links no running server accepts.
        service = LinkService(open_store(cfg), load_secrets(cfg.links, log, create=False), cfg.links)
        result = asyncio.run(_run(service, args))
    except ConfigError as e:
        print(f"smtp-offload: config error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # bad token, revoked, gone, bad request, storage down (links.outcomes)
        outcome = outcome_of(e)
        if outcome is None:
            raise
        print(f"smtp-offload: {outcome.cli_message}", file=sys.stderr)
        return outcome.exit_code
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
