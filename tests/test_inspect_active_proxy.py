"""Issue 11 round 2, active content end to end: HTML, SVG and XML attachments that run script with no
click (an unlisted event handler after a quoted ">", an XHTML namespace spelled with a DTD entity, an
SVG inside a data: URL in an iframe, embed or object) are stripped by the proxy process with a notice
and a decision header that say why; a newsletter and e-invoices arrive byte for byte. The hostile
samples are checked to run in headless Chromium, so the tests are about real attacks."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support import markup
from tests.support.env import chrome
from tests.support.mail import attachment, message, multipart, text
from tests.support.relayed import attachment_payloads, body_text, said, verdict_reasons

HANDLER = "HTML document with active content is not accepted (an event handler attribute)"
IN_DATA_URL = "HTML document with active content is not accepted (a script element in a data: URL)"
HOSTILE = {  # name: (data, declared type, reason)
    "statement.html": (markup.webkit_animation(), "text/html", HANDLER),
    "status.htm": (markup.content_visibility(), "application/octet-stream", HANDLER),
    "report.xml": (markup.entity_namespace_xml(), "application/xml",
                   "XML document with active content is not accepted (a script element)"),
    "preview.html": (markup.svg_in_data_url("iframe"), "text/html", IN_DATA_URL),
    "viewer.html": (markup.svg_in_data_url("embed"), "text/html", IN_DATA_URL),
    "frame.html": (markup.svg_in_data_url("object"), None, IN_DATA_URL),
    "logo.svg": (markup.attlist_handler_svg(), "image/svg+xml", "SVG image with active content is not accepted "
                 "(an event handler attribute in an attribute list declaration)"),
    "data.xml": (markup.entity_url_xml(), "text/xml",
                 "XML document with active content is not accepted (a URL spelled with an XML entity)"),
}
BENIGN = {  # name: (data, declared type)
    "newsletter.html": (markup.newsletter(), "text/html"),
    "invoice.xml": (markup.ubl_invoice(), "application/xml"),
    "xrechnung.xml": (markup.xrechnung(), "text/xml"),
    "factur-x.xml": (markup.factur_x(), "application/xml"),
}


def test_active_markup_is_stripped_and_the_notice_says_why(proxy, sink):
    files = [attachment(data, name, ctype) for name, (data, ctype, _) in HOSTILE.items()]
    files += [attachment(data, name, ctype) for name, (data, ctype) in BENIGN.items()]
    code, reply = proxy.send(message(multipart(text(), *files)))
    assert code == 250, reply
    got = sink.messages[0].content
    assert attachment_payloads(got) == {name: data for name, (data, _) in BENIGN.items()}
    verdicts, notice = verdict_reasons(got), body_text(got)
    for name, (_, _, reason) in HOSTILE.items():
        assert verdicts[name] == ("blocked", reason)
        feature = reason[reason.index("("):]  # "... is not accepted (a script element)"
        assert f'"{name}"' in notice and f"with active content {feature}, which is not accepted" in said(got)
    assert {name: verdicts[name][0] for name in BENIGN} == {name: "keep" for name in BENIGN}
    assert {e["name"]: e["verdict"] for e in proxy.events("attachment")} == {
        **{name: "blocked" for name in HOSTILE}, **{name: "keep" for name in BENIGN}}


def test_a_newsletter_and_invoices_arrive_byte_for_byte(proxy, sink):
    msg = message(multipart(text(), *(attachment(d, n, t) for n, (d, t) in BENIGN.items())))
    code, reply = proxy.send(msg)
    assert code == 250, reply
    got = sink.messages[0].content
    assert got.endswith(msg)  # nothing changed, after the trace headers
    assert {n: v for n, (v, _) in verdict_reasons(got).items()} == {n: "keep" for n in BENIGN}


def _ran(driver, deadline: float) -> bool:
    """Did the page's script run: the mark it sets, or the console line a data: URL frame writes."""
    while time.monotonic() < deadline:
        if driver.execute_script("return document.documentElement.getAttribute('data-pwned')") == "1":
            return True
        if any("PWNED in data:" in e["message"] for e in driver.get_log("browser")):
            return True
        time.sleep(0.1)
    return False


def test_the_hostile_samples_run_in_chromium(tmp_path: Path):
    """Each file the proxy strips runs its script when opened (no click), the benign ones do not."""
    driver = chrome(tmp_path / "profile", capabilities={"goog:loggingPrefs": {"browser": "ALL"}})
    try:
        for name, data in [(n, d) for n, (d, _, _) in HOSTILE.items()] + [(n, d) for n, (d, _) in BENIGN.items()]:
            path = tmp_path / (Path(name).stem + (Path(name).suffix if name.endswith((".xml", ".svg")) else ".html"))
            path.write_bytes(data)
            driver.get_log("browser")  # drop what earlier pages wrote
            driver.get(path.as_uri())
            ran = _ran(driver, time.monotonic() + (20 if name in HOSTILE else 2))
            assert ran is (name in HOSTILE), name
    finally:
        driver.quit()
