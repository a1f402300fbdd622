"""Active content: entity-decoded attribute values (srcdoc documents, URLs), XML in the XHTML or SVG
namespace, and the whole file searched in bounded windows, in linear time, without false positives.

Pure unit tests of find_active() and judge(). The linear-time cases run under
a watchdog far above what a linear search needs (a fraction of a second) and
far below what a quadratic one would (hours): they fail on a blow-up, never
on a slow machine.
"""

from __future__ import annotations

import html
import random
import re
import signal
from contextlib import contextmanager

import pytest

from smtp_offload.inspect import InspectPolicy, judge, sniff
from smtp_offload.inspect.active import _CHUNK, _DATA_URL_MAX, _OVERLAP, _SRCDOC_MAX, find_active
from smtp_offload.inspect.tags import Tags
from smtp_offload.model import Verdict
from tests.support import markup

KEEP, BLOCKED = Verdict.KEEP, Verdict.BLOCKED
MIB = 1 << 20
XHTML = b"http://www.w3.org/1999/xhtml"
SVG = b"http://www.w3.org/2000/svg"


def page(body: bytes) -> bytes:
    return b"<!DOCTYPE html>\n<html><head><title>Statement</title></head><body>" + body + b"</body></html>\n"


def filler(n: int) -> bytes:
    line = b'<p class="row">Order 1042 shipped &amp; invoiced; see <a href="https://example.com/o?id=1&amp;v=2">it</a>.</p>\n'
    return (line * (n // len(line) + 1))[:n]


def svg(body: str = "<script>go()</script>") -> str:
    return f'<svg xmlns="{markup.SVG_NS}">{body}</svg>'


def svg_url(body: str = "<script>go()</script>") -> str:
    return f"data:image/svg+xml;base64,{markup.b64(svg(body))}"


def assert_blocked(data: bytes, declared: str | None, name: str | None, kind: str, feature: str) -> None:
    j = judge(data, declared, name)
    assert (j.verdict, j.reason) == (BLOCKED, f"{kind} with active content is not accepted ({feature})")
    assert len(j.reason) < 120
    kept = judge(data, declared, name, InspectPolicy(block_active_content=False))
    assert kept.verdict is KEEP, kept.reason


# --- srcdoc: a whole document, entity-encoded -------------------------------------------

SRCDOC = [
    ("script", b'<iframe srcdoc="&lt;script&gt;alert(document.domain)&lt;/script&gt;"></iframe>',
     "a script element in an srcdoc document"),
    ("upper-case references", b'<iframe srcdoc="&LT;script&GT;go()&LT;/script&GT;"></iframe>',
     "a script element in an srcdoc document"),
    ("numeric references", b'<iframe srcdoc="&#60;script&#x3e;go()&#60;/script&#62;"></iframe>',
     "a script element in an srcdoc document"),
    ("zero-padded references", b'<iframe srcdoc="&#000000000060;script&gt;go()"></iframe>',
     "a script element in an srcdoc document"),
    ("single-quoted", b"<iframe srcdoc='&lt;script&gt;go()&lt;/script&gt;'></iframe>",
     "a script element in an srcdoc document"),
    ("unquoted", b"<iframe srcdoc=&lt;script&gt;go()&lt;/script&gt;></iframe>",
     "a script element in an srcdoc document"),
    ("handler with an encoded equals sign", b'<iframe srcdoc="&lt;img src=x onerror&#x3d;go()&gt;"></iframe>',
     "an event handler attribute in an srcdoc document"),
    ("javascript url with encoded quotes", b'<iframe srcdoc="&lt;a href=&quot;javascript:go()&quot;&gt;x&lt;/a&gt;">'
     b"</iframe>", "a javascript: URL in an srcdoc document"),
    ("srcdoc in srcdoc", b'<iframe srcdoc="&lt;iframe srcdoc=&quot;&amp;lt;script&amp;gt;go()&amp;lt;/script&amp;gt;'
     b'&quot;&gt;&lt;/iframe&gt;"></iframe>', "a script element in an srcdoc document"),
    ("three deep", b'<iframe srcdoc="&lt;iframe srcdoc=&quot;&amp;lt;iframe srcdoc=&amp;quot;&amp;amp;lt;script'
     b'&amp;amp;gt;go()&amp;quot;&amp;gt;&quot;&gt;"></iframe>', "a script element in an srcdoc document"),
    ("deeper than three", b'<iframe srcdoc="&lt;iframe srcdoc=&quot;&amp;lt;iframe srcdoc=&amp;quot;&amp;amp;lt;'
     b'iframe srcdoc=x&amp;amp;gt;&amp;quot;&amp;gt;&quot;&gt;"></iframe>', "srcdoc documents nested more than 3 deep"),
    ("far into a long value", b'<iframe srcdoc="' + b"&lt;p&gt;filler&lt;/p&gt;" * 200_000
     + b'&lt;script&gt;go()&lt;/script&gt;"></iframe>', "a script element in an srcdoc document"),
]


@pytest.mark.parametrize("markup,feature", [s[1:] for s in SRCDOC], ids=[s[0] for s in SRCDOC])
def test_srcdoc_documents_are_decoded_and_judged(markup, feature):
    assert_blocked(page(markup), "text/html", "statement.html", "HTML document", feature)


def test_too_many_srcdoc_documents_are_refused():
    data = page(b'<iframe srcdoc="&lt;p&gt;hi&lt;/p&gt;"></iframe>' * (_SRCDOC_MAX + 1))
    assert find_active(data, "utf-8") == f"more than {_SRCDOC_MAX} srcdoc documents"
    assert find_active(page(b'<iframe srcdoc="&lt;p&gt;hi&lt;/p&gt;"></iframe>' * _SRCDOC_MAX), "utf-8") is None


# --- URL attributes, decoded as a browser does ---------------------------------------------

URLS = [
    ("leading control references", b'<a href="&#1;&#12;javascript:go()">x</a>', "a javascript: URL"),
    ("leading named tab", b'<a href="&Tab;&NewLine;javascript:go()">x</a>', "a javascript: URL"),
    ("prefixed xlink href", b'<svg><a foo:href=" &#x20;javascript:go()" xmlns:foo="http://www.w3.org/1999/xlink">'
     b"<text>x</text></a></svg>", "a javascript: URL"),
    ("formaction", b'<form><button formaction="&#x1f;JaVaScRiPt:go()">x</button></form>', "a javascript: URL"),
    ("action", b"<form action='&#9;vbscript:go'></form>", "a vbscript: URL"),
    ("object data", b'<object data="&#32;data:text/html;base64,PHNjcmlwdD4="></object>', "a data: URL holding HTML"),
]


@pytest.mark.parametrize("markup,feature", [u[1:] for u in URLS], ids=[u[0] for u in URLS])
def test_url_attribute_values_are_decoded(markup, feature):
    assert_blocked(page(markup), "text/html", "page.html", "HTML document", feature)


# --- XML: script in the XHTML or SVG namespace --------------------------------------------

XML_ACTIVE = [
    ("prefixed xhtml script", b'<?xml version="1.0"?>\n<order><x:script xmlns:x="' + XHTML + b'">go()</x:script></order>',
     "application/xml", "data.xml", "a script element"),
    ("declared text/xml", b'<order><x:script xmlns:x="' + XHTML + b'">go()</x:script></order>',
     "text/xml", "data", "a script element"),
    ("named xml only", b'<order><x:script xmlns:x="' + XHTML + b'">go()</x:script></order>',
     "application/octet-stream", "export.xml", "a script element"),
    ("long prefix", b"<order><" + b"p" * 100_000 + b":script xmlns:" + b"p" * 100_000 + b'="' + XHTML
     + b'">go()</x:script></order>', "application/xml", "data.xml", "a script element"),
    ("xhtml root behind an internal dtd", b'<?xml version="1.0"?>\n<!DOCTYPE page [ <!ENTITY sep ">"> ]>\n'
     b'<html xmlns="' + XHTML + b'"><body><script>go()</script></body></html>', "application/xml", "data.xml",
     "a script element"),
    ("prefixed xhtml root", b'<h:html xmlns:h="' + XHTML + b'"><h:body><h:p onclick="go()">x</h:p></h:body></h:html>',
     None, "data.xml", "an event handler attribute"),
    ("svg nested in xml", b'<?xml version="1.0"?>\n<report><svg xmlns="' + SVG + b'" onload="go()"/></report>',
     "text/xml", "report.xml", "an event handler attribute"),
    ("javascript url in xhtml", b'<doc xmlns:h="' + XHTML + b'"><h:a href="javascript:go()">x</h:a></doc>',
     "application/xml", "doc.xml", "a javascript: URL"),
    ("namespace spelled with references", b'<doc><x:script xmlns:x="http&#58;//www.w3.org/1999/&#x78;html">go()'
     b"</x:script></doc>", "application/xml", "doc.xml", "a script element"),
    ("namespace declared after the script", b'<doc><x:script>go()</x:script>' + filler(3 * MIB)
     + b'<y xmlns:x="' + XHTML + b'"/></doc>', "application/xml", "doc.xml", "a script element"),
    ("xslt stylesheet", b'<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
     b'<xsl:template match="/"><html><script>go()</script></html></xsl:template></xsl:stylesheet>',
     None, "invoice.xsl", "a script element"),
    ("xslt with msxsl script", b'<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" '
     b'xmlns:msxsl="urn:schemas-microsoft-com:xslt"><msxsl:script language="JScript">go()</msxsl:script>'
     b"</xsl:stylesheet>", "application/xslt+xml", "style.xslt", "a script element"),
    ("xml declaration whatever the name", b'<?xml version="1.0"?>\n<r><x:script xmlns:x="' + XHTML + b'">go()'
     b"</x:script></r>", "text/plain", "notes.txt", "a script element"),
]


@pytest.mark.parametrize("data,declared,name,feature", [x[1:] for x in XML_ACTIVE], ids=[x[0] for x in XML_ACTIVE])
def test_xml_with_xhtml_or_svg_namespace_script_is_active(data, declared, name, feature):
    assert sniff(data)[0] == "text/plain"
    assert_blocked(data, declared, name, "XML document", feature)


XML_PLAIN = [
    ("bpmn script task", b'<?xml version="1.0"?>\n<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/'
     b'MODEL"><bpmn:scriptTask><bpmn:script>total = a + b</bpmn:script></bpmn:scriptTask></bpmn:definitions>'),
    ("no namespace", b'<?xml version="1.0"?>\n<build><script>npm test</script><step onfail="notify" '
     b'href="javascript:void(0)"/></build>'),
    ("e-invoice with a stylesheet", b'<?xml version="1.0"?>\n<?xml-stylesheet type="text/xsl" href="fatturapa.xsl"?>\n'
     b'<p:FatturaElettronica xmlns:p="http://ivaservizi.agenziaentrate.gov.it/docs/xsd/fatture/v1.2">'
     b"<Importo>10.00</Importo></p:FatturaElettronica>"),
    ("svg-namespaced drawing without script", b'<?xml version="1.0"?>\n<!DOCTYPE svg [ <!ENTITY ns_svg "' + SVG
     + b'"> ]>\n<doc><svg xmlns="&ns_svg;"><rect width="1" height="1"/><text>online = yes</text></svg></doc>'),
    ("xhtml prose about scripts", b'<doc xmlns:h="' + XHTML + b'"><h:p>Use the &lt;script&gt; tag; status '
     b"online = yes; see x: script</h:p></doc>"),
]


@pytest.mark.parametrize("data", [x[1] for x in XML_PLAIN], ids=[x[0] for x in XML_PLAIN])
def test_xml_that_runs_nothing_is_kept(data):
    for declared, name in (("application/xml", "data.xml"), ("text/xml", None), (None, "style.xsl")):
        j = judge(data, declared, name)
        assert j.verdict is KEEP, (declared, name, j.reason)


# --- the whole file, in windows ------------------------------------------------------------

FEATURES = [
    (b"<script>go()</script>", "a script element"),
    (b'<img src="x" onerror="go()">', "an event handler attribute"),
    (b'<a href="java&#x09;script&colon;go()">x</a>', "a javascript: URL"),
    (b'<iframe src="data:text/html;base64,PHNjcmlwdD4="></iframe>', "a data: URL holding HTML"),
    (b'<iframe srcdoc="&lt;script&gt;go()&lt;/script&gt;"></iframe>', "a script element in an srcdoc document"),
]


@pytest.mark.parametrize("snippet,feature", FEATURES, ids=[f[1] for f in FEATURES])
def test_active_content_far_from_either_end_of_a_big_file(snippet, feature):
    """Past the first 8 MiB and before the last 8 MiB, which were all that was searched before."""
    data = page(filler(9 * MIB) + snippet + filler(9 * MIB))
    assert find_active(data, "utf-8") == feature
    assert find_active(page(filler(18 * MIB)), "utf-8") is None


def test_active_content_in_the_middle_of_a_big_utf16_file():
    text = "<html><body>" + "<p>Bestellung versandt</p>\n" * 400_000 + "<script>go()</script>" + \
        "<p>Bestellung versandt</p>\n" * 400_000 + "</body></html>"
    data = text.encode("utf-16")
    assert len(data) > 40 * MIB
    j = judge(data, "text/html", "page.html")
    assert (j.verdict, j.reason) == (BLOCKED, "HTML document with active content is not accepted (a script element)")


@pytest.mark.parametrize("at", [_CHUNK, 2 * _CHUNK - _OVERLAP])  # a piece's end; where a window's overlap starts
@pytest.mark.parametrize("snippet,feature", FEATURES, ids=[f[1] for f in FEATURES])
def test_a_feature_cut_by_a_window_edge_is_found(snippet, feature, at):
    for shift in range(-len(snippet) - 2, 3):
        lead = max(0, at + shift - 6)
        data = b"<html>" + b"x" * lead + snippet + b"y" * 100
        assert find_active(data, "utf-8") == feature, shift


PADDED = [
    ("handler padded with spaces", b'<body onload' + b" " * (5 * MIB) + b'=go()>', "an event handler attribute"),
    ("handler padded with mixed whitespace", b'<body onload' + b" \t\r\n" * MIB + b'=go()>',
     "an event handler attribute"),
    ("scheme padded with tab references", b'<a href="java' + b"&#9;" * (2 * MIB) + b'script:go()">',
     "a javascript: URL"),
    ("scheme padded with tabs and references", b'<a href="java' + b"&#x0A;\t&Tab;" * MIB + b'script:go()">',
     "a javascript: URL"),
    ("url after spaces", b'<a href="' + b" " * (3 * MIB) + b'javascript:go()">', "a javascript: URL"),
    ("url after control references", b'<a href="' + b"&#1;" * MIB + b'javascript:go()">', "a javascript: URL"),
    ("reference padded with zeros", b'<a href="&#' + b"0" * (3 * MIB) + b'106;avascript:go()">',
     "a javascript: URL"),
    ("srcdoc reference padded with zeros", b'<iframe srcdoc="&#x' + b"0" * (3 * MIB) + b'3c;script>go()"></iframe>',
     "a script element in an srcdoc document"),
    ("unknown event after long attributes", b'<div title="' + b"a" * 20_000 + b'" onfuturevent=go()>',
     "an event handler attribute"),
]


@pytest.mark.parametrize("markup,feature", [p[1:] for p in PADDED], ids=[p[0] for p in PADDED])
def test_padding_cannot_stretch_a_feature_past_the_overlap(markup, feature):
    assert find_active(page(markup), "utf-8") == feature


@pytest.mark.parametrize("markup", [
    b'<a href="java' + b"&#9;" * MIB + b' script:go()">x</a>',  # a space breaks the scheme
    b'<a href="java' + b" \t" * MIB + b'script:go()">x</a>',
    b"<p>" + b"status online = yes; " * 100_000 + b"</p>",
    b'<iframe srcdoc="&lt;p&gt;Hello &amp;amp; welcome&lt;/p&gt;"></iframe><pre>Use &lt;script&gt; to add code'
    b"</pre>",
    b'<a href="mailto:&#105;&#110;&#102;&#111;@example.com">write to us</a>',
])
def test_no_false_positives(markup):
    j = judge(page(markup), "text/html", "page.html")
    assert j.verdict is KEEP, j.reason


# --- linear time ---------------------------------------------------------------------------

@contextmanager
def watchdog(seconds: int):
    def expired(signum, frame):
        raise AssertionError(f"still searching after {seconds} s: not linear")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


ADVERSARIAL = [  # 4 MiB each; a search that backtracks over its input takes hours on any of them
    ("open tags", lambda n: b"<a" * (n // 2)),
    ("one tag that never closes", lambda n: b"<a" + b" onfoo" * (n // 6)),
    ("handler names without equals", lambda n: b" onload" * (n // 7)),
    ("unknown handlers outside tags", lambda n: b" onabcd=1" * (n // 9)),
    ("reference openers", lambda n: b"&#" * (n // 2)),
    ("references of zeros", lambda n: b"&#0" * (n // 3)),
    ("equals and spaces", lambda n: b"= " * (n // 2)),
    ("values starting with references", lambda n: b' href="&x' * (n // 9)),
    ("scheme starts", lambda n: b"=java&#9;scrip" * (n // 14)),
    ("srcdoc never closed", lambda n: b'<iframe srcdoc="' + b"&amp;lt;" * (n // 8)),
    ("prefixed script names", lambda n: b"-:scripts" * (n // 9)),
    ("namespace almost", lambda n: b"&#104;ttp://www.w3.org/1999/xhtm" * (n // 32)),
    # round 2: the tag reader, and the documents inside values
    ("tags and on-words", lambda n: b"<p> onabcd=1 " * (n // 13)),
    ("tags with values and on-words", lambda n: b'<p x="1"> onabcd=1 ' * (n // 19)),
    ("quotes in tags and on-words", lambda n: b'<a x="<b y=\'" onabcd ' * (n // 21)),
    ("one tag, many attributes", lambda n: b"<a" + b' x=a"onabcd' * (n // 11)),
    ("equals and quotes", lambda n: b'<a x=a="  onabcd ' * (n // 17)),
    ("open tags and on-words", lambda n: b"<a onabcd" * (n // 9)),
    ("data urls", lambda n: b'<i src="data:image/png;base64,iVBORw0KGgo=">' * (n // 44)),
    ("svg data url never closed", lambda n: b'<i src="data:image/svg+xml,' + b"%3C" * (n // 3)),
    ("svg data url of percents", lambda n: b'<i src="data:image/svg+xml,' + b"%" * n),
    ("base64 svg data url of junk", lambda n: b'<i src="data:image/svg+xml;base64,' + b"!A=" * (n // 3)),
    ("entity never closed", lambda n: b'<!ENTITY a "' + b"&#38;#60;" * (n // 9)),
    ("data url parameters never ending", lambda n: b'<i src="data:image/png' + b";a=b" * (n // 4)),
]


@pytest.mark.parametrize("build", [a[1] for a in ADVERSARIAL], ids=[a[0] for a in ADVERSARIAL])
def test_adversarial_input_is_searched_in_linear_time(build):
    data = build(4 * MIB)
    with watchdog(120):
        assert find_active(data, "utf-8") is None
        assert find_active(data, "utf-8", xml=True) is None


# --- round 2: event handlers anywhere in a tag, as a browser's tokenizer reads it -----------

def no_quotes(n: int) -> bytes:
    return (b"Order 1042 shipped & invoiced > see the portal < or call. " * (n // 58 + 1))[:n]


IN_TAG = [  # "onfutureevent" is on no list: only reading the tag finds it
    ("webkit animation after a quoted >", markup.webkit_animation(), "onwebkitanimationstart"),
    ("content-visibility after a quoted >", markup.content_visibility(), "oncontentvisibilityautostatechange"),
    ("after a quoted >", b'<div title="a>b" onfutureevent=go()>x</div>', None),
    ("after quoted < and >", b"<div title='<b>x</b>' data-x=\"<i>\" onfutureevent=go()>x</div>", None),
    ("right after a quoted value", b'<div title=">"onfutureevent=go()>x</div>', None),
    ("after a slash", b'<img/onfutureevent=go()>', None),
    ("equals sign starting a name", b'<div ="  onfutureevent=go() ">x</div>', None),
    ("quote inside an unquoted value", b'<div x=a"  onfutureevent=go() ">x</div>', None),
    ("a reference is no whitespace", b'<div x=&#9;&#9;"  onfutureevent=go() ">x</div>', None),
    ("a name holding <", b'<div x<b/onfutureevent=go()>x</div>', None),
    ("space around =", b'<div x onfutureevent\n=\n go()>x</div>', None),
    ("upper case", b'<DIV TITLE=">" ONFUTUREEVENT=go()>x</DIV>', None),
    ("after a value longer than a window", b'<div title="' + no_quotes(3 * MIB) + b'" onfutureevent=go()>x</div>',
     None),
    ("after attributes longer than a window", b"<div " + b'data-a="1" ' * (300_000) + b"onfutureevent=go()>x</div>",
     None),
]


@pytest.mark.parametrize("data,event", [c[1:] for c in IN_TAG], ids=[c[0] for c in IN_TAG])
def test_any_on_attribute_in_a_tag_counts_whatever_its_quoted_values_hold(data, event):
    assert_blocked(data, "text/html", "page.html", "HTML document", "an event handler attribute")
    if event:  # the browser's own event names count even where no tag is seen
        assert find_active(f"<p>x {event}=go()</p>".encode(), "utf-8") == "an event handler attribute"


def test_only_html_whitespace_separates_attributes():
    """A vertical tab (which also makes the file no text file) or a reference is part of a value."""
    for gap in (b"\x0b", b"&#11;", b"&#9;&#9;", b"\x0b" * 40, b"&#x0b;" * 40):
        assert find_active(b'<div x=' + gap + b'"  onfutureevent=go() ">x</div>', "utf-8") == \
            "an event handler attribute", gap


@pytest.mark.parametrize("event", [
    "webkitanimationstart", "webkitanimationiteration", "webkitanimationend", "webkittransitionend",
    "animationcancel", "transitionrun", "transitionstart", "transitioncancel", "contentvisibilityautostatechange",
    "scrollsnapchange", "scrollsnapchanging", "scrollend", "beforetoggle", "beforematch", "pagereveal",
    "pageswap", "securitypolicyviolation", "mozfullscreenchange", "webkitfullscreenchange", "contextlost",
])
def test_events_that_fire_without_a_click_are_known(event):
    """Listed, so they count even where the tag cannot be seen (an unclosed comment or value before it)."""
    data = f'<!-- a comment with a quote " <div title=">" on{event}=go()>x</div>'.encode()
    assert find_active(data, "utf-8") == "an event handler attribute"


@pytest.mark.parametrize("markup", [
    b'<div title="  onfutureevent=go() ">x</div>',  # in a quoted value
    b"<div title='  onfutureevent=go() '>x</div>",
    b"<div x= onfutureevent=go()>x</div>",  # the value of x
    b"<div x =onfutureevent=go()>x</div>",
    b'<p>He said "hi" and status online = yes</p>',
    b"<p>it's fine; status online = yes</p>",
    b'<img alt="a <b>bold</b> claim: status online = yes" src="x.png">',
    b'<a href="https://example.com/?a=1&online=yes&onfutureevent=go()">x</a>',
    b'<img src="data:image/png;base64,' + b"A" * 64 + b'/onxyzw=">',
    b"<pre>&lt;div onfutureevent=go()&gt; is how not to do it</pre>",
    b'<p title="x">' + b'say "online = yes" ' * 200_000 + b"</p>",
])
def test_on_words_outside_tags_are_no_handlers(markup):
    j = judge(page(markup), "text/html", "page.html")
    assert j.verdict is KEEP, j.reason


def _reference(data: bytes) -> bool:
    """The standard's attribute states, character by character, from every "<" + letter to its ">":
    does some tag have an on...= attribute? (Slow and plain: what the scanner must never miss.)"""
    d, ws = data.lower(), b"\t\n\f\r "
    for s in range(len(d) - 1):
        if d[s] != 0x3C or not 0x61 <= d[s + 1] <= 0x7A:
            continue
        state, name = "tag", b""
        for c in d[s + 1:]:
            if c == 0x3E and state not in ("dq", "sq"):
                break
            if state == "tag":
                state = "before" if c in ws or c == 0x2F else "tag"
            elif state in ("before", "after"):
                if c == 0x3D and state == "after":
                    state = "value"
                elif c not in ws and c != 0x2F:
                    state, name = "name", bytes([c])
                elif c == 0x2F:
                    state = "before"
            elif state == "name":
                if c == 0x3D:
                    if re.fullmatch(rb"on[a-z]{3,64}", name):
                        return True
                    state = "value"
                elif c in ws:
                    state = "after"
                elif c == 0x2F:
                    state = "before"
                else:
                    name += bytes([c])
            elif state == "value":
                state = {0x22: "dq", 0x27: "sq"}.get(c, "value" if c in ws else "unquoted")
            elif state in ("dq", "sq"):
                if c == (0x22 if state == "dq" else 0x27):
                    state = "before"
            elif state == "unquoted" and c in ws:
                state = "before"
    return False


@pytest.mark.parametrize("seed", range(4))
def test_the_tag_reader_finds_whatever_the_standard_tokenizer_finds(seed):
    """Random markup made of the pieces that matter (quotes, "=", "<", ">", "/", whitespace and
    what is not, handler names), read whole and in pieces of 1, 2 and 7 bytes."""
    atoms = [b"<a", b"<b ", b" ", b"\t", b"\n", b"=", b'"', b"'", b">", b"/", b"onfoo", b"on", b"x", b"<",
             b"\x0b", b"&#9;", b"abcd", b"onabc=", b"onabc =", b"A"]
    rng = random.Random(seed)
    found = 0
    for _ in range(2500):
        data = b"".join(rng.choice(atoms) for _ in range(rng.randint(1, 30)))
        if not _reference(data):
            continue
        found += 1
        for size in (len(data), 1, 2, 7):
            tags = Tags()
            for at in range(0, len(data), size):
                tags.feed(data[at:at + size])
            assert tags.feed(b"", final=True), (size, data)
    assert found > 200


# --- round 2: XML entities --------------------------------------------------------------------

def entity_chain(levels: int) -> bytes:
    """A script element declared inside `levels` nested parameter entities, each escaping the next."""
    text = f'<script xmlns="{markup.XHTML_NS}">go()</script>'
    for n in range(levels):
        text = text.replace("&", "&#38;").replace("<", "&#60;").replace('"', "&#34;")
        text = f'<!ENTITY % p{n} "{text}">%p{n};' if n else f'<!ENTITY s "{text}">'
    return f'<?xml version="1.0"?>\n<!DOCTYPE d [{text}]>\n<d>&s;</d>'.encode()


XML_ENTITIES = [
    ("namespace assembled from an entity", markup.entity_namespace_xml(), "a script element"),
    ("svg namespace assembled", b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY w "http://www.w3.org/2000/">]>'
     b'<r><svg xmlns="&w;svg" onload="go()"/></r>', "an event handler attribute"),
    ("prefixed, namespace in two entities", b"<!DOCTYPE r [<!ENTITY a 'http://www.w3.org/'><!ENTITY b '1999/xhtml'>]>"
     b'<r><h:script xmlns:h="&a;&b;">go()</h:script></r>', "a script element"),
    ("markup in an entity value", b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY s "&#60;script xmlns=\'http://www.w3'
     b".org/1999/xhtml'>go()&#60;/script>\">]><d>&s;</d>", "a script element in an XML entity"),
    ("hex references in an entity value", b"<!DOCTYPE d [<!ENTITY s '&#x3C;x&#x3a;script xmlns:x=\"http://www.w3.org/"
     b"1999/xhtml\"&#x3E;go()&#x3c;/x&#x3A;script&#x3e;'>]><d>&s;</d>", "a script element in an XML entity"),
    ("markup in a parameter entity's entity", entity_chain(2), "a script element in an XML entity"),
    ("three entities deep", entity_chain(3), "a script element in an XML entity"),
    ("deeper than three", entity_chain(4), "XML entity declarations nested more than 3 deep"),
]


@pytest.mark.parametrize("data,feature", [x[1:] for x in XML_ENTITIES], ids=[x[0] for x in XML_ENTITIES])
def test_entities_cannot_hide_a_namespace_or_markup(data, feature):
    assert_blocked(data, "application/xml", "report.xml", "XML document", feature)


DTD_ADDS = [  # the internal subset adds to the markup: attribute defaults, entity-spelled URLs
    ("default handler", f'<!DOCTYPE r [<!ATTLIST svg onload CDATA #FIXED "go()">]><r><svg xmlns="{markup.SVG_NS}"/>'
     "</r>".encode(), "an event handler attribute in an attribute list declaration"),
    ("default handler after a quoted >", b"<!DOCTYPE d [<!ATTLIST img title CDATA '>\"' onerror CDATA \"go()\">]><d/>",
     "an event handler attribute in an attribute list declaration"),
    ("fixed javascript: URL", b'<!DOCTYPE d [<!ATTLIST iframe src CDATA #FIXED "javascript:go()">]><d/>',
     "a javascript: URL in an attribute list declaration"),
    ("default after an enumeration", b'<!DOCTYPE d [<!ATTLIST a kind (x|y) "x" href CDATA "  JavaScript:go()">]><d/>',
     "a javascript: URL in an attribute list declaration"),
    ("default data: URL holding SVG", f'<!DOCTYPE d [<!ATTLIST embed src CDATA "{svg_url()}">]><d/>'.encode(),
     "a script element in a data: URL"),
    ("declaration across windows", b"<!DOCTYPE d [<!ATTLIST a title CDATA '" + no_quotes(60 << 10) + b"' onfoo CDATA 'go()'>]>"
     b"<d/>", "an event handler attribute in an attribute list declaration"),
    ("declaration too long", b"<!DOCTYPE d [<!ATTLIST a title CDATA '" + no_quotes(MIB) + b"'>]><d/>",
     "an attribute list declaration longer than 64 KiB"),
    ("URL scheme from an entity", markup.entity_url_xml(), "a URL spelled with an XML entity"),
    ("prefixed URL from an entity", b"<!DOCTYPE s [<!ENTITY d 'data:image/svg+xml;base64,'>]><s xmlns:l='x'>"
     b"<use l:href='&d;PHN2Zz4='/></s>", "a URL spelled with an XML entity"),
]


@pytest.mark.parametrize("data,feature", [x[1:] for x in DTD_ADDS], ids=[x[0] for x in DTD_ADDS])
def test_what_the_dtd_adds_to_the_markup_is_judged(data, feature):
    assert_blocked(data, "application/xml", "report.xml", "XML document", feature)


def test_too_many_entity_declarations_are_refused():
    decls = b"".join(b'<!ENTITY e%d "part %d">' % (n, n) for n in range(_DATA_URL_MAX + 1))
    assert find_active(b"<!DOCTYPE d [" + decls + b"]><d>&e1;</d>", "utf-8", xml=True) == \
        f"more than {_DATA_URL_MAX} XML entity declarations"


@pytest.mark.parametrize("data", [
    markup.ubl_invoice(), markup.xrechnung(), markup.factur_x(),
    b'<?xml version="1.0"?>\n<!DOCTYPE book [<!ENTITY product "Acme &#8220;Widget&#8221;"><!ENTITY % local SYSTEM '
    b'"local.ent">]>\n<book><title>&product; manual</title><para>Scripts: <command>run.sh</command>; status online '
    b"= yes.</para></book>",
    b'<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/'
    b'svg11.dtd" [<!ENTITY ns_svg "http://www.w3.org/2000/svg"><!ENTITY ns_xlink "http://www.w3.org/1999/xlink">]>\n'
    b'<svg version="1.1" xmlns="&ns_svg;" xmlns:xlink="&ns_xlink;"><rect width="10" height="10"/>'
    b'<a xlink:href="https://example.com/?a=1&amp;b=2"><text>x</text></a></svg>',
    b'<?xml version="1.0"?>\n<!DOCTYPE article [<!ATTLIST para role CDATA #IMPLIED xml:lang CDATA "en" '
    b'status (draft|final) "draft"><!ENTITY co "Acme">]>\n<article><para>&co; href="x" src=\'y\'</para></article>',
], ids=["UBL invoice", "XRechnung", "Factur-X", "DocBook with entities", "Illustrator SVG", "DocBook with defaults"])
def test_ordinary_xml_is_kept(data):
    for declared, name in (("application/xml", "invoice.xml"), ("text/xml", None), (None, "invoice.xml")):
        j = judge(data, declared, name)
        assert j.verdict is KEEP, (declared, name, j.reason)


# --- round 2: data: URLs that hold SVG or XML ---------------------------------------------------

XML_WITH_SCRIPT = f'<r><x:script xmlns:x="{markup.XHTML_NS}">go()</x:script></r>'
SVG_ONLOAD = f'<svg xmlns="{markup.SVG_NS}" onload="go()"><rect/></svg>'
SVG_IN_SVG = svg('<image href="' + svg_url() + '"/>')
XHTML_WITH_SCRIPT = f'<html xmlns="{markup.XHTML_NS}"><body><script>go()</script></body></html>'
IN_DATA = "a script element in a data: URL"
DATA_URLS = [
    ("iframe", markup.svg_in_data_url("iframe"), IN_DATA),
    ("embed", markup.svg_in_data_url("embed"), IN_DATA),
    ("object", markup.svg_in_data_url("object"), IN_DATA),
    ("space before the type", f'<iframe src="data: image/svg+xml;base64,{markup.b64(svg())}"></iframe>', IN_DATA),
    ("upper case", f'<iframe src="DATA:IMAGE/SVG+XML;BASE64,{markup.b64(svg())}"></iframe>', IN_DATA),
    ("tabs in the scheme", f'<iframe src="da\tta:image/svg+xml\n;base64,{markup.b64(svg())}"></iframe>', IN_DATA),
    ("scheme as references", f"<iframe src='&#100;&#x61;ta&colon;image/svg+xml;base64,{markup.b64(svg())}'></iframe>",
     IN_DATA),
    ("unquoted", f"<iframe src=data:image/svg+xml;base64,{markup.b64(svg())}></iframe>", IN_DATA),
    ("percent-encoded", f'<iframe src="data:image/svg+xml,{markup.percent(svg())}"></iframe>', IN_DATA),
    ("entity-encoded", f'<embed src="data:image/svg+xml,{html.escape(svg())}">', IN_DATA),
    ("utf-16", f'<iframe src="data:image/svg+xml;base64,{markup.b64(svg().encode("utf-16"))}"></iframe>', IN_DATA),
    ("utf-16 by charset", f'<iframe src="data:image/svg+xml;charset=utf-16be;base64,'
     f'{markup.b64(svg().encode("utf-16-be"))}"></iframe>', IN_DATA),
    ("base64 not last", f'<iframe src="data:image/svg+xml;base64;charset=utf-8,{markup.b64(svg())}"></iframe>',
     IN_DATA),
    ("unpadded base64", f'<iframe src="data:image/svg+xml;base64,{markup.b64(svg() + "x").rstrip("=")}"></iframe>',
     IN_DATA),
    ("handler", f'<iframe src="data:image/svg+xml;base64,{markup.b64(SVG_ONLOAD)}"></iframe>',
     "an event handler attribute in a data: URL"),
    ("xhtml", f'<object data="data:application/xhtml+xml;base64,{markup.b64(XHTML_WITH_SCRIPT)}"></object>', IN_DATA),
    ("text/xml", f'<iframe src="data:text/xml,{markup.percent(XML_WITH_SCRIPT)}"></iframe>', IN_DATA),
    ("application/xml", f'<iframe src="data:application/xml;base64,{markup.b64(XML_WITH_SCRIPT)}"></iframe>', IN_DATA),
    ("text/xsl", f'<iframe src="data:text/xsl,{markup.percent(XML_WITH_SCRIPT)}"></iframe>', IN_DATA),
    ("html with a space", f'<iframe src="data: text/html;base64,{markup.b64("<script>go()</script>")}"></iframe>',
     "a data: URL holding HTML"),
    ("in an srcdoc document", f'<iframe srcdoc="&lt;iframe src=&quot;{svg_url()}&quot;&gt;"></iframe>', IN_DATA),
    ("svg in svg", f'<iframe src="data:image/svg+xml,{markup.percent(SVG_IN_SVG)}"></iframe>', IN_DATA),
]


@pytest.mark.parametrize("data,feature", [d[1:] for d in DATA_URLS], ids=[d[0] for d in DATA_URLS])
def test_svg_and_xml_in_data_urls_are_decoded_and_judged(data, feature):
    data = data.encode() if isinstance(data, str) else data
    assert_blocked(page(data), "text/html", "page.html", "HTML document", feature)


def test_a_data_url_document_far_into_a_long_value():
    body = svg("<rect/>" * (MIB // 7) + "<script>go()</script>")
    for url in (f"data:image/svg+xml;base64,{markup.b64(body)}", f"data:image/svg+xml,{markup.percent(body)}"):
        data = page(filler(MIB - 300) + f'<iframe src="{url}"></iframe>'.encode())
        assert find_active(data, "utf-8") == IN_DATA


def test_an_unmatched_quote_in_a_data_url_of_another_type_hides_nothing():
    hidden = f'<iframe src="data:image/svg+xml;base64,{markup.b64(svg())}"></iframe>'.encode()
    for gap in (b"", filler(3 * MIB)):
        data = b"<p>src='data:image/png,x</p>" + gap + hidden + b"<p>it's done</p>"
        assert find_active(data, "utf-8") == IN_DATA


@pytest.mark.parametrize("markup_", [
    f'<img src="data:image/svg+xml;base64,{markup.b64(markup.ICON)}" alt="">',
    f'<img src="data:image/svg+xml,{markup.percent(markup.ICON)}" alt="">',
    f'<iframe src="data:text/xml,{markup.percent("<build><script>npm test</script></build>")}"></iframe>',
    '<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9a'
    'wAAAABJRU5ErkJggg==">',
    f"<div style=\"background:url('data:image/svg+xml;base64,{markup.b64(svg())}')\">x</div>",  # an image: runs nothing
    '<a href="https://example.com/?q=data:image/svg+xml">x</a>',
], ids=["svg icon", "percent-encoded svg icon", "xml without a namespace", "png", "css image", "text"])
def test_data_urls_that_run_nothing_are_kept(markup_):
    j = judge(page(markup_.encode()), "text/html", "page.html")
    assert j.verdict is KEEP, j.reason


def test_too_many_svg_data_urls_are_refused():
    icon = f'<img src="data:image/svg+xml;base64,{markup.b64(markup.ICON)}">'.encode()
    assert find_active(page(icon * _DATA_URL_MAX), "utf-8") is None
    assert find_active(page(icon * (_DATA_URL_MAX + 1)), "utf-8") == \
        f"more than {_DATA_URL_MAX} data: URLs holding SVG or XML"


def test_an_svg_data_url_with_parameters_too_long_to_read_is_refused():
    url = b"data:image/svg+xml" + b";a=b" * 300 + b";base64," + markup.b64(svg()).encode()
    for at in (0, _CHUNK - 600, _CHUNK - 2000):  # wherever it sits in a window
        data = b"<html>" + b"x" * at + b'<iframe src="' + url + b'"></iframe>'
        assert find_active(data, "utf-8") == "a data: URL holding SVG or XML with more than 1024 bytes of parameters"
    shorter = url.replace(b";a=b" * 300, b";a=b" * 200)
    assert find_active(b'<iframe src="' + shorter + b'"></iframe>', "utf-8") == IN_DATA


def test_svg_data_urls_nested_too_deep_are_refused():
    url = svg_url("<rect/>")
    for _ in range(4):
        url = svg_url(f'<image href="{url}"/>')
    assert find_active(page(f'<iframe src="{url}"></iframe>'.encode()), "utf-8") == \
        "data: URLs holding SVG or XML nested more than 3 deep"


def test_a_newsletter_is_kept():
    for declared, name in (("text/html", "newsletter.html"), (None, "newsletter.htm"), ("application/xhtml+xml", None)):
        j = judge(markup.newsletter(), declared, name)
        assert j.verdict is KEEP, (declared, name, j.reason)
    assert find_active(markup.newsletter() * 200, "utf-8") is None  # across windows too

