"""The messages the load generator sends, built with the test suite's own builders
(tests/support/samples.py for real files, tests/support/mail.py for byte-exact MIME)."""

from __future__ import annotations

import importlib.util
import random
import re
import struct
import sys
import zlib
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests" / "support"
MSGID = b"<bench-000000000000@load.test>"  # replaced per message by the load generator (same length)
SENDER = "customer@sender.test"
RCPT = "support@example.com"


def _load(name: str):
    key = f"_bench_tests_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


samples = _load("samples")
mail = _load("mail")


def _message(body_entity: bytes, subject: str) -> bytes:
    return mail.message(body_entity, subject=subject, to=RCPT, message_id=MSGID.decode())


def small(size: int = 2048) -> bytes:
    """A plain-text message of `size` bytes in total (headers included)."""
    n = max(0, size - len(_message(mail.text(""), "Small bench message")))
    for _ in range(5):
        prose = samples.text(n).replace(b"\n", b"\r\n").rstrip(b"\r") + b"\r\n"
        out = _message(mail.text(prose.decode()), "Small bench message")
        if len(out) == size or n == 0:
            break
        n = max(0, n - (len(out) - size))
    return out


def png_noise(width: int = 40, height: int = 40, seed: int = 1) -> bytes:
    """A valid RGB PNG of incompressible pixels: a few KiB (40x40 -> about 4.8 KiB)."""
    rng = random.Random(seed)
    raw = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def with_files(files: list[tuple[bytes, str, str]], subject: str) -> bytes:
    parts = [mail.text("Hello,\r\nplease see the attached files.\r\nRegards\r\n")]
    parts += [mail.attachment(data, name, ctype) for data, name, ctype in files]
    return _message(mail.multipart(*parts), subject)


def mix() -> list[bytes]:
    """Small messages, most with small attachments that the proxy keeps (sent in turn)."""
    png, pdf = png_noise(), samples.big_pdf(4096)
    return [
        small(),
        with_files([(png, "photo.png", "image/png")], "Mix: PNG"),
        with_files([(pdf, "invoice.pdf", "application/pdf")], "Mix: PDF"),
        with_files([(png, "screenshot.png", "image/png"), (pdf, "form.pdf", "application/pdf")], "Mix: PNG+PDF"),
    ]


def large(pdf_size: int) -> bytes:
    """One PDF of `pdf_size` bytes, base64 with CRLF lines (25.0 MiB -> a 34.2 MiB message)."""
    return with_files([(samples.big_pdf(pdf_size), "contract-scan.pdf", "application/pdf")], "Large bench message")


def wire(message: bytes) -> bytes:
    """DATA payload: CRLF-terminated, dot-stuffed, with the final "." line."""
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", message) + b".\r\n"


def build(kind: str, pdf_size: int = 25 * 1024 * 1024) -> list[bytes]:
    if kind == "small":
        return [small()]
    if kind == "mix":
        return mix()
    if kind == "large":
        return [large(pdf_size)]
    raise ValueError(kind)
