"""The notice goes where the reader sees it: HTML bodies with decoy "<body>" text (in a comment,
a style sheet, the title, a script, a bogus CDATA comment, a hidden container) go through the
proxy, and the relayed HTML is rendered in headless Chromium, whose document.body.innerText
must show the notice. Without Chromium, the relayed HTML is checked with html.parser instead
(for the decoys it reads as browsers do)."""

from __future__ import annotations

import html.parser
from collections.abc import Iterator
from pathlib import Path

import pytest

from mail import attachment, message, multipart, text
from smtp_offload.notice import HEADING
from test_attachments import body_text

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HAVE_BROWSER = CHROMIUM.is_file() and CHROMEDRIVER.is_file()


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
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.parametrize("case", list(CASES))
def test_relayed_html_shows_the_notice(relayed, case, tmp_path, request):
    html = relayed[case]
    assert html.count(HEADING) == 1
    if not HAVE_BROWSER:
        if case in BROWSER_ONLY:
            pytest.skip("html.parser reads this decoy differently from browsers; needs Chromium")
        p = Visible()
        p.feed(html)
        p.close()
        assert HEADING in "".join(p.shown), html
        return
    driver = request.getfixturevalue("browser")
    page = tmp_path / "mail.html"
    page.write_text(html, encoding="utf-8")
    driver.get(page.as_uri())
    shown = driver.execute_script("return document.body.innerText")
    assert HEADING in shown, html
    assert "empty.pdf" in shown
