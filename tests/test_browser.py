"""The landing page in a real browser: headless Chromium driven by selenium.

Proves what unit tests cannot: the page renders under its own CSP, works with JavaScript
disabled, is laid out for a phone, and its Download button really downloads the file.
The server runs in a thread with its own event loop because selenium's calls block.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from selenium import webdriver
from selenium.webdriver.common.by import By

from smtp_offload.config import LinksConfig
from smtp_offload.links import Grant, link_url, new_grant, sign
from smtp_offload.links.server import LinkServer
from smtp_offload.storage import LocalStore, StoredObject, make_key
from tests.support.env import chrome
from tests.support.threaded import ServerThread

SECRET = b"b" * 40
NAME = "Quarterly <report> & notes.pdf"
PHONE = (390, 844)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def base(store: LocalStore) -> Iterator[str]:
    with ServerThread(LinkServer(store, [SECRET], LinksConfig(), log=structlog.get_logger())) as url:
        yield url


def _browser(tmp_path: Path, downloads: Path, javascript: bool) -> webdriver.Chrome:
    prefs = {"download.default_directory": str(downloads), "download.prompt_for_download": False,
             "safebrowsing.enabled": False}
    if not javascript:
        prefs["profile.managed_default_content_settings.javascript"] = 2
    # The browser log, to see CSP violations.
    driver = chrome(tmp_path / "profile", prefs, {"goog:loggingPrefs": {"browser": "ALL"}})
    # Headless Chromium refuses downloads unless told where they may go.
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    # A phone's viewport (desktop windows have a minimum width that is wider than a phone).
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 3, "mobile": True})
    return driver


@pytest.fixture(params=[True, False], ids=["js", "nojs"])
def browser(request, tmp_path: Path) -> Iterator[tuple[webdriver.Chrome, Path, bool]]:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = _browser(tmp_path, downloads, javascript=request.param)
    try:
        yield driver, downloads, request.param
    finally:
        driver.quit()


def _put(store: LocalStore, data: bytes, name: str = NAME) -> StoredObject:
    obj = StoredObject(key=make_key(name), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       content_type="application/pdf", filename=name, message_id="<b1@example.com>",
                       sender="carol@example.com", date="2026-11-20T10:00:00+00:00")
    return asyncio.run(store.put(data, obj))


def _wait_for_download(directory: Path, timeout: float = 60.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in directory.iterdir() if not p.name.endswith((".crdownload", ".tmp"))]
        if done and not any(p.name.endswith(".crdownload") for p in directory.iterdir()):
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no download finished in {timeout}s: {sorted(p.name for p in directory.iterdir())}")


def _csp_violations(driver: webdriver.Chrome) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def test_landing_page_and_download_button(browser, store: LocalStore, base: str) -> None:
    driver, downloads, _ = browser
    data = os.urandom(2_500_000)
    obj = _put(store, data)
    grant = new_grant(obj.key, 3600, obj.message_id)
    driver.get(link_url(base, sign(grant, SECRET)))

    text = driver.find_element(By.TAG_NAME, "body").text
    assert NAME in text  # shown as text: escaped, not parsed as a tag
    for shown in ("2.4 MiB", "application/pdf", "carol@example.com", "2026-11-20 10:00 UTC",
                  time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(grant.expires))):
        assert shown in text, shown
    button = driver.find_element(By.LINK_TEXT, "Download")
    # The inline style applied (the CSP allows it) and the button fits a phone's width.
    assert button.value_of_css_property("background-color") == "rgba(31, 95, 191, 1)"
    assert button.rect["x"] >= 0 and button.rect["x"] + button.rect["width"] <= PHONE[0]
    assert _csp_violations(driver) == []

    button.click()
    got = _wait_for_download(downloads)
    assert hashlib.sha256(got.read_bytes()).hexdigest() == obj.sha256
    assert got.name.endswith(".pdf")


def test_expired_link_page(browser, store: LocalStore, base: str) -> None:
    driver, _, _ = browser
    obj = _put(store, b"old file")
    driver.get(link_url(base, sign(Grant(obj.key, 1_700_000_000, "00112233aabbccdd"), SECRET)))
    text = driver.find_element(By.TAG_NAME, "body").text
    assert "This link has expired" in text
    assert "It expired on 2023-11-14 22:13 UTC." in text and "new link" in text
    assert driver.find_elements(By.LINK_TEXT, "Download") == []
    assert _csp_violations(driver) == []
