"""How sizes and times are shown to people: the one formatter of each.

Sizes in IEC units, as the config and its error messages speak of them ("512 bytes",
"95.5 KiB", "38.1 MiB", "1.2 GiB"); times as "2026-11-30 14:05 UTC". Machine-readable
output (JSON, logs) keeps its own formats: ISO 8601 and plain numbers.
"""

from __future__ import annotations

from datetime import datetime, timezone

_UNITS = ("KiB", "MiB", "GiB")


def human_size(n: int) -> str:
    """`n` bytes for a reader: "512 bytes", "95.5 KiB", "38.1 MiB", "1.2 GiB" (GiB is the largest unit)."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in _UNITS:
        value /= 1024
        # Choose the unit on the value as printed: 1048575 bytes is "1.0 MiB", not "1024.0 KiB".
        if round(value, 1) < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def when(ts: float | datetime) -> str:
    """A moment for a reader, in UTC to the minute: "2026-11-30 14:05 UTC".

    `ts` is unix seconds or a datetime (a naive one is taken as UTC)."""
    if isinstance(ts, datetime):
        moment = ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)
    else:
        moment = datetime.fromtimestamp(ts, timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def clip(text: object, limit: int = 120) -> str:
    """A client's value as shown back to people: printable, and at most `limit` characters."""
    shown = "".join(c if c.isprintable() else "?" for c in str(text))
    return shown if len(shown) <= limit else shown[:limit] + "…"
