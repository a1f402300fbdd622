"""Calls to the HTTP API over loopback, as a contact-center flow makes them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

KEY = "api-key-for-tests-0123456789abcdef"
MAX_RESPONSE = 16 * 1024  # CXone REST actions take responses up to 32 KB; the API promises 16


def call(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         key: str | None = KEY, timeout: float = 60) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) for any status; every answer must be small JSON."""
    h = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(base + path, data=body, method=method, headers={**h, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, rh, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, rh, raw = e.code, dict(e.headers), e.read()
    assert len(raw) < MAX_RESPONSE, (status, len(raw))
    assert rh.get("Content-Type", "").startswith("application/json"), (status, rh, raw[:200])
    return status, rh, json.loads(raw)


def upload(base: str, data: bytes, name: str = "invoice.pdf", **headers: str) -> tuple[int, dict, dict]:
    return call(base, "POST", "/api/v1/upload/attachment", data,
                {"X-Filename": name, **{k.replace("_", "-"): v for k, v in headers.items()}})


def poll(base: str, job_id: str, key: str = KEY, rounds: int = 600) -> dict:
    """The job's record once it is no longer PENDING (polled as a flow would, every 0.1 s)."""
    import time

    for _ in range(rounds):
        status, _h, body = call(base, "GET", f"/api/v1/jobs/{job_id}", key=key)
        assert status == 200, body
        if body["status"] != "PENDING":
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still PENDING")
