"""MIME builders for the tests: the harness's own (smtp_offload.harness.mime)."""

from smtp_offload.harness.mime import (  # noqa: F401
    CRLF, attachment, b64, entity, message, multipart, rfc822, text,
)


def big_message(size: int = 300_000, name: str = "scan.pdf") -> tuple[bytes, bytes]:
    """A message with one PDF of `size` bytes, over the stores' tests' offload threshold:
    (the message, the PDF's bytes)."""
    from tests.support import samples

    data = samples.big_pdf(size)
    return message(multipart(text(), attachment(data, name, "application/pdf"))), data
