"""HTML, SVG and XML: recognise them, and find what makes them run code when opened.

An HTML or SVG attachment opens in a browser with the recipient's session and
network: "HTML smuggling" builds the payload in script on the victim's side,
where no gateway sees it. Plain markup is harmless and common (exported
reports, saved pages, logos), so only active content is refused: script
elements, event handler attributes and javascript:/vbscript: URLs, and
data:text/html URLs, which carry a whole page. An iframe's srcdoc attribute
carries a whole page too, entity-encoded: it is decoded and judged as one.
XML runs script only in the XHTML or SVG namespace (or through XSLT), so an
XML document counts only when it names one of those.

Text is searched, not parsed: these are the features every browser honours,
and a parser would be an attack surface of its own. The whole file is
searched, in windows of bounded size whose overlap is longer than anything a
pattern can match: runs of whitespace (raw or as character references) and
the zeros that pad a reference are squeezed first, so no padding stretches a
feature across the overlap, and every pattern is linear. Tags are read apart
from that, by a tokenizer that carries its state from window to window
(tags.py).
"""

from __future__ import annotations

import codecs
import html
import re

from .tags import Tags

_CHUNK = 1 << 20  # bytes of the file taken at a time
_OVERLAP = 64 << 10  # kept from one window for the next: longer than any match (see _Squeeze)
_URL_HEAD = 512  # bytes of a URL attribute's value decoded to read its scheme
_SRCDOC_DEPTH = 3  # srcdoc documents inside srcdoc documents judged; deeper is refused
_SRCDOC_MAX = 1000  # srcdoc documents judged in one file; more is refused (each costs a little)
_DECODE_MAX = 10_000  # URL values decoded in one file; past it the spelled patterns alone judge them

# Whatever may precede the root element: whitespace, <?xml ...?>, comments.
_LEAD = re.compile(r"(?:\s|<\?.*?\?>|<!--.*?-->)*", re.S)
_ROOT = re.compile(r"<(html|head|body|svg)[\s>/]")

# A script element. A namespace prefix may be any length (<svg:script>,
# <x:script xmlns:x="http://www.w3.org/1999/xhtml">): only the name character
# before the colon is matched, so no prefix stretches the match. Patterns that
# start with a literal are found fast; the others are only searched where a
# quick test finds their literal part.
_SCRIPT = re.compile(rb"<script[\s/>]")
_PREFIXED_SCRIPT = re.compile(rb"[a-z0-9_.-]:script[\s/>]")
# Events a handler attribute can name (HTML, SVG, the prefixed ones browsers
# still honour, and the old IE ones attackers still try): one counts anywhere,
# even where no tag seems to be. Any other "onxyz=" counts inside a tag (see
# tags.py), so prose such as "status online = yes" is left alone.
_EVENTS = """
    abort activate afterprint afterupdate animationcancel animationend animationiteration animationstart
    autofill auxclick beforeactivate beforecopy beforecut beforedeactivate beforeeditfocus beforefilter
    beforeinput beforematch beforepaste beforeprint beforetoggle beforeunload beforeupdate begin blur
    bounce cancel canplay canplaythrough cellchange change click close command
    contentvisibilityautostatechange contextlost contextmenu contextrestored controlselect copy
    cuechange cut dataavailable datasetchanged datasetcomplete dblclick deactivate drag dragend
    dragenter dragexit dragleave dragover dragstart drop durationchange emptied end ended error
    errorupdate filterchange finish focus focusin focusout formdata fullscreenchange fullscreenerror
    gotpointercapture hashchange help input installresult invalid keydown keypress keyup
    languagechange layoutcomplete load loadeddata loadedmetadata loadend loadstart location
    losecapture lostpointercapture message messageerror mousedown mouseenter mouseleave mousemove
    mouseout mouseover mouseup mousewheel move moveend movestart mozfullscreenchange
    mozfullscreenerror mozpointerlockchange mozpointerlockerror offline online orientationchange
    pagehide pagereveal pageshow pageswap paste pause play playing pointercancel pointerdown
    pointerenter pointerleave pointerlockchange pointerlockerror pointermove pointerout pointerover
    pointerrawupdate pointerup popstate progress promptaction promptdismiss propertychange ratechange
    readystatechange rejectionhandled repeat reset resize resizeend resizestart rowenter rowexit
    rowsdelete rowsinserted scroll scrollend scrollsnapchange scrollsnapchanging search
    securitypolicyviolation seeked seeking select selectionchange selectstart show slotchange stalled
    start stop storage stream submit suspend timeupdate timezonechange toggle touchcancel touchend
    touchmove touchstart transitioncancel transitionend transitionrun transitionstart
    unhandledrejection unload validationstatuschange visibilitychange volumechange waiting
    webkitanimationend webkitanimationiteration webkitanimationstart webkitfullscreenchange
    webkitfullscreenerror webkitmouseforcechanged webkitmouseforcedown webkitmouseforceup
    webkitmouseforcewillbegin webkittransitionend wheel zoom
""".encode().split()
_HANDLER = re.compile(rb"[\s/\"'`]on(?:" + b"|".join(sorted(_EVENTS, key=len, reverse=True)) + rb")\s*=")


def _spelled(word: str, gaps: bool = True) -> bytes:
    """A pattern for lower-case `word` spelled as a browser reads it inside an attribute.

    Any character may be a numeric character reference ("&#106;", "&#x4a;"),
    and (with `gaps`) tabs and newlines, raw or as references, may sit between
    characters: "java&#x09;script&colon;" is still javascript:. Searched on
    lower-cased text, in one linear pass (each alternative starts differently).
    """
    parts = []
    for ch in word:
        alts = [re.escape(ch).encode()]
        for code in sorted({ord(ch), ord(ch.upper())}):
            alts += [b"&#0*%d(?![0-9]);?" % code, b"&#x0*%x(?![0-9a-f]);?" % code]
        if ch == ":":
            alts.append(b"&colon;")
        parts.append(b"(?:" + b"|".join(alts) + b")")
    return (_GAP if gaps else b"").join(parts)


# Between characters: tabs and newlines, raw or as references. A reference
# never ends inside a number ("&#10" is not a newline in "&#106;"), so a gap
# never needs to give characters back: the possessive *+ keeps the search
# linear even over megabytes of tabs.
_GAP = rb"(?:[\t\n\r]|&(?:tab|newline);|&#0*(?:9|10|13)(?![0-9]);?|&#x0*(?:9|a|d)(?![0-9a-f]);?)*+"
# Before a URL, after the attribute's "=" (or CSS "url("): quotes, and the
# controls and spaces a URL parser skips, raw or as references.
_SKIP = (rb"(?:[\x00-\x20\"'`]|&#0*(?:[12]?[0-9]|3[0-2])(?![0-9]);?|&#x0*(?:1?[0-9a-f]|20)(?![0-9a-f]);?"
         rb"|&(?:tab|newline);)*+")
_JS = b"(?:(?P<java>" + _spelled("java") + b")|" + _spelled("vb") + b")" + _GAP + _spelled("script:")
_SCRIPT_URLS = [re.compile(start + _SKIP + _JS) for start in (b"=", rb"url\(")]
_HTML_DATA_URLS = [re.compile(start + _SKIP + _spelled("data:text/html")) for start in (b"=", rb"url\(")]

# The value of an attribute that holds a URL is decoded as a browser does
# before its scheme is read, when it starts with a character reference (one
# that does not is read as it stands by the patterns above, which are also
# what judges values past _DECODE_MAX). A ":" before the name admits any
# namespace prefix (xlink:href).
_VALUE_WITH_REFERENCE = re.compile(rb"=[\x00-\x20]*+[\"']?[\x00-\x20]*+&")
_URL_ATTR = re.compile(rb"[\s/\"'`:](?:href|src|action|formaction|data|background|poster|codebase|cite|lowsrc"
                       rb"|dynsrc|longdesc|ping|from|to|by|values)[\x00-\x20]*\Z")
_DECODED_URL = re.compile(r"(java|vb)script:|(data:\s*text/html)")
_C0_AND_SPACE = "".join(map(chr, range(33)))
# The srcdoc attribute holds a whole document.
_SRCDOC = re.compile(rb"[\s/\"'`]srcdoc\s*=\s*")
_UNQUOTED_END = re.compile(rb"[\t\n\f\r >]")
# XML runs script only in these namespaces (XSLT turns any markup into HTML).
_NAMESPACES = (b"http://www.w3.org/1999/xhtml", b"http://www.w3.org/2000/svg", b"http://www.w3.org/1999/xsl/transform")
_SPELLED_NAMESPACE = re.compile(b"|".join(_spelled(uri.decode(), gaps=False) for uri in _NAMESPACES))

# --- Squeezing padding ---------------------------------------------------------
# Browsers skip any amount of whitespace around "=" and before a URL, the URL
# parser drops tabs and newlines anywhere in it, and references may carry any
# number of leading zeros. Left alone, such padding could stretch a feature
# over any overlap. Squeezed, a run of whitespace is under 40 bytes and a
# reference short. Runs of tabs and newlines become a tab, runs with anything
# else (a space, another control) a space, so "java\t\nscript:" stays a
# javascript: URL and "java \tscript:" stays none. Runs that start with a
# reference go first (their patterns start with "&", which is fast to find),
# then long raw runs, only where there are any.
_TAB_REF = rb"(?:&(?:tab|newline);|&#(?:9|10|13)(?![0-9]);?|&#x(?:9|a|d)(?![0-9a-f]);?)"
_SPACE_REF = rb"(?:&(?:tab|newline);|&#(?:[12]?[0-9]|3[0-2])(?![0-9]);?|&#x(?:1?[0-9a-f]|20)(?![0-9a-f]);?)"
_ZEROS = re.compile(rb"&#(x?)0+(?=[0-9a-f])", re.I)
_TAB_REF_RUN = re.compile(_TAB_REF + rb"(?:[\t\n\r]|" + _TAB_REF + b")+", re.I)
_SPACE_REF_RUN = re.compile(_SPACE_REF + rb"(?:[\x00-\x20]|" + _SPACE_REF + b")+", re.I)
_LONG_TABS = re.compile(rb"[\t\n\r]{32,}")
_LONG_SPACES = re.compile(rb"[\x00-\x20]{32,}")
_AS_SPACE = bytes.maketrans(bytes(range(33)), b" " * 33)
# What the next piece may continue: a reference cut short, a run of whitespace.
_OPEN_REF = re.compile(rb"(?:&[#a-z0-9]{0,40})?\Z", re.I)
_OPEN_RUN = re.compile(rb"(?:[\x00-\x20]|" + _SPACE_REF + rb")*\Z", re.I)


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


def starts_as_xml(data: bytes, encoding: str | None) -> bool:
    """Does text `data` begin with an XML declaration (whatever it is called, it is XML)?"""
    head = data[:256].decode(encoding or "latin-1", "replace")
    return head.lstrip("\ufeff \t\r\n").startswith("<?xml")


def find_active(data: bytes, encoding: str | None, xml: bool = False) -> str | None:
    """What in markup `data` would run code when opened ("a script element" ...), or None.

    `xml`: `data` is an XML document, in which only the XHTML and SVG
    namespaces (or an XSLT stylesheet) make anything run.
    """
    scan = _Scan(_Budget(), xml)
    for piece in _pieces(data, encoding):
        scan.feed(piece)
        if scan.result:
            return scan.result
    return scan.close()


def _pieces(data: bytes, encoding: str | None):
    """`data` in pieces of about _CHUNK bytes, UTF-16/32 transcoded to UTF-8 (the patterns are ASCII)."""
    if encoding and not encoding.startswith(("utf-8", "latin")):
        decoder = codecs.getincrementaldecoder(encoding)("replace")
        for at in range(0, len(data), _CHUNK):
            yield decoder.decode(data[at:at + _CHUNK], final=at + _CHUNK >= len(data)).encode("utf-8", "replace")
        return
    for at in range(0, len(data), _CHUNK):
        yield data[at:at + _CHUNK]


def _squeeze(text: bytes) -> bytes:
    if b"&" in text:
        text = _SPACE_REF_RUN.sub(b" ", _TAB_REF_RUN.sub(b"\t", text))
    if b" " * 32 in text.translate(_AS_SPACE):
        text = _LONG_SPACES.sub(b" ", _LONG_TABS.sub(b"\t", text))
    return text


class _Squeeze:
    """Squeezes padding out of a text that arrives in pieces."""

    def __init__(self) -> None:
        self.held = b""

    def feed(self, piece: bytes, final: bool = False) -> bytes:
        text = _ZEROS.sub(rb"&#\1", self.held + piece)
        if final:
            self.held = b""
            return _squeeze(text)
        # Hold back what the next piece may go on with: a reference cut short
        # ("&#9" may be "&#9;" or "&#98;"), before it is read as one, and the
        # whitespace before it, squeezed (so it is short).
        ref = _OPEN_REF.search(text, max(len(text) - 64, 0)).start()
        text, ref = _squeeze(text[:ref]), text[ref:]
        tail = max(len(text) - 256, 0)
        cut = tail + _OPEN_RUN.search(text, tail).start()
        self.held = text[cut:] + ref
        return text[:cut]


class _Unescape:
    """Decodes character references in an attribute value that arrives in pieces, as a browser does."""

    def __init__(self) -> None:
        self.held = ""

    def feed(self, piece: bytes, final: bool = False) -> bytes:
        # Latin-1 maps every byte to one character, and only ASCII matters to the patterns.
        text = self.held + piece.decode("latin-1")
        self.held = ""
        amp = text.rfind("&", max(0, len(text) - 42))
        if not final and amp >= 0 and re.fullmatch(r"&[#A-Za-z0-9]*", text[amp:]):
            text, self.held = text[:amp], text[amp:]  # a reference the next piece may complete
        return html.unescape(text).encode("utf-8", "replace")


class _Budget:
    """Work shared by a document and the srcdoc documents inside it."""

    def __init__(self) -> None:
        self.srcdocs = _SRCDOC_MAX
        self.decodes = _DECODE_MAX


class _Scan:
    """One document read in windows: the first active feature, once it is known to count."""

    def __init__(self, budget: _Budget, xml: bool = False, depth: int = 0) -> None:
        self.budget, self.depth = budget, depth
        self.squeeze = _Squeeze()
        self.tags = Tags()
        self.tail = b""  # the end of the last window, searched again with the next piece
        self.base = 0  # offset of `tail` in the squeezed text
        self.feature: str | None = None
        self.counts = not xml  # in XML: once an XHTML, SVG or XSLT namespace was seen
        self.srcdoc: tuple[_Scan, _Unescape, bytes] | None = None  # the srcdoc value being read
        self.read_to = 0  # offset up to which srcdoc values have been read

    @property
    def result(self) -> str | None:
        return self.feature if self.counts else None

    def feed(self, piece: bytes) -> None:
        if not self.result:
            self.tags.feed(piece)
            self._window(self.squeeze.feed(piece), final=False)

    def close(self) -> str | None:
        if not self.result:
            self.tags.feed(b"", final=True)
            self._window(self.squeeze.feed(b"", final=True), final=True)
        return self.result

    def _window(self, new: bytes, final: bool) -> None:
        buf = self.tail + new
        low = buf.lower()
        if not self.counts:
            self.counts = any(ns in low for ns in _NAMESPACES) or (
                b"&#" in low and _SPELLED_NAMESPACE.search(low) is not None)
        if not self.feature:
            self.feature = self._features(buf, low, final)
        if not self.feature and (self.srcdoc or b"srcdoc" in low):
            self._srcdoc(buf, low, final)
        keep = min(len(buf), _OVERLAP)
        self.base += len(buf) - keep
        self.tail = buf[len(buf) - keep:]

    def _features(self, buf: bytes, low: bytes, final: bool) -> str | None:
        """The first kind of active content in one window of squeezed text."""
        if _SCRIPT.search(low) or (b":script" in low and _PREFIXED_SCRIPT.search(low)):
            return "a script element"
        if self.tags.found or _HANDLER.search(low):
            return "an event handler attribute"
        for pattern in _SCRIPT_URLS:
            found = pattern.search(low)
            if found:
                return f"a {'java' if found.group('java') else 'vb'}script: URL"
        if any(pattern.search(low) for pattern in _HTML_DATA_URLS):
            return "a data: URL holding HTML"
        for m in _VALUE_WITH_REFERENCE.finditer(low):
            if m.start() + _URL_HEAD > len(buf) and not final:
                break  # the next window holds all of it
            if self.budget.decodes <= 0:
                break
            self.budget.decodes -= 1
            if _URL_ATTR.search(low, max(m.start() - 80, 0), m.start()):
                found = _decoded_script_url(buf[m.start() + 1:m.start() + _URL_HEAD])
                if found:
                    return found
        return None

    def _srcdoc(self, buf: bytes, low: bytes, final: bool) -> None:
        """Judge every srcdoc value, entity-decoded, as the document it is."""
        at = max(self.read_to - self.base, 0)
        while True:
            if self.srcdoc is None:
                m = _SRCDOC.search(low, at)
                if m is None or (m.end() >= len(buf) and not final):
                    return  # none, or its quote is yet to come: look again in the next window
                if self.depth >= _SRCDOC_DEPTH:
                    self.feature = f"srcdoc documents nested more than {_SRCDOC_DEPTH} deep"
                    return
                if self.budget.srcdocs <= 0:
                    self.feature = f"more than {_SRCDOC_MAX} srcdoc documents"
                    return
                self.budget.srcdocs -= 1
                quote = buf[m.end():m.end() + 1]
                quote = quote if quote in (b'"', b"'") else b""
                at = m.end() + len(quote)
                self.srcdoc = (_Scan(self.budget, depth=self.depth + 1), _Unescape(), quote)
            inner, unescape, quote = self.srcdoc
            end = _value_end(buf, quote, at)
            if end == len(buf) and not final:
                inner.feed(unescape.feed(buf[at:]))
                self.read_to = self.base + len(buf)
                return
            inner.feed(unescape.feed(buf[at:end], final=True))
            found = inner.close()
            self.srcdoc = None
            if found:
                self.feature = found if "srcdoc" in found else f"{found} in an srcdoc document"
                return
            at = end + len(quote)
            self.read_to = self.base + at


def _value_end(text: bytes, quote: bytes, at: int) -> int:
    """Where an attribute value that starts at `at` ends (len(text): not in `text`)."""
    if quote:
        end = text.find(quote, at)
    else:
        stop = _UNQUOTED_END.search(text, at)
        end = stop.start() if stop else -1
    return end if end >= 0 else len(text)


def _decoded_script_url(value: bytes) -> str | None:
    """The scheme of a URL attribute value (from just after its "="), decoded as a browser does."""
    value = value.lstrip(b"\x00\t\n\f\r ")
    quote = value[:1] if value[:1] in (b'"', b"'") else b""
    value = value[len(quote):]
    url = _Unescape().feed(value[:_value_end(value, quote, 0)], final=True).decode("utf-8", "replace")
    # What a URL parser makes of it: leading controls and spaces go, tabs and newlines anywhere.
    url = re.sub(r"[\t\n\r]", "", url.lstrip(_C0_AND_SPACE)).lower()
    scheme = _DECODED_URL.match(url)
    if not scheme:
        return None
    return "a data: URL holding HTML" if scheme.group(2) else f"a {scheme.group(1)}script: URL"
