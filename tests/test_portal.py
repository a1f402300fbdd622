"""The upload portal over HTTP with real clients: the proxy as in production, the product's
recording sink downstream, sessions made through the API and the command line, the tus
protocol spoken byte by byte, the plain form, delivery and its retries."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from email import message_from_bytes
from pathlib import Path

import pytest

from smtp_offload.harness import files
from smtp_offload.portal.session import sign
from smtp_offload.smtp.sink import RecordingSink
from tests.support.api import KEY, call
from tests.support.http import get
from tests.support.net import free_port
from tests.support.portal import (TO, delivered, new_session, path_of, post_form, request, send, status_of,
                                  tus_create, tus_offset, tus_patch, tus_upload)
from tests.support.proc import assert_clean_log

MB = 1024 * 1024
PORTAL_ONLY = "portal-only-key-0123456789abcdef0123"
UPLOAD_ONLY = "upload-only-key-0123456789abcdef0123"
BOUND = "bound-key-0123456789abcdef0123456789"


def _keys() -> list:
    return [KEY, {"key": PORTAL_ONLY, "scopes": ["portal"]}, {"key": UPLOAD_ONLY, "scopes": ["upload"]},
            {"key": BOUND, "scopes": ["portal"], "customer": "acme"}]


@pytest.fixture
def portal(make_proxy):
    """A proxy with the portal's defaults but quick retries; (proxy, base URL)."""
    def make(downstream_port: int | None = None, **settings):
        p = make_proxy({"links": {"api_keys": _keys()}, "portal": {"retry_seconds": 0.5, **settings}},
                       downstream_port=downstream_port)
        return p, f"http://127.0.0.1:{p.links_port}"
    return make


def _create(base: str, body: object, key: str | None = KEY) -> tuple[int, dict, dict]:
    return call(base, "POST", "/api/v1/portal/sessions", json.dumps(body).encode(),
                {"Content-Type": "application/json"}, key=key)




# -- sessions --------------------------------------------------------------------------------
def test_a_session_answers_a_short_signed_link_that_opens_the_page(portal):
    p, base = portal()
    before = time.time()
    status, headers, body = _create(base, {"caseId": "CASE-9", "to": TO, "ttlSeconds": 3600}, key=PORTAL_ONLY)
    assert status == 201 and set(body) == {"uploadUrl", "expiresAt", "sessionId"}
    assert headers["Cache-Control"] == "no-store"
    assert re.fullmatch(r"[0-9a-f]{20}", body["sessionId"])
    assert body["uploadUrl"].startswith(f"{base}/u/{body['sessionId']}.") and len(body["uploadUrl"]) <= 100
    expires = time.mktime(time.strptime(body["expiresAt"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before + 3600 - 2 <= expires <= time.time() + 3600 + 1
    status, page_headers, page = get(body["uploadUrl"])
    assert status == 200 and b"Send files for case CASE-9" in page
    # The landing page's security headers, with a CSP that lets the page run its own script only.
    for name, value in (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                        ("X-Frame-Options", "DENY"), ("Cache-Control", "private, no-store"),
                        ("X-Robots-Tag", "noindex, nofollow")):
        assert page_headers[name] == value
    csp = page_headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    [event] = p.events("portal_session")
    assert event["action"] == "create" and event["case"] == "CASE-9" and event["session"] == body["sessionId"]


@pytest.mark.parametrize("body, status, error, words", [
    ({"to": TO}, 400, "bad_request", "caseId is required"),
    ({"caseId": "C 1", "to": TO}, 400, "bad_request", "caseId is required"),
    ({"caseId": "C1"}, 400, "bad_request", "to is required"),
    ({"caseId": "C1", "to": "Support <support@example.com>"}, 400, "bad_request", "to is required"),
    ({"caseId": "C1", "to": "agent@elsewhere.test"}, 422, "domain_not_accepted", "accepted_domains"),
    ({"caseId": "C1", "to": TO, "ttlSeconds": 10}, 400, "bad_request", "ttlSeconds"),
    ({"caseId": "C1", "to": TO, "ttlSeconds": 10**9}, 400, "bad_request", "ttlSeconds"),
    ({"caseId": "C1", "to": TO, "ttlSeconds": "3600"}, 400, "bad_request", "ttlSeconds"),
    ({"caseId": "C1", "to": TO, "inReplyTo": "no brackets"}, 400, "bad_request", "inReplyTo"),
    ({"caseId": "C1", "to": TO, "subject": "a\r\nBcc: x@y"}, 400, "bad_request", "subject"),
    ({"caseId": "C1", "to": TO, "customerId": "../etc"}, 400, "bad_request", "customerId"),
    ({"caseId": "C1", "to": TO, "cc": "x"}, 400, "bad_request", "unknown field: cc"),
    (["C1", TO], 400, "bad_request", "JSON object"),
])
def test_a_bad_session_request_gets_a_clear_answer(portal, body, status, error, words):
    _p, base = portal()
    got, _h, answer = _create(base, body)
    assert (got, answer["error"]) == (status, error) and words in answer["message"], answer


def test_keys_scopes_and_customers(portal):
    _p, base = portal(sessions_per_customer=2)
    assert _create(base, {"caseId": "C1", "to": TO}, key=None)[0] == 401
    assert _create(base, {"caseId": "C1", "to": TO}, key="not-a-key-0123456789")[0] == 401
    assert _create(base, {"caseId": "C1", "to": TO}, key=UPLOAD_ONLY)[0] == 403
    # A key bound to a customer makes sessions for that customer only.
    assert _create(base, {"caseId": "C1", "to": TO, "customerId": "other"}, key=BOUND)[0] == 403
    _s, _h, first = _create(base, {"caseId": "C1", "to": TO}, key=BOUND)
    _s, _h, shown = call(base, "GET", f"/api/v1/portal/sessions/{first['sessionId']}", key=BOUND)
    assert shown["customerId"] == "acme" and shown["state"] == "open"
    assert _create(base, {"caseId": "C2", "to": TO, "customerId": "acme"})[0] == 201
    status, headers, body = _create(base, {"caseId": "C3", "to": TO}, key=BOUND)
    assert status == 429 and body["error"] == "too_many_sessions" and int(headers["Retry-After"]) > 0
    # Another customer is not affected, and a revoked session frees its place.
    assert _create(base, {"caseId": "C4", "to": TO, "customerId": "globex"})[0] == 201
    status, _h, other = _create(base, {"caseId": "C5", "to": TO, "customerId": "globex"})
    assert call(base, "GET", f"/api/v1/portal/sessions/{other['sessionId']}", key=BOUND)[0] == 404
    assert call(base, "DELETE", f"/api/v1/portal/sessions/{first['sessionId']}", key=BOUND)[0] == 200
    assert _create(base, {"caseId": "C3", "to": TO}, key=BOUND)[0] == 201


def test_the_command_line_makes_a_session_the_running_server_opens(portal, sink):
    p, base = portal()
    cli = [sys.executable, "-m", "smtp_offload", "portal"]
    run = subprocess.run([*cli, "create", "--case", "CASE-31", "--to", TO, "--customer", "acme", "--subject",
                          "Your photos", "--config", str(p.config)], capture_output=True, text=True, cwd=p.tmp,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    made = json.loads(run.stdout)
    assert set(made) == {"uploadUrl", "expiresAt", "sessionId"}
    assert get(made["uploadUrl"])[0] == 200
    run = subprocess.run([*cli, "create", "--case", "CASE-31", "--to", "x@elsewhere.test", "--config", str(p.config)],
                         capture_output=True, text=True, cwd=p.tmp, timeout=60)
    assert run.returncode == 1 and "accepted_domains" in run.stderr and not run.stdout
    page = path_of(made["uploadUrl"])
    tus_upload(base, page, "photo.jpg", files.jpeg())
    run = subprocess.run([*cli, "show", made["sessionId"], "--config", str(p.config)], capture_output=True,
                         text=True, cwd=p.tmp, timeout=60)
    shown = json.loads(run.stdout)
    assert shown["case_id"] == "CASE-31" and [f["state"] for f in shown["files"]] == ["received"]
    run = subprocess.run([*cli, "revoke", made["sessionId"], "--config", str(p.config)], capture_output=True,
                         text=True, cwd=p.tmp, timeout=60)
    assert run.returncode == 0 and json.loads(run.stdout)["revoked"] is True
    assert get(made["uploadUrl"])[0] == 410
    assert tus_create(base, page, "more.pdf", 100)[0] == 410


# -- links that do not open ---------------------------------------------------------------------
def test_forged_expired_and_revoked_links(portal):
    p, base = portal()
    secret = (p.tmp / "link-secret").read_text().splitlines()[0].encode()
    s = new_session(base)
    page = path_of(s["uploadUrl"])
    sid, expires, mac = page.rsplit("/", 1)[1].split(".")
    forged = [f"/u/{sid}.{int(expires, 16) + 86400:x}.{mac}",  # a longer life
              f"/u/{'0' * 20}.{expires}.{mac}",  # another session
              f"/u/{sign(b'x' * 40, sid, int(expires, 16))}",  # another secret
              "/u/nothing-like-a-token", f"/u/{sid}"]
    for path in forged:
        status, headers, body = request(base, "GET", path)
        assert status == 403 and b"This upload link is not valid" in body, path
        assert headers["X-Frame-Options"] == "DENY"
        assert tus_create(base, path, "a.pdf", 10)[0] == 403
    expired = f"/u/{sign(secret, sid, int(time.time()) - 60)}"
    status, _h, body = request(base, "GET", expired)
    assert status == 410 and b"This upload link has expired" in body
    assert tus_create(base, expired, "a.pdf", 10)[0] == 410
    assert request(base, "POST", expired + "/send", b"", {"Accept": "application/json"})[0] == 410
    assert call(base, "DELETE", f"/api/v1/portal/sessions/{s['sessionId']}")[0] == 200
    status, _h, body = request(base, "GET", page)
    assert status == 410 and b"withdrawn" in body
    assert call(base, "DELETE", f"/api/v1/portal/sessions/{'f' * 20}")[0] == 404
    assert call(base, "GET", "/api/v1/portal/sessions/..%2f..%2fetc")[0] == 404
    assert_clean_log(p)


# -- resumable uploads ----------------------------------------------------------------------------
def test_a_resumed_upload_sends_each_byte_once_and_the_server_counts_them(portal):
    p, base = portal(chunk_bytes=MB)
    page = path_of(new_session(base)["uploadUrl"])
    data = files.big_pdf(3 * MB + 100)
    status, headers, _ = tus_create(base, page, "scan.pdf", len(data), "application/pdf")
    assert status == 201 and headers["Tus-Resumable"] == "1.0.0"
    upload = f"{page}/{headers['Location']}"
    assert tus_patch(base, upload, 0, data[:MB])[0] == 204
    assert tus_patch(base, upload, MB, data[MB:2 * MB])[0] == 204
    # The connection is lost; the client asks where to go on, and goes on from there.
    assert tus_offset(base, upload) == 2 * MB
    assert tus_patch(base, upload, 0, data[:MB])[0] == 409  # not from the start: the server has it
    assert tus_patch(base, upload, 2 * MB, data[2 * MB:3 * MB])[0] == 204
    assert tus_patch(base, upload, 3 * MB, data[3 * MB:])[0] == 204
    chunks = [(e["offset"], e["bytes"]) for e in p.events("portal_chunk")]
    assert chunks == [(0, MB), (MB, MB), (2 * MB, MB), (3 * MB, 100)]
    [f] = status_of(base, page)["files"]
    assert (f["name"], f["size"], f["state"], f["message"]) == ("scan.pdf", len(data), "received", "received")
    [event] = p.events("portal_upload")
    assert event["sha256"] == hashlib.sha256(data).hexdigest() and event["verdict"] == "offload"


def test_the_guard_keeps_the_tus_library_to_what_a_page_may_do(portal):
    p, base = portal(chunk_bytes=MB)
    page = path_of(new_session(base)["uploadUrl"])
    # Not tus, no length, bad metadata, no name: refused before the library runs.
    assert request(base, "POST", page + "/tus")[0] == 412
    assert request(base, "POST", page + "/tus", headers={"Tus-Resumable": "1.0.0",
                                                         "Upload-Metadata": "filename YS5wZGY="})[0] == 400
    for meta in ("filename ***", "filename a b c", "filetype YS5wZGY=", "filename //8="):
        status, _h, body = request(base, "POST", page + "/tus", headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": "10", "Upload-Metadata": meta})
        assert status == 400, (meta, body)
    assert request(base, "GET", page + "/tus")[0] == 405
    assert request(base, "HEAD", page + "/tus/../../etc", headers={"Tus-Resumable": "1.0.0"})[0] == 404
    assert request(base, "HEAD", page + "/tus/not-a-uuid", headers={"Tus-Resumable": "1.0.0"})[0] == 404
    # The customer's name never becomes a path: the upload lands under our id.
    status, headers, _ = tus_create(base, page, "../../../../escape.pdf", 2 * MB)
    assert status == 201
    upload = f"{page}/{headers['Location']}"
    assert tus_patch(base, upload, 0, b"x" * (MB + 1))[0] == 413  # past portal.chunk_bytes
    data = files.big_pdf(2 * MB)
    assert tus_patch(base, upload, 0, data[:MB])[0] == 204
    assert tus_patch(base, upload, MB, data[MB:])[0] == 204
    [f] = status_of(base, page)["files"]
    assert f["name"] == "../../../../escape.pdf" and f["state"] == "received"
    assert not list(p.tmp.parent.rglob("escape.pdf"))
    assert_clean_log(p)


@pytest.mark.parametrize("settings, name, size, status, error, words", [
    ({"max_file_bytes": MB}, "big.pdf", MB + 1, 413, "too_large", "larger than 1.0 MiB"),
    ({}, "tool.exe", 100, 415, "type_not_accepted", "refused: .exe files are not accepted here"),
    ({}, "README", 100, 415, "type_not_accepted", "files without an extension"),
    ({}, "empty.pdf", 0, 400, "empty", "this file is empty"),
    ({"accepted_types": []}, "notes.xyz", 100, 201, None, None),
])
def test_a_file_outside_the_limits_is_refused_before_a_byte_is_sent(portal, settings, name, size, status, error,
                                                                    words):
    _p, base = portal(**settings)
    page = path_of(new_session(base)["uploadUrl"])
    got, headers, body = tus_create(base, page, name, size)
    assert got == status, body
    if error:
        answer = json.loads(body)
        assert answer["error"] == error and words in answer["message"]
        assert headers["Tus-Resumable"] == "1.0.0"


def test_files_bytes_and_addresses_are_limited_per_session(portal):
    _p, base = portal(max_files=2, max_file_bytes=MB, max_session_bytes=MB + 10, uploads_per_minute=3)
    page = path_of(new_session(base)["uploadUrl"])
    tus_upload(base, page, "a.pdf", files.big_pdf(MB))
    status, _h, body = tus_create(base, page, "b.pdf", 11)
    assert status == 413 and json.loads(body)["error"] == "session_full"
    tus_upload(base, page, "b.pdf", files.big_pdf(5000)[:10])  # refused by its content: still a file
    status, _h, body = tus_create(base, page, "c.pdf", 5)
    assert status == 403 and json.loads(body)["error"] == "too_many_files"  # final: tus clients retry a 409
    # The third new file from this address within a minute, on another session: 429.
    other = path_of(new_session(base)["uploadUrl"])
    assert tus_create(base, other, "d.pdf", 100)[0] == 201
    status, headers, body = tus_create(base, other, "e.pdf", 100)
    assert status == 429 and json.loads(body)["error"] == "too_many_uploads" and int(headers["Retry-After"]) >= 1


# -- the plain form and delivery ------------------------------------------------------------------
def test_the_plain_form_then_send_delivers_one_threaded_message(portal, sink):
    p, base = portal()
    s = new_session(base, caseId="CASE-5", customerId="acme", subject="Damage photos", inReplyTo="<m1@crm.test>")
    page = path_of(s["uploadUrl"])
    pdf, jpeg = files.big_pdf(300_000), files.jpeg()
    status, headers, _ = post_form(base, page + "/form", [("claim.pdf", pdf, "application/pdf"),
                                                          ("photo.jpg", jpeg, "image/jpeg"),
                                                          ("invoice.pdf", files.pe_exe(), "application/pdf"),
                                                          ("run.exe", b"MZ" + b"\0" * 100, "application/x-msdownload"),
                                                          ("nothing.pdf", b"", "application/pdf")])
    assert status == 303 and headers["Location"] == f"../{page.rsplit('/', 1)[1]}"
    results = {f["name"]: f["message"] for f in status_of(base, page)["files"]}
    assert results == {
        "claim.pdf": "received", "photo.jpg": "received",
        "invoice.pdf": "refused: this file is a Windows program, not a PDF — please send the original PDF",
        "run.exe": results["run.exe"], "nothing.pdf": "refused: this file is empty — please choose the file again"}
    assert results["run.exe"].startswith("refused: .exe files are not accepted here")
    _s, _h, page_html = get(s["uploadUrl"])
    assert "this file is a Windows program, not a PDF".encode() in page_html

    status, answer = send(base, page)
    assert status == 200 and answer == {"state": "sent", "message": "Your files were sent to your case."}
    msg = delivered(sink)
    assert sink.messages[0].mail_from == "portal@mx.test" and sink.messages[0].rcpt_tos == [TO]
    assert msg["Subject"] == "[Case CASE-5] Damage photos" and msg["In-Reply-To"] == "<m1@crm.test>"
    assert msg["References"] == "<m1@crm.test>" and msg["From"].addresses[0].addr_spec == "portal@mx.test"
    assert msg["Message-ID"] == f"<portal.{s['sessionId']}@mx.test>"
    text = msg.get_body(("plain",)).get_content()
    assert "Customer: acme" in text and "Received (2):" in text and "Refused (3), not stored:" in text
    assert "invoice.pdf: Windows executable disguised as PDF" in text
    links = re.findall(r"http://127\.0\.0\.1:\d+/f/\S+", text)
    assert len(links) == 2
    bodies = {hashlib.sha256(get(link + "/download")[2]).hexdigest() for link in links}
    assert bodies == {hashlib.sha256(pdf).hexdigest(), hashlib.sha256(jpeg).hexdigest()}
    html = msg.get_body(("html",)).get_content()
    assert ">claim.pdf</a>" in html and "photo.jpg" in html
    # Stored under the customer, like an offloaded attachment; nothing left staged.
    stored = [x for x in (p.store).rglob("*") if x.is_file() and ".records" not in x.parts and x.suffix != ".json"]
    assert any("acme" in x.parts for x in stored)
    assert not list((p.store / ".records").glob("portalstaged/*"))
    # Sent is final: the page says so, more files and a second send are refused.
    assert status_of(base, page)["state"] == "sent"
    assert tus_create(base, page, "late.pdf", 100)[0] == 403
    assert send(base, page)[0] == 200 and len(sink.messages) == 1
    [sent] = p.events("portal_send")
    assert sent["outcome"] == "delivered" and sent["files"] == 2 and sent["refused"] == 3
    metrics = get(f"{base}/metrics")[2].decode()
    for line in ('smtp_offload_portal_uploads_total{result="received"} 2.0',
                 'smtp_offload_portal_uploads_total{result="refused"} 3.0',
                 'smtp_offload_portal_deliveries_total{outcome="delivered"} 1.0'):
        assert line in metrics
    assert_clean_log(p)


def test_send_needs_a_received_file(portal, sink):
    _p, base = portal()
    page = path_of(new_session(base)["uploadUrl"])
    status, answer = send(base, page)
    assert status == 409 and answer["error"] == "nothing_to_send"
    status, headers, _ = request(base, "POST", page + "/send")  # the plain form: back to the page
    assert status == 200 and not sink.messages


def test_a_downstream_that_is_down_gets_the_files_later_and_the_customer_is_told(portal):
    port = free_port()
    p, base = portal(downstream_port=port)
    page = path_of(new_session(base, caseId="CASE-8")["uploadUrl"])
    tus_upload(base, page, "scan.pdf", files.big_pdf(100_000))
    status, answer = send(base, page)
    assert status == 202 and answer["state"] == "retrying"
    assert "received and stored safely" in answer["message"] and "keep trying" in answer["message"]
    assert status_of(base, page)["message"] == answer["message"]
    assert list((p.store / ".records").glob("portalstaged/*"))  # the files stay staged
    sink = RecordingSink("127.0.0.1", port, keep=None)
    sink.start()
    try:
        for _ in range(400):
            if status_of(base, page)["state"] == "sent":
                break
            time.sleep(0.05)
        assert status_of(base, page)["state"] == "sent"
        assert len(sink.recorder.messages) == 1
        assert "[Case CASE-8]" in message_from_bytes(sink.recorder.messages[0].content)["Subject"]
    finally:
        sink.stop()
    outcomes = [(e["outcome"], e["trigger"]) for e in p.events("portal_send")]
    assert outcomes[0] == ("deferred", "customer") and outcomes[-1] == ("delivered", "retry")
    assert not list((p.store / ".records").glob("portalstaged/*"))


def test_a_refusing_downstream_is_retried_and_never_told_twice(portal, sink):
    sink.recorder.data_reply = "451 4.3.0 try later"
    p, base = portal(downstream_port=sink.port)
    page = path_of(new_session(base)["uploadUrl"])
    tus_upload(base, page, "scan.pdf", files.big_pdf(100_000))
    assert send(base, page)[1]["state"] == "retrying"
    sid = page.rsplit("/", 1)[1].split(".")[0]
    for _ in range(200):
        shown = call(base, "GET", f"/api/v1/portal/sessions/{sid}")[2]
        if shown["state"] == "retrying" and shown["attempts"] >= 2:
            break
        time.sleep(0.05)
    assert shown["state"] == "retrying" and shown["attempts"] >= 2 and shown["lastError"].startswith("451 4.3.0")
    assert not sink.messages
    sink.recorder.data_reply = None
    for _ in range(400):
        if status_of(base, page)["state"] == "sent":
            break
        time.sleep(0.05)
    assert status_of(base, page)["state"] == "sent" and len(sink.messages) == 1
    attempts = [e["attempt"] for e in p.events("portal_send")]
    assert attempts == list(range(1, len(attempts) + 1)) and len(attempts) >= 2


def test_a_quiet_period_sends_without_the_button(portal, sink):
    _p, base = portal(quiet_seconds=1)
    page = path_of(new_session(base)["uploadUrl"])
    tus_upload(base, page, "scan.pdf", files.big_pdf(50_000))
    msg = delivered(sink)
    assert "scan.pdf" in msg.get_body(("plain",)).get_content()
    assert status_of(base, page)["state"] == "sent"


# -- on S3 -------------------------------------------------------------------------------------
def test_the_same_flow_on_s3_keeps_everything_in_the_bucket(make_proxy, s3server, sink):
    bucket = s3server.new_bucket()
    p = make_proxy({"links": {"api_keys": [KEY]}, "storage": {"backend": "s3"},
                    "storage.s3": {"bucket": bucket, "endpoint_url": s3server.endpoint, "region": "us-east-1"}})
    base = f"http://127.0.0.1:{p.links_port}"
    s = new_session(base, customerId="acme")
    page = path_of(s["uploadUrl"])
    data = files.big_pdf(2 * MB)
    tus_upload(base, page, "scan.pdf", data, chunk=MB)
    keys = s3server.keys(bucket)
    assert any("/.records/portalstaged/" in k for k in keys) and any("/.records/portal/" in k for k in keys)
    assert send(base, page)[1]["state"] == "sent"
    link = re.search(r"http://127\.0\.0\.1:\d+/f/\S+", delivered(sink).get_body(("plain",)).get_content()).group(0)
    assert hashlib.sha256(get(link + "/download")[2]).digest() == hashlib.sha256(data).digest()
    keys = s3server.keys(bucket)
    assert not [k for k in keys if "/.records/portalstaged/" in k]
    assert [k for k in keys if "/acme/" in k and k.endswith("/scan.pdf")]


def test_portal_off_leaves_no_routes(make_proxy):
    p = make_proxy({"links": {"api_keys": [KEY]}, "portal": {"enabled": False}})
    base = f"http://127.0.0.1:{p.links_port}"
    assert _create(base, {"caseId": "C1", "to": TO})[0] == 404
    assert request(base, "GET", "/u/" + "0" * 20 + ".1.abcdefghijklmnopqrstuv")[0] == 404


def test_a_second_instance_on_the_same_store_serves_the_same_session(make_proxy, sink, tmp_path):
    shared = {"links": {"api_keys": [KEY], "secret": "shared-secret-0123456789abcdef0123456789"},
              "storage.local": {"path": str(tmp_path / "shared-store")}}
    a, b = make_proxy(shared), make_proxy(shared)
    s = new_session(f"http://127.0.0.1:{a.links_port}")
    page = path_of(s["uploadUrl"])
    tus_upload(f"http://127.0.0.1:{a.links_port}", page, "scan.pdf", files.big_pdf(50_000))
    base_b = f"http://127.0.0.1:{b.links_port}"
    assert [f["state"] for f in status_of(base_b, page)["files"]] == ["received"]
    assert send(base_b, page)[1]["state"] == "sent" and len(sink.messages) == 1


def test_config_errors_name_the_key(tmp_path):
    from smtp_offload import config
    from smtp_offload.errors import ConfigError

    for text, key in (("[portal]\nttl_seconds = 99999999\n", "portal.ttl_seconds"),
                      ("[portal]\nsender = \"not an address\"\n", "portal.sender"),
                      ("[portal]\naccepted_types = [\"p d f\"]\n", "portal.accepted_types[0]"),
                      ("[portal]\nmax_file_bytes = 0\n", "portal.max_file_bytes"),
                      ("[portal]\nmax_file_bytes = 999999999999\n", "portal.max_file_bytes")):
        path = tmp_path / "c.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(key)):
            config.load(path)


def test_the_documented_lifecycle_rules_are_accepted_and_spare_open_sessions(s3server):
    """deploy/s3-lifecycle.json as `aws s3api put-bucket-lifecycle-configuration` sends it. The
    API records expire after 2 days; the portal's (sessions live up to 30) after 32; link
    records after 35, as the files they point at (deploy/smtp-offload.tmpfiles)."""
    rules = json.loads((Path(__file__).parent.parent / "deploy" / "s3-lifecycle.json").read_text())
    client = s3server.client()
    bucket = s3server.new_bucket()
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=rules)
    got = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    days = {r["Filter"]["Prefix"].rsplit(".records/", 1)[1]: r["Expiration"]["Days"] for r in got}
    assert days == {"jobs/": 2, "answers/": 2, "bodies/": 2, "idem/": 2, "portal": 32, "link/": 35}
    tmpfiles = (Path(__file__).parent.parent / "deploy" / "smtp-offload.tmpfiles").read_text()
    assert "mM:35d" in tmpfiles
    from smtp_offload.config import Config, S3StorageConfig
    assert S3StorageConfig().prefix.strip("/") == "smtp-offload"
    assert days["portal"] * 86400 >= Config().portal.max_ttl_seconds + 86400  # + the day of retries


# -- what a hostile or unlucky client may send (the red-team findings, each pinned) -----------
def test_a_chunk_never_goes_past_the_upload_and_odd_tus_requests_get_clear_answers(portal):
    p, base = portal(chunk_bytes=MB)
    page = path_of(new_session(base)["uploadUrl"])
    status, headers, _ = tus_create(base, page, "small.pdf", 10)
    upload = f"{page}/{headers['Location']}"
    for _ in range(3):  # would grow the spool without end if the library were asked
        status, _h, body = tus_patch(base, upload, 0, b"A" * 100_000)
        assert status == 413 and b"past the upload" in body
    spooled = sum(f.stat().st_size for f in (p.tmp / "var" / "portal").rglob("*") if f.is_file())
    assert spooled < 10_000
    for offset in ("abc", "1_0", "-1", "+1", ""):
        assert request(base, "PATCH", upload, b"x", {"Tus-Resumable": "1.0.0", "Upload-Offset": offset})[0] == 400
    status, _h, _b = request(base, "POST", page + "/tus", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": "1_0", "Upload-Metadata": "filename YS5wZGY="})
    assert status == 400
    fresh = f"{page}/tus/0b8a2a0e-1f7c-4d2b-9a55-3c2f6d1e9b10"
    assert tus_patch(base, fresh, 0, b"x")[0] == 404
    # Cancelled (DELETE): gone from the upload and from the page.
    assert request(base, "DELETE", upload, headers={"Tus-Resumable": "1.0.0"})[0] == 204
    assert tus_patch(base, upload, 0, b"x" * 10)[0] == 404
    assert request(base, "HEAD", upload, headers={"Tus-Resumable": "1.0.0"})[0] == 404
    assert status_of(base, page)["files"] == []
    assert_clean_log(p)


def test_a_complete_upload_answers_head_as_complete_and_a_repeated_last_chunk_cleanly(portal):
    p, base = portal()
    page = path_of(new_session(base)["uploadUrl"])
    data = files.big_pdf(300_000)
    upload = tus_upload(base, page, "scan.pdf", data)
    # A client whose last answer was lost asks where it is: complete, so it does not start over.
    assert tus_offset(base, upload) == len(data)
    status, _h, body = tus_patch(base, upload, 0, data)
    assert status == 409 and json.loads(body)["error"] == "complete"
    assert [f["state"] for f in status_of(base, page)["files"]] == ["received"]
    assert_clean_log(p)


def test_concurrent_chunks_of_one_upload_are_taken_one_at_a_time(portal):
    from concurrent.futures import ThreadPoolExecutor

    p, base = portal()
    page = path_of(new_session(base)["uploadUrl"])
    data = files.big_pdf(2 * MB)
    status, headers, _ = tus_create(base, page, "twice.pdf", len(data))
    upload = f"{page}/{headers['Location']}"
    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(lambda _: tus_patch(base, upload, 0, data)[0], range(4)))
    assert statuses == [204, 409, 409, 409]
    assert [f["state"] for f in status_of(base, page)["files"]] == ["received"]
    assert len(p.events("portal_upload")) == 1
    assert_clean_log(p)


def test_send_waits_for_a_file_still_uploading(portal, sink):
    p, base = portal()
    page = path_of(new_session(base)["uploadUrl"])
    tus_upload(base, page, "first.pdf", files.big_pdf(50_000))
    late = files.big_pdf(200_000)
    status, headers, _ = tus_create(base, page, "late.pdf", len(late))
    upload = f"{page}/{headers['Location']}"
    assert tus_patch(base, upload, 0, late[:1000])[0] == 204
    status, answer = send(base, page)
    assert status == 409 and answer["error"] == "uploads_in_progress"
    assert tus_patch(base, upload, 1000, late[1000:])[0] == 204
    assert send(base, page)[1]["state"] == "sent"
    text = delivered(sink).get_body(("plain",)).get_content()
    assert "first.pdf" in text and "late.pdf" in text


def test_the_plain_form_takes_no_more_parts_than_the_session_has_room_for(portal):
    p, base = portal(max_files=5)
    page = path_of(new_session(base)["uploadUrl"])
    status, _h, _b = post_form(base, page + "/form", [(f"e{i}.pdf", b"", "application/pdf") for i in range(300)])
    assert status == 303
    assert len(status_of(base, page)["files"]) == 5
    page = path_of(new_session(base)["uploadUrl"])
    boundary = "b0undary"
    truncated = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\r\n"
                 "%PDF-1.4 and then nothing").encode()
    status, _h, body = request(base, "POST", page + "/form", truncated,
                               {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 400 and b"did not arrive whole" in body
    for ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        assert request(base, "POST", page + "/form", b"a=b", {"Content-Type": ctype})[0] == 400
    assert_clean_log(p)


@pytest.mark.parametrize("subject", ["Invoice\u2028copy", "Invoice\u0085copy", "a\u200fb", "tab\there"])
def test_a_subject_that_would_break_the_header_is_refused_at_once(portal, subject):
    _p, base = portal()
    status, _h, body = _create(base, {"caseId": "C1", "to": TO, "subject": subject})
    assert status == 400 and "subject" in body["message"]


def test_a_subject_in_any_language_and_spaces_of_any_kind_are_fine(portal, sink):
    _p, base = portal(sender_name='Upload "portal", Acme')
    page = path_of(new_session(base, subject="Réclamation\u00a0n° 42 — 請求書")["uploadUrl"])
    tus_upload(base, page, "scan.pdf", files.big_pdf(50_000))
    assert send(base, page)[1]["state"] == "sent"
    msg = delivered(sink)
    assert msg["Subject"] == "[Case CASE-1042] Réclamation\u00a0n° 42 — 請求書"
    assert msg["From"].addresses[0].display_name == 'Upload "portal", Acme'
    assert sink.messages[0].content.isascii()  # 7bit: any downstream takes it


def test_an_upload_another_instance_was_taking_is_started_over_not_taken_for_complete(make_proxy, tmp_path):
    # Two instances on one store, each with its own spool: an upload begun on A and asked
    # about on B (the balancer moved it) is unknown there, so the client starts over on B.
    shared = {"links": {"api_keys": [KEY], "secret": "shared-secret-0123456789abcdef0123456789"},
              "storage.local": {"path": str(tmp_path / "shared-store")}}
    a, b = make_proxy(shared), make_proxy(shared)
    base_a, base_b = (f"http://127.0.0.1:{p.links_port}" for p in (a, b))
    page = path_of(new_session(base_a)["uploadUrl"])
    data = files.big_pdf(300_000)
    status, headers, _ = tus_create(base_a, page, "scan.pdf", len(data))
    upload = f"{page}/{headers['Location']}"
    assert tus_patch(base_a, upload, 0, data[:1000])[0] == 204
    assert request(base_b, "HEAD", upload, headers={"Tus-Resumable": "1.0.0"})[0] == 404
    assert tus_patch(base_b, upload, 1000, data[1000:])[0] == 404
    assert status_of(base_b, page)["files"] == []  # not left "uploading" forever
    tus_upload(base_b, page, "scan.pdf", data)
    assert [(f["name"], f["state"]) for f in status_of(base_a, page)["files"]] == [("scan.pdf", "received")]


def test_pressing_send_again_does_not_skip_the_backoff(portal):
    p, base = portal(downstream_port=free_port(), retry_seconds=3600)
    page = path_of(new_session(base)["uploadUrl"])
    tus_upload(base, page, "scan.pdf", files.big_pdf(50_000))
    assert send(base, page)[1]["state"] == "retrying"
    for _ in range(3):
        assert send(base, page)[1]["state"] == "retrying"
    assert len(p.events("portal_send")) == 1
