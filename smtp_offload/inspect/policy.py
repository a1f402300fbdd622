"""What an administrator may decide about attachments. Every field has a safe default.

Lives apart from rules.py so that archive.py can read the limits without an
import cycle. Config files hand us lists, mixed case and ".exe": everything is
normalised once, here, and nonsense values fail at start-up, not per message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..options import coerce, positive
from . import tables as T


class KeepOrBlock(enum.StrEnum):
    KEEP = "keep"
    BLOCK = "block"


def _items(value) -> list[str]:
    # A lone string would otherwise be iterated character by character.
    return [value] if isinstance(value, str) else list(value)


def norm_type(t: str) -> str:
    t = t.strip().lower()
    return T.ALIASES.get(t, t)


@dataclass(frozen=True)
class InspectPolicy:
    # Detected MIME types ("application/zip"), families ("image/*") or
    # categories ("executable", "disk-image", "onenote", "archive") that are
    # refused whatever their name. Members of ZIP archives are checked against
    # the categories listed here too (not against MIME types or families).
    blocked_types: frozenset[str] = T.DEFAULT_BLOCKED_TYPES
    # Lower-case, no dot. Refused whatever the content, also inside archives.
    blocked_extensions: frozenset[str] = T.DEFAULT_BLOCKED_EXTENSIONS
    # When set, only these detected types (same syntax as blocked_types) pass.
    allowed_types: frozenset[str] | None = field(default=None, metadata={"empty": None})  # config's [] = none

    # File names built to deceive (bidi controls, double extensions, trailing
    # dots, CLSIDs, control characters, paths, > 255 chars) are SPOOFED.
    suspicious_names: bool = True
    # HTML/SVG (or XML in the XHTML/SVG namespace) with scripts, event handlers or javascript: URLs are BLOCKED.
    block_active_content: bool = True
    # Bytes we cannot identify: "keep" (they are not evidence of anything) or "block".
    on_unknown: KeepOrBlock = KeepOrBlock.KEEP
    # A PDF or image that is also a ZIP archive (read as either): "block" or "keep".
    on_polyglot: KeepOrBlock = KeepOrBlock.BLOCK
    # A ZIP with encrypted members, which cannot be inspected: "keep" or "block".
    on_encrypted_archive: KeepOrBlock = KeepOrBlock.KEEP
    # Office documents with macros (VBA, Excel 4.0 sheets): "keep" or "block".
    # A macro-free label (.docx, .xlsx ...) on a document with macros is SPOOFED either way.
    on_macros: KeepOrBlock = KeepOrBlock.KEEP
    # An archive beyond the limits below cannot be fully inspected: "block" or "keep".
    on_archive_limit: KeepOrBlock = KeepOrBlock.BLOCK
    archive_max_entries: int = positive(10_000)  # members, counted across nested archives
    archive_max_depth: int = positive(3)  # a zip in a zip in a zip is depth 3
    archive_max_total_bytes: int = positive(1 << 30)  # declared uncompressed size, all members and levels
    archive_max_ratio: float = positive(200.0)  # uncompressed : compressed, per member and in total
    # Work bound: bytes decompressed to inspect one attachment, all members and levels.
    archive_max_inflate_bytes: int = positive(8 << 20)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocked_types", frozenset(norm_type(t) for t in _items(self.blocked_types)))
        object.__setattr__(self, "blocked_extensions", frozenset(
            e.strip().lower().lstrip(".") for e in _items(self.blocked_extensions)))
        if self.allowed_types is not None:
            object.__setattr__(self, "allowed_types",
                               frozenset(norm_type(t) for t in _items(self.allowed_types)))
        coerce(self)
