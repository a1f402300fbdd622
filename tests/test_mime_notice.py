"""The notice goes where the reader sees it: HTML bodies with decoy "<body>" text (in a comment,
a style sheet, the title, a script, a bogus CDATA comment, a hidden container) go through the
proxy, and the relayed HTML is rendered in headless Chromium, whose document.body.innerText
must show the notice. (tests/test_mime_units.py checks the pure body finder with html.parser.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.decoys import BROWSER_ONLY, DECOYS
from tests.support.env import chrome
from tests.support.mail import attachment, message, multipart, text
from tests.support.relayed import body_text

HEADING = "The mail gateway changed this message before delivery:"  # the English notice (notices/templates/en)

CASES = {**DECOYS, **{k: doc for k, (doc, _) in BROWSER_ONLY.items()}}


@pytest.fixture(scope="module")
def relayed(tmp_path_factory) -> dict[str, str]:
    """Each decoy document with a stripped attachment, relayed by one proxy: the HTML that arrives."""
    from tests.support.proc import Proxy, Sink

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
