"""Judge attachments by their real bytes. Pure functions: no I/O, no logging."""

from .names import safe_display_name
from .policy import InspectPolicy
from .rules import consistent, declared_base, file_extension, judge
from .sniff import looks_like_text, sniff

__all__ = [
    "InspectPolicy", "judge", "sniff", "consistent", "looks_like_text",
    "declared_base", "file_extension", "safe_display_name",
]
