"""What an administrator decides about a message, one type per stage that reads it.

Each type owns its options: names, defaults, allowed values (an Enum) and bounds (field
metadata "gt"). `[policy]` in the config file is these types side by side (config.py
composes them); config validates every option generically from what is declared here.
Nothing here imports config: config imports this.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..options import coerce, positive


class Action(enum.StrEnum):
    """What happens to the message when a file is empty, spoofed or blocked."""
    STRIP = "strip"  # remove the file, say why in the body
    REJECT = "reject"  # refuse the message (550 5.7.1)


class Tnef(enum.StrEnum):
    KEEP = "keep"
    STRIP = "strip"
    REJECT = "reject"


class KeepOrReject(enum.StrEnum):
    KEEP = "keep"
    REJECT = "reject"


class Uuencode(enum.StrEnum):
    INSPECT = "inspect"  # a bad file in the body text refuses the message
    KEEP = "keep"


class Ambiguous(enum.StrEnum):
    REBUILD = "rebuild"  # relay the one reading we judged
    REJECT = "reject"  # 550 5.6.0


class BareNewlines(enum.StrEnum):
    NORMALIZE = "normalize"  # bare CR or LF become CRLF before anything is judged
    REJECT = "reject"  # 554 5.5.2, like Postfix's smtpd_forbid_bare_newline


class StorageFailure(enum.StrEnum):
    KEEP = "keep"  # fail open: the file stays in the message
    STRIP = "strip"  # removed with a notice


class Signed(enum.StrEnum):
    REWRITE = "rewrite"  # inspect and change as any mail, then ARC-seal
    SKIP = "skip"  # a passing signature from a listed domain: relayed untouched


@dataclass(frozen=True)
class PlanPolicy:
    """The planner's options (delivery/decide.py)."""

    offload_over_bytes: int = positive(10 * 1024 * 1024)  # decoded file size
    on_empty: Action = Action.STRIP
    on_spoofed: Action = Action.STRIP
    on_blocked: Action = Action.STRIP
    # Hidden carriers (README, Security model): Outlook winmail.dat, message/partial fragments,
    # encrypted mail, uuencoded files inside body text.
    on_tnef: Tnef = Tnef.STRIP
    on_partial: KeepOrReject = KeepOrReject.REJECT
    on_encrypted: KeepOrReject = KeepOrReject.KEEP
    on_uuencode: Uuencode = Uuencode.INSPECT
    # MIME that parsers read differently (duplicate content headers, conflicting names, a
    # missing closing boundary): "rebuild" into the one form we judged, or "reject" (550 5.6.0).
    on_ambiguous_mime: Ambiguous = Ambiguous.REBUILD

    def __post_init__(self) -> None:
        coerce(self)


@dataclass(frozen=True)
class PreparePolicy:
    """Storing offloaded files (delivery/prepare.py)."""

    on_storage_failure: StorageFailure = StorageFailure.KEEP
    storage_timeout: float = positive(120.0)  # budget for storing all files of one message
    breaker_failures: int = positive(5)  # consecutive messages whose storage failed before the breaker opens
    breaker_cooldown_seconds: float = positive(30.0)  # then one probe message is let through

    def __post_init__(self) -> None:
        coerce(self)


@dataclass(frozen=True)
class HoldPolicy:
    """The quarantine (smtp_offload/quarantine): stripped files kept where an admin can release them."""

    quarantine: bool = False  # keep every spoofed or blocked file that is stripped (empty ones are not kept)
    quarantine_retention_days: int = positive(30)  # then purged
    # The From of a released file's message; "" = postmaster@<server.hostname>.
    quarantine_sender: str = ""

    def __post_init__(self) -> None:
        coerce(self)


@dataclass(frozen=True)
class SignedPolicy:
    """DKIM-signed mail (delivery/pipeline.py)."""

    on_signed: Signed = Signed.REWRITE
    # With on_signed = "skip", only mail with a passing DKIM signature from one of these
    # domains skips inspection (".example.com" also takes subdomains); empty: none does.
    skip_signed_domains: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        coerce(self)


@dataclass(frozen=True)
class Fit:
    """What the downstream platform accepts ([downstream]): the planner offloads until a message fits."""

    max_message_bytes: int  # counted on the wire
    max_attachments: int
