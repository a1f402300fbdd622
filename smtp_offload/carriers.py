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
import mmap
import re

from .mime.cms import PKCS7_TYPES
from .model import Part

_BEGIN = re.compile(rb"^begin [0-7]{3,4} ([^\r\n]+)\r?$", re.MULTILINE)
MAX_UU_FILES = 20
# Each byte as the uuencode character a decoder takes it for: value (c - 32) & 63, the way
# Thunderbird's decoder reads any character (mimeenc.cpp), in the range binascii accepts.
_UU_CHARS = bytes(32 + ((c - 32) & 63) for c in range(256))


def uuencoded_files(text: bytes | mmap.mmap) -> list[tuple[str, bytes]]:
    """(name, decoded bytes) of each uuencoded block in a text body, read as Thunderbird reads
    it (mimeunty.cpp): a block runs from a "begin 644 name" line to a line starting with "end"
    in any case or with white space, the next begin line, or the end of the text, and every
    line in it is decoded, however malformed. A block that decodes to nothing is no file
    (prose that happens to say "begin 644 ..." and, later, "end of story")."""
    out: list[tuple[str, bytes]] = []
    # What every begin line holds; a find is far cheaper than the regex's scan. (find, not "in":
    # a large body is read through a memory map, whose "in" takes one byte only.)
    if text.find(b"begin ") < 0:
        return out
    for m in _BEGIN.finditer(text):
        if len(out) >= MAX_UU_FILES:
            break
        data = _decode_block(text, m.end())
        if data:
            out.append((m.group(1).decode("utf-8", "replace").strip(), data))
    return out


def _decode_block(text: bytes, pos: int) -> bytes:
    data = bytearray()
    pos = text.find(b"\n", pos) + 1  # the line after the begin line (0: there is none)
    while 0 < pos < len(text):
        eol = text.find(b"\n", pos)
        line = text[pos:len(text) if eol < 0 else eol].rstrip(b"\r")
        pos = len(text) if eol < 0 else eol + 1
        if line[:1] in (b" ", b"\t") or line[:3].lower() == b"end" or _BEGIN.match(line):
            break
        if line:
            data += _decode_line(line)
    return bytes(data)


def _decode_line(line: bytes) -> bytes:
    """One line, decoded the lenient way: the length character says how many bytes; extra
    characters are ignored and missing ones read as zero bits."""
    try:
        return binascii.a2b_uu(line)  # what uuencode writes (the fast path)
    except binascii.Error:
        count = (line[0] - 32) & 63  # bytes, six bits per character: (count * 4 + 2) // 3 characters
        return binascii.a2b_uu(line[:1 + (count * 4 + 2) // 3].translate(_UU_CHARS))


def is_tnef(part: Part) -> bool:
    return part.content_type in ("application/ms-tnef", "application/vnd.ms-tnef") or \
        (part.filename or "").lower() == "winmail.dat"


def is_partial(part: Part) -> bool:
    return part.content_type == "message/partial"


def is_encrypted(part: Part) -> bool:
    """Content that cannot be inspected: encrypted, or an S/MIME blob we could not unwrap (the
    content of an opaque signature we could is judged: mime/cms.py)."""
    return part.content_type == "multipart/encrypted" or (
        part.content_type in PKCS7_TYPES and part.embedded is None)
