"""HTML, SVG and XML: recognise them, and find what makes them run code when opened.

An HTML or SVG attachment opens in a browser with the recipient's session and
network: "HTML smuggling" builds the payload in script on the victim's side,
where no gateway sees it. Plain markup is harmless and common (exported
reports, saved pages, logos), so only active content is refused: script
elements, event handler attributes and javascript:/vbscript: URLs, and
data:text/html URLs, which carry a whole page. Other documents travel inside
one and are decoded and judged as the documents they are: an iframe's srcdoc
attribute (entity-encoded), a data: URL of an SVG or XML type (which an
iframe, embed or object runs), the value of an XML entity declaration
(whose character references become markup where the entity is used), and
an attribute list declaration (whose defaults are attributes of every such
element: `<!ATTLIST svg onload CDATA "go()">`).
XML runs script only in the XHTML or SVG namespace (or through XSLT), so an
XML document counts only when it names one of those, or declares entities,
which can spell a namespace no search sees ("&w;xhtml"), or a URL's scheme.

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

import binascii
import codecs
import html
import re

from .tags import Tags

_CHUNK = 1 << 20  # bytes of the file taken at a time
_OVERLAP = 64 << 10  # kept from one window for the next: longer than any match (see _Squeeze)
_URL_HEAD = 512  # bytes of a URL attribute's value decoded to read its scheme
_SRCDOC_DEPTH = 3  # documents inside documents (srcdoc, data: URL, entity) judged; deeper is refused
_SRCDOC_MAX = 1000  # srcdoc documents judged in one file; more is refused (each costs a little)
_DATA_URL_MAX = 1000  # likewise data: URLs of an SVG or XML type, and entity declarations
_DATA_URL_HEAD = 1024  # bytes of a data: URL before its "," (its type and parameters) read at most
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
# The attributes whose value is a URL (one list: a name missing from a copy would be a bypass).
_URL_NAMES = (rb"[\s/\"'`:](?:href|src|action|formaction|data|background|poster|codebase|cite|lowsrc"
              rb"|dynsrc|longdesc|ping|from|to|by|values)")
_URL_ATTR = re.compile(_URL_NAMES + rb"[\x00-\x20]*\Z")
_DECODED_URL = re.compile(r"(java|vb)script:|(data:\s*text/html)")
_C0_AND_SPACE = "".join(map(chr, range(33)))
# Attribute values (and entity declarations) that hold a whole document: the
# srcdoc attribute; a URL attribute whose value is a data: URL (its type is
# read once the value is decoded); the value of an XML entity declaration.
# Each is searched apart, and only where its literal part is (one pattern
# with three alternatives is several times slower).
_EMBEDDED = {
    "srcdoc": (b"srcdoc", re.compile(rb"[\s/\"'`]srcdoc\s*=\s*")),
    "data": (b"", re.compile(rb"=\s*(?=" + _SKIP + _spelled("data:") + rb")")),
    "entity": (b"<!entity", re.compile(rb"<!entity\s+(?:%\s*)?[^\s\"'>]+\s*")),
    "attlist": (b"<!attlist", re.compile(rb"<!attlist\s+[^\s\"'>]+")),
}
_ATTLIST_MAX = 64 << 10  # bytes of an attribute list declaration read at most; a longer one is refused
# One attribute definition: its name, type, and default (a value, #FIXED or not, is the attribute).
_ATTDEF = re.compile(rb"\s+([^\s\"'>]+)\s+(?:\([^)]*\)|notation\s*\([^)]*\)|[a-z]+)\s+"
                     rb"(?:#required|#implied|(?:#fixed\s+)?(\"[^\"]*\"|'[^']*'))")
# In a document that declares entities, an entity can spell a URL's scheme ("&j;alert(1)"):
# a URL attribute whose value starts with one (but the five every XML document knows).
_ENTITY_URL = re.compile(_URL_NAMES + rb"\s*=\s*[\"']?[\x00-\x20]*"
                         rb"&(?!(?:lt|gt|amp|quot|apos);)[a-z_:][^\s;&\"'<>]*;")
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


class _CharRefs:
    """Decodes the numeric character references of an XML entity value that arrives in pieces.

    A parser stores an entity's value with these decoded (named references
    stay references), so "&#60;script" in a value is a script element
    wherever the entity is used.
    """

    def __init__(self) -> None:
        self.held = b""

    def feed(self, piece: bytes, final: bool = False) -> bytes:
        text, self.held = self.held + piece, b""
        amp = text.rfind(b"&", max(0, len(text) - 16))
        if not final and amp >= 0 and _OPEN_CHAR_REF.fullmatch(text, amp):
            text, self.held = text[:amp], text[amp:]  # a reference the next piece may complete
        return _CHAR_REF.sub(_char, text)


_CHAR_REF = re.compile(rb"&#(?:x([0-9a-f]{1,8})|([0-9]{1,10}));", re.I)
_OPEN_CHAR_REF = re.compile(rb"&(?:#(?:x[0-9a-f]{0,8}|[0-9]{0,10}))?", re.I)


def _char(m: re.Match) -> bytes:
    code = int(m.group(1), 16) if m.group(1) else int(m.group(2))
    return chr(code).encode("utf-8", "replace") if code < 0x110000 else b"\xef\xbf\xbd"


class _Budget:
    """Work shared by a document and the documents inside it."""

    def __init__(self) -> None:
        self.srcdocs = _SRCDOC_MAX
        self.data_urls = _DATA_URL_MAX
        self.entities = _DATA_URL_MAX
        self.decodes = _DECODE_MAX


class _Scan:
    """One document read in windows: the first active feature, once it is known to count."""

    def __init__(self, budget: _Budget, xml: bool = False, depth: int = 0, entities: bool = False) -> None:
        self.budget, self.depth = budget, depth
        self.entities = entities  # the document declares XML entities (or this is text from one)
        self.squeeze = _Squeeze()
        self.tags = Tags()
        self.tail = b""  # the end of the last window, searched again with the next piece
        self.base = 0  # offset of `tail` in the squeezed text
        self.feature: str | None = None
        self.counts = not xml  # in XML: once an XHTML, SVG or XSLT namespace (or an entity) was seen
        # The value being read: its reader, its quote, and where its attribute's "=" ends.
        self.embedded: tuple[_Inner | _DataUrl, bytes, int] | None = None
        self.read_to = 0  # offset up to which embedded documents have been read

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
        self.entities = self.entities or b"<!entity" in low
        if not self.counts:
            # An entity can spell the namespace ("&w;xhtml"): a document that declares any counts.
            self.counts = any(ns in low for ns in _NAMESPACES) or self.entities or (
                b"&#" in low and _SPELLED_NAMESPACE.search(low) is not None)
        if not self.feature:
            self.feature = self._features(buf, low, final)
        if not self.feature:
            self._embedded(buf, low, final)
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
        if self.entities and _ENTITY_URL.search(low):
            return "a URL spelled with an XML entity"
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

    def _embedded(self, buf: bytes, low: bytes, final: bool) -> None:
        """Judge every document inside an attribute value or entity declaration, decoded, as what it is."""
        at = max(self.read_to - self.base, 0)
        found: dict[str, re.Match | None] = {}  # the next match of each kind (searched again once passed)
        while True:
            if self.embedded is None:
                for kind, (literal, pattern) in _EMBEDDED.items():
                    if kind not in found or (found[kind] and found[kind].start() < at):
                        found[kind] = pattern.search(low, at) if literal in low else None
                m = min((m for m in found.values() if m), key=re.Match.start, default=None)
                if m is None or (m.end() >= len(buf) and not final):
                    return  # none, or its quote is yet to come: look again in the next window
                kind = next(k for k, v in found.items() if v is m)
                quote = buf[m.end():m.end() + 1]
                quote = quote if quote in (b'"', b"'") else b""
                at = m.end() + len(quote)
                self.read_to = self.base + at
                if kind == "entity" and not quote:
                    continue  # an external entity (SYSTEM, PUBLIC): its text is not here
                reader = self._reader(kind)
                if reader is None:
                    self.counts = True
                    return  # refused: self.feature says why
                self.embedded = (reader, quote, self.base + m.end())
            reader, quote, start = self.embedded
            end = reader.end(buf, at) if isinstance(reader, _Attlist) else _value_end(buf, quote, at)
            if end == len(buf) and not final:
                reader.feed(buf[at:])
                self.read_to = self.base + len(buf)
                if not reader.passed:
                    return  # the rest of the value is in the next window
            else:
                reader.feed(buf[at:end])
            self.feature = reader.close()
            self.embedded = None
            if self.feature:
                # An inner document was judged by its own rules: what runs there counts even in
                # XML with no XHTML namespace (which a value that only looks like one may be in).
                self.counts = True
                return
            # A data: URL of another type is not read: what its value seems to hold (an
            # unmatched quote may make it the rest of the file) is searched as it stands.
            at = start - self.base if reader.passed else end + len(quote)
            self.read_to = self.base + at

    def _reader(self, kind: str) -> _Inner | _DataUrl | _Attlist | None:
        """A reader for an embedded document of `kind`, or None (and a refusal) past the limits."""
        if kind == "data":
            return _DataUrl(self.budget, self.depth)  # its type decides whether it counts: see there
        if kind == "attlist":
            return _Attlist(self.budget, self.depth, self.entities)
        label, left = ("srcdoc documents", self.budget.srcdocs) if kind == "srcdoc" else (
            "XML entity declarations", self.budget.entities)
        if self.depth >= _SRCDOC_DEPTH:
            self.feature = f"{label} nested more than {_SRCDOC_DEPTH} deep"
        elif left <= 0:
            self.feature = f"more than {_SRCDOC_MAX if kind == 'srcdoc' else _DATA_URL_MAX} {label}"
        elif kind == "srcdoc":
            self.budget.srcdocs -= 1
            return _Inner(_Unescape(), _Scan(self.budget, depth=self.depth + 1), "in an srcdoc document")
        else:
            self.budget.entities -= 1
            return _Inner(_CharRefs(), _Scan(self.budget, depth=self.depth + 1, entities=True),
                          "in an XML entity")
        return None


class _Attlist:
    """An attribute list declaration: the defaults it gives are attributes of every such element
    (`<!ATTLIST svg onload CDATA "go()">` is an onload handler), read as the tag they make."""

    passed = False

    def __init__(self, budget: _Budget, depth: int, entities: bool) -> None:
        self.budget, self.depth, self.entities = budget, depth, entities
        self.text = b""
        self.quote = b""  # the quote of the default value being read, if one is

    def end(self, buf: bytes, at: int) -> int:
        """Where the declaration that goes on at `at` ends (len(buf): not in `buf`): its first ">"
        out of a quoted value. The quote it is in carries over to the next window."""
        while True:
            if self.quote:
                close = buf.find(self.quote, at)
                if close < 0:
                    return len(buf)
                self.quote, at = b"", close + 1
            m = _QUOTE_OR_GT.search(buf, at)
            if m is None:
                return len(buf)
            if buf[m.start()] == 0x3E:
                return m.start()
            self.quote, at = m.group(), m.end()

    def feed(self, raw: bytes) -> None:
        if len(self.text) <= _ATTLIST_MAX:
            self.text += raw

    def close(self) -> str | None:
        if len(self.text) > _ATTLIST_MAX:
            return f"an attribute list declaration longer than {_ATTLIST_MAX >> 10} KiB"
        tag, at, low = b"<x", 0, self.text.lower()
        while m := _ATTDEF.match(low, at):  # (a malformed declaration stops an XML parser too)
            if m.group(2):
                tag += b" " + self.text[m.start(1):m.end(1)] + b"=" + self.text[m.start(2):m.end(2)]
            at = m.end()
        scan = _Scan(self.budget, depth=self.depth + 1, entities=self.entities)
        scan.feed(tag + b">")
        return _located(scan.close(), "in an attribute list declaration")


_QUOTE_OR_GT = re.compile(rb"[\"'>]")


def _located(found: str | None, where: str) -> str | None:
    """What a document inside another holds, said where once: the innermost finding, or a refusal."""
    return found if not found or " in " in found or " than " in found else f"{found} {where}"


class _Inner:
    """A document inside a value, decoded as its parser decodes it before anyone reads it:
    an srcdoc attribute (entity-decoded, a page of its own) or an XML entity declaration's
    value (character references decoded, markup wherever the entity is used)."""

    passed = False  # the whole value is read

    def __init__(self, decode: _Unescape | _CharRefs, scan: _Scan, where: str) -> None:
        self.decode, self.scan, self.where = decode, scan, where

    def feed(self, raw: bytes) -> None:
        self.scan.feed(self.decode.feed(raw))

    def close(self) -> str | None:
        self.scan.feed(self.decode.feed(b"", final=True))
        return _located(self.scan.close(), self.where)


class _DataUrl:
    """A data: URL in an attribute value: an SVG or XML document (one an iframe, embed or object runs)
    is decoded as a browser does and judged, HTML is refused as the patterns refuse it, and any other
    type is passed over.

    The value is entity-decoded, the URL parser drops tabs and newlines and
    leading controls, the type is what precedes the first ";" or "," (around
    spaces), and the body is percent-decoded and then, for ";base64",
    base64-decoded. Both readings of the body are judged, so no difference in
    how browsers read the parameters matters.
    """

    def __init__(self, budget: _Budget, depth: int) -> None:
        self.budget, self.depth = budget, depth
        self.unescape = _Unescape()
        self.head: bytes | None = b""  # what precedes the "," while it is read; None once it was
        self.result: str | None = None
        self.passed = False  # decided without its body (another type, HTML, a refusal): the rest is not read
        self.bodies: list[_Transcode] = []  # the percent-decoded body and, for ;base64, its decoding
        self.percent_held = b""
        self.base64_held: bytes | None = None

    def feed(self, raw: bytes, final: bool = False) -> None:
        if self.passed:
            return
        data = self.unescape.feed(raw, final).translate(None, b"\t\n\r")
        if self.head is not None:
            head = (self.head + data).lstrip(_C0_AND_SPACE.encode())
            comma = head.find(b",")
            if comma < 0 and len(head) <= _DATA_URL_HEAD and not final:
                self.head = head  # the type is yet to come whole
                return
            self.head = None
            # With no "," at all it is no document to a browser.
            if (comma < 0 and final) or not self._start(head[:comma] if comma >= 0 else head,
                                                        comma < 0 or comma > _DATA_URL_HEAD):
                self.passed = True
                return
            data = head[comma + 1:]
        self._body(data, final)

    def close(self) -> str | None:
        self.feed(b"", final=True)
        for body in self.bodies:
            found = body.close()
            if found:
                return _located(found, "in a data: URL")
        return self.result

    def _start(self, header: bytes, too_long: bool) -> bool:
        """Read the type (of a header `too_long` to read whole); True when the body is to be judged."""
        if header[:5].lower() != b"data:":
            return False
        mime, *params = header[5:].lower().split(b";")
        mime = mime.strip(b" \t\n\f\r")
        if mime == b"text/html":  # spelled in a way the patterns do not read ("data: text/html")
            self.result = "a data: URL holding HTML"
            return False
        page = mime in (b"image/svg+xml", b"application/xhtml+xml")
        if not (page or mime in (b"text/xml", b"application/xml", b"text/xsl") or mime.endswith(b"+xml")):
            return False
        if self.budget.data_urls <= 0:
            self.result = f"more than {_DATA_URL_MAX} data: URLs holding SVG or XML"
        elif self.depth >= _SRCDOC_DEPTH:
            self.result = f"data: URLs holding SVG or XML nested more than {_SRCDOC_DEPTH} deep"
        elif too_long:
            self.result = f"a data: URL holding SVG or XML with more than {_DATA_URL_HEAD} bytes of parameters"
        if self.result:
            return False
        self.budget.data_urls -= 1
        params = [p.strip(b" \t\n\f\r") for p in params]
        charset = next((p[8:].strip(b" \"'").decode("latin-1") for p in params if p.startswith(b"charset=")), None)
        for _ in range(2 if b"base64" in params else 1):
            self.bodies.append(_Transcode(_Scan(self.budget, xml=not page, depth=self.depth + 1), charset))
        if len(self.bodies) == 2:
            self.base64_held = b""
        return True

    def _body(self, data: bytes, final: bool) -> None:
        data, self.percent_held = self.percent_held + data, b""
        cut = data.rfind(b"%", max(len(data) - 2, 0))
        if cut >= 0 and not final:
            data, self.percent_held = data[:cut], data[cut:]  # an escape the next piece may complete
        data = _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), data)
        self.bodies[0].feed(data, final)
        if self.base64_held is not None:
            # Forgiving: whatever is not of the alphabet is left out (a browser would give up).
            data = self.base64_held + _NOT_BASE64.sub(b"", data)
            rest = len(data) % 4
            if not final:
                data, self.base64_held = data[:len(data) - rest], data[len(data) - rest:]
            elif rest:  # unpadded: a lone last character decodes to nothing
                data = data[:-1] if rest == 1 else data + b"=" * (4 - rest)
            self.bodies[1].feed(binascii.a2b_base64(data), final)


_PERCENT = re.compile(rb"%([0-9a-fA-F]{2})")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")


class _Transcode:
    """Feeds a document that arrives in pieces to a scan in UTF-8, once its first bytes tell its
    encoding: a UTF-16 byte order mark or "<" beside a zero, or the URL's charset."""

    def __init__(self, scan: _Scan, charset: str | None) -> None:
        self.scan, self.charset = scan, (charset or "").lower()
        self.head: bytes | None = b""
        self.decoder: codecs.IncrementalDecoder | None = None

    def feed(self, data: bytes, final: bool = False) -> None:
        if self.head is not None:
            data, self.head = self.head + data, b""
            if len(data) < 2 and not final:
                self.head = data
                return
            self.head = None
            encoding = _utf16(data[:2], self.charset)
            self.decoder = codecs.getincrementaldecoder(encoding)("replace") if encoding else None
        if self.decoder:
            data = self.decoder.decode(data, final).encode("utf-8", "replace")
        if data:
            self.scan.feed(data)

    def close(self) -> str | None:
        self.feed(b"", final=True)
        return self.scan.close()


def _utf16(head: bytes, charset: str) -> str | None:
    """"utf-16-le"/"utf-16-be" when a document starting with `head` is UTF-16 to a browser, else None."""
    if head in (b"\xff\xfe", b"<\x00"):
        return "utf-16-le"
    if head in (b"\xfe\xff", b"\x00<"):
        return "utf-16-be"
    if head != b"\xef\xbb" and charset.replace("-", "").replace("_", "") in ("utf16", "utf16le", "utf16be"):
        return "utf-16-be" if charset.endswith("be") else "utf-16-le"
    return None


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
