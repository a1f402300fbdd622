"""Command line: serve, check-config, scan, links, portal, quarantine, send-samples."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import __version__
from . import config as config_mod
from . import log as log_mod
from .errors import ConfigError, StartupError, StorageError
from .units import human_size

if TYPE_CHECKING:
    from .delivery.decide import Plan


def _load(path: str | None) -> config_mod.Config:
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        print(f"smtp-offload: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args) -> int:
    from .app import run

    cfg = _load(args.config)
    log_mod.configure(cfg.log.format, cfg.log.level)
    try:
        return run(cfg, log_mod.get())
    except ConfigError as exc:
        print(f"smtp-offload: config error: {exc}", file=sys.stderr)
        return 2
    except (OSError, StartupError) as exc:
        print(f"smtp-offload: cannot start: {exc}", file=sys.stderr)
        return 1


def summary(cfg: config_mod.Config) -> str:
    """The effective config in a few readable lines (no secrets)."""
    s, d, p, st, ln = cfg.server, cfg.downstream, cfg.policy, cfg.storage, cfg.links
    storage = (f"S3 bucket {st.s3.bucket}, prefix {st.s3.prefix}" + (f" at {st.s3.endpoint_url}" if st.s3.endpoint_url
               else "") + (f", encryption {st.s3.sse}" if st.s3.sse else "")) if st.backend is config_mod.Backend.S3 \
        else f"local directory {st.local.path}"
    if st.backend is config_mod.Backend.GCS:
        storage = f"GCS bucket {st.gcs.bucket}, prefix {st.gcs.prefix}" + (f" at {st.gcs.endpoint_url}"
                                                                          if st.gcs.endpoint_url else "")
    if st.backend is config_mod.Backend.AZURE:
        from .storage.azure import endpoint_of

        storage = f"Azure container {st.azure.container}, prefix {st.azure.prefix} at {endpoint_of(st.azure)}"
    secret = "from the environment/config" if ln.secret else f"file {ln.secret_file}"
    return "\n".join([
        f"  SMTP        {s.listen} for {', '.join(s.accepted_domains)}; up to {human_size(s.max_message_bytes)}, "
        f"{s.max_recipients} recipients, {s.max_sessions} sessions" + (", STARTTLS" if s.tls_cert else "")
        + (" (required)" if s.require_tls else "") + (f", {s.workers} workers" if s.workers > 1 else ""),
        f"  downstream  {d.host}:{d.port} (TLS {d.tls}); fits {human_size(d.max_message_bytes)} and "
        f"{d.max_attachments} attachments",
        f"  files       offloaded above {human_size(p.plan.offload_over_bytes)}; empty: {p.plan.on_empty}, spoofed: "
        f"{p.plan.on_spoofed}, blocked: {p.plan.on_blocked} ({', '.join(sorted(p.inspect.blocked_types))}); "
        f"storage failure: {p.prepare.on_storage_failure}",
        f"  storage     {storage}",
        f"  links       {ln.mode} mode at {ln.base_url}, valid {ln.ttl_seconds // 3600} h; secret: {secret}"
        + (f"; API enabled ({len(ln.api_keys)} key(s))" if ln.api_keys else ""),
        f"  portal      " + (f"upload links at {ln.base_url}/u/…, files up to {human_size(cfg.portal.max_file_bytes)}, "
                             f"delivered from {cfg.portal.sender or 'portal@' + (s.hostname or '<hostname>')}"
                             if cfg.portal.enabled else "off"),
        f"  logs        {cfg.log.format}, level {cfg.log.level}",
    ])


async def _check_online(cfg) -> list[tuple[str, str | None]]:
    """(where, problem or None) for every store in the config that lives on the network (the
    default one and each storage.stores entry), each written to and read like `serve` does."""
    from .app import describe_store
    from .storage import close_store, open_store
    from .storage.routed import stores_of

    store = open_store(cfg)
    results = []
    try:
        for name, one in stores_of(store).items():
            sc = cfg.storage.stores[name] if name else cfg.storage
            if sc.backend is config_mod.Backend.LOCAL:
                continue
            where = f"storage {describe_store(cfg, name)}" if not name else \
                f"storage.stores.{name} ({describe_store(cfg, name)})"
            try:
                await one.check()
                results.append((where, None))
            except StorageError as exc:
                results.append((where, str(exc)))
    finally:
        await close_store(store)  # an async SDK client left open warns at exit
    return results


def cmd_check_config(args) -> int:
    from .app import check_files

    cfg = _load(args.config)
    try:
        check_files(cfg)  # what `serve` checks at start (app.run)
    except ConfigError as exc:
        print(f"smtp-offload: config error: {exc}", file=sys.stderr)
        return 2
    note = _note_for(args)
    note(f"{cfg.source}: ok")
    note(summary(cfg))
    if not args.offline:
        failed = False
        for where, problem in asyncio.run(_check_online(cfg)):
            if problem:
                print(f"smtp-offload: {where}: {problem}", file=sys.stderr)
                failed = True
            else:
                note(f"{where}: reachable and writable")
        if failed:
            return 1
    if args.json:
        print(json.dumps(config_mod.as_dict(cfg), indent=2))
    elif args.show:
        shown = config_mod.to_toml(config_mod.as_dict(cfg))
        if MASKED in shown:
            note(f"secrets are shown as {MASKED}: put them back (better: in the environment) before using this file")
        print("\n" + shown, end="")
    return 0


MASKED = "********"  # config.as_dict's mask for secrets


def _note_for(args) -> Callable[[str], None]:
    """Where check-config's readable lines go. With --show the whole output is a TOML file
    (those lines as comments), so `check-config --show > effective.toml` works; with --json
    stdout holds the JSON alone and they go to stderr."""
    if args.json:
        return lambda line: print(line, file=sys.stderr)
    if args.show:
        return lambda line: print("\n".join(f"# {ln}" for ln in line.splitlines()))
    return print


SCAN_DELIVERABLE, SCAN_REFUSED, SCAN_USAGE = 0, 1, 2  # `scan` exit codes (README, --help)
SCAN_EPILOG = """\
A file with CRLF line ends is judged as the bytes that would arrive over SMTP (bare CR or
LF in it count as bare newlines); a file with LF line ends (as .eml files usually are) is
converted to CRLF first. The downstream and the storage are assumed to work.

exit status:
  0  deliverable: the proxy would answer 250 (once the downstream accepts)
  1  the proxy would refuse the message (the reply is printed, and in --json as "reply")
  2  usage or config error, unreadable file
"""


def scan_reply(cfg: config_mod.Config, data: bytes) -> tuple[str, Plan | None]:
    """The reply the proxy would give to DATA carrying this file, and the plan when the
    message got that far. Never raises, whatever the file holds."""
    from . import replies as R
    from .app import decide_policy
    from .delivery.decide import decide
    from .errors import SmtpReplyError
    from .mime.scan import normalize_line_endings

    wire = data if b"\r\n" in data else normalize_line_endings(data)
    if _has_long_line(wire, cfg.server.max_line_length):
        return str(R.LINE_TOO_LONG), None
    if len(wire) > cfg.server.max_message_bytes:
        return str(R.TOO_BIG), None
    try:
        plan = decide(wire, decide_policy(cfg))
    except SmtpReplyError as exc:  # structure limits, bare newlines, ambiguous MIME
        return exc.reply, None
    except Exception as exc:  # noqa: BLE001 - the proxy answers a bug with 451, so does the dry run
        print(f"smtp-offload: internal error while scanning: {type(exc).__name__}: {exc}", file=sys.stderr)
        return str(R.INTERNAL), None
    return plan.refusal or str(R.OK), plan


def _has_long_line(wire: bytes, limit: int) -> bool:
    """As the SMTP reader counts (smtp/server.py): a line holds its CR, and a leading dot is
    doubled on the wire, so a line may have limit + 2 bytes before its LF."""
    return re.search(rb"(?:^|\n)(?:\.[^\n]{%d}|[^\n]{%d})" % (limit + 1, limit + 3), wire) is not None


def cmd_scan(args) -> int:
    cfg = _load(args.config)
    try:
        with open(args.file, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        print(f"smtp-offload: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return SCAN_USAGE
    # Names come from the message (and the file name from the disk): any bytes, even lone surrogates.
    sys.stdout.reconfigure(errors="backslashreplace")
    reply, plan = scan_reply(cfg, data)
    an = plan.analysis if plan is not None else None
    deliverable = reply.startswith("2")
    rows = [{
        "part": d.file.part.path or "0", "name": d.file.name, "declared_type": d.file.declared_type,
        "detected_type": d.file.judgement.detected_type, "size": d.file.size, "sha256": d.file.sha256,
        "verdict": d.verdict.value, "reason": d.reason,
    } for d in (plan.decisions if plan is not None else ())]
    size = len(an.data) if an is not None else len(data)
    result = {"file": args.file, "message_id": an.message_id if an is not None else None, "size": size,
              "projected_size": plan.projected_size if plan is not None else None,
              "rejected": None if deliverable else reply, "attachments": rows, "reply": reply}
    status = SCAN_DELIVERABLE if deliverable else SCAN_REFUSED
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return status
    print(f"{args.file}: {len(rows)} attachment(s), {human_size(size)}"
          + (f" -> about {human_size(plan.projected_size)} after offload" if plan is not None and plan.changed
             else ""))
    if rows:
        head = ("part", "verdict", "size", "declared", "detected", "name", "reason")
        table = [head] + [(r["part"], r["verdict"], human_size(r["size"]), r["declared_type"], r["detected_type"],
                           r["name"], r["reason"]) for r in rows]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(head) - 1)]
        for row in table:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + str(row[-1]))
    print(f"reply: {reply}" + ("" if deliverable else " (the message would be refused)"))
    return status


def cmd_links(args) -> int:
    from .links.command import run

    return run(args, _load(args.config))


def cmd_portal(args) -> int:
    from .portal.command import run

    return run(args, _load(args.config))


def cmd_quarantine(args) -> int:
    from .quarantine.command import run

    return run(args, _load(args.config))


def cmd_send_samples(args) -> int:
    from .harness import send_samples

    sink = None
    if args.save and not args.sink:
        args.usage_error("--save needs --sink HOST:PORT: it saves what the recording sink received")
    if args.save:
        try:
            args.save.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"smtp-offload: --save: cannot create {args.save}: {exc.strerror}", file=sys.stderr)
            return 2
    if args.sink:
        from .config import parse_hostport
        from .smtp.sink import RecordingSink

        try:
            host, port = parse_hostport("--sink", args.sink)
        except ConfigError as exc:
            print(f"smtp-offload: {exc}", file=sys.stderr)
            return 2
        sink = RecordingSink(host, port)
        sink.start()
        print(f"recording sink on {args.sink}: point the proxy's downstream.host/port at it",
              file=sys.stderr if args.json else sys.stdout)
    try:
        rows = send_samples(args.server, args.to, args.sender, sink, scale=args.scale,
                            out=sys.stderr if args.json else sys.stdout, save=args.save)
    finally:
        if sink is not None:
            sink.stop()
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    return 0 if all(r["code"] for r in rows) else 1


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; an option's help ends with its default when it has
    one worth saying (not None, not a flag's False, not already in the text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and "%(default)" not in text and "(default" not in text
                and default is not None and default is not False and default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Every parser and subparser (add_subparsers makes them of this class) uses _HelpFormatter."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


DESCRIPTION = """\
smtp-offload: an SMTP hop for contact centers that judges attachments by their real bytes,
strips spoofed, empty and blocked ones and offloads large ones to expiring links."""
EPILOG = "`smtp-offload COMMAND --help` shows a command's options, each with its default."
CONFIG_HELP = "TOML config file (default: the embedded default)"


def parser() -> argparse.ArgumentParser:
    """The whole command line (the tests walk it: every option with a default shows it)."""
    top = _Parser(prog="smtp-offload", description=DESCRIPTION, epilog=EPILOG)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                     help="print the version (smtp-offload X.Y.Z) and exit")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    p = sub.add_parser("serve", help="run the SMTP proxy and its link server",
                       description="Run the SMTP proxy and its link server until SIGTERM or SIGINT.")
    p.add_argument("--config", "-c", metavar="PATH", help=CONFIG_HELP)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("check-config", help="validate a config file, check its stores, show the effective config",
                       description="Validate a config file and check that its network stores are reachable.")
    p.add_argument("--config", "-c", metavar="PATH", help=CONFIG_HELP)
    p.add_argument("--show", action="store_true",
                   help="print the effective config as TOML, secrets masked (the summary as comments)")
    p.add_argument("--json", action="store_true", help="with --show: print JSON instead (the summary to stderr)")
    p.add_argument("--offline", action="store_true", help="validate the file only; do not contact the storage")
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("scan", help="dry run: print the verdict for every attachment of a message file",
                       description="Dry run: the verdict for every attachment, the projected size after\n"
                                   "offload and the reply the proxy would give. Stores and sends nothing.",
                       epilog=SCAN_EPILOG)
    p.add_argument("file", help="an RFC 5322 message (.eml)")
    p.add_argument("--config", "-c", metavar="PATH", help=CONFIG_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_scan)
    p = sub.add_parser("links", help="refresh, revoke or show a download link",
                       description="Refresh, revoke or show a download link.")
    p.set_defaults(func=cmd_links)
    links = p.add_subparsers(dest="links_command", required=True, metavar="ACTION", title="actions")
    link_help = "the link as it appears in the mail (http://host/f/<token>, with /download, a query or not) or its token"
    q = links.add_parser("refresh", help="a new link to the same file (expired tokens are fine)")
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("link", nargs="?", metavar="URL-OR-TOKEN", help=link_help)
    g.add_argument("--token", help="the token of an existing link (the part after /f/), or the whole link")
    g.add_argument("--key", help="the storage key of the file")
    q.add_argument("--ttl", type=int, help="lifetime in seconds (default: links.ttl_seconds)")
    q = links.add_parser("revoke", help="make one link stop working, for every server")
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("link", nargs="?", metavar="URL-OR-TOKEN", help=link_help)
    g.add_argument("--token", help="the token of the link, or the whole link")
    g.add_argument("--token-id", help="the link's token_id (from the audit log or `links show`)")
    q = links.add_parser("show", help="a link's expiry, revocation and file metadata")
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("link", nargs="?", metavar="URL-OR-TOKEN", help=link_help)
    g.add_argument("--token", help="the token of the link, or the whole link")
    for q in links.choices.values():
        q.add_argument("--config", "-c", metavar="PATH", help=CONFIG_HELP)
        q.set_defaults(key=None, ttl=None, token_id=None)
    p = sub.add_parser("portal", help="upload links for customers: create, show, revoke, sweep",
                       description="Upload links for customers: create, show, revoke, sweep.")
    p.set_defaults(func=cmd_portal)
    portal = p.add_subparsers(dest="portal_command", required=True, metavar="ACTION", title="actions")
    q = portal.add_parser("create", help="a new upload link for a case (prints JSON: uploadUrl, expiresAt, sessionId)")
    q.add_argument("--case", required=True, metavar="ID", help="the case id (in the delivered message's subject)")
    q.add_argument("--to", required=True, metavar="ADDRESS", help="where the files go: the case's mailbox address")
    q.add_argument("--customer", metavar="ID", help="the customer id (storage tenant; sessions_per_customer)")
    q.add_argument("--subject", help="the delivered message's subject (the case id is added)")
    q.add_argument("--in-reply-to", metavar="MESSAGE-ID", help="thread the delivered message to this one")
    q.add_argument("--ttl", type=int, metavar="SECONDS", help="lifetime (default: portal.ttl_seconds)")
    q.add_argument("--url-only", action="store_true", help="print only the link")
    for name, text in (("show", "a session's state and files"), ("revoke", "withdraw a session's link")):
        q = portal.add_parser(name, help=text)
        q.add_argument("session", metavar="SESSION-ID")
    portal.add_parser("sweep", help="deliver what is due and remove expired sessions now (the servers do it too)")
    for q in portal.choices.values():
        q.add_argument("--config", "-c", metavar="PATH", help=CONFIG_HELP)
    p = sub.add_parser("quarantine", help="files stripped as spoofed or blocked and held: list, show, release, "
                                          "delete, purge",
                       description="Files stripped as spoofed or blocked and held by policy.quarantine.")
    p.set_defaults(func=cmd_quarantine)
    quarantine = p.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION", title="actions")
    q = quarantine.add_parser("list", help="every held file: id, received, from, to, file, verdict, reason")
    q.add_argument("--json", action="store_true", help="print a JSON array with every field")
    q = quarantine.add_parser("show", help="one held file's metadata (JSON)")
    q.add_argument("id", metavar="ID", help="the quarantine id (from the notice in the message, or from list)")
    q = quarantine.add_parser("release", help="send the file to the original recipients, threaded to their message")
    q.add_argument("id", metavar="ID", help="the quarantine id")
    q.add_argument("--force", action="store_true", help="send it again although it was released already")
    q = quarantine.add_parser("delete", help="delete a held file now")
    q.add_argument("id", metavar="ID", help="the quarantine id")
    quarantine.add_parser("purge", help="delete what is past policy.quarantine_retention_days now (servers do it hourly)")
    for q in quarantine.choices.values():
        q.add_argument("--config", "-c", metavar="PATH", help=CONFIG_HELP)
    p = sub.add_parser("send-samples", help="send a set of realistic sample messages to a running proxy",
                       description="Send eleven realistic sample messages to a running proxy and show each reply;\n"
                                   "with --sink, also what the proxy relayed and decided per attachment.")
    p.add_argument("--server", default="127.0.0.1:2525", help="the proxy's SMTP address (host:port)")
    p.add_argument("--to", default="support@localhost", help="recipient (in one of the proxy's accepted domains)")
    p.add_argument("--from", dest="sender", default="samples@smtp-offload.test", help="envelope sender")
    p.add_argument("--sink", metavar="HOST:PORT",
                   help="start a recording SMTP server here and show the proxy's decisions read back from it")
    p.add_argument("--save", metavar="DIR", type=Path,
                   help="with --sink: write each relayed message as DIR/NN-<sample>.eml")
    p.add_argument("--scale", type=float, default=1.0, help="shrink the big files (e.g. 0.1)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_send_samples, usage_error=p.error)
    return top


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            args = parser().parse_args(argv)
        except SystemExit:  # --help, --version, usage errors: flush where a closed pipe is caught
            sys.stdout.flush()
            raise
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit where it could not be caught
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly with the status of a process killed by
        # SIGPIPE, as `yes | head` does. stdout goes to /dev/null so that the interpreter's own
        # flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return status


if __name__ == "__main__":
    sys.exit(main())
