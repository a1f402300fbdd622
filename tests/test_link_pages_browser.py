"""The agent's link pages in a real browser (headless Chromium, JavaScript off): the branded
landing page, and the expired page's "Get a new link" button, clicked, landing on a working
page. The SSO proxy's identity header is added by the browser itself (DevTools), and the
server trusts 127.0.0.1 as that proxy.

With SMTP_OFFLOAD_SCREENSHOTS naming a directory, the landing page is saved there as
landing.png (docs/screenshots/landing.png in the README).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from selenium import webdriver
from selenium.webdriver.common.by import By

from smtp_offload.config import BrandingConfig, LinksConfig
from smtp_offload.links import Grant, link_url, new_grant, sign
from smtp_offload.links.server import LinkServer
from smtp_offload.storage import LocalStore, StoredObject, make_key
from smtp_offload.units import when
from tests.support.env import chrome
from tests.support.threaded import ServerThread

SECRET = b"q" * 40
AGENT = "jane.doe@support.example.com"
NAME = "Schadenfoto_Heckklappe.jpg"
FROM = "Erika Mustermann <erika@example.de>"
SUBJECT = "Claim 4711: photos of the damage"
LOGO = (b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40" viewBox="0 0 40 40">'
        b'<rect width="40" height="40" rx="9" fill="#0b6e4f"/>'
        b'<path d="M11 21l6 6 12-14" stroke="#fff" stroke-width="4" fill="none" stroke-linecap="round"/></svg>')
ACCENT = "#0b6e4f"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def base(store: LocalStore, tmp_path: Path) -> Iterator[str]:
    logo = tmp_path / "logo.svg"
    logo.write_bytes(LOGO)
    branding = BrandingConfig(name="Example Insurance · Claims", logo_file=str(logo), accent_colour=ACCENT,
                              support_text="Questions? Service desk 0800 123 456", support_url="tel:0800123456")
    server = LinkServer(store, [SECRET], LinksConfig(trusted_proxies=["127.0.0.1"]),  # trusted as the SSO proxy
                        log=structlog.get_logger(), branding=branding)
    with ServerThread(server) as url:
        yield url


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    prefs = {"profile.managed_default_content_settings.javascript": 2}  # the pages need none
    d = chrome(tmp_path / "profile", prefs, {"goog:loggingPrefs": {"browser": "ALL"}})
    try:
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 560, "height": 640, "deviceScaleFactor": 1, "mobile": False})
        # What the SSO proxy in front of the link server adds to every request.
        d.execute_cdp_cmd("Network.enable", {})
        d.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"X-Auth-Request-Email": AGENT}})
        yield d
    finally:
        d.quit()


def _put(store: LocalStore) -> StoredObject:
    data = b"\xff\xd8\xff\xe0" + os.urandom(3_400_000)
    obj = StoredObject(key=make_key(NAME), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       content_type="image/jpeg", filename=NAME, message_id="<claim-4711@example.de>",
                       sender="erika@example.de", date="2026-11-30T09:12:00+00:00", tenant="CUST-4711",
                       from_header=FROM, subject=SUBJECT)
    return asyncio.run(store.put(data, obj))


def _csp_violations(driver: webdriver.Chrome) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def _details(driver: webdriver.Chrome) -> dict[str, str]:
    terms = driver.find_elements(By.TAG_NAME, "dt")
    return {t.text: d.text for t, d in zip(terms, driver.find_elements(By.TAG_NAME, "dd"))}


def test_landing_page_for_the_agent(driver, store: LocalStore, base: str) -> None:
    obj = _put(store)
    grant = new_grant(obj.key, 7 * 24 * 3600, obj.message_id)
    driver.get(link_url(base, sign(grant, SECRET)))
    assert driver.find_element(By.TAG_NAME, "h1").text == NAME
    assert _details(driver) == {"Size": "3.2 MiB", "Type": "JPEG image (image/jpeg)", "From": FROM,
                                "Subject": SUBJECT, "Received": "2026-11-30 09:12 UTC",
                                "Link expires": when(grant.expires)}
    button = driver.find_element(By.LINK_TEXT, "Download")
    assert button.value_of_css_property("background-color") == "rgba(11, 110, 79, 1)"  # the brand's accent
    logo = driver.find_element(By.CSS_SELECTOR, "header img")
    assert logo.get_attribute("src").startswith("data:image/svg+xml;base64,") and logo.size["width"] > 0
    assert driver.find_element(By.LINK_TEXT, "Questions? Service desk 0800 123 456").get_attribute("href") == \
        "tel:0800123456"
    assert _csp_violations(driver) == []
    shots = os.environ.get("SMTP_OFFLOAD_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(Path(shots) / "landing.png"))


def test_expired_page_get_a_new_link_lands_on_a_working_page(driver, store: LocalStore, base: str) -> None:
    obj = _put(store)
    old = link_url(base, sign(Grant(obj.key, 1_700_000_000, "00112233aabbccdd", None), SECRET))
    driver.get(old)
    assert driver.find_element(By.TAG_NAME, "h1").text == "This link has expired"
    assert {k: v for k, v in _details(driver).items() if k in ("File", "From", "Subject")} == {
        "File": NAME, "From": FROM, "Subject": SUBJECT}
    assert driver.find_elements(By.LINK_TEXT, "Download") == []

    driver.find_element(By.XPATH, "//button[normalize-space()='Get a new link']").click()
    # The 303 took the browser to the new link's landing page.
    assert driver.find_element(By.TAG_NAME, "h1").text == NAME
    assert driver.current_url.startswith(f"{base}/f/") and driver.current_url != old
    assert driver.find_element(By.LINK_TEXT, "Download").get_attribute("href").startswith(driver.current_url)
    assert _details(driver)["From"] == FROM
    assert _csp_violations(driver) == []
    driver.get(old)  # the old link stays expired
    assert driver.find_element(By.TAG_NAME, "h1").text == "This link has expired"
