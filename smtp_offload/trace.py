"""Headers this hop prepends: a Received line and the machine-readable decision headers.

Decision header format (version 1), one summary and one line per attachment:

    X-Smtp-Offload: v=1; id=<queue id>; action=unchanged|rewritten; kept=N; offloaded=N; stripped=N
    X-Smtp-Offload-Attachment: v=1; n=<index>; part=<MIME part path>; verdict=<keep|offload|empty|spoofed|blocked>;
        size=<decoded bytes>; declared=<type>; detected=<type>; sha256=<hex>; expires=<unix time>;
        name*=UTF-8''<percent-encoded name>; reason="<text>"

Values are ASCII by construction (names use RFC 2231 percent-encoding), so a file name can
never inject a header line.
"""

from __future__ import annotations

import email.utils
import re
import time
import urllib.parse

from .model import FileOutcome, Verdict

_UNSAFE = re.compile(r"[^\x21-\x7e]")
_VERDICTS = tuple(Verdict)
_date: tuple[int, str] = (-1, "")  # the Received date of the current second (formatdate is not cheap)


def _token(value: str, limit: int = 255) -> str:
    return _UNSAFE.sub("_", value)[:limit] or "_"


def _fold(fields: list[str]) -> str:
    """Join `; `-separated fields, folding lines before 78 characters where possible."""
    lines, cur = [], ""
    for f in fields:
        piece = f if not cur else f"; {f}"
        if cur and len(cur) + len(piece) > 76:
            lines.append(cur + ";")
            cur = f
        else:
            cur += piece
    lines.append(cur)
    return "\r\n\t".join(lines)


def received(*, helo: str, client_ip: str, hostname: str, protocol: str, queue_id: str,
             recipients: tuple[str, ...], now: float | None = None) -> bytes:
    # "for" only with a single recipient: naming all recipients would disclose Bcc's.
    rcpt = f"\r\n\tfor <{_token(recipients[0])}>" if len(recipients) == 1 else ""
    line = (f"Received: from {_token(helo or 'unknown', 200)} ([{_token(client_ip, 64)}])\r\n"
            f"\tby {_token(hostname, 200)} (smtp-offload) with {protocol} id {queue_id}{rcpt};\r\n"
            f"\t{_received_date(now)}\r\n")
    return line.encode("ascii")


def _received_date(now: float | None) -> str:
    global _date
    if now is not None:
        return email.utils.formatdate(now, usegmt=True)
    second = int(time.time())
    if _date[0] != second:
        _date = (second, email.utils.formatdate(second, usegmt=True))
    return _date[1]


def decision_headers(attachments: tuple[FileOutcome, ...], queue_id: str, changed: bool) -> bytes:
    count = dict.fromkeys(_VERDICTS, 0)
    offloaded = 0
    for a in attachments:  # one pass (this runs for every message, most with no attachment)
        count[a.verdict] += 1
        offloaded += a.verdict is Verdict.OFFLOAD and bool(a.link)
    stripped = len(attachments) - count[Verdict.KEEP] - count[Verdict.OFFLOAD]
    summary = ["v=1", f"id={queue_id}", f"action={'rewritten' if changed else 'unchanged'}",
               f"kept={count[Verdict.KEEP]}", f"offloaded={offloaded}",
               f"stripped={stripped + count[Verdict.OFFLOAD] - offloaded}"]
    out = [f"X-Smtp-Offload: {_fold(summary)}\r\n"]
    for n, a in enumerate(attachments, 1):
        f = a.file
        fields = ["v=1", f"n={n}", f"part={f.part.path or '0'}", f"verdict={a.verdict.value}",
                  f"size={f.size}", f"declared={_token(f.declared_type, 100)}",
                  f"detected={_token(f.judgement.detected_type, 100)}", f"sha256={f.sha256}"]
        if a.link_expires:
            fields.append(f"expires={a.link_expires}")
        if a.offload_failed:
            fields.append("offload=failed")
        fields.append("name*=UTF-8''" + urllib.parse.quote(a.name, safe="")[:600])
        reason = _UNSAFE.sub(" ", a.reason).replace('"', "'").replace("\\", "/")[:200]
        fields.append(f'reason="{reason}"')
        out.append(f"X-Smtp-Offload-Attachment: {_fold(fields)}\r\n")
    return "".join(out).encode("ascii")
