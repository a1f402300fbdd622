"""The upload portal in a real browser: headless Chromium driven by selenium, against the proxy
started as in production, on the local store and on S3 (moto's server), with the product's
recording sink as the downstream.

What a customer does: opens the link, picks files, watches them upload, reads each result,
presses Send; and what the agent then gets: one message with a working link per file. The
resumable upload is cut off for real (the server process is stopped mid-upload and killed)
and the bytes the server received are counted from its audit log.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from pathlib import Path

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from smtp_offload.harness import files
from smtp_offload.portal.session import sign
from tests.support.api import KEY
from tests.support.env import ROOT, chrome
from tests.support.http import get
from tests.support.portal import delivered, new_session, request

MB = 1024 * 1024
SCREENSHOT_ENV = "SMTP_OFFLOAD_SCREENSHOTS"  # a directory: the README's screenshot is written there


def _settings(store: str, s3server, **portal) -> dict:
    overrides: dict = {"links": {"api_keys": [KEY]}, "portal": {"retry_seconds": 1.0, **portal}}
    if store == "s3":
        overrides["storage"] = {"backend": "s3"}
        overrides["storage.s3"] = {"bucket": s3server.new_bucket(), "endpoint_url": s3server.endpoint,
                                   "region": "us-east-1"}
    return overrides


@pytest.fixture(params=["local", "s3"])
def store(request) -> str:
    return request.param


@pytest.fixture
def browser(tmp_path: Path):
    driver = chrome(tmp_path / "profile", capabilities={"goog:loggingPrefs": {"browser": "ALL"}})
    driver.set_window_size(900, 1100)
    yield driver
    driver.quit()


def _s3(store: str, request) -> object | None:
    return request.getfixturevalue("s3server") if store == "s3" else None


def _wait(driver, what, timeout: float = 120):
    # Stale: the page was replaced while it was read (a form posted, the page redrawn): read again.
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)).until(what)


def _results(driver) -> dict[str, str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#file-list li.file")
    return {r.find_element(By.CLASS_NAME, "name").text: r.find_element(By.CLASS_NAME, "result").text for r in rows}


def _result(driver, name: str, timeout: float = 120) -> str:
    def settled(d):
        text = _results(d).get(name, "")
        return text if text and not text.startswith(("uploading", "waiting", "checking", "connection")) else False
    return _wait(driver, settled, timeout)


def _record_progress(driver) -> None:
    driver.execute_script("window.progress = []; document.addEventListener('portal:progress', "
                          "function (e) { window.progress.push(e.detail); });")


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "files" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path




def test_a_30_mb_pdf_uploads_with_progress_and_reaches_the_case_with_a_working_link(
        browser, store, request, make_proxy, sink, tmp_path):
    proxy = make_proxy(_settings(store, _s3(store, request), chunk_bytes=4 * MB))
    base = f"http://127.0.0.1:{proxy.links_port}"
    session = new_session(base, caseId="CASE-2231", subject="Signed contract", inReplyTo="<case-2231@crm.example>")
    data = files.big_pdf(30 * MB)
    pdf = _write(tmp_path, "signed contract.pdf", data)

    browser.get(session["uploadUrl"])
    limits = browser.find_element(By.ID, "limits").text
    assert "Largest file: 100.0 MiB" in limits and "Up to 20 files" in limits and "PDF" in limits
    _record_progress(browser)
    browser.find_element(By.ID, "files").send_keys(str(pdf))
    assert _result(browser, pdf.name) == "received"

    progress = browser.execute_script("return window.progress")
    assert len(progress) >= 3  # 4 MB chunks of a 30 MB file: progress along the way, not one jump
    sent = [p["bytesSent"] for p in progress]
    assert sent == sorted(sent) and sent[-1] == len(data) and all(p["bytesTotal"] == len(data) for p in progress)
    if os.environ.get(SCREENSHOT_ENV) and store == "local":
        browser.save_screenshot(str(Path(os.environ[SCREENSHOT_ENV]) / "portal.png"))

    send = browser.find_element(By.ID, "send")
    assert send.is_enabled()
    send.click()
    _wait(browser, lambda d: "Your files were sent to your case" in d.find_element(By.ID, "delivery").text)

    msg = delivered(sink)
    assert sink.messages[-1].rcpt_tos == ["support@example.com"]
    assert msg["Subject"] == "[Case CASE-2231] Signed contract"
    assert msg["In-Reply-To"] == "<case-2231@crm.example>" and msg["References"] == "<case-2231@crm.example>"
    text = msg.get_body(("plain",)).get_content()
    assert "signed contract.pdf (30.0 MiB, a PDF)" in text
    link = re.search(r"http://127\.0\.0\.1:\d+/f/\S+", text).group(0)
    status, _h, page = get(link)
    assert status == 200 and b"signed contract.pdf" in page
    status, _h, body = get(link + "/download", follow=True)
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    # Once delivered, nothing stays staged.
    assert not [e for e in proxy.events() if e.get("level") in ("error", "critical")]


def test_an_executable_named_pdf_is_refused_on_the_page_with_its_reason(browser, store, request, make_proxy, sink,
                                                                        tmp_path):
    proxy = make_proxy(_settings(store, _s3(store, request)))
    base = f"http://127.0.0.1:{proxy.links_port}"
    browser.get(new_session(base)["uploadUrl"])
    exe = _write(tmp_path, "invoice.pdf", files.pe_exe())
    setup = _write(tmp_path, "setup.exe", files.pe_exe())
    browser.find_element(By.ID, "files").send_keys(f"{exe}\n{setup}")
    assert _result(browser, "invoice.pdf") == \
        "refused: this file is a Windows program, not a PDF — please send the original PDF"
    assert _result(browser, "setup.exe").startswith("refused: .exe files are not accepted here")
    assert not browser.find_element(By.ID, "send").is_enabled()  # nothing received: nothing to send
    [upload] = proxy.events("portal_upload")
    assert upload["verdict"] == "blocked" and upload["state"] == "refused"


def test_a_final_refusal_is_shown_at_once_not_retried(browser, make_proxy, sink, tmp_path):
    proxy = make_proxy(_settings("local", None, max_files=1))
    browser.get(new_session(f"http://127.0.0.1:{proxy.links_port}")["uploadUrl"])
    one, two = (_write(tmp_path, name, files.big_pdf(50_000)) for name in ("one.pdf", "two.pdf"))
    browser.find_element(By.ID, "files").send_keys(str(one))
    assert _result(browser, "one.pdf") == "received"
    browser.find_element(By.ID, "files").send_keys(str(two))
    assert _result(browser, "two.pdf") == "refused: one link takes at most 1 file"
    assert browser.find_element(By.ID, "send").is_enabled()
    # Asked once: a final refusal is not retried as if the connection had failed.
    assert [e["name"] for e in proxy.events("portal_upload_refused")] == ["two.pdf"]


def test_an_upload_cut_off_halfway_resumes_without_resending_what_arrived(browser, store, request, make_proxy, sink,
                                                                          tmp_path):
    # The server stops itself (SIGSTOP) right after it kept the chunk that passes half the file,
    # before answering it; then it is killed, as a crash would, and started again.
    proxy = make_proxy(_settings(store, _s3(store, request), chunk_bytes=2 * MB),
                       env={"SMTP_OFFLOAD_FAILPOINT": "portal-half"})
    base = f"http://127.0.0.1:{proxy.links_port}"
    data = files.big_pdf(12 * MB + 12345)
    pdf = _write(tmp_path, "scan.pdf", data)
    browser.get(new_session(base)["uploadUrl"])
    browser.find_element(By.ID, "files").send_keys(str(pdf))

    for _ in range(1200):
        if _stopped(proxy.proc.pid):
            break
        time.sleep(0.05)
    assert _stopped(proxy.proc.pid)
    before = proxy.events("portal_chunk")
    kept = sum(e["bytes"] for e in before)
    assert len(data) // 2 <= kept < len(data)
    os.kill(proxy.proc.pid, signal.SIGKILL)
    proxy.proc.wait()
    proxy.stop()
    proxy.extra_env = {}
    proxy._start()  # same config, same ports, same store and spool

    assert _result(browser, pdf.name, timeout=240) == "received"
    chunks = proxy.events("portal_chunk")
    assert not [c for c in chunks if c.get("aborted")]
    offsets = [(c["offset"], c["bytes"]) for c in chunks]
    # Every byte arrived once: each chunk starts where the last one kept ended, across the crash.
    assert [o for o, _ in offsets] == [sum(b for _, b in offsets[:i]) for i in range(len(offsets))]
    assert sum(b for _, b in offsets) == len(data)
    resumed = chunks[len(before):]
    assert resumed and resumed[0]["offset"] == kept
    [upload] = proxy.events("portal_upload")
    assert upload["sha256"] == hashlib.sha256(data).hexdigest() and upload["state"] == "received"


def _stopped(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state in ("T", "t")


def test_an_expired_or_forged_link_shows_its_page(browser, make_proxy, sink):
    proxy = make_proxy(_settings("local", None))
    base = f"http://127.0.0.1:{proxy.links_port}"
    secret = (proxy.tmp / "link-secret").read_text().splitlines()[0].encode()
    session = new_session(base)
    expired = f"{base}/u/{sign(secret, session['sessionId'], int(time.time()) - 3600)}"
    assert request(base, "GET", expired.removeprefix(base))[0] == 410
    browser.get(expired)
    assert browser.find_element(By.TAG_NAME, "h1").text == "This upload link has expired"
    assert "ask the person handling your case for a new upload link" in browser.page_source
    assert not browser.find_elements(By.ID, "files")

    forged = session["uploadUrl"][:-3] + ("abc" if not session["uploadUrl"].endswith("abc") else "abd")
    assert request(base, "GET", forged.removeprefix(base))[0] == 403
    browser.get(forged)
    assert browser.find_element(By.TAG_NAME, "h1").text == "This upload link is not valid"


def test_without_javascript_the_plain_form_uploads_and_sends(tmp_path, make_proxy, sink):
    driver = chrome(tmp_path / "profile-nojs", {"profile.managed_default_content_settings.javascript": 2})
    try:
        proxy = make_proxy(_settings("local", None))
        base = f"http://127.0.0.1:{proxy.links_port}"
        driver.get(new_session(base, caseId="CASE-77")["uploadUrl"])
        assert driver.find_element(By.ID, "upload-button").is_displayed()  # the script would hide it
        pdf = _write(tmp_path, "photo of receipt.pdf", files.big_pdf(200_000))
        driver.find_element(By.ID, "files").send_keys(str(pdf))
        driver.find_element(By.ID, "upload-button").click()
        assert _result(driver, pdf.name, timeout=30) == "received"
        driver.find_element(By.ID, "send").click()
        _wait(driver, lambda d: "Your files were sent to your case" in d.find_element(By.ID, "delivery").text, 30)
        msg = delivered(sink)
        assert "[Case CASE-77]" in msg["Subject"] and "photo of receipt.pdf" in msg.get_body(("plain",)).get_content()
    finally:
        driver.quit()


def test_the_page_is_labelled_and_keyboard_usable(browser, make_proxy, sink):
    proxy = make_proxy(_settings("local", None))
    browser.get(new_session(f"http://127.0.0.1:{proxy.links_port}")["uploadUrl"])
    picker = browser.find_element(By.ID, "files")
    label = browser.find_element(By.CSS_SELECTOR, "label[for=files]")
    assert label.text == "Choose files" and picker.get_attribute("aria-describedby") == "limits"
    assert browser.find_element(By.ID, "file-list").get_attribute("aria-live") == "polite"
    assert browser.find_element(By.ID, "delivery").get_attribute("role") == "status"
    # Tab from the top of the page reaches the file picker first.
    browser.find_element(By.TAG_NAME, "body").send_keys("\t")
    assert browser.switch_to.active_element.get_attribute("id") == "files"
    assert browser.execute_script("return document.documentElement.lang") == "en"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert not errors, errors  # the CSP let the page's own script run and blocked nothing it needs


def test_readme_shows_the_screenshot():
    readme = (ROOT / "README.md").read_text()
    assert "## Direct upload portal" in readme and "docs/portal.png" in readme
    assert (ROOT / "docs" / "portal.png").stat().st_size > 10_000
