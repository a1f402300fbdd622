"""Places files hide that are not ordinary attachments, each with an explicit policy.

- uuencoded blocks in a text body ("begin 644 name" ... "end"): decoded and judged like an
  attachment; a bad one refuses the message (cutting it out of the text would garble it).
- Outlook's winmail.dat (application/ms-tnef): a container we do not parse, so its files
  cannot be judged: "strip" (default), "keep" or "reject" by policy.on_tnef.
- message/partial: a fragment of a message split across several mails, which no hop can
  inspect whole: refused by default (policy.on_partial).
- multipart/encrypted, application/pkcs7-mime: encrypted content cannot be inspected:
  "keep" (default) or "reject" by policy.on_encrypted. Opaque S/MIME signed data is unwrapped
  and its content judged like an attached message; a blob that cannot be unwrapped counts as
  encrypted.
- multipart/signed: inspected like any other message; a change breaks the sender's
  signature, which the notice and the decision header make visible.
"""

from __future__ import annotations

import binascii
import re

from .model import Part

_BEGIN = re.compile(rb"^begin [0-7]{3,4} ([^\r\n]+)\r?$", re.MULTILINE)
MAX_UU_FILES = 20


def uuencoded_files(text: bytes) -> list[tuple[str, bytes]]:
    """(name, decoded bytes) of each uuencoded block in a text body."""
    out = []
    for m in _BEGIN.finditer(text):
        if len(out) >= MAX_UU_FILES:
            break
        end = text.find(b"\nend", m.end())
        if end < 0:
            continue
        data = bytearray()
        for line in text[m.end():end].split(b"\n"):
            line = line.rstrip(b"\r")
            if not line or line in (b"`", b" "):
                continue
            try:
                data += binascii.a2b_uu(line)
            except binascii.Error:
                break  # not uuencode after all
        out.append((m.group(1).decode("utf-8", "replace").strip(), bytes(data)))
    return out


def is_tnef(part: Part) -> bool:
    return part.content_type in ("application/ms-tnef", "application/vnd.ms-tnef") or \
        (part.filename or "").lower() == "winmail.dat"


def is_partial(part: Part) -> bool:
    return part.content_type == "message/partial"


def is_encrypted(part: Part) -> bool:
    """Content that cannot be inspected: encrypted, or an S/MIME blob we could not unwrap (the
    content of an opaque signature we could is judged: mime/cms.py)."""
    return part.content_type == "multipart/encrypted" or (
        part.content_type in ("application/pkcs7-mime", "application/x-pkcs7-mime") and part.embedded is None)
