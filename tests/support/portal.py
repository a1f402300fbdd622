"""A customer's side of the upload portal over loopback: sessions made through the API, the
tus protocol spoken by hand (so a test controls every byte), the page's plain form."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage
from urllib.parse import urlsplit

from tests.support.api import call

TO = "support@example.com"


def new_session(base: str, **fields) -> dict:
    status, _h, body = call(base, "POST", "/api/v1/portal/sessions",
                            json.dumps({"caseId": "CASE-1042", "to": TO, **fields}).encode(),
                            {"Content-Type": "application/json"})
    assert status == 201, body
    return body


def path_of(url: str) -> str:
    return urlsplit(url).path


def request(base: str, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def post_form(base: str, path: str, files: list[tuple[str, bytes, str]]) -> tuple[int, dict, bytes]:
    """A browser's multipart/form-data POST of the page's plain form; redirects not followed."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data, ctype in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(base + path, data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def tus_create(base: str, page: str, name: str, length: int, filetype: str = "") -> tuple[int, dict, bytes]:
    meta = "filename " + base64.b64encode(name.encode()).decode()
    if filetype:
        meta += ",filetype " + base64.b64encode(filetype.encode()).decode()
    return request(base, "POST", page + "/tus", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(length), "Upload-Metadata": meta})


def tus_patch(base: str, upload: str, offset: int, chunk: bytes) -> tuple[int, dict, bytes]:
    return request(base, "PATCH", upload, chunk, {"Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                                                   "Content-Type": "application/offset+octet-stream"})


def tus_offset(base: str, upload: str) -> int:
    status, headers, _ = request(base, "HEAD", upload, headers={"Tus-Resumable": "1.0.0"})
    assert status == 200, status
    return int(headers["Upload-Offset"])


def tus_upload(base: str, page: str, name: str, data: bytes, chunk: int = 1 << 20, filetype: str = "") -> str:
    """The whole file through tus; the upload's path."""
    status, headers, body = tus_create(base, page, name, len(data), filetype)
    assert status == 201, (status, body)
    upload = page + "/" + headers["Location"]
    for offset in range(0, len(data), chunk):
        status, _h, body = tus_patch(base, upload, offset, data[offset:offset + chunk])
        assert status == 204, (status, body)
    return upload


def status_of(base: str, page: str) -> dict:
    status, _h, body = request(base, "GET", page + "/status")
    assert status == 200, (status, body)
    return json.loads(body)


def send(base: str, page: str) -> tuple[int, dict]:
    status, _h, body = request(base, "POST", page + "/send", b"", {"Accept": "application/json"})
    return status, json.loads(body)


def delivered(sink, count: int = 1) -> EmailMessage:
    """The last of exactly `count` messages the sink received (waited for, up to 30 s)."""
    for _ in range(600):
        if len(sink.messages) >= count:
            break
        time.sleep(0.05)
    assert len(sink.messages) == count, f"{len(sink.messages)} messages downstream"
    return message_from_bytes(sink.messages[-1].content, policy=policy.default)
