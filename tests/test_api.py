"""The upload and inspect API (issue 13) against the proxy started as in production, over loopback."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import time
import urllib.parse
from pathlib import Path

import pytest

from smtp_offload.harness import files
from tests.support.api import KEY, call, poll, upload
from tests.support.http import get

INSPECT_ONLY = "inspect-only-key-0123456789abcdef"
ACME = "acme-bound-key-0123456789abcdef00"
SLOW = "slow-rate-key-0123456789abcdef000"
KEYS = [KEY, {"key": INSPECT_ONLY, "id": "inspector", "scopes": ["inspect"]},
        {"key": ACME, "id": "acme-flow", "customer": "acme"},
        {"key": SLOW, "id": "slow", "rate_per_minute": 3}]


@pytest.fixture
def api(make_proxy, tmp_path):
    p = make_proxy({"links": {"api_keys": KEYS}, "api": {"max_bytes": 2_000_000, "max_sync_bytes": 1_000_000,
                                                           "spool_dir": str(tmp_path / "spool")}})
    (tmp_path / "spool").mkdir()
    p.spool = tmp_path / "spool"
    p.base = f"http://127.0.0.1:{p.links_port}"
    return p


def objects(store: Path) -> list[str]:
    """Stored files (not sidecars, records or revocations)."""
    out = []
    for root, dirs, names in os.walk(store):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [os.path.relpath(os.path.join(root, n), store) for n in names if not n.startswith(".")]
    return sorted(out)


def download(url: str) -> bytes:
    status, _h, _page = get(url)
    assert status == 200
    status, _h, data = get(url + "/download")
    assert status == 200
    return data


def test_upload_stores_the_file_and_answers_the_contract(api):
    pdf = files.pdf()
    status, headers, body = upload(api.base, pdf, "r%C3%A9sum%C3%A9.pdf", X_CustomerId="Acme-7")
    assert status == 200, body
    assert set(body) == {"downloadUrl", "fileName", "fileSize", "s3Key", "verdict", "detectedType", "sha256",
                         "expiresAt"}
    assert body["fileName"] == "résumé.pdf" and body["fileSize"] == len(pdf)
    assert body["verdict"] == "accepted" and body["detectedType"] == "application/pdf"
    assert body["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert body["downloadUrl"].startswith(api.base + "/f/")  # the link service, never the store's own URL
    assert body["s3Key"].startswith("acme-7/") and body["s3Key"].endswith("/résumé.pdf")
    assert body["expiresAt"].endswith("Z")
    assert headers["Cache-Control"] == "no-store"
    assert (api.store / body["s3Key"]).read_bytes() == pdf
    assert download(body["downloadUrl"]) == pdf
    [event] = [e for e in api.events("api") if e["action"] == "upload"]
    assert event["status"] == 200 and event["key_id"] and event["customer"] == "Acme-7"
    assert event["file"] == "résumé.pdf" and event["verdict"] == "accepted" and event["sha256"] == body["sha256"]


def test_base64_body_and_declared_type_from_content_type(api):
    png = files.png()
    status, _h, body = upload(api.base, base64.encodebytes(png), "photo.jpg", Content_Transfer_Encoding="base64",
                              Content_Type="image/png")
    # The name says JPEG, the bytes and the declared type say PNG: the extension alone is the lie.
    assert status == 422 and body["verdict"] == "spoofed", body
    status, _h, body = upload(api.base, base64.b64encode(png), "photo.png", Content_Transfer_Encoding="base64",
                              X_Declared_Type="image/png")
    assert status == 200 and body["fileSize"] == len(png) and body["detectedType"] == "image/png", body


def test_empty_file_is_400_with_the_seeds_message(api):
    status, _h, body = upload(api.base, b"", "empty.pdf")
    assert (status, body) == (400, {"error": "empty", "message": "Empty file"})
    assert objects(api.store) == []


@pytest.mark.parametrize("data,name,verdict", [
    (files.pe_exe(), "invoice.pdf", "blocked"),
    (files.png(), "scan.pdf", "spoofed"),
])
def test_spoofed_and_blocked_are_422_and_nothing_is_stored(api, data, name, verdict):
    status, _h, body = upload(api.base, data, name)
    assert status == 422, body
    assert body["error"] == verdict and body["verdict"] == verdict and body["reason"] == body["message"]
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["fileName"] == name
    assert objects(api.store) == []
    [event] = api.events("api")
    assert event["status"] == 422 and event["verdict"] == verdict


@pytest.mark.parametrize("auth", [None, "Bearer wrong-key-0123456789abcdefghij", "Basic " + KEY, "Bearer "])
def test_missing_or_bad_key_is_401(api, auth):
    headers = {"X-Filename": "a.pdf"} | ({"Authorization": auth} if auth else {})
    status, h, body = call(api.base, "POST", "/api/v1/upload/attachment", files.pdf(), headers, key=None)
    assert status == 401 and body["error"] == "unauthorized" and h["WWW-Authenticate"].startswith("Bearer")
    assert objects(api.store) == []


def test_scopes_and_customer_binding(api):
    status, _h, body = call(api.base, "POST", "/api/v1/upload/attachment", files.pdf(), {"X-Filename": "a.pdf"},
                            key=INSPECT_ONLY)
    assert status == 403 and body["error"] == "forbidden" and "upload" in body["message"]
    status, _h, body = call(api.base, "POST", "/api/v1/inspect", files.pdf(), {"X-Filename": "a.pdf"},
                            key=INSPECT_ONLY)
    assert status == 200 and body["verdict"] == "accepted"
    status, _h, body = call(api.base, "POST", "/api/v1/links/refresh", b"{}", key=INSPECT_ONLY)
    assert status == 403
    # A key bound to a customer stores under that customer, and may not claim another.
    status, _h, body = call(api.base, "POST", "/api/v1/upload/attachment", files.pdf(), {"X-Filename": "a.pdf"},
                            key=ACME)
    assert status == 200 and body["s3Key"].startswith("acme/")
    status, _h, body = call(api.base, "POST", "/api/v1/upload/attachment", files.pdf(),
                            {"X-Filename": "a.pdf", "X-CustomerId": "globex"}, key=ACME)
    assert status == 403 and body["error"] == "forbidden"


def test_rate_limit_answers_429_with_retry_after(api):
    statuses = []
    for _ in range(5):
        status, headers, body = call(api.base, "POST", "/api/v1/inspect", files.pdf(), {"X-Filename": "a.pdf"},
                                     key=SLOW)
        statuses.append(status)
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    assert body["error"] == "rate_limited" and int(headers["Retry-After"]) >= 1
    # Another key is not slowed down by this one.
    assert call(api.base, "POST", "/api/v1/inspect", files.pdf(), {"X-Filename": "a.pdf"})[0] == 200


def test_over_the_size_limit_is_413(api):
    big = b"%PDF-1.4\n" + b"0" * 2_000_000
    status, _h, body = upload(api.base, big, "big.pdf")
    assert status == 413 and body["error"] == "too_large"
    # Without a Content-Length (chunked), the limit holds as the bytes arrive.
    conn = http.client.HTTPConnection("127.0.0.1", api.links_port, timeout=30)
    conn.putrequest("POST", "/api/v1/upload/attachment")
    for k, v in {"Authorization": f"Bearer {KEY}", "X-Filename": "big.pdf", "Transfer-Encoding": "chunked"}.items():
        conn.putheader(k, v)
    conn.endheaders()
    try:
        for i in range(0, len(big), 65536):
            chunk = big[i:i + 65536]
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before reading everything
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"] == "too_large"
    conn.close()
    assert objects(api.store) == [] and not list(api.spool.iterdir())


def test_idempotency_key_returns_the_same_result_and_stores_once(api):
    pdf = files.pdf()
    first = upload(api.base, pdf, "a.pdf", Idempotency_Key="order-42")
    again = upload(api.base, pdf, "a.pdf", Idempotency_Key="order-42")
    assert first[0] == again[0] == 200 and first[2] == again[2]
    assert objects(api.store) == [first[2]["s3Key"]]
    status, _h, body = upload(api.base, pdf + b"\n", "a.pdf", Idempotency_Key="order-42")
    assert status == 409 and body["error"] == "idempotency_conflict"
    # The same Idempotency-Key from another key is another request.
    status, _h, body = call(api.base, "POST", "/api/v1/upload/attachment", pdf,
                            {"X-Filename": "a.pdf", "Idempotency-Key": "order-42"}, key=ACME)
    assert status == 200 and body["s3Key"] != first[2]["s3Key"]
    # A refusal is remembered too.
    assert upload(api.base, b"", "e.pdf", Idempotency_Key="empty-1")[0] == 400
    assert upload(api.base, b"", "e.pdf", Idempotency_Key="empty-1")[2] == {"error": "empty", "message": "Empty file"}


def test_respond_async_gives_a_job_polled_until_complete(api):
    pdf = files.pdf()
    status, headers, body = upload(api.base, pdf, "a.pdf", Prefer="respond-async")
    assert status == 202 and set(body) == {"jobId", "status"} and body["status"] == "PENDING"
    assert headers["Location"] == f"/api/v1/jobs/{body['jobId']}"
    done = poll(api.base, body["jobId"])
    assert done["status"] == "COMPLETE" and done["jobId"] == body["jobId"]
    assert done["sha256"] == hashlib.sha256(pdf).hexdigest() and done["verdict"] == "accepted"
    assert download(done["downloadUrl"]) == pdf
    assert objects(api.store) == [done["s3Key"]]
    # Another key cannot see it, an unknown id is 404.
    assert call(api.base, "GET", f"/api/v1/jobs/{body['jobId']}", key=ACME)[0] == 404
    status, _h, missing = call(api.base, "GET", "/api/v1/jobs/" + "0" * 32)
    assert status == 404 and missing["error"] == "not_found"
    assert call(api.base, "GET", "/api/v1/jobs/../../etc")[0] == 404


def test_a_body_over_max_sync_bytes_becomes_a_job(api):
    big = files.big_pdf(1_200_000)
    status, _h, body = upload(api.base, big, "big.pdf")
    assert status == 202, body
    done = poll(api.base, body["jobId"])
    assert done["status"] == "COMPLETE" and done["fileSize"] == len(big)


def test_an_async_refusal_is_a_rejected_job(api):
    status, _h, body = upload(api.base, files.pe_exe(), "a.pdf", Prefer="respond-async")
    assert status == 202
    done = poll(api.base, body["jobId"])
    assert done["status"] == "REJECTED" and done["verdict"] == "blocked" and done["error"] == "blocked"
    # Zero bytes are known at once: the answer is the 400, not a job to poll.
    assert upload(api.base, b"", "a.pdf", Prefer="respond-async")[:3:2] == (400, {"error": "empty",
                                                                                "message": "Empty file"})
    assert objects(api.store) == []


def test_work_past_the_sync_deadline_becomes_a_job(make_proxy):
    p = make_proxy({"links": {"api_keys": [KEY]}, "api": {"sync_deadline_seconds": 1e-6}})
    base = f"http://127.0.0.1:{p.links_port}"
    status, headers, body = upload(base, files.pdf(), "a.pdf")
    assert status == 202 and headers["Location"].endswith(body["jobId"])
    assert poll(base, body["jobId"])["status"] == "COMPLETE"


@pytest.mark.parametrize("name", ["../../../etc/passwd", "..%2F..%2Fescape.pdf", "C:\\Windows\\evil.pdf",
                                  "%2E%2E", "a\u202egnp.pdf", "/abs/olute.pdf", "con.pdf", "x" * 1000 + ".pdf"])
def test_a_hostile_filename_never_escapes_the_store(api, name):
    status, _h, body = upload(api.base, files.pdf(), urllib.parse.quote(name) if "%" not in name else name)
    assert status in (200, 422), body
    if status == 200:
        key = body["s3Key"]
        assert ".." not in key.split("/") and not key.startswith("/") and "\\" not in key
        assert (api.store / key).resolve().is_relative_to(api.store.resolve())
        assert download(body["downloadUrl"]) == files.pdf()
    assert not (api.tmp / "escape.pdf").exists() and not (api.tmp.parent / "escape.pdf").exists()


@pytest.mark.parametrize("headers,body,fragment", [
    ({}, b"%PDF-1.4", "X-Filename"),
    ({"X-Filename": "a.pdf", "Content-Transfer-Encoding": "base64"}, b"not base64!!", "base64"),
    ({"X-Filename": "a.pdf", "Content-Transfer-Encoding": "base64"}, b"QUJD\nRA", "base64"),
    ({"X-Filename": "a.pdf", "Content-Transfer-Encoding": "quoted-printable"}, b"x", "Content-Transfer-Encoding"),
    ({"X-Filename": "a.pdf", "X-Declared-Type": "pdf please"}, b"x", "X-Declared-Type"),
    ({"X-Filename": "a.pdf", "X-CustomerId": "a b/c"}, b"x", "X-CustomerId"),
    ({"X-Filename": "a.pdf", "Idempotency-Key": "x" * 300}, b"x", "Idempotency-Key"),
    ({"X-Filename": "%FF%FE.pdf"}, b"x", "UTF-8"),
    ({"X-Filename": "a%0Ab.pdf"}, b"x", "control"),
])
def test_malformed_requests_get_a_readable_400(api, headers, body, fragment):
    status, _h, out = call(api.base, "POST", "/api/v1/upload/attachment", body, headers)
    assert status == 400 and out["error"] == "bad_request" and fragment in out["message"], out
    assert objects(api.store) == []


def test_raw_filename_bytes_in_utf8_or_latin1(api):
    for raw in ("résumé.pdf".encode("utf-8"), "résumé.pdf".encode("latin-1")):
        conn = http.client.HTTPConnection("127.0.0.1", api.links_port, timeout=30)
        conn.putrequest("POST", "/api/v1/upload/attachment")
        conn.putheader("Authorization", f"Bearer {KEY}")
        conn.putheader("X-Filename", raw)
        conn.putheader("Content-Length", str(len(files.pdf())))
        conn.endheaders(files.pdf())
        resp = conn.getresponse()
        out = json.loads(resp.read())
        conn.close()
        assert resp.status == 200 and out["fileName"] == "résumé.pdf", out


def test_inspect_judges_and_stores_nothing(api):
    for data, name, verdict in [(files.pdf(), "a.pdf", "accepted"), (files.pe_exe(), "a.pdf", "blocked"),
                                (files.png(), "a.pdf", "spoofed"), (b"", "a.pdf", "empty")]:
        status, _h, body = call(api.base, "POST", "/api/v1/inspect", data,
                                {"X-Filename": name, "X-Declared-Type": "application/pdf"})
        assert status == 200 and body["verdict"] == verdict, body
        assert {"verdict", "reason", "detectedType", "size", "sha256"} <= set(body)
        assert body["size"] == len(data) and body["sha256"] == hashlib.sha256(data).hexdigest()
    assert objects(api.store) == []


def test_openapi_document_is_served_and_is_the_repo_file(api):
    status, headers, body = get(api.base + "/api/v1/openapi.json")
    repo = Path(__file__).parents[1] / "smtp_offload" / "api" / "openapi.json"
    assert status == 200 and json.loads(body) == json.loads(repo.read_text())
    assert json.loads(body)["openapi"].startswith("3.1")


def test_without_keys_the_api_does_not_exist(make_proxy):
    p = make_proxy()
    status, _h, body = call(f"http://127.0.0.1:{p.links_port}", "POST", "/api/v1/upload/attachment", b"x",
                            {"X-Filename": "a.pdf"})
    assert status == 404 and body["error"] == "not_found"


@pytest.fixture
def fileserver():
    from tests.support.fileserver import FileServer

    s = FileServer({"scan.pdf": files.pdf(), "evil.pdf": files.pe_exe(), "big.pdf": files.big_pdf(3_000_000)})
    yield s
    s.stop()


def inspect_url(base: str, url: str, **fields) -> tuple[int, dict, dict]:
    return call(base, "POST", "/api/v1/inspect", json.dumps({"url": url, **fields}).encode(),
                {"Content-Type": "application/json"})


def test_inspect_by_url_fetches_from_an_allow_listed_host(make_proxy, fileserver):
    p = make_proxy({"links": {"api_keys": [KEY]},
                    "api": {"fetch_allow_hosts": ["127.0.0.1"], "max_bytes": 2_000_000, "max_sync_bytes": 1_000_000}})
    base = f"http://127.0.0.1:{p.links_port}"
    status, _h, body = inspect_url(base, fileserver.base + "/file/scan.pdf?sig=secret", fileName="scan.pdf",
                                   declaredType="application/pdf")
    assert status == 200 and body["verdict"] == "accepted" and body["sha256"] == hashlib.sha256(files.pdf()).hexdigest()
    status, _h, body = inspect_url(base, fileserver.base + "/file/evil.pdf", fileName="evil.pdf")
    assert status == 200 and body["verdict"] == "blocked"
    # 429 twice (Retry-After: 1), then the file: the fetch waits and retries.
    status, _h, body = inspect_url(base, fileserver.base + "/busy/2/scan.pdf", fileName="scan.pdf")
    assert status == 200 and body["verdict"] == "accepted"
    assert fileserver.requests.count("/busy/2/scan.pdf") == 3
    for path, error in [("/expired", "url_expired"), ("/gone", "url_expired"), ("/nothing", "url_not_found")]:
        status, _h, body = inspect_url(base, fileserver.base + path + "?sig=secret", fileName="x.pdf")
        assert status == 422 and body["error"] == error, body
        assert "secret" not in body["message"]
    assert "fresh" in inspect_url(base, fileserver.base + "/expired", fileName="x.pdf")[2]["message"]
    status, _h, body = inspect_url(base, fileserver.base + "/file/big.pdf", fileName="big.pdf")
    assert status == 413 and body["error"] == "too_large"
    assert objects(p.store) == []
    [event] = [e for e in p.events("api") if e.get("url_host")][:1]
    assert event["url_host"] == "127.0.0.1" and "secret" not in json.dumps(p.events("api"))


def test_inspect_by_url_refuses_private_targets_unless_allowed(api, fileserver):
    for url in [fileserver.base + "/file/scan.pdf", "https://127.0.0.1:9/x.pdf", "https://169.254.169.254/latest",
                "https://[::1]/x", "http://example.com/x.pdf", "file:///etc/passwd", "https://10.0.0.8/x"]:
        status, _h, body = inspect_url(api.base, url, fileName="x.pdf")
        assert status == 400 and body["error"] == "url_not_allowed", (url, body)
    assert fileserver.requests == []


@pytest.mark.parametrize("payload,fragment", [
    (b"{not json", "JSON"), (b"[1, 2]", "JSON"), (b'{"fileName": "a.pdf"}', "url"),
    (b'{"url": "https://x.test/a", "extra": 1}', "unknown field"),
    (b'{"url": "https://x.test/a", "fileName": 7}', "fileName"),
    (b'{"url": "https://x.test/a", "declaredType": "no"}', "declaredType"),
])
def test_inspect_bad_json_gets_a_readable_400(api, payload, fragment):
    status, _h, body = call(api.base, "POST", "/api/v1/inspect", payload, {"Content-Type": "application/json"})
    assert status == 400 and fragment in body["message"], body


def test_a_customer_bound_key_reaches_only_its_customers_links(api):
    mine = call(api.base, "POST", "/api/v1/upload/attachment", files.pdf(), {"X-Filename": "a.pdf"}, key=ACME)[2]
    theirs = upload(api.base, files.pdf(), "b.pdf", X_CustomerId="globex")[2]
    refresh = "/api/v1/links/refresh"
    status, _h, body = call(api.base, "POST", refresh, json.dumps({"key": mine["s3Key"]}).encode(), key=ACME)
    assert status == 200 and body["key"] == mine["s3Key"]
    for payload in ({"key": theirs["s3Key"]}, {"token": theirs["downloadUrl"].rsplit("/", 1)[1]}):
        status, _h, body = call(api.base, "POST", refresh, json.dumps(payload).encode(), key=ACME)
        assert status == 404, body
    token = urllib.parse.quote(theirs["downloadUrl"].rsplit("/", 1)[1])
    assert call(api.base, "GET", f"/api/v1/links/show?token={token}", key=ACME)[0] == 404
    status, _h, body = call(api.base, "POST", "/api/v1/links/revoke", b'{"token_id": "0123456789abcdef"}', key=ACME)
    assert status == 403
    assert call(api.base, "POST", "/api/v1/links/revoke",
                json.dumps({"token": theirs["downloadUrl"].rsplit("/", 1)[1]}).encode(), key=ACME)[0] == 404
    assert get(theirs["downloadUrl"])[0] == 200  # untouched


def test_concurrent_requests_under_one_idempotency_key_store_one_file(api):
    from concurrent.futures import ThreadPoolExecutor

    a, b = files.big_pdf(400_000), files.big_pdf(400_100)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda d: upload(api.base, d, "a.pdf", Idempotency_Key="same"), [a, b, a, b]))
    ok = [r[2] for r in results if r[0] == 200]
    assert ok and all(r[0] in (200, 409) for r in results), [r[:3:2] for r in results]
    assert len({o["s3Key"] for o in ok}) == 1 and len({o["sha256"] for o in ok}) == 1
    [key] = objects(api.store)
    assert hashlib.sha256((api.store / key).read_bytes()).hexdigest() == ok[0]["sha256"]


def test_compressed_bodies_are_refused_and_a_dropped_upload_leaves_nothing(api):
    import gzip
    import socket

    status, _h, body = upload(api.base, gzip.compress(files.pdf()), "a.pdf", Content_Encoding="gzip")
    assert status == 415 and body["error"] == "unsupported_encoding"
    # A client that goes away half-way through its body.
    s = socket.create_connection(("127.0.0.1", api.links_port))
    s.sendall(b"POST /api/v1/upload/attachment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
              + b"\r\nX-Filename: a.pdf\r\nContent-Length: 1000000\r\n\r\n" + b"%PDF-1.4\n" + b"0" * 100_000)
    s.close()
    for _ in range(300):
        if [e for e in api.events("api") if e["status"] == 499]:
            break
        time.sleep(0.05)
    [event] = [e for e in api.events("api") if e["status"] == 499]
    assert event["error"] == "client_disconnected"
    assert not [e for e in api.events() if e.get("level") in ("error", "critical")]
    assert objects(api.store) == [] and not list(api.spool.iterdir())


def test_a_json_body_sent_in_pieces_is_read_whole(make_proxy, fileserver):
    p = make_proxy({"links": {"api_keys": [KEY]}, "api": {"fetch_allow_hosts": ["127.0.0.1"]}})
    payload = json.dumps({"url": fileserver.base + "/file/scan.pdf", "fileName": "scan.pdf"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", p.links_port, timeout=30)
    conn.putrequest("POST", "/api/v1/inspect")
    for k, v in {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
                 "Content-Length": str(len(payload))}.items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(payload[:20])
    time.sleep(0.3)  # the second piece arrives later: the server must wait for it
    conn.send(payload[20:])
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 200 and body["verdict"] == "accepted", body


@pytest.mark.parametrize("payload", [
    {"url": "https://x.test/a", "z" * 60_000: 1},
    {"url": "http://" + "a" * 60_000 + ".test/x"},
    {"url": "https://" + "1" * 5000 + "/x"},
    {"url": "s" * 60_000 + "://x/y"},
])
def test_answers_stay_small_whatever_is_echoed(api, payload):
    status, _h, body = call(api.base, "POST", "/api/v1/inspect", json.dumps(payload).encode(),
                            {"Content-Type": "application/json"})
    assert 400 <= status < 500, body  # call() asserts the size


def test_base64_padding_inside_the_body_is_refused_however_it_is_cut(api):
    for pieces in ([b"aGVsbG8=aGVsbG8="], [b"aGVsbG8=", b"aGVsbG8="]):
        conn = http.client.HTTPConnection("127.0.0.1", api.links_port, timeout=30)
        conn.putrequest("POST", "/api/v1/upload/attachment")
        for k, v in {"Authorization": f"Bearer {KEY}", "X-Filename": "a.txt", "Transfer-Encoding": "chunked",
                     "Content-Transfer-Encoding": "base64"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        for piece in pieces:
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.1)
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        assert resp.status == 400 and "base64" in json.loads(resp.read())["message"]
        conn.close()


def test_mime_style_base64_close_to_the_limit_is_accepted(api):
    pdf = files.big_pdf(1_950_000)
    assert len(pdf) < 2_000_000
    status, _h, body = upload(api.base, base64.encodebytes(pdf), "big.pdf", Content_Transfer_Encoding="base64")
    assert status in (200, 202) and (status == 202 or body["fileSize"] == len(pdf)), body


def test_job_polls_have_their_own_rate(api):
    accepted = [call(api.base, "POST", "/api/v1/upload/attachment", files.pdf(),
                     {"X-Filename": "a.pdf", "Prefer": "respond-async"}, key=SLOW) for _ in range(4)]
    assert [a[0] for a in accepted] == [202, 202, 202, 429]
    job_id = accepted[0][2]["jobId"]
    assert poll(api.base, job_id, key=SLOW)["status"] == "COMPLETE"  # polling is not starved


def test_the_inflight_budget_lets_one_body_through_and_refuses_past_it():
    from smtp_offload.api.body import Budget
    from smtp_offload.api.keys import Refused

    budget = Budget(1000)
    budget.hold(5000)  # one body always goes, however large
    with pytest.raises(Refused) as refused:
        budget.hold(1)
    assert refused.value.status == 503 and refused.value.headers["Retry-After"]
    budget.release(5000)
    budget.hold(600)
    with pytest.raises(Refused):
        budget.hold(401)
    budget.hold(400)
    assert budget.used == 1000


def test_a_bound_key_gets_503_not_500_when_the_store_is_down(make_proxy, s3server):
    from tests.support.proc import dead_s3

    overrides = dead_s3()
    overrides["links"] = {"api_keys": KEYS}
    p = make_proxy(overrides)
    base = f"http://127.0.0.1:{p.links_port}"
    status, _h, body = call(base, "POST", "/api/v1/links/refresh", b'{"key": "acme/2026/11/30/x/a.pdf"}', key=ACME)
    assert status == 503, body
    status, headers, body = upload(base, files.pdf(), "a.pdf")
    assert status == 503 and body["error"] == "storage_unavailable" and headers["Retry-After"]
    assert not [e for e in p.events() if e.get("level") in ("error", "critical")]


def test_a_client_leaving_the_link_api_mid_body_is_no_error(api):
    import socket

    s = socket.create_connection(("127.0.0.1", api.links_port))
    s.sendall(b"POST /api/v1/links/refresh HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
              + b"\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"key\": ")
    s.close()
    for _ in range(300):
        if api.events("link_api"):
            break
        time.sleep(0.05)
    [event] = api.events("link_api")
    assert event["status"] == 499 and event["error"] == "client_disconnected"
    assert not [e for e in api.events() if e.get("level") in ("error", "critical")]
    # A gzip body the API was never going to inflate: a plain 400, no traceback.
    status, _h, body = call(api.base, "POST", "/api/v1/links/refresh", b"\x1f\x8bgarbage",
                            {"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert status == 400
    status, _h, body = upload(api.base, b"\x1f\x8bgarbage", "a.pdf", Content_Encoding="gzip")
    assert status == 415
    assert not [e for e in api.events() if e.get("level") in ("error", "critical")]
