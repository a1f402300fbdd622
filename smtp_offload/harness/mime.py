"""Build raw MIME messages byte by byte (the harness and the tests control every byte: no email package)."""

from __future__ import annotations

import base64
import itertools

CRLF = b"\r\n"
_ids = itertools.count(1)


def entity(headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = b"".join(f"{k}: {v}".encode("utf-8") + CRLF for k, v in headers)
    return head + CRLF + body


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", CRLF).rstrip(CRLF)


def text(body: str = "Hello,\r\nplease see the attached files.\r\nRegards\r\n", subtype: str = "plain",
         charset: str = "utf-8", cte: str = "7bit") -> bytes:
    raw = body.encode(charset)
    if cte == "base64":
        raw = b64(raw)
    elif cte == "quoted-printable":
        import quopri
        raw = quopri.encodestring(raw.replace(b"\r\n", b"\n")).replace(b"\n", CRLF)
    return entity([("Content-Type", f"text/{subtype}; charset={charset}"), ("Content-Transfer-Encoding", cte)], raw)


def attachment(data: bytes, filename: str | None, ctype: str, *, disposition: str | None = "attachment",
               name_param: bool = True) -> bytes:
    ct = f'{ctype}; name="{filename}"' if filename and name_param else ctype
    headers = [("Content-Type", ct), ("Content-Transfer-Encoding", "base64")]
    if disposition:
        headers.append(("Content-Disposition", f'{disposition}; filename="{filename}"' if filename else disposition))
    return entity(headers, b64(data))


def multipart(*parts: bytes, subtype: str = "mixed", boundary: str | None = None) -> bytes:
    b = boundary or f"=_boundary_{next(_ids)}"
    body = b"This is a multi-part message in MIME format." + CRLF
    for p in parts:
        body += b"--" + b.encode() + CRLF + p + CRLF
    body += b"--" + b.encode() + b"--" + CRLF
    return entity([("Content-Type", f'multipart/{subtype}; boundary="{b}"')], body)


def rfc822(inner: bytes, filename: str | None = "forwarded.eml") -> bytes:
    headers = [("Content-Type", "message/rfc822")]
    if filename:
        headers.append(("Content-Disposition", f'attachment; filename="{filename}"'))
    return entity(headers, inner)


def message(body_entity: bytes, subject: str = "Test message", to: str = "support@example.com",
            extra: list[tuple[str, str]] = (), message_id: str | None = None,
            sender: str = "Customer <customer@sender.test>") -> bytes:
    n = next(_ids)
    headers = [("From", sender), ("To", to), ("Subject", subject),
               ("Date", "Mon, 23 Nov 2026 10:00:00 +0000"), ("Message-ID", message_id or f"<test-{n}@sender.test>"),
               ("MIME-Version", "1.0"), *extra]
    return b"".join(f"{k}: {v}".encode() + CRLF for k, v in headers) + body_entity
