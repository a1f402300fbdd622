"""Active content: entity-decoded attribute values (srcdoc documents, URLs), XML in the XHTML or SVG
namespace, and the whole file searched in bounded windows, in linear time, without false positives.

Pure unit tests of find_active() and judge(). The linear-time cases run under
a watchdog far above what a linear search needs (a fraction of a second) and
far below what a quadratic one would (hours): they fail on a blow-up, never
on a slow machine.
"""

from __future__ import annotations

import random
import re
import signal
from contextlib import contextmanager

import markup
import pytest

from smtp_offload.inspect import InspectPolicy, judge, sniff
from smtp_offload.inspect.active import _CHUNK, _OVERLAP, _SRCDOC_MAX, find_active
from smtp_offload.inspect.tags import Tags
from smtp_offload.model import Verdict

KEEP, BLOCKED = Verdict.KEEP, Verdict.BLOCKED
MIB = 1 << 20
XHTML = b"http://www.w3.org/1999/xhtml"
SVG = b"http://www.w3.org/2000/svg"


def page(body: bytes) -> bytes:
    return b"<!DOCTYPE html>\n<html><head><title>Statement</title></head><body>" + body + b"</body></html>\n"


def filler(n: int) -> bytes:
    line = b'<p class="row">Order 1042 shipped &amp; invoiced; see <a href="https://example.com/o?id=1&amp;v=2">it</a>.</p>\n'
    return (line * (n // len(line) + 1))[:n]


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
    # round 2: the tag reader
    ("tags and on-words", lambda n: b"<p> onabcd=1 " * (n // 13)),
    ("tags with values and on-words", lambda n: b'<p x="1"> onabcd=1 ' * (n // 19)),
    ("quotes in tags and on-words", lambda n: b'<a x="<b y=\'" onabcd ' * (n // 21)),
    ("one tag, many attributes", lambda n: b"<a" + b' x=a"onabcd' * (n // 11)),
    ("equals and quotes", lambda n: b'<a x=a="  onabcd ' * (n // 17)),
    ("open tags and on-words", lambda n: b"<a onabcd" * (n // 9)),
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
