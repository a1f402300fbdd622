"""HTML and SVG: recognise them, and find what makes them run code when opened.

An HTML or SVG attachment opens in a browser with the recipient's session and
network: "HTML smuggling" builds the payload in script on the victim's side,
where no gateway sees it. Plain markup is harmless and common (exported
reports, saved pages, logos), so only active content is refused: script
elements, event handler attributes and javascript:/vbscript: URLs, and
data:text/html URLs, which carry a whole page. Text is searched, not parsed:
these are the features every browser honours, and a parser would be an attack
surface of its own.
"""

from __future__ import annotations

import re

_SCAN = 8 << 20  # search the first and last 8 MiB: a smuggled payload sits at either end

# Whatever may precede the root element: whitespace, <?xml ...?>, comments.
_LEAD = re.compile(r"(?:\s|<\?.*?\?>|<!--.*?-->)*", re.S)
_ROOT = re.compile(r"<(html|head|body|svg)[\s>/]")

_SCRIPT = re.compile(rb"<(?:[a-z0-9_-]+:)?script[\s/>]")  # also <svg:script>
# Events a handler attribute can name (HTML, SVG, and the old IE ones attackers
# still try). A known event anywhere counts (even after a quoted ">" that
# fools a tag-aware search); an unknown "onxyz=" counts only inside a tag, so
# prose such as "status online = yes" is left alone. [^<>] cannot cross into
# the next tag, which keeps the in-tag search linear.
_EVENTS = frozenset("""
    abort activate afterprint afterupdate animationend animationiteration animationstart auxclick
    beforeactivate beforecopy beforecut beforedeactivate beforeinput beforepaste beforeprint
    beforeunload begin blur bounce cancel canplay canplaythrough change click close contextmenu
    copy cuechange cut dblclick deactivate drag dragend dragenter dragleave dragover dragstart
    drop durationchange emptied end ended error finish focus focusin focusout formdata
    fullscreenchange hashchange input invalid keydown keypress keyup load loadeddata
    loadedmetadata loadend loadstart message messageerror mousedown mouseenter mouseleave
    mousemove mouseout mouseover mouseup mousewheel offline online pagehide pageshow paste pause
    play playing pointercancel pointerdown pointerenter pointerleave pointermove pointerout
    pointerover pointerrawupdate pointerup popstate progress propertychange ratechange
    readystatechange repeat reset resize scroll scrollend search seeked seeking select
    selectionchange selectstart show start stalled storage submit suspend timeupdate toggle
    touchcancel touchend touchmove touchstart transitioncancel transitionend transitionrun
    transitionstart unload volumechange waiting wheel zoom
""".encode().split())
_HANDLER = re.compile(rb"[\s/\"'`]on([a-z]{3,})\s*=")
_HANDLER_IN_TAG = re.compile(rb"<[a-z][^<>]*?[\s/\"'`]on[a-z]{3,}\s*=")

def _spelled(word: str) -> bytes:
    """A pattern for lower-case `word` spelled as a browser reads it inside an attribute.

    Any character may be a numeric character reference ("&#106;", "&#x4a;"),
    and tabs and newlines, raw or as references, may sit between characters:
    "java&#x09;script&colon;" is still javascript:. Searched on lower-cased
    text, in one linear pass (each alternative starts differently).
    """
    parts = []
    for ch in word:
        alts = [re.escape(ch).encode()]
        for code in sorted({ord(ch), ord(ch.upper())}):
            alts += [b"&#0*%d(?![0-9]);?" % code, b"&#x0*%x(?![0-9a-f]);?" % code]
        if ch == ":":
            alts.append(b"&colon;")
        parts.append(b"(?:" + b"|".join(alts) + b")")
    return _GAP.join(parts)


# Between characters: tabs and newlines, raw or as references. A reference
# never ends inside a number ("&#10" is not a newline in "&#106;"), so a gap
# never needs to give characters back: the possessive *+ keeps the search
# linear even over megabytes of tabs.
_GAP = rb"(?:[\t\n\r]|&(?:tab|newline);|&#0*(?:9|10|13)(?![0-9]);?|&#x0*(?:9|a|d)(?![0-9a-f]);?)*+"
# Before a URL: the attribute's "=" (or CSS "url("), quotes, and the controls and
# spaces a URL parser skips.
_START = (rb"(?:=|url\()(?:[\x00-\x20\"'`]|&#0*(?:9|10|13|32)(?![0-9]);?|&#x0*(?:9|a|d|20)(?![0-9a-f]);?"
          rb"|&(?:tab|newline);)*+")
_SCRIPT_URL = re.compile(_START + b"(?:(?P<java>" + _spelled("java") + b")|" + _spelled("vb") + b")"
                         + _GAP + _spelled("script:"))
_HTML_DATA_URL = re.compile(_START + _spelled("data:text/html"))


def markup(head: str) -> str | None:
    """"html" or "svg" when decoded text `head` starts as such a document, else None."""
    text = head.lstrip("\ufeff").lower()
    rest = text[_LEAD.match(text).end():]
    if rest.startswith("<!doctype"):
        kind = rest[9:].lstrip()
        if kind.startswith("html"):
            return "html"
        if kind.startswith("svg"):
            return "svg"
        rest = rest[rest.find(">") + 1:]
        rest = rest[_LEAD.match(rest).end():]
    root = _ROOT.match(rest)
    if not root:
        return None
    return "svg" if root.group(1) == "svg" else "html"


def find_active(data: bytes, encoding: str | None) -> str | None:
    """What in markup `data` would run code when opened ("a script element" ...), or None."""
    windows = [data] if len(data) <= 2 * _SCAN else [data[:_SCAN], data[-_SCAN - (len(data) % 4):]]
    for window in windows:
        if encoding and not encoding.startswith(("utf-8", "latin")):
            window = window.decode(encoding, "replace").encode("utf-8", "replace")  # UTF-16/32
        low = window.lower()
        if _SCRIPT.search(low):
            return "a script element"
        if any(m.group(1) in _EVENTS for m in _HANDLER.finditer(low)) or _HANDLER_IN_TAG.search(low):
            return "an event handler attribute"
        found = _SCRIPT_URL.search(low)
        if found:
            return f"a {'java' if found.group('java') else 'vb'}script: URL"
        if _HTML_DATA_URL.search(low):
            return "a data: URL holding HTML"
    return None
