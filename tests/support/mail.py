"""MIME builders for the tests: the harness's own (smtp_offload.harness.mime)."""

from smtp_offload.harness.mime import (  # noqa: F401
    CRLF, attachment, b64, entity, message, multipart, rfc822, text,
)
