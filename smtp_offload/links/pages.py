"""The HTML the link server shows: the landing page and the error pages.

The reader is a contact-center agent who clicked a link in a customer's mail that this
gateway rewrote, so the pages say what the file is, whose mail it came with, and what the
agent can do when the link no longer works.

Self-contained on purpose: no scripts, no fonts, no third-party anything (the CSP forbids
them anyway); the one image, the branding logo, is embedded as a data: URI. So the page
works with JavaScript off, leaks no Referer to anyone, and reads on a phone. Everything that
comes from a mail (file name, From, Subject, type) is attacker-chosen text and is
HTML-escaped, and so is the branding; nothing internal (keys, paths, errors) is ever put on
a page.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from smtp_offload.config import BrandingConfig, ConfigError, logo_type
from smtp_offload.filetypes import describe
from smtp_offload.inspect.names import disarm
from smtp_offload.links.tokens import Grant
from smtp_offload.storage.base import StoredObject, display_text
from smtp_offload.units import human_size, when

# The one inline <style> is allowed by 'unsafe-inline'; with default-src 'none' nothing
# else loads. img-src data: is the embedded logo; form-action 'self' the "Get a new link"
# button. form-action/base-uri/frame-ancestors are not covered by default-src.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")

DEFAULT_ACCENT = "#1f5fbf"
_COLOUR = re.compile(r"#(?:[0-9A-Fa-f]{3}|[0-9A-Fa-f]{6})")

_STYLE = """
body{margin:0;background:#f4f5f7;color:#1d2733;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:34em;margin:0 auto;padding:1.5em 1em}
.brand{display:flex;align-items:center;gap:.75em;margin:0 0 1em;font-weight:600;font-size:1.05em}
.brand img{max-height:2.5em;max-width:12em}
.card{background:#fff;border:1px solid #d8dde3;border-radius:8px;padding:1.25em 1.5em}
h1{font-size:1.35em;margin:0 0 .75em;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35em 1em;margin:0 0 1.25em}
dt{color:#5b6673}dd{margin:0;overflow-wrap:anywhere}small{color:#5b6673}
.button{display:block;width:100%;box-sizing:border-box;text-align:center;background:ACCENT;color:#fff;
text-decoration:none;font:inherit;font-weight:600;padding:.8em 1em;border:0;border-radius:6px;font-size:1.1em;
cursor:pointer}
.button:focus,.button:hover{background:HOVER}
form{margin:1em 0 0}a{color:ACCENT}
p{margin:.5em 0}.note{color:#5b6673;font-size:.9em;margin-top:1.25em}
.support{color:#5b6673;font-size:.9em;margin:1em 0 0;text-align:center}
@media (max-width:26em){dl{grid-template-columns:1fr}dd{margin-bottom:.4em}}
"""


@dataclass(frozen=True)
class Brand:
    """branding.*, ready to put on a page: whose service this is, and whom to ask."""

    name: str = ""
    logo: str = ""  # a data: URI, or "" for none
    accent: str = DEFAULT_ACCENT
    support_text: str = ""
    support_url: str = ""

    @classmethod
    def load(cls, cfg: BrandingConfig | None) -> Brand:
        """Read the logo once (at server start, not per request). The config was validated on
        load; a logo that has gone since is a ConfigError naming the key."""
        if cfg is None:
            return cls()
        logo = ""
        if cfg.logo_file:
            try:
                with open(cfg.logo_file, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise ConfigError(f"branding.logo_file: cannot read {cfg.logo_file}: {exc.strerror}") from None
            ctype = logo_type(data)
            if ctype is None:
                raise ConfigError(f"branding.logo_file: not a PNG, JPEG, GIF or SVG image: {cfg.logo_file}")
            # An SVG only ever goes into <img>: there its scripts never run.
            logo = f"data:{ctype};base64,{base64.b64encode(data).decode('ascii')}"
        accent = cfg.accent_colour if _COLOUR.fullmatch(cfg.accent_colour or "") else DEFAULT_ACCENT
        return cls(name=cfg.name, logo=logo, accent=accent, support_text=cfg.support_text,
                   support_url=cfg.support_url)


DEFAULT_BRAND = Brand()


@dataclass(frozen=True)
class View:
    """What an error page may show beyond the refusal itself."""

    brand: Brand = DEFAULT_BRAND
    obj: StoredObject | None = None  # the file an expired link names (service.describe)
    renew: str | None = None  # the "Get a new link" form's action, for an identified agent; None: no button
    agent: bool = False  # the SSO proxy named who asks: an expired page may show the mail's From and Subject


def _darker(colour: str) -> str:
    digits = colour[1:]
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    r, g, b = (int(digits[i:i + 2], 16) * 4 // 5 for i in (0, 2, 4))
    return f"#{r:02x}{g:02x}{b:02x}"


def accent_css(brand: Brand) -> str:
    """The branding as a style sheet for pages whose CSP allows no inline style (the upload
    portal's brand.css): accent colour, logo header and support line."""
    accent = brand.accent if _COLOUR.fullmatch(brand.accent) else DEFAULT_ACCENT
    return (f".button{{background:{accent}}}.button:focus,.button:hover{{background:{_darker(accent)}}}"
            f".drop.over{{border-color:{accent}}}a{{color:{accent}}}"
            ".brand{display:flex;align-items:center;gap:.75em;margin:0 0 1em;font-weight:600;font-size:1.05em}"
            ".brand img{max-height:2.5em;max-width:12em}"
            ".support{color:#5b6673;font-size:.9em;margin:1em 0 0;text-align:center}\n")


def _style(brand: Brand) -> str:
    accent = brand.accent if _COLOUR.fullmatch(brand.accent) else DEFAULT_ACCENT
    return _STYLE.replace("ACCENT", accent).replace("HOVER", _darker(accent))


def _received(date: str) -> str:
    # StoredObject.date is ISO 8601 UTC; anything else is shown as stored (escaped by the caller).
    try:
        return when(datetime.fromisoformat(date))
    except (ValueError, OverflowError):  # OverflowError: a year-1 date with an offset
        return date


def _header(brand: Brand) -> str:
    if not (brand.name or brand.logo):
        return ""
    logo = f'<img src="{html.escape(brand.logo, quote=True)}" alt="">' if brand.logo else ""
    return f'<header class="brand">{logo}<span>{html.escape(brand.name)}</span></header>'


def _support(brand: Brand) -> str:
    if not (brand.support_text or brand.support_url):
        return ""
    text = html.escape(brand.support_text or brand.support_url)
    if brand.support_url:
        text = f'<a href="{html.escape(brand.support_url, quote=True)}" rel="noreferrer">{text}</a>'
    return f'<p class="support">{text}</p>'


def _document(title: str, body: str, brand: Brand) -> str:
    full = f"{title} – {brand.name}" if brand.name else title
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{html.escape(full)}</title><style>{_style(brand)}</style></head>"
        f'<body><main>{_header(brand)}<div class="card">{body}</div>{_support(brand)}</main></body></html>'
    )


def _name(obj: StoredObject) -> str:
    # Files stored before names were disarmed may still carry a sender's path: show the base name.
    return disarm(obj.filename or "") or "file"


def _sender(obj: StoredObject) -> str | None:
    """The visible From as the customer's mail shows it; the envelope sender for files stored
    before From was kept ("" there is the null sender of a bounce)."""
    if obj.from_header:
        return obj.from_header
    if obj.sender is not None:
        return display_text(obj.sender) or "(no sender address)"
    return None


def _details(rows: list[tuple[str, str]]) -> str:
    """A definition list; the values are HTML already (each escaped where it was made)."""
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _mail_rows(obj: StoredObject) -> list[tuple[str, str]]:
    rows = []
    sender = _sender(obj)
    if sender is not None:
        rows.append(("From", html.escape(sender)))
    if obj.subject:
        rows.append(("Subject", html.escape(obj.subject)))
    if obj.date:
        rows.append(("Received", html.escape(_received(obj.date))))
    return rows


def landing(obj: StoredObject, grant: Grant, token: str, brand: Brand = DEFAULT_BRAND) -> str:
    """The page a link opens: what the file is, whose mail it came with, and a download button."""
    kind = f"{html.escape(describe(obj.content_type))} <small>({html.escape(obj.content_type or '')})</small>"
    rows = [("Size", html.escape(human_size(obj.size))), ("Type", kind), *_mail_rows(obj),
            ("Link expires", html.escape(when(grant.expires)))]
    # Relative, so the page keeps working behind a proxy that mounts us under a path prefix.
    href = html.escape(f"./{quote(token, safe='')}/download", quote=True)
    name = _name(obj)
    body = (
        f"<h1>{html.escape(name)}</h1>{_details(rows)}"
        f'<a class="button" href="{href}" rel="nofollow noreferrer">Download</a>'
        "<p class=\"note\">This file came with the customer's email and was stored separately because it was "
        "too large for the mailbox. You can open this page as often as you like until the link expires.</p>"
    )
    return _document(f"Download {name}", body, brand)


def error(title: str, *paragraphs: str, brand: Brand = DEFAULT_BRAND) -> str:
    """An error page: plain words and what to do, nothing about our internals."""
    return _document(title, f"<h1>{html.escape(title)}</h1>" + "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs),
                     brand)


def sign_in(sign_in_url: str, brand: Brand = DEFAULT_BRAND) -> str:
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
    return _document("Sign in to open this file", body, brand)


ASK_ADMIN = ("Ask your administrator for a new link (they can run `smtp-offload links refresh` with this "
             "link), or ask the customer to send the file again.")
SEND_AGAIN = "Ask the customer to send the file again."


def not_valid(view: View = View()) -> str:
    return error("This link is not valid",
                 "If you copied it from an email, make sure you copied the whole link, or open it again from "
                 "the customer's email.",
                 "If it still does not work, ask your administrator to check the link, or ask the customer "
                 "to send the file again.", brand=view.brand)


def expired(expires: int, view: View = View()) -> str:
    """An expired link: which file it was for and when it expired, and how to get a new one:
    the "Get a new link" button for an agent the link server identifies, else whom to ask."""
    parts = ["<h1>This link has expired</h1>", f"<p>It expired on {html.escape(when(expires))}.</p>"]
    obj = view.obj
    if obj is not None:
        # The file's name for anyone holding the link; whose mail it came with only for an agent
        # the SSO proxy names: an expired link that was forwarded or leaked says no more than that.
        rows = [("File", f"<strong>{html.escape(_name(obj))}</strong>")]
        parts.append(_details(rows + (_mail_rows(obj) if view.agent else [])))
    if view.renew is not None:
        parts.append(
            f'<form method="post" action="{html.escape(view.renew, quote=True)}">'
            '<button class="button" type="submit">Get a new link</button></form>'
            '<p class="note">The new link opens this file again; this one stays expired.</p>')
    else:
        parts.append(f"<p>{html.escape(ASK_ADMIN)}</p>")
    return _document("This link has expired", "".join(parts), view.brand)


def revoked(view: View = View()) -> str:
    return error("This link was revoked",
                 "It was withdrawn on purpose, so the file can no longer be downloaded with this link.",
                 "If you still need the file, ask your administrator (they can share it again), or ask the "
                 "customer to send it again.", brand=view.brand)


def gone(view: View = View()) -> str:
    return error("This file is no longer available",
                 "It has been deleted from storage, usually because the time it is kept for has ended.",
                 SEND_AGAIN, brand=view.brand)


def unavailable(view: View = View()) -> str:
    return error("Temporarily unavailable", "The file cannot be downloaded right now because of a temporary "
                 "problem on our side. Please try again in a few minutes.", brand=view.brand)


def renew_needs_agent(brand: Brand = DEFAULT_BRAND) -> str:
    """A "Get a new link" request from nobody the link server can identify."""
    return error("Sign in to get a new link",
                 "Only a signed-in agent can get a new link here. Open the link again from the customer's "
                 "email after signing in with your work account.", ASK_ADMIN, brand=brand)


def renew_not_here(brand: Brand = DEFAULT_BRAND) -> str:
    """A "Get a new link" request where links go straight to storage (links.mode = "presigned")."""
    return error("New links are not made here",
                 "Links to files go straight to storage in this setup, so this page cannot make a new one.",
                 ASK_ADMIN, brand=brand)


def cross_site(brand: Brand = DEFAULT_BRAND) -> str:
    """A "Get a new link" request that another site's page sent."""
    return error("This request was refused",
                 "A new link can only be requested with the button on the expired link's own page. Open the "
                 "link from the customer's email again and use the button there.", brand=brand)
