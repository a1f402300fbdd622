"""The message that gives a released file to the original recipients, and its one trip downstream.

Built here with email.message (safe for composing, never for parsing mail), threaded to the
message the file was stripped from (In-Reply-To and References = its Message-ID), and sent
through the same downstream as mail, on a connection of its own, not through the proxy: the
file was judged already, and an administrator overruled the judgement.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from ..inspect import safe_display_name
from ..model import FileOutcome
from ..relay import Downstream, Reply
from ..storage.base import content_disposition, safe_filename
from ..units import human_size, when
from .records import Item

_MSGID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,250}>")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_ASCII_ADDRESS = re.compile(r"[\x21-\x7e]+@[\x21-\x7e]+")


def render(item: Item, data: bytes | None, link: FileOutcome | None, *, sender: str, by: str,
           released_at: datetime) -> bytes:
    """The file attached (`data`), or a link to it when it is too large to attach (`link`)."""
    msg = EmailMessage(policy=SMTP.clone(cte_type="7bit"))  # the downstream need not speak 8BITMIME
    msg["From"] = sender
    # The envelope says who gets it; an address the header cannot carry in 7 bits is left to it.
    shown = [r for r in item.recipients if _ASCII_ADDRESS.fullmatch(r)]
    msg["To"] = ", ".join(shown) if shown else "undisclosed-recipients:;"
    msg["Subject"] = f"Released from quarantine: {item.subject or safe_display_name(item.filename)}"
    msg["Date"] = format_datetime(released_at)
    msg["Message-ID"] = make_msgid("quarantine", sender.rpartition("@")[2] or None)
    if item.message_id and _MSGID.fullmatch(item.message_id):
        msg["In-Reply-To"] = item.message_id
        msg["References"] = item.message_id
    msg["Auto-Submitted"] = "auto-generated"  # no out-of-office replies to the quarantine sender
    msg["X-Smtp-Offload-Quarantine"] = f"id={item.id}; action=released"
    msg.set_content(_text(item, link, by, released_at))
    if data is not None:
        ctype = item.detected_type if _MEDIA_TYPE.fullmatch(item.detected_type or "") else "application/octet-stream"
        maintype, _, subtype = ctype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=safe_filename(item.filename))
        (part,) = msg.iter_attachments()
        # The email package writes a non-ASCII name as RFC 2231 `filename*` only, which some
        # clients do not read (they show "noname" or the part number): an ASCII `filename`
        # goes first, as on the link service's downloads.
        part.replace_header("Content-Disposition", _Folded("Content-Disposition", content_disposition(item.filename)))
    return msg.as_bytes()


class _Folded(str):
    """A header value written as given, folded only between its parameters: the email
    package's header objects would parse it again and keep one of the two names."""

    def __new__(cls, name: str, value: str) -> "_Folded":
        self = super().__new__(cls, value)
        self.name = name
        return self

    def fold(self, *, policy) -> str:
        # Each parameter on its own line; none is longer than the 998 a line may carry
        # (content_disposition's names are at most 150 bytes, 450 characters encoded).
        return f"{self.name}: " + (";" + policy.linesep + " ").join(self.split("; ")) + policy.linesep


def _text(item: Item, link: FileOutcome | None, by: str, released_at: datetime) -> str:
    name = safe_display_name(item.filename)
    lines = ["An administrator released a file the mail gateway had removed from a message and held in quarantine.",
             "",
             f"File:      {name} ({human_size(item.size)}, {item.detected_type})",
             f"Message:   {item.subject or '(no subject)'}",
             f"From:      {item.from_header or item.sender or '(unknown)'}",
             f"Received:  {when(item.received_at)}",
             f"Held as:   {item.verdict}: {item.reason}",
             f"Released:  by {by}, {when(released_at)}",
             f"Quarantine id: {item.id}",
             ""]
    if link is not None and link.link:
        lines += ["The file is too large to attach. Download it until "
                  f"{when(link.link_expires or 0)}:", f"  {link.link}", ""]
    else:
        lines += ["The file is attached.", ""]
    lines.append("The gateway judged this file unsafe; open it only if you expected it from this sender.")
    return "\n".join(lines) + "\n"


async def send(ds: Downstream, sender: str, recipients: tuple[str, ...], message: bytes) -> Reply:
    """The downstream's answer: its final one to DATA, or the first refusal. A recipient refused
    refuses the whole release (RSET): it is given to every original recipient or to none, so that
    what is marked released is what they all got. SmtpReplyError when the downstream could not
    be asked at all (down, timed out)."""
    try:
        reply = await ds.mail(sender, [])
        if not reply.ok:
            return reply
        for rcpt in recipients:
            reply = await ds.rcpt(rcpt)
            if not reply.ok:
                await ds.rset()
                return reply
        return await ds.data(message)
    finally:
        await ds.quit()
