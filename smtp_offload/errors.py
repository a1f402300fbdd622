"""Errors that carry the SMTP reply they must become.

TemporaryError -> 4xx (the sender keeps the mail and retries);
PermanentError -> 5xx (the sender bounces it). Anything else escaping a stage is a
bug, and the SMTP glue answers it with 451 4.3.0 so no mail is lost to a bug.
"""

from __future__ import annotations


class SmtpReplyError(Exception):
    code: int = 451
    status: str = "4.3.0"

    def __init__(self, text: str, *, code: int | None = None, status: str | None = None,
                 detail: str | None = None):
        super().__init__(text)
        self.text = text
        self.detail = detail  # what went wrong, for our log only: never shown to the sender
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    @property
    def reply(self) -> str:
        return f"{self.code} {self.status} {self.text}"


class TemporaryError(SmtpReplyError):
    code = 451
    status = "4.3.0"


class PermanentError(SmtpReplyError):
    code = 554
    status = "5.3.0"


class StorageError(Exception):
    """Storing an offloaded file failed or ran out of time (handled by fail-open).

    `permanent` marks problems that waiting will not fix (no such bucket, access denied,
    no credentials): the process refuses to start on those."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class ConfigError(Exception):
    """A config file problem; the message names the key."""


class StartupError(Exception):
    """Something outside the config file stops the start (storage unusable, port taken)."""
