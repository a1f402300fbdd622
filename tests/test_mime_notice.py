"""The notice goes where the reader sees it: HTML bodies with decoy "<body>" text (in a comment,
a style sheet, the title, a script, a bogus CDATA comment, a hidden container) go through the
proxy, and the relayed HTML is rendered in headless Chromium, whose document.body.innerText
must show the notice. (tests/test_mime_units.py checks the pure body finder with html.parser.)"""

from __future__ import annotations

import html.parser
from collections.abc import Iterator

import pytest

from conftest import chrome
from mail import attachment, message, multipart, text
from smtp_offload.notice import HEADING
from test_attachments import body_text


class Visible(html.parser.HTMLParser):
    """Records where text that a browser shows appears (outside comments, <head>, raw text)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.hidden = 0
        self.shown: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("title", "style", "script", "textarea", "template"):
            self.hidden += 1

    def handle_endtag(self, tag):
        if tag in ("title", "style", "script", "textarea", "template"):
            self.hidden -= 1

    def handle_data(self, data):
        if not self.hidden:
            self.shown.append(data)


MARK = "NOTICE-MARK"
# Decoys that stdlib html.parser reads as browsers do (tests/test_mime_units.py checks the pure
# function with it); here all of them, with BROWSER_ONLY, are rendered by a real browser.
DECOYS = {
    "comment": "<html><head><!-- <body> --></head><body><p>text</p></body></html>",
    "style": "<html><head><style>/*<body>*/ p{}</style></head><body><p>text</p></body></html>",
    "title": "<html><head><title><body></title></head><body><p>text</p></body></html>",
    "script": '<html><head><script>var a = "<body>";</script></head><body><p>text</p></body></html>',
    "attribute": '<html><head><meta content="<body>"></head><body><p>text</p>',
    "no body tag": "<html><head><title>t</title></head><p>text</p></html>",
    "hidden container": '<div style="display:none"><body>hidden</div><p>text</p>',
    "text first": "Hello <b>agent</b>",
}
# Where html.parser (3.11) and browsers disagree, the place the HTML standard's tokenizer gives.
BROWSER_ONLY = {
    "script double escaped": ("<script><!--<script></script><body>--></script><body><p>text</p>",
                              "--></script><body><div>NOTICE-MARK</div><p>"),
    "cdata": ("<html><head><![CDATA[<body>]]></head><p>text</p>",
              "<![CDATA[<body><div>NOTICE-MARK</div>]]>"),  # a bogus comment up to the first ">"
    "empty comment": ("<!--><body>--><p>text</p>", "<!--><body><div>NOTICE-MARK</div>-->"),
}
CASES = {**DECOYS, **{k: doc for k, (doc, _) in BROWSER_ONLY.items()}}


@pytest.fixture(scope="module")
def relayed(tmp_path_factory) -> dict[str, str]:
    """Each decoy document with a stripped attachment, relayed by one proxy: the HTML that arrives."""
    from conftest import Proxy, Sink

    sink = Sink()
    proxy = Proxy(tmp_path_factory.mktemp("notice"), sink.port).start()
    try:
        out = {}
        for case, doc in CASES.items():
            msg = message(multipart(multipart(text("plain\r\n"), text(doc, subtype="html"), subtype="alternative"),
                                    attachment(b"", "empty.pdf", "application/pdf")))
            code, reply = proxy.send(msg)
            assert code == 250, reply
            out[case] = body_text(sink.messages[-1].content, "html")
        return out
    finally:
        proxy.stop()
        sink.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[object]:
    driver = chrome(tmp_path_factory.mktemp("profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.parametrize("case", list(CASES))
def test_relayed_html_shows_the_notice(relayed, browser, case, tmp_path):
    html = relayed[case]
    assert html.count(HEADING) == 1
    driver = browser
    page = tmp_path / "mail.html"
    page.write_text(html, encoding="utf-8")
    driver.get(page.as_uri())
    shown = driver.execute_script("return document.body.innerText")
    assert HEADING in shown, html
    assert "empty.pdf" in shown
