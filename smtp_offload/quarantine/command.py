"""`smtp-offload quarantine list|show|release|delete|purge`: the quarantine for operators with
shell access.

Runs the same Quarantine as the link server against the stores the config names (and the
same downstream for a release), so what is done here every instance sees. `list` prints a
table (`--json`: a JSON array), the others JSON; exit 0 on success, 1 when refused (unknown
id, already released, downstream refused, storage down), 2 for config problems. Audit events
name the actor "cli:<OS user>".

Every store is checked before it is used, and one that fails is reported, not used: a local
store's root that is missing (moved, not mounted) is not created empty, which would answer
"nothing is held". `list` lists the stores that answer and warns on stderr about the others
(exit 1 only when none answered); `purge` purges what it can and exits 1 when a store, a
record or a delete failed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
import unicodedata
from pathlib import Path
from typing import Any

import structlog

from ..api.keys import Refused
from ..config import Backend, Config, StoreConfig
from ..errors import ConfigError, StorageError
from ..links.secret import load_secrets
from ..storage import RoutedStore, Store, close_store, open_one
from .records import Item, store_label
from .service import Purged, Quarantine


class Unavailable:
    """Stands in for a store this command cannot use: every call fails as a store that is
    down does, so each command reports it the way it reports any storage failure."""

    key_prefix = ""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StorageError(self.reason)
        return down

    async def close(self) -> None:
        pass


async def open_checked(cfg: Config) -> tuple[Store, dict[str, str]]:
    """The configured store(s), each checked; the ones failing replaced by Unavailable, and
    their names with the reason."""
    down: dict[str, str] = {}

    async def one(name: str, sc: StoreConfig) -> Store:
        if sc.backend is Backend.LOCAL and not Path(sc.local.path).is_dir():
            # Checked before opening: LocalStore creates a missing root, and an empty new one
            # would answer "nothing is held" for a store that was moved away or not mounted.
            down[name] = f"storage root {sc.local.path} does not exist"
            return Unavailable(down[name])
        store = open_one(sc)
        try:
            await store.check()
        except (StorageError, OSError) as exc:
            down[name] = str(exc) or type(exc).__name__
            await close_store(store)
            return Unavailable(down[name])
        return store

    opened: dict[str, Store] = {}
    try:
        for name, sc in {"": cfg.storage, **cfg.storage.stores}.items():
            opened[name] = await one(name, sc)
    except BaseException:
        for store in opened.values():
            await close_store(store)
        raise
    default = opened.pop("")
    store = RoutedStore(default, opened, cfg.storage.routes) if cfg.storage.stores else default
    return store, {store_label(n): reason for n, reason in down.items()}


def _quarantine(cfg: Config, store: Store, log: Any) -> Quarantine:
    from ..app import build_pipeline, make_quarantine
    from ..auth import Authenticator
    from ..metrics import Metrics

    hostname = cfg.server.hostname or socket.getfqdn()
    # create=False: a secret generated here would sign links no running server accepts.
    secrets = load_secrets(cfg.links, log, create=False)
    pipeline = build_pipeline(cfg, store, secrets, log, Metrics(), hostname,
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
        return await q.purge()
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
    rows = [head] + [tuple(map(shown, (
        i.id, i.received_at.strftime("%Y-%m-%d %H:%M"), _cut(i.from_header or i.sender or "-", 40),
        _cut(", ".join(i.recipients), 40), _cut(i.filename, 40),
        i.verdict + (" (released)" if i.released_at else ""), i.reason))) for i in items]
    widths = [max(len(r[c]) for r in rows) for c in range(len(head) - 1)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# Control characters (escape sequences: a file name can retitle, recolour or rewrite a terminal),
# format characters (bidi overrides reorder what is shown) and line separators.
_UNSHOWN = frozenset(("Cc", "Cf", "Zl", "Zp"))


def shown(text: str) -> str:
    """`text` (a sender's, mostly) made harmless to print on a terminal: each character that
    could act on it rather than be read becomes "?"."""
    return "".join("?" if unicodedata.category(c) in _UNSHOWN else c for c in str(text))


def as_json(value: Any) -> str:
    """JSON for a terminal: json.dumps escapes only C0 controls, and non-ASCII is kept for
    reading, so C1 controls (U+009B is CSI), bidi overrides and line separators are escaped
    here (they can only occur inside strings, so the JSON means the same)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return "".join(json.dumps(c)[1:-1] if unicodedata.category(c) in _UNSHOWN and c != "\n" else c for c in text)


def _warn(message: str) -> None:
    print(f"smtp-offload: warning: {shown(message)}", file=sys.stderr)


def run(args: argparse.Namespace, cfg: Config) -> int:
    # stdout is for the answer; anything logged (the audit events too) goes to stderr.
    log = structlog.wrap_logger(structlog.PrintLogger(sys.stderr), processors=[
        structlog.processors.add_log_level, structlog.processors.JSONRenderer()])
    sys.stdout.reconfigure(errors="backslashreplace")  # names and subjects come from senders
    try:
        return asyncio.run(_main(args, cfg, log))
    except ConfigError as e:
        print(f"smtp-offload: config error: {e}", file=sys.stderr)
        return 2


async def _main(args: argparse.Namespace, cfg: Config, log: Any) -> int:
    store, down = await open_checked(cfg)
    try:
        q = _quarantine(cfg, store, log)
        try:
            result = await _run(q, args)
        except Refused as r:
            print(f"smtp-offload: {shown(r.message)}", file=sys.stderr)
            if r.status == 503:
                for name, reason in down.items():
                    _warn(f"store {name} is unavailable: {reason}")
            return 1
        except StorageError as e:
            print(f"smtp-offload: storage unavailable: {shown(str(e))}", file=sys.stderr)
            return 1
    finally:
        # The async SDK clients (Azure's) hold sessions, and complain when left open.
        await close_store(store)
    cmd = args.quarantine_command
    if cmd == "list":
        print(as_json([q.public(i) for i in result.items]) if args.json else table(result.items))
        for name, reason in result.unavailable.items():
            _warn(f"store {name} could not be read, so its items are not listed: {reason}")
        return 0
    if cmd == "purge":
        return _purged(result)
    print(as_json(result))
    return 0


def _purged(done: Purged) -> int:
    """Exit 1 unless retention was applied everywhere: a cron job should notice."""
    answer: dict[str, Any] = {"purged": done.purged}
    answer.update({k: v for k, v in (("failed", done.failed), ("unavailable", done.unavailable),
                                    ("unreadable", done.unreadable)) if v})
    print(as_json(answer))
    if done.failed:
        _warn(f"{len(done.failed)} item(s) past retention could not be deleted: {', '.join(done.failed)}")
    if done.unavailable:
        _warn(f"not purged, could not be read: store(s) {', '.join(done.unavailable)}")
    if done.unreadable:
        _warn(f"not purged, records unreadable: {', '.join(done.unreadable)}")
    return 0 if done.complete else 1
