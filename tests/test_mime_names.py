"""A path in a file name is disarmed, not held against the file, end to end through the proxy:
the relayed headers, the notice, the decision header, the store key, the stored name, the
landing page and the download all say the base name; the file is judged by its bytes."""

from __future__ import annotations

import json

import pytest

from smtp_offload.mime import scan
from tests.support import samples
from tests.support.http import get
from tests.support.mail import attachment, message, multipart, text
from tests.support.relayed import LINK, attachment_payloads, body_text, decisions, relay, said

PATHS = {"fakepath": ("C:\\fakepath\\scan.pdf", "scan.pdf"), "dotdot": ("../x.pdf", "x.pdf"),
         "root": ("/etc/x.pdf", "x.pdf"), "unc": ("\\\\server\\share\\x.pdf", "x.pdf")}


def _raw_name_headers(got: bytes) -> bytes:
    return b"".join(got[p.start:p.header_end] for p in scan.parse(got).walk() if p.filename)


@pytest.mark.parametrize("case", list(PATHS))
def test_real_pdf_named_with_a_path_is_kept_under_its_base_name(proxy, sink, case):
    raw, base = PATHS[case]
    pdf = samples.pdf()
    got = relay(proxy, sink, message(multipart(text(), attachment(pdf, raw, "application/pdf"))))
    assert attachment_payloads(got) == {base: pdf}
    (d,) = decisions(got)
    assert (d["verdict"], d["name*"]) == ("keep", f"UTF-8''{base}")
    headers = _raw_name_headers(got)
    assert f"filename*=UTF-8''{base}".encode() in headers and f"name*=UTF-8''{base}".encode() in headers
    for piece in ("fakepath", "..", "etc", "server", "%2F", "%5C"):
        assert piece.encode() not in headers, headers


def test_executable_named_with_a_path_is_still_blocked(proxy, sink):
    got = relay(proxy, sink, message(multipart(text(), attachment(samples.pe_exe(), "../x.pdf", "application/pdf"))))
    assert attachment_payloads(got) == {}
    (d,) = decisions(got)
    assert (d["verdict"], d["name*"]) == ("blocked", "UTF-8''x.pdf")
    assert '"x.pdf"' in body_text(got) and "a Windows program disguised as a PDF document" in said(got)


def test_offloaded_file_named_with_a_path_is_stored_and_served_under_its_base_name(make_proxy, sink):
    proxy = make_proxy({"policy": {"offload_over_bytes": 10_000}})
    big = samples.big_pdf(50_000)
    msg = message(multipart(text(), text("<html><body><p>hi</p></body></html>", subtype="html"),
                            attachment(big, "C:\\fakepath\\scan.pdf", "application/pdf")))
    got = relay(proxy, sink, msg)
    (d,) = decisions(got)
    assert (d["verdict"], d["name*"]) == ("offload", "UTF-8''scan.pdf")
    plain, html = body_text(got), body_text(got, "html")
    assert '"scan.pdf" (48.8 KiB, PDF document)' in plain and ">scan.pdf</a>" in html
    assert "fakepath" not in plain + html
    (ev,) = [e for e in proxy.events("attachment") if e["verdict"] == "offload"]
    key = ev["storage_key"]
    assert key.endswith("/scan.pdf") and ev["name"] == "scan.pdf"
    stored = proxy.store / key
    meta = json.loads(stored.with_name(f".{stored.name}.meta.json").read_text())
    assert meta["filename"] == "scan.pdf"
    (url,) = {u.decode() for u in LINK.findall(plain.encode())}
    status, _, page = get(url)
    assert status == 200 and b"<h1>scan.pdf</h1>" in page and b"fakepath" not in page
    status, headers, body = get(url + "/download")
    assert status == 200 and body == big
    assert headers["Content-Disposition"] == "attachment; filename=\"scan.pdf\"; filename*=UTF-8''scan.pdf"
