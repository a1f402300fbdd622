"""The HTML the link server shows: the landing page and the error pages.

Self-contained on purpose: no scripts, no fonts, no images, no third-party anything (the
CSP forbids them anyway), so the page works with JavaScript off, leaks no Referer to
anyone, and reads on a phone. Everything that comes from a mail (file name, sender,
type) is attacker-chosen text and is HTML-escaped; nothing internal (keys, paths,
errors) is ever put on a page.
"""

from __future__ import annotations

import html
from datetime import datetime
from urllib.parse import quote

from smtp_offload.inspect.names import disarm
from smtp_offload.links.tokens import Grant
from smtp_offload.storage.base import StoredObject
from smtp_offload.units import human_size, when

# The one inline <style> is allowed by 'unsafe-inline'; with default-src 'none' nothing
# else loads. form-action/base-uri/frame-ancestors are not covered by default-src.
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

_STYLE = """
body{margin:0;background:#f4f5f7;color:#1d2733;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:34em;margin:0 auto;padding:1.5em 1em}
.card{background:#fff;border:1px solid #d8dde3;border-radius:8px;padding:1.25em 1.5em}
h1{font-size:1.35em;margin:0 0 .75em;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35em 1em;margin:0 0 1.25em}
dt{color:#5b6673}dd{margin:0;overflow-wrap:anywhere}
.button{display:block;text-align:center;background:#1f5fbf;color:#fff;text-decoration:none;font-weight:600;
padding:.8em 1em;border-radius:6px;font-size:1.1em}
.button:focus,.button:hover{background:#174a96}
p{margin:.5em 0}.note{color:#5b6673;font-size:.9em;margin-top:1.25em}
@media (max-width:26em){dl{grid-template-columns:1fr}dd{margin-bottom:.4em}}
"""


def _received(date: str) -> str:
    # StoredObject.date is ISO 8601 UTC; anything else is shown as stored (escaped by the caller).
    try:
        return when(datetime.fromisoformat(date))
    except (ValueError, OverflowError):  # OverflowError: a year-1 date with an offset
        return date


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f'<body><main><div class="card">{body}</div></main></body></html>'
    )


def landing(obj: StoredObject, grant: Grant, token: str) -> str:
    """The page a link opens: what the file is, where it came from, and a download button."""
    rows = [("Size", human_size(obj.size)), ("Type", obj.content_type)]
    if obj.sender is not None:
        rows.append(("From", obj.sender or "(no sender address)"))
    if obj.date:
        rows.append(("Received", _received(obj.date)))
    rows.append(("Link expires", when(grant.expires)))
    details = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows)
    # Relative, so the page keeps working behind a proxy that mounts us under a path prefix.
    href = html.escape(f"./{quote(token, safe='')}/download", quote=True)
    # Files stored before names were disarmed may still carry a sender's path: show the base name.
    name = disarm(obj.filename or "") or "file"
    body = (
        f"<h1>{html.escape(name)}</h1><dl>{details}</dl>"
        f'<a class="button" href="{href}" rel="nofollow noreferrer">Download</a>'
        '<p class="note">This file came with an email and was stored separately because it was too '
        "large for the mailbox. You can open this page as often as you like until the link expires.</p>"
    )
    return _document(f"Download {name}", body)


def error(title: str, *paragraphs: str) -> str:
    """An error page: plain words and what to do, nothing about our internals."""
    return _document(title, f"<h1>{html.escape(title)}</h1>" + "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs))


def sign_in(sign_in_url: str) -> str:
    """links.require_agent without a trusted identity: how to get one. Deliberately the same
    page for every token, valid or not, so it says nothing about the file or the link."""
    body = (
        "<h1>Sign in to open this file</h1>"
        "<p>This file is available to signed-in support agents only.</p>"
    )
    if sign_in_url:
        href = html.escape(sign_in_url, quote=True)
        body += (f'<a class="button" href="{href}" rel="nofollow noreferrer">Sign in</a>'
                 '<p class="note">After signing in, open the link from the email again.</p>')
    else:
        body += "<p>Sign in with your work account, then open the link from the email again.</p>"
    return _document("Sign in to open this file", body)


ASK_AGAIN = "Please ask the sender, or the support agent who sent you this link, for a new link."


def not_valid() -> str:
    return error("This link is not valid",
                 "If you copied it from an email, make sure you copied the whole link.", ASK_AGAIN)


def expired(expires: int) -> str:
    return error("This link has expired", f"It expired on {when(expires)}.", ASK_AGAIN)


def revoked() -> str:
    return error("This link was revoked", "The file can no longer be downloaded with this link.", ASK_AGAIN)


def gone() -> str:
    return error("This file is no longer available", "It has been deleted from our storage.",
                 "Please ask the sender for the file again.")


def unavailable() -> str:
    return error("Temporarily unavailable", "The file cannot be downloaded right now because of a temporary "
                 "problem on our side. Please try again in a few minutes.")
