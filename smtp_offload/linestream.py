"""SMTP's line rules applied to a message that comes (or goes) in chunks, with exactly the
result of applying them to the whole message at once.

A chunk edge can fall anywhere: between the CR and LF of a line end, or between a line end
and the dot that starts the next line. Each function here takes what it needs of the bytes
before the edge (the last two, or whether a CR is still waiting for its LF), so a 36 MB
message is transformed a window at a time and never held whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

LINE_START = b"\r\n"  # what precedes the first byte of a message: a line begins there


def unstuff(before: bytes, seg: bytes) -> bytes:
    """`seg` with the transparency dot of every line removed (RFC 5321 4.5.2): what
    `(before + seg).replace(b"\\r\\n.", b"\\r\\n")` leaves of seg, where `before` is the last
    two bytes that came before it (LINE_START at the start of the message)."""
    out = seg.replace(b"\r\n.", b"\r\n")
    # A match across the edge starts in `before`; "\r\n." cannot overlap itself, so a match
    # inside seg never involves its first two bytes when one of these holds.
    if before == b"\r\n" and seg[:1] == b".":
        return out[1:]
    if before[-1:] == b"\r" and seg[:2] == b"\n.":
        return b"\n" + out[2:]
    return out


def stuff(before: bytes, seg: bytes) -> bytes:
    """`seg` dot-stuffed: a dot doubled at every line start (the inverse of unstuff)."""
    out = seg.replace(b"\r\n.", b"\r\n..")
    if before == b"\r\n" and seg[:1] == b".":
        return b"." + out
    if before[-1:] == b"\r" and seg[:2] == b"\n.":
        return b"\n." + out[1:]
    return out


def last_two(before: bytes, seg: bytes) -> bytes:
    """The last two bytes of before + seg, without joining them."""
    return seg[-2:] if len(seg) >= 2 else (before + seg)[-2:]


class CrlfStream:
    """Bare CR and bare LF become CRLF, chunk by chunk: the same bytes as
    `scan.normalize_line_endings` without its NUL removal (the caller drops NULs first when it
    wants that). A CR at the end of a chunk waits for the next one: it may be a CRLF's half."""

    def __init__(self) -> None:
        self._cr = False  # the previous chunk ended with a CR not yet written

    def feed(self, seg: bytes, clean: bool = False) -> bytes:
        """seg normalised; `clean`: the caller already knows seg has no bare CR or LF of its own
        (its counts of CR, LF and CRLF agree), which spares counting them again."""
        if clean and not self._cr:
            return seg
        if self._cr:
            seg = b"\r" + seg
            self._cr = False
        if seg.endswith(b"\r"):
            seg = seg[:-1]
            self._cr = True
        crlf = seg.count(b"\r\n")
        if seg.count(b"\r") == crlf and seg.count(b"\n") == crlf:
            return seg  # the everyday case: nothing to change, nothing copied
        return seg.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")

    def end(self) -> bytes:
        """What is still owed at the end of the message: a last bare CR's line end."""
        owed, self._cr = (b"\r\n" if self._cr else b""), False
        return owed


def data_block_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The DATA block for a message given in chunks, chunk by chunk: CRLF line ends,
    dot-stuffed, ending in CRLF, then the final ".\\r\\n". The same bytes as
    relay.client._data_block(b"".join(chunks))."""
    lines = CrlfStream()
    before = LINE_START
    empty = True
    for chunk in chunks:
        seg = lines.feed(chunk)
        if seg:
            yield stuff(before, seg)
            before = last_two(before, seg)
            empty = False
    tail = lines.end()
    if tail:
        before, empty = tail, False
    if empty or before != b"\r\n":
        tail += b"\r\n"  # the last line is ended before the terminator
    yield tail + b".\r\n"
