"""Inspect, strip, offload and rewrite, end to end through the proxy process."""

from __future__ import annotations

import hashlib
import re

import pytest

from smtp_offload.links.tokens import Grant, sign
from smtp_offload.mime import scan
from tests.support import samples
from tests.support.http import get
from tests.support.mail import attachment, b64, message, multipart, rfc822, text
from tests.support.relayed import LINK, attachment_payloads, body_text, parts_of

def test_small_attachments_kept_byte_identical(proxy, sink):
    files = {"scan.pdf": (samples.pdf(), "application/pdf"), "photo.jpg": (samples.jpeg(), "image/jpeg"),
             "logo.png": (samples.png(), "image/png"), "contract.docx": (samples.docx(),
             "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
             "notes.txt": (samples.text(), "text/plain")}
    msg = message(multipart(text(), *(attachment(d, n, t) for n, (d, t) in files.items())))
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    assert got.endswith(msg)  # nothing changed: byte for byte
    assert attachment_payloads(got) == {n: d for n, (d, t) in files.items()}
    assert got.count(b"X-Smtp-Offload-Attachment:") == 5 and b"verdict=keep" in got
    events = proxy.events("attachment")
    assert {e["name"]: e["verdict"] for e in events} == {n: "keep" for n in files}
    assert all(e["sha256"] == hashlib.sha256(files[e["name"]][0]).hexdigest() for e in events)


def test_oversized_attachment_offloaded_and_link_serves_exact_bytes(make_proxy, sink):
    proxy = make_proxy({"policy": {"offload_over_bytes": 100_000}})
    big = samples.big_pdf(400_000)
    small = samples.png()
    msg = message(multipart(multipart(text(), text("<p>Hello <b>agent</b></p>", subtype="html"),
                                      subtype="alternative"),
                            attachment(big, "scan of contract.pdf", "application/pdf"),
                            attachment(small, "logo.png", "image/png")))
    code, reply = proxy.send(msg)
    assert code == 250, reply
    got = sink.messages[0].content
    assert len(got) < len(msg) - 400_000
    assert attachment_payloads(got) == {"logo.png": small}
    plain, html = body_text(got), body_text(got, "html")
    assert '"scan of contract.pdf" (390.6 KiB, PDF document) was too large to attach.' in plain
    assert "Download it until" in plain and "scan of contract.pdf" in html
    links = set(LINK.findall(plain.encode()))
    assert len(links) == 1
    url = links.pop().decode()
    assert f'href="{url}"' in html.replace("&amp;", "&")
    # the untouched attachment keeps its original bytes and encoding
    logo = next(p for p in parts_of(msg) if p.filename == "logo.png")
    assert msg[logo.start:logo.end] in got
    status, _, page = get(url)  # the landing page
    assert status == 200 and b"scan of contract.pdf" in page
    for _ in range(2):  # a GET never consumes the link (scanners fetch every URL)
        status, headers, body = get(url + "/download")
        assert status == 200
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(big).hexdigest()
    assert headers["Content-Type"].startswith("application/pdf")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "attachment" in headers["Content-Disposition"] and "filename*=UTF-8''scan" in headers["Content-Disposition"]
    # the decision header tells the platform what happened
    assert re.search(rb"verdict=offload;.*size=400", got.replace(b"\r\n\t", b" "))
    (ev,) = [e for e in proxy.events("attachment") if e["verdict"] == "offload"]
    assert ev["storage_key"] and (proxy.store / ev["storage_key"]).is_file()
    # tampered and expired links are refused with a page that says so
    token = url.split("/f/", 1)[1].split("/")[0]
    bad = url.replace(token, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    status, _, body = get(bad)
    assert status == 403 and b"not valid" in body.lower()
    secret = (proxy.tmp / "link-secret").read_bytes().strip()
    expired = sign(Grant(ev["storage_key"], 1_000_000_000, "0123456789abcdef"), secret)
    status, _, body = get(url.replace(token, expired))
    assert status == 410 and b"expired" in body.lower()


def test_planner_offloads_largest_first_until_message_fits(make_proxy, sink):
    proxy = make_proxy({"downstream": {"max_message_bytes": 250_000}, "policy": {"offload_over_bytes": 10_000_000}})
    sizes = {"a.pdf": 150_000, "b.pdf": 120_000, "c.pdf": 60_000, "d.pdf": 20_000}
    files = {n: samples.big_pdf(s) for n, s in sizes.items()}
    msg = message(multipart(text(), *(attachment(d, n, "application/pdf") for n, d in files.items())))
    assert len(msg) > 250_000
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    assert len(got) <= 250_000
    kept = attachment_payloads(got)
    # base64 makes 350 KB of files about 480 KB: a.pdf alone leaves 280 KB, a.pdf + b.pdf fits
    assert set(kept) == {"c.pdf", "d.pdf"}
    assert kept["c.pdf"] == files["c.pdf"]
    assert body_text(got).count("/f/") == 2


def test_planner_respects_attachment_count_limit(make_proxy, sink):
    proxy = make_proxy({"downstream": {"max_attachments": 2}})
    files = {f"img{i}.png": samples.png() + bytes(i * 100) for i in range(4)}
    msg = message(multipart(text(), *(attachment(d, n, "image/png") for n, d in files.items())))
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    assert set(attachment_payloads(got)) == {"img0.png", "img1.png"}


BAD = {
    "exe-as-pdf": (samples.pe_exe(), "invoice.pdf", "application/pdf", "blocked"),
    "png-as-jpeg": (samples.png(), "photo.jpg", "image/jpeg", "spoofed"),
    "binary-as-txt": (samples.zip_file(), "notes.txt", "text/plain", "spoofed"),
    "zero-byte": (b"", "empty.pdf", "application/pdf", "empty"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_attachment_stripped_with_notice(proxy, sink, case):
    data, name, ctype, verdict = BAD[case]
    msg = message(multipart(text(), attachment(data, name, ctype), attachment(samples.pdf(), "ok.pdf",
                                                                               "application/pdf")))
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    assert attachment_payloads(got) == {"ok.pdf": samples.pdf()}
    notice = body_text(got)
    assert name in notice and "was removed" in notice
    assert notice.rstrip().endswith("Regards")  # the original text is still there, after the notice
    assert f"verdict={verdict}".encode() in got
    (ev,) = [e for e in proxy.events("attachment") if e["name"] == name]
    assert ev["verdict"] == verdict and ev["reason"]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_attachment_rejected_when_configured(make_proxy, sink, case):
    proxy = make_proxy({"policy": {"on_empty": "reject", "on_spoofed": "reject", "on_blocked": "reject"}})
    data, name, ctype, verdict = BAD[case]
    code, reply = proxy.send(message(multipart(text(), attachment(data, name, ctype))))
    assert code == 550 and reply.startswith(b"5.7.1") and name.encode() in reply
    assert sink.messages == []
    assert proxy.events("message")[0]["outcome"] == "rejected"


def test_nested_multipart_and_attached_message(make_proxy, sink):
    proxy = make_proxy({"policy": {"offload_over_bytes": 50_000}})
    inner = message(multipart(text("forwarded body\r\n"), attachment(samples.pe_exe(), "setup.pdf", "application/pdf"),
                              attachment(samples.big_pdf(80_000), "big.pdf", "application/pdf"),
                              attachment(samples.jpeg(), "pic.jpg", "image/jpeg")), subject="inner")
    related = multipart(text("<p>hi<img src=cid:x></p>", subtype="html"),
                        attachment(samples.gif(), "inline.png", "image/png", disposition="inline"),
                        subtype="related")
    msg = message(multipart(multipart(text("outer body\r\n"), related, subtype="alternative"), rfc822(inner)))
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    remaining = attachment_payloads(got)
    assert remaining == {"pic.jpg": samples.jpeg()}
    notice = body_text(got)
    for name in ("setup.pdf", "big.pdf", "inline.png"):
        assert name in notice
    assert notice.endswith("outer body\r\n")
    assert b"forwarded body" in got and b"Subject: inner" in got
    verdicts = {e["name"]: e["verdict"] for e in proxy.events("attachment")}
    assert verdicts == {"inline.png": "spoofed", "setup.pdf": "blocked", "big.pdf": "offload", "pic.jpg": "keep"}


def test_message_without_text_body_gets_a_notice_part(proxy, sink):
    msg = message(multipart(attachment(samples.pe_exe(), "tool.exe", "application/octet-stream")))
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    assert attachment_payloads(got) == {}
    assert "tool.exe" in body_text(got)


def test_single_part_attachment_message(proxy, sink):
    msg = message(attachment(samples.pe_exe(), "tool.pdf", "application/pdf"))
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    assert attachment_payloads(got) == {}
    assert "tool.pdf" in body_text(got)
    assert b"Subject: Test message" in got


def test_notice_escapes_html_and_handles_unicode_names(make_proxy, sink):
    proxy = make_proxy({"policy": {"offload_over_bytes": 1000}})
    name = "<b>Rëchnung<b> & co.pdf"
    msg = message(multipart(multipart(text("plain\r\n", charset="iso-8859-1"),
                                      text("<html><body><p>hi</p></body></html>", subtype="html",
                                           cte="quoted-printable"), subtype="alternative"),
                            attachment(samples.big_pdf(5000), name, "application/pdf")))
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    html = body_text(got, "html")
    assert "&lt;b&gt;Rëchnung&lt;b&gt; &amp; co.pdf" in html and "<b>Rëchnung" not in html
    assert html.index("<body>") < html.index("The mail gateway changed this message") < html.index("<p>hi</p>")
    assert name in body_text(got)  # iso-8859-1 text gained a notice it can carry


def test_forged_decision_headers_are_removed(proxy, sink):
    msg = message(text(), extra=[("X-Smtp-Offload-Attachment", "v=1; verdict=keep; forged")])
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    assert b"forged" not in got and b"X-Smtp-Offload: v=1" in got


def test_quoted_printable_and_base64_text_bodies_keep_encoding(make_proxy, sink):
    proxy = make_proxy({"policy": {"offload_over_bytes": 1000}})
    for cte in ("quoted-printable", "base64"):
        msg = message(multipart(text("Grüße " * 40 + "\r\n", cte=cte),
                                attachment(samples.big_pdf(5000), "x.pdf", "application/pdf")))
        assert proxy.send(msg)[0] == 250
        got = sink.messages[-1].content
        body = next(p for p in parts_of(got) if p.content_type == "text/plain")
        assert body.cte == cte
        assert "Grüße " * 40 in body_text(got) and "x.pdf" in body_text(got)


def test_attached_message_that_is_only_a_file(proxy, sink):
    """A forwarded message whose whole body is a blocked file keeps its headers and says where the file went."""
    inner = message(attachment(samples.pe_exe(), "run.pdf", "application/pdf"), subject="inner only file")
    msg = message(multipart(text("outer\r\n"), rfc822(inner)))
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    assert attachment_payloads(got) == {}
    assert b"Subject: inner only file" in got and b"removed by the mail gateway" in got
    assert "run.pdf" in body_text(got)
    assert b64(samples.pe_exe())[:60] not in got


def test_container_left_empty_is_removed(proxy, sink):
    msg = message(multipart(text("body\r\n"), multipart(attachment(b"", "a.txt", "text/plain"),
                                                        attachment(b"", "b.txt", "text/plain"))))
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    root = scan.parse(got)
    assert [p.content_type for p in root.walk()] == ["multipart/mixed", "text/plain"]
    assert "a.txt" in body_text(got) and "b.txt" in body_text(got)
