"""Content-Transfer-Encoding: read the header, decode a part's payload, encode a new one."""

from __future__ import annotations

import base64
import binascii
import re

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
    """Skip characters outside the alphabet and decode each "="-terminated run on its own."""
    out = []
    for run in _B64_JUNK.sub(b"", body).split(b"="):
        if len(run) % 4 == 1:  # a lone trailing character carries no whole byte
            run = run[:-1]
        if run:
            out.append(binascii.a2b_base64(run + b"=" * (-len(run) % 4)))
    return b"".join(out)


def encode(data: bytes, cte: str) -> bytes:
    """Encode with CRLF line ends; the result never ends with a line break."""
    if cte == "base64":
        raw = base64.encodebytes(data).replace(b"\n", b"\r\n")
        return raw.rstrip(b"\r\n")
    if cte == "quoted-printable":
        crlf = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return binascii.b2a_qp(crlf, istext=True).rstrip(b"\r\n") if crlf else b""
    return data
