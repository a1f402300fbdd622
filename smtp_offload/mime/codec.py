"""Content-Transfer-Encoding: decode a part's payload, encode a new one."""

from __future__ import annotations

import base64
import binascii
import re

_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def decode(body: bytes | memoryview, cte: str) -> bytes:
    """Decode a transfer-encoded body leniently, as mail clients do.

    Malformed base64 (bad padding, stray characters) is decoded as far as it goes rather
    than rejected: we must judge the bytes a recipient's client would show. A memoryview
    of the message avoids copying a large encoded body before decoding it.
    """
    if cte == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            clean = _B64_JUNK.sub(b"", body)
            clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
            return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    return bytes(body)


def encode(data: bytes, cte: str) -> bytes:
    """Encode with CRLF line ends; the result never ends with a line break."""
    if cte == "base64":
        raw = base64.encodebytes(data).replace(b"\n", b"\r\n")
        return raw.rstrip(b"\r\n")
    if cte == "quoted-printable":
        crlf = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return binascii.b2a_qp(crlf, istext=True).rstrip(b"\r\n") if crlf else b""
    return data
