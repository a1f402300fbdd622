"""A header block as byte offsets: one model for every reader of raw header fields
(mime/rewrite.py, mime/scan.py, auth.py), and the first token of a header value.

Lines end at CRLF only: a bare CR or LF stays inside its line, as in every caller before this
module (the SMTP side normalises line ends before the MIME structure is read; auth reads the
message as it arrived). The compat32 reading of a header block (scan.headers) is separate:
it decodes values, this model only says where each field is.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

CRLF = b"\r\n"
_FOLD_LINE = (b" ", b"\t")  # what a continuation line starts with


class Field(NamedTuple):
    """One header field: its first line and the continuation lines after it. (A tuple: every
    message's header block is split into these on the way in, so making one must be cheap.)"""

    # Lower-cased text before the field's first colon (on any of its lines), white space stripped
    # at both ends. A field without a colon (a junk line) is one all the same, as it is relayed
    # as it came: named by its whole first line.
    name: str
    raw: bytes  # data[start:end]: the whole field, its line breaks included (the last line may have none)
    start: int
    end: int

    @property
    def colon(self) -> bool:
        """Does the first line have a colon (is this a field at all, not a junk line)?"""
        eol = self.raw.find(CRLF)
        return b":" in (self.raw if eol < 0 else self.raw[:eol])

    @property
    def value(self) -> bytes:
        """Everything after the first colon, continuation lines and line breaks included
        (b"" when there is no colon)."""
        return self.raw.partition(b":")[2]


def fields(data: bytes, start: int = 0, stop: int | None = None) -> list[Field]:
    """The header fields from `start` up to `stop` or to the first empty line (the end of a
    header block), whichever comes first.

    A line starting with SP or HTAB continues the field before it (the first line of the
    block starts a field even when it starts with white space); any other line starts a field,
    with or without a colon.
    """
    stop = len(data) if stop is None else stop
    if start >= stop or data.startswith(CRLF, start, stop):
        return []
    blank = data.find(b"\r\n\r\n", start, stop)  # the empty line that ends the block
    end = stop if blank < 0 else blank + 2
    out: list[Field] = []
    first, pos = start, start  # where the current field starts; where the current line starts
    # Split in C, then walk the lines by their lengths: this runs for every message.
    for line in data[start:end].split(CRLF):
        if pos >= end:
            break
        if pos != first and line[:1] in _FOLD_LINE:
            pos += len(line) + 2
            continue
        if pos != first:
            out.append(_field(data[first:pos], first, pos))
            first = pos
        pos += len(line) + 2
    pos = min(pos, end)
    out.append(_field(data[first:pos], first, pos))
    return out


def _field(raw: bytes, start: int, end: int) -> Field:
    name, colon, _ = raw.partition(b":")
    if not colon:
        name = raw.split(CRLF, 1)[0]
    # bytes.lower(): only ASCII letters change, so the name encodes back to the bytes read.
    return Field(name.strip().lower().decode("latin-1"), raw, start, end)


def after_comment(value: str, i: int) -> int:
    """The index after the (nested) comment that starts at value[i] == "(" (RFC 5322 3.2.2);
    a quoted-pair ("\\)") does not close it, and an unclosed comment runs to the end."""
    depth = 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def first_token(value: str, separator: Callable[[str], object],
                skip: Callable[[str], object] | None = None) -> str:
    """The first token of a header value as readers take it: leading characters for which
    `skip` (default: `separator`) is true and comments are passed over; the token ends at a
    separator or where a comment starts ("base(x)64" is "base"). "" when nothing is left."""
    skip = skip or separator
    i, n = 0, len(value)
    while i < n and (value[i] == "(" or skip(value[i])):
        i = after_comment(value, i) if value[i] == "(" else i + 1
    j = i
    while j < n and value[j] != "(" and not separator(value[j]):
        j += 1
    return value[i:j]
