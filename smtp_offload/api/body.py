"""A request body on its way to the pipeline: streamed to a private spool file, base64 decoded
on the fly, hashed and counted, refused (413) as soon as it passes the limit.

The body is never held whole in memory while it arrives; it is read once, into one bytes
object, when it is judged (inspect/ works on bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .keys import Refused

CHUNK = 256 * 1024


@dataclass(frozen=True)
class Spooled:
    path: str
    size: int
    sha256: str

    def read(self) -> bytes:
        with open(self.path, "rb") as fh:
            return fh.read()

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Budget:
    """Bytes of bodies held in memory at once, all calls together (api.max_inflight_bytes):
    past it, 503 with Retry-After. One body may always go, however large."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def fits(self, size: int) -> bool:
        return not self.used or self.used + size <= self.limit

    def hold(self, size: int) -> None:
        if not self.fits(size):
            raise Refused(503, "busy", "too many files are being processed right now; retry shortly",
                          {"Retry-After": "5"})
        self.used += size

    def release(self, size: int) -> None:
        self.used -= size


def too_large(limit: int) -> Refused:
    return Refused(413, "too_large", f"the file is larger than this API accepts ({limit} bytes)")


class _Base64:
    """Incremental base64: whitespace (line breaks) ignored, complete quads decoded as they come."""

    def __init__(self) -> None:
        self.pending = b""
        self.ended = False  # a quad with "=" padding was the last: nothing may follow it

    def feed(self, chunk: bytes) -> bytes:
        data = self.pending + chunk.translate(None, b" \t\r\n")
        if self.ended and data:
            raise self._invalid()
        cut = len(data) - len(data) % 4
        self.pending = data[cut:]
        whole = data[:cut]
        if b"=" in whole[:-4] or (b"=" in whole and self.pending):
            raise self._invalid()  # padding inside the data, wherever the chunks were cut
        self.ended = whole.endswith(b"=")
        return self._decode(whole)

    def close(self) -> bytes:
        if self.pending:
            raise Refused(400, "bad_request", "the body is not valid base64 (its length is not a multiple of 4)")
        return b""

    @staticmethod
    def _invalid() -> Refused:
        return Refused(400, "bad_request", "the body is not valid base64 (Content-Transfer-Encoding: base64)")

    @classmethod
    def _decode(cls, data: bytes) -> bytes:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise cls._invalid() from None


async def spool(chunks: AsyncIterator[bytes], *, limit: int, base64_encoded: bool, directory: str | None,
                declared_length: int | None = None) -> Spooled:
    """Write the body to a new 0600 file in `directory`; Refused(413) past `limit` decoded bytes
    (at once when Content-Length already says so), Refused(400) for bad base64."""
    # base64 is 4/3 longer, plus line breaks (76-character MIME lines, 64-character PEM ones...):
    # a body that cannot fit even so is refused unread, and no body may run past it (whitespace).
    most = limit * 3 // 2 + 1024 if base64_encoded else limit
    if declared_length is not None and declared_length > most:
        raise too_large(limit)
    fd, path = tempfile.mkstemp(prefix="api-", suffix=".spool", dir=directory or None)  # mode 0600
    digest, size = hashlib.sha256(), 0
    decoder = _Base64() if base64_encoded else None
    try:
        with os.fdopen(fd, "wb") as fh:
            received = 0
            async for chunk in chunks:
                received += len(chunk)
                if received > most:
                    raise too_large(limit)
                data = decoder.feed(chunk) if decoder else chunk
                size += len(data)
                if size > limit:
                    raise too_large(limit)
                digest.update(data)
                fh.write(data)
            if decoder:
                decoder.close()
    except BaseException:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise
    return Spooled(path, size, digest.hexdigest())
