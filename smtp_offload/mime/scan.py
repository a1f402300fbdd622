"""Locate every MIME entity of a message by byte offsets, without re-serialising anything.

The message is read once, as bytes with CRLF line ends (the SMTP side normalises them first),
and described as a tree of `Part`s pointing into those bytes. Rewriting then splices the
original bytes, so what we do not change is delivered exactly as it came.

Header blocks are decoded with the stdlib's compat32 header parser, which is lazy (no eager
RFC 2047 decoding) and cheap; bodies are never handed to the email package.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import email.utils

from ..model import Part

MAX_DEPTH = 50  # deeper nesting is treated as an opaque leaf, never recursed into
CRLF = b"\r\n"
_header_parser = email.parser.HeaderParser(policy=email.policy.compat32)


def parse(data: bytes) -> Part:
    return _entity(data, 0, len(data), "", 0, False, "text/plain")


def header_end(data: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of the header block, start of the body) for the entity at start."""
    if data.startswith(CRLF, start, end):  # no headers at all
        return start, start + 2
    i = data.find(b"\r\n\r\n", start, end)
    if i < 0:
        return end, end
    return i + 2, i + 4


def headers(data: bytes, start: int, stop: int):
    """The header block as a compat32 Message (headers only, no body).

    Raw 8-bit header text (RFC 6532, or legacy senders) is read as UTF-8, tolerating a few
    broken sequences (senders truncate long names mid-character); text that is clearly not
    UTF-8 is read as Latin-1. That is what mail clients display.
    """
    block = data[start:stop]
    text = block.decode("utf-8", "replace")
    if text.count("\ufffd") > 3:
        text = block.decode("latin-1")
    return _header_parser.parsestr(text)


def _decode_words(value: str) -> str:
    # Outlook and others put RFC 2047 encoded-words in filename parameters (not allowed by
    # RFC 2231, but common): decode them so the name we judge is the name users see.
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value


def _clean(value) -> str:
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
        value = email.utils.collapse_rfc2231_value(value)
    return _decode_words(str(value)).replace("\r", "").replace("\n", "").replace("\x00", "")


def _entity(data: bytes, start: int, end: int, path: str, depth: int, in_message: bool, default_type: str) -> Part:
    hend, bstart = header_end(data, start, end)
    msg = headers(data, start, hend)
    ctype = (msg.get_content_type() if msg.get("content-type") else default_type).lower()
    params: dict[str, str] = {}
    for key, val in (msg.get_params(header="content-type") or [])[1:]:
        params.setdefault(key.lower(), _clean(val))
    disp_raw = msg.get("content-disposition")
    disposition = str(disp_raw).split(";", 1)[0].strip().lower() or None if disp_raw else None
    filename = msg.get_filename()
    if filename is None:
        filename = msg.get_param("name", header="content-type")
    filename = _clean(filename).strip() if filename is not None else None
    cte = str(msg.get("content-transfer-encoding", "7bit")).strip().lower() or "7bit"
    part = Part(
        path=path, start=start, end=end, header_end=hend, body_start=bstart, body_end=end,
        content_type=ctype, params=params, disposition=disposition, filename=filename or None,
        cte=cte, in_message=in_message,
    )
    if filename == "" and disposition is None:
        part.disposition = "attachment"
    if depth >= MAX_DEPTH:
        return part
    if ctype.startswith("multipart/") and params.get("boundary"):
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        boundary = params["boundary"].encode("utf-8", "surrogateescape")
        for i, (cstart, cend, dstart) in enumerate(split_multipart(data, bstart, end, boundary)):
            cpath = f"{path}.{i + 1}" if path else str(i + 1)
            child = _entity(data, cstart, cend, cpath, depth + 1, in_message, child_default)
            child.delim_start = dstart
            part.children.append(child)
    elif ctype == "message/rfc822" and cte in ("7bit", "8bit", "binary") and bstart < end:
        # An attached message is a container: judge the files inside it, not the message as a file.
        inner = _entity(data, bstart, end, f"{path}.1" if path else "1", depth + 1, True, "text/plain")
        part.children.append(inner)
    return part


def split_multipart(data: bytes, body_start: int, end: int, boundary: bytes) -> list[tuple[int, int, int]]:
    """(start, end, delimiter start) of each body part between body_start and end.

    A delimiter is "--boundary" at the start of a line, followed only by optional white
    space (or "--" for the close delimiter). The CRLF before a delimiter belongs to it
    (RFC 2046 5.1.1), so it is where the previous part ends. A missing close delimiter
    lets the last part run to the end of the entity.
    """
    delim = b"--" + boundary
    out: list[tuple[int, int, int]] = []
    pos = body_start
    cur: tuple[int, int] | None = None  # (part start, its delimiter start)
    while True:
        i = data.find(delim, pos, end)
        if i < 0:
            break
        if i != body_start and data[i - 2:i] != CRLF:
            pos = i + 1
            continue
        j = i + len(delim)
        closing = data.startswith(b"--", j, end)
        k = j + 2 if closing else j
        eol = data.find(CRLF, k, end)
        line_end = end if eol < 0 else eol
        if data[k:line_end].strip(b" \t"):
            pos = i + 1  # "--boundaryX": a longer boundary, not ours
            continue
        dstart = i - 2 if i != body_start else i
        if cur is not None:
            out.append((cur[0], dstart, cur[1]))
            cur = None
        if closing:
            break
        cur = (min(line_end + 2, end), dstart)
        pos = cur[0]
    if cur is not None:
        out.append((cur[0], end, cur[1]))
    return out


def root_header(data: bytes, root: Part, name: str) -> str | None:
    value = headers(data, root.start, root.header_end).get(name)
    return None if value is None else str(value).strip()
