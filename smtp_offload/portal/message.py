"""The message that delivers a session's files to the case, and its one trip downstream.

It is built here (not parsed: email.message is safe for composing) and sent through the
same downstream as mail, on a connection of its own: MAIL from the portal sender, RCPT the
session's address, DATA. Threaded to the case: the case id in the subject, In-Reply-To and
References when the session was given the message it answers.
"""

from __future__ import annotations

import html
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from datetime import datetime, timezone

from ..relay import Downstream, Reply
from ..units import human_size, when
from .session import FileEntry, FileState, Session
from . import words


def subject(s: Session) -> str:
    base = s.subject or "Files from the customer"
    return base if f"[Case {s.case_id}]" in base else f"[Case {s.case_id}] {base}"


def render(s: Session, files: list[FileEntry], *, sender: str, sender_name: str, now: float) -> bytes:
    accepted = [f for f in files if f.state == FileState.RECEIVED and f.link]
    refused = [f for f in files if f.state == FileState.REFUSED]
    # 7bit: names and subjects may be any language, and the downstream need not speak 8BITMIME.
    msg = EmailMessage(policy=SMTP.clone(cte_type="7bit"))
    msg["From"] = formataddr((sender_name, sender)) if sender_name else sender
    msg["To"] = s.to
    msg["Subject"] = subject(s)
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, timezone.utc))
    msg["Message-ID"] = s.message_id(sender.rsplit("@", 1)[-1])
    if s.in_reply_to:
        msg["In-Reply-To"] = s.in_reply_to
        msg["References"] = s.in_reply_to
    msg["Auto-Submitted"] = "auto-generated"  # no out-of-office replies to the portal sender
    msg["X-Smtp-Offload-Portal"] = f"session={s.id}; case={s.case_id}"
    msg.set_content(_text(s, accepted, refused))
    msg.add_alternative(_html(s, accepted, refused), subtype="html")
    return msg.as_bytes()


def _kind(f: FileEntry) -> str:
    return words.kind(f.detected_type) if f.detected_type else "file"


def _text(s: Session, accepted: list[FileEntry], refused: list[FileEntry]) -> str:
    lines = [f"The customer sent files for case {s.case_id} through the upload portal.", ""]
    if s.customer:
        lines += [f"Customer: {s.customer}", ""]
    if accepted:
        lines.append(f"Received ({len(accepted)}):")
        for f in accepted:
            lines += [f"- {f.name} ({human_size(f.size)}, {_kind(f)})", f"  {f.link}",
                      f"  link valid until {when(f.link_expires)}"]
        lines.append("")
    if refused:
        lines.append(f"Refused ({len(refused)}), not stored:")
        lines += [f"- {f.name}: {f.reason} ({f.message.removeprefix('refused: ')})" for f in refused]
        lines.append("")
    lines.append("Each file was checked by its content before it was stored.")
    return "\n".join(lines) + "\n"


def _html(s: Session, accepted: list[FileEntry], refused: list[FileEntry]) -> str:
    e = html.escape
    out = [f"<p>The customer sent files for case <b>{e(s.case_id)}</b> through the upload portal.</p>"]
    if s.customer:
        out.append(f"<p>Customer: {e(s.customer)}</p>")
    if accepted:
        out.append(f"<p>Received ({len(accepted)}):</p><ul>")
        out += [f'<li><a href="{e(f.link, quote=True)}">{e(f.name)}</a> ({e(human_size(f.size))}, {e(_kind(f))}); '
                f"link valid until {e(when(f.link_expires))}</li>" for f in accepted]
        out.append("</ul>")
    if refused:
        out.append(f"<p>Refused ({len(refused)}), not stored:</p><ul>")
        out += [f"<li>{e(f.name)}: {e(f.reason)}</li>" for f in refused]
        out.append("</ul>")
    out.append("<p>Each file was checked by its content before it was stored.</p>")
    return "<!doctype html><html><body>" + "".join(out) + "</body></html>"


async def send(ds: Downstream, sender: str, to: str, message: bytes) -> Reply:
    """The downstream's final answer to this message; SmtpReplyError when it could not be asked
    (down, timed out, spoke no SMTP). Any non-2xx answer leaves the files staged for a retry."""
    try:
        for step in (lambda: ds.mail(sender, []), lambda: ds.rcpt(to), lambda: ds.data(message)):
            reply = await step()
            if not reply.ok:
                await ds.rset()
                return reply
        return reply
    finally:
        await ds.quit()
