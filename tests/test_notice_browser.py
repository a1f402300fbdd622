"""The notice as an agent sees it: a message with a spoofed file and an oversized photo goes
through the real proxy, and the HTML part the downstream received is opened in headless
Chromium at a phone's width (390 px). The file name is the link text, the box does not overflow,
and the sentences say what happened and what to do.

With SMTP_OFFLOAD_SCREENSHOTS naming a directory, the notice is saved there as notice.png
(docs/screenshots/notice.png in the README)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import samples
from tests.support.env import chrome
from tests.support.mail import attachment, message, multipart, text
from tests.support.relayed import EXE, LINK, attachment_payloads, body_text

ROOT = Path(__file__).resolve().parent.parent
PHOTO = "IMG_20261117_093412_kitchen_water_damage_claim_2026-117.jpg"  # as phones name them: no spaces
MAIL_HTML = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Claim 2026-117</title></head>"
             "<body style=\"font-family:Arial,Helvetica,sans-serif;font-size:14px;margin:12px\">"
             "<p>Hello,</p><p>please find attached the invoice from the plumber and a photo of the water damage "
             "in our kitchen.</p><p>Kind regards,<br>Maria Schneider<br>Policy 48-2291-07</p></body></html>")


@pytest.fixture
def browser(tmp_path) -> Iterator[object]:
    driver = chrome(tmp_path / "profile")
    try:
        yield driver
    finally:
        driver.quit()


def test_the_notice_reads_well_on_a_phone_and_its_link_is_the_file_name(make_proxy, sink, browser, tmp_path):
    proxy = make_proxy({"policy": {"offload_over_bytes": 1_000_000}})
    photo = samples.big_jpeg(3_400_000)
    body = multipart(text("Hello,\r\nplease find attached the invoice and a photo of the damage.\r\n"),
                     text(MAIL_HTML, subtype="html"), subtype="alternative")
    code, reply = proxy.send(message(multipart(body, attachment(EXE, "invoice.pdf", "application/pdf"),
                                               attachment(photo, PHOTO, "image/jpeg")),
                                     subject="Claim 2026-117: water damage in the kitchen"))
    assert code == 250, reply
    got = sink.messages[-1].content
    assert attachment_payloads(got) == {}
    (url,) = {u.decode() for u in LINK.findall(body_text(got).encode())}
    page = tmp_path / "mail.html"
    page.write_text(body_text(got, "html"), encoding="utf-8")

    browser.set_window_size(390, 900)
    browser.get(page.as_uri())
    width = browser.execute_script("return window.innerWidth")
    assert width <= 400  # a phone's width, not the default window
    (link,) = browser.find_elements("css selector", "a")
    assert link.text == PHOTO and link.get_attribute("href") == url
    box = browser.execute_script("return document.body.firstElementChild")
    assert box.tag_name == "div" and "changed this message" in box.text  # the notice comes first
    # Nothing sticks out: not the box, not its lines, not the page.
    sizes = browser.execute_script(
        "const b = arguments[0]; return [b.scrollWidth, b.clientWidth, b.getBoundingClientRect().right,"
        " document.documentElement.scrollWidth, window.innerWidth,"
        " Math.max(...[...b.querySelectorAll('*')].map(e => e.getBoundingClientRect().right))]", box)
    box_scroll, box_client, box_right, page_scroll, inner, deepest = sizes
    assert box_scroll <= box_client and box_right <= inner and page_scroll <= inner and deepest <= box_right, sizes
    shown = " ".join(browser.execute_script("return document.body.innerText").split())
    assert "invoice.pdf (1.0 KiB) was removed. It is a Windows program disguised as a PDF document." in shown
    assert "Ask the customer for the original PDF document, or send them an upload link." in shown
    assert f"{PHOTO} (3.2 MiB, JPEG photo) was too large to attach." in shown
    assert "please find attached the invoice from the plumber" in shown  # the message is still there, after it

    # The README's picture: the same message at a desktop mail client's width.
    browser.set_window_size(800, 600)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(800, height + 20)
    shot = tmp_path / "notice.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes().startswith(b"\x89PNG")
    shots = os.environ.get("SMTP_OFFLOAD_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        (Path(shots) / "notice.png").write_bytes(shot.read_bytes())


def test_readme_shows_the_notice():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## What happens to a message"):]
    assert "docs/screenshots/notice.png" in section[:section.index("\n## ", 5)]
    assert 10_000 < (ROOT / "docs" / "screenshots" / "notice.png").stat().st_size < 150_000
