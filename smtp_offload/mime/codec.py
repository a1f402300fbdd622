"""Content-Transfer-Encoding: read the header, decode a part's payload, encode a new one."""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
import tempfile

import pybase64

from .. import spool
from ..spool import FileBytes, SpoolWriter
from .headers import first_token

_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]")
# A "=" pad followed, after anything but alphabet characters, by more base64: a client that
# keeps decoding past the pad shows bytes that binascii.a2b_base64 (which stops there) drops.
_PAD_THEN_MORE = re.compile(rb"=[^A-Za-z0-9+/]*[A-Za-z0-9+/]")
_SEPARATOR = re.compile(r'[\s;,"]')


def parse_cte(value: str | None) -> str:
    """The mechanism a Content-Transfer-Encoding header names, lower-cased ("7bit" when absent).

    RFC 2045 allows comments ("base64 (sent by X)"), and senders add white space, quotes or a
    trailing ";". Readers take the first token, so we do too; a comment separates tokens
    ("base(x)64" is no mechanism). Whatever is not a known mechanism is judged as opaque bytes
    by the caller, which is the safe reading of anything odd.
    """
    if value is None:
        return "7bit"
    mechanism = first_token(value, _SEPARATOR.match).lower() or "7bit"
    # "8-bit", "7bits": typos of the identity encodings. Every reader shows their raw bytes
    # (decoded as nothing, or as an opaque file), which is what we judge: no need to call
    # the sender's text body an unknown encoding and strip it.
    return _IDENTITY_TYPOS.get(mechanism, mechanism)


_IDENTITY_TYPOS = {"7-bit": "7bit", "8-bit": "8bit", "7bits": "7bit", "8bits": "8bit",
                   "7-bits": "7bit", "8-bits": "8bit"}


def decode(body: bytes | memoryview, cte: str) -> bytes:
    """Decode a transfer-encoded body leniently, as the most lenient mail clients do.

    We must judge at least every byte a recipient's client would show, so malformed base64
    (bad padding, stray characters, a "=" pad in mid-stream followed by more data) is decoded
    as far as it goes rather than rejected. A memoryview of the message avoids copying a large
    encoded body before decoding it.
    """
    if cte == "base64":
        if _PAD_THEN_MORE.search(body) is None:
            try:
                return binascii.a2b_base64(body)
            except binascii.Error:
                pass
        return _b64_runs(body)
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    return bytes(body)


def _b64_runs(body: bytes | memoryview) -> bytes:
    """Skip characters outside the alphabet and decode each "="-terminated run on its own.
    (Where binascii.a2b_base64 succeeds above it gives exactly this: it is the fast path.)"""
    return b"".join(_b64_run(run) for run in _B64_JUNK.sub(b"", body).split(b"="))


def _b64_run(run: bytes) -> bytes:
    if len(run) % 4 == 1:  # a lone trailing character carries no whole byte
        run = run[:-1]
    return binascii.a2b_base64(run + b"=" * (-len(run) % 4)) if run else b""


class Decoder:
    """decode() in pieces: feed() the encoded body chunk by chunk, then end(); the outputs
    joined are exactly decode(whole body, cte), however the body is cut. For bodies too large
    to hold (a spooled message's attachment): only a few bytes are held between chunks."""

    def feed(self, chunk: bytes) -> bytes:
        return bytes(chunk)

    def end(self) -> bytes:
        return b""


# bytes.translate deletes these in C: everything but the alphabet and the pad.
_B64_DELETE = bytes(sorted(set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")))


class _Base64Decoder(Decoder):
    """_b64_runs in pieces: a run's whole quads are decoded as they come, the last 0-3
    characters of an unfinished run are held for the next chunk."""

    def __init__(self) -> None:
        self.held = b""

    def feed(self, chunk: bytes) -> bytes:
        *runs, last = (self.held + bytes(chunk).translate(None, _B64_DELETE)).split(b"=")
        cut = len(last) - len(last) % 4
        self.held = last[cut:]
        # Whole quads of the alphabet only (translate and split took the rest): pybase64's
        # SIMD decoder gives what a2b_base64 gives here, 20x faster (a 25 MiB file: 4 ms, not 75).
        return b"".join([_b64_run(r) for r in runs] + [pybase64.b64decode(last[:cut], validate=True)])

    def end(self) -> bytes:
        held, self.held = self.held, b""
        return _b64_run(held)


_QP_LONG_LINE = 64 * 1024  # a line longer than this (no LF in it) is decoded in pieces too


class _QuotedPrintableDecoder(Decoder):
    """binascii.a2b_qp in pieces. After an LF its parser is always between escapes ("=\r"
    skips to the next LF, and every other escape is at most three bytes without one), so the
    body is decoded up to the last LF of what has come. Within a long line it is cut before
    the last run of "=" when that is within the last two bytes (no escape spans such a cut).
    `skipping`: the held-back line is inside a "=\r" soft break, dropped up to the next LF."""

    def __init__(self, long_line: int = _QP_LONG_LINE) -> None:
        self.held = b""
        self.skipping = False
        self.long_line = long_line

    def feed(self, chunk: bytes) -> bytes:
        data, self.held = self.held + bytes(chunk), b""
        if self.skipping:
            lf = data.find(b"\n")
            if lf < 0:
                return b""
            data, self.skipping = data[lf + 1:], False
        cut = data.rfind(b"\n") + 1
        out = binascii.a2b_qp(data[:cut]) if cut else b""
        rest = data[cut:]
        if len(rest) > self.long_line:
            more, rest = self._long_line(rest)
            out += more
        self.held = rest
        return out

    def _long_line(self, line: bytes) -> tuple[bytes, bytes]:
        """(decoded, held) for a line with no LF, cut where no escape spans the cut."""
        last = line.rfind(b"=")
        at = len(line)
        if last >= len(line) - 2:  # an escape may start there: cut before that run of "="
            at = len(line[:last + 1].rstrip(b"="))
        if at == 0:  # nothing but "=": hold it (a sender's pathology, bounded by the message)
            return b"", line
        head = line[:at]
        out = binascii.a2b_qp(head)
        # A "=\r" in it skips to the next LF: an LF appended then adds nothing to the output.
        self.skipping = len(binascii.a2b_qp(head + b"\n")) == len(out)
        return out, line[at:]

    def end(self) -> bytes:
        held, self.held = self.held, b""
        return b"" if self.skipping else binascii.a2b_qp(held)


def decoder(cte: str) -> Decoder:
    """A streaming decoder for `cte` (identity for anything but base64 and quoted-printable,
    as decode())."""
    if cte == "base64":
        return _Base64Decoder()
    if cte == "quoted-printable":
        return _QuotedPrintableDecoder()
    return Decoder()


DECODE_WINDOW = 256 * 1024


def decode_file(data: FileBytes, start: int, end: int, cte: str) -> tuple[FileBytes, str]:
    """decode(data[start:end], cte) streamed into a new spool file beside `data` (never held
    whole), and its sha256 (hex), hashed on the way. The caller closes the file."""
    dec, digest, eight_bit = decoder(cte), hashlib.sha256(), False
    out = SpoolWriter(data.directory or tempfile.gettempdir())
    try:
        # A quarter of a read window at a time: several sessions decode at once, each holding
        # a few copies of its window (read, translated, decoded).
        window = min(spool.WINDOW, DECODE_WINDOW)
        for chunk in itertools.chain(data.chunks(start, end, window), [None]):
            piece = dec.end() if chunk is None else dec.feed(chunk)
            out.write(piece)
            digest.update(piece)
            eight_bit = eight_bit or not piece.isascii()
    except BaseException:
        out.abort()
        raise
    return out.finish(eight_bit=eight_bit), digest.hexdigest()


def encode(data: bytes, cte: str) -> bytes:
    """Encode with CRLF line ends; the result never ends with a line break."""
    if cte == "base64":
        raw = base64.encodebytes(data).replace(b"\n", b"\r\n")
        return raw.rstrip(b"\r\n")
    if cte == "quoted-printable":
        crlf = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return binascii.b2a_qp(crlf, istext=True).rstrip(b"\r\n") if crlf else b""
    return data
