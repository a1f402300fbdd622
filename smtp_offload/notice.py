"""The text that tells the recipient what happened to each file (plain and HTML)."""

from __future__ import annotations

import html

from .inspect import safe_display_name
from .model import FileOutcome, Verdict
from .units import human_size, when

HEADING = "This message was changed by the mail gateway before delivery:"


def _line(a: FileOutcome) -> tuple[str, str | None]:
    """(sentence, link or None) for one changed attachment."""
    # The name as a person may safely see it: no bidi tricks, control characters or paths.
    what = f'"{safe_display_name(a.name)}" ({human_size(a.size)}, {a.file.judgement.detected_type})'
    if a.verdict is Verdict.OFFLOAD and a.link:
        return (f"{what} was too large to deliver as an attachment. "
                f"Download it until {when(a.link_expires or 0)}:"), a.link
    if a.offload_failed:
        return f"{what} was too large to deliver and could not be stored; ask the sender for it again.", None
    if a.quarantine_id:
        # Only when the copy was really kept: a failed hold must not promise one.
        return (f"{what} was removed: {a.reason}. A copy is held in quarantine. "
                f"An administrator can release it: quarantine id {a.quarantine_id}."), None
    return f"{what} was removed: {a.reason}.", None


def render(changed: list[FileOutcome]) -> tuple[str, str]:
    """Plain-text and HTML notices; both end with a separator from the original body."""
    lines = [HEADING]
    items = []
    for a in changed:
        sentence, link = _line(a)
        lines.append(f"- {sentence}")
        if link:
            lines.append(f"  {link}")
        esc = html.escape(sentence)
        if link:
            href = html.escape(link, quote=True)
            esc += f' <a href="{href}">{html.escape(link)}</a>'
        items.append(f"<li>{esc}</li>")
    text = "\r\n".join(lines) + "\r\n" + "-" * 60 + "\r\n\r\n"
    markup = ('<div style="border:1px solid #c8c8c8;padding:8px;margin:8px 0;font-family:sans-serif">'
              f"<p>{html.escape(HEADING)}</p><ul>{''.join(items)}</ul></div>\r\n")
    return text, markup
