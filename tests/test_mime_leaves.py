"""Every leaf part a mail client could show as a file is judged, end to end through the proxy:
nameless parts, transfer-encoded attached messages, irregular Content-Transfer-Encoding
headers, base64 that goes on after a "=" pad, and encodings nobody knows."""

from __future__ import annotations

import quopri

import pytest

from smtp_offload.mime import scan
from tests.support import samples
from tests.support.mail import attachment, b64, entity, message, multipart, text
from tests.support.relayed import EXE, assert_exe_gone, body_text, decisions, leaf_payloads, relay, said


def test_nameless_octet_stream_executable_is_stripped(proxy, sink):
    nameless = entity([("Content-Type", "application/octet-stream"), ("Content-Transfer-Encoding", "base64")],
                      b64(EXE))
    got = relay(proxy, sink, message(multipart(text(), nameless)))
    assert_exe_gone(got)
    (d,) = decisions(got)
    assert (d["verdict"], d["part"], d["name*"]) == ("blocked", "2", "UTF-8''part-2.exe")
    notice = body_text(got)
    assert '"part-2.exe" (1.0 KiB) was removed.' in notice and "It is a program file (.exe); programs are not" in notice
    assert notice.rstrip().endswith("Regards")  # the message's own text stays body


@pytest.mark.parametrize("cte", ["base64", "quoted-printable"])
@pytest.mark.parametrize("named", [True, False], ids=["named", "nameless"])
def test_encoded_attached_message_with_an_executable_is_stripped(proxy, sink, cte, named):
    inner = message(multipart(text("forwarded\r\n"), attachment(EXE, "invoice.pdf", "application/pdf")),
                    subject="inner")
    body = b64(inner) if cte == "base64" else quopri.encodestring(inner)
    headers = [("Content-Type", "message/rfc822"), ("Content-Transfer-Encoding", cte)]
    if named:
        headers.append(("Content-Disposition", 'attachment; filename="forwarded.eml"'))
    got = relay(proxy, sink, message(multipart(text(), entity(headers, body))))
    assert_exe_gone(got)
    assert body[len(body) // 2:][:60] not in got and b"Subject: inner" not in got  # the whole unit is gone
    (d,) = decisions(got)
    assert d["verdict"] == "blocked"
    assert d["reason"].startswith("the attached message carries 'invoice.pdf'")  # the header has no '"'
    assert 'an attached email with "invoice.pdf" in it: a Windows program disguised as a PDF document' in said(got)


@pytest.mark.parametrize("cte", ["8bit", "base64"])
def test_message_global_is_an_attached_message_too(proxy, sink, cte):
    inner = message(multipart(text("Grüße\r\n"), attachment(EXE, "Rechnung.pdf", "application/pdf")))
    part = entity([("Content-Type", "message/global"), ("Content-Transfer-Encoding", cte)],
                  b64(inner) if cte == "base64" else inner)
    got = relay(proxy, sink, message(multipart(text(), part)))
    assert_exe_gone(got)
    assert [d["verdict"] for d in decisions(got)] == ["blocked"]


def test_nested_encoded_messages_are_inspected_to_the_bottom(proxy, sink):
    innermost = message(multipart(text(), attachment(EXE, "run.txt", "text/plain")))
    middle = message(multipart(text(), entity([("Content-Type", "message/rfc822"),
                                               ("Content-Transfer-Encoding", "base64")], b64(innermost))))
    outer = entity([("Content-Type", "message/rfc822"), ("Content-Transfer-Encoding", "base64")], b64(middle))
    got = relay(proxy, sink, message(multipart(text(), outer)))
    assert_exe_gone(got)
    (d,) = decisions(got)
    assert d["verdict"] == "blocked"
    assert d["reason"].startswith("the attached message carries 'part-2.1.2.eml': the attached message carries "
                                  "'run.txt': ")


def test_honest_encoded_message_and_inline_images_are_kept_byte_identical(proxy, sink):
    inner = message(multipart(text(), attachment(samples.pdf(), "scan.pdf", "application/pdf")))
    unit = entity([("Content-Type", "message/rfc822"), ("Content-Transfer-Encoding", "base64"),
                   ("Content-Disposition", 'attachment; filename="fwd.eml"')], b64(inner))
    inline = entity([("Content-Type", "image/png"), ("Content-Transfer-Encoding", "base64"),
                     ("Content-ID", "<logo@x>"), ("Content-Disposition", "inline")], b64(samples.png()))
    related = multipart(text('<p>hi <img src="cid:logo@x"></p>', subtype="html"), inline, subtype="related")
    msg = message(multipart(related, unit))
    got = relay(proxy, sink, msg)
    assert got.endswith(msg)  # judged, kept, untouched
    verdicts = {(d["part"], d["verdict"]) for d in decisions(got)}
    assert verdicts == {("1.2", "keep"), ("2", "keep")}


def test_dishonest_inline_image_is_judged(proxy, sink):
    inline = entity([("Content-Type", "image/jpeg"), ("Content-Transfer-Encoding", "base64"),
                     ("Content-ID", "<logo@x>")], b64(samples.png()))
    got = relay(proxy, sink, message(multipart(text("<p>hi</p>", subtype="html"), inline, subtype="related")))
    (d,) = decisions(got)
    assert d["verdict"] == "spoofed" and d["detected"] == "image/png"
    assert samples.png() not in leaf_payloads(got)


@pytest.mark.parametrize("cte", ["base64 (sent by a scanner)", "BASE64", "base64;", '"base64"', "(x) base64"])
def test_irregular_transfer_encoding_header_is_decoded(proxy, sink, cte):
    part = entity([("Content-Type", 'text/plain; name="notes.txt"'), ("Content-Transfer-Encoding", cte),
                   ("Content-Disposition", 'attachment; filename="notes.txt"')], b64(EXE))
    got = relay(proxy, sink, message(multipart(text(), part)))
    assert_exe_gone(got)
    (d,) = decisions(got)
    assert d["verdict"] == "blocked" and d["detected"] == "application/x-msdownload"


def test_executable_after_a_base64_pad_in_mid_stream_is_stripped(proxy, sink):
    body = b64(EXE[:2]) + b"\r\n" + b64(EXE[2:])  # a strict decoder stops after "MZ"
    part = entity([("Content-Type", 'text/plain; name="notes.txt"'), ("Content-Transfer-Encoding", "base64"),
                   ("Content-Disposition", 'attachment; filename="notes.txt"')], body)
    got = relay(proxy, sink, message(multipart(text(), part)))
    assert_exe_gone(got)
    assert body[:76] not in got
    (d,) = decisions(got)
    assert d["verdict"] == "blocked" and int(d["size"]) == len(EXE)


@pytest.mark.parametrize("ctype,name", [("application/pdf", "report.pdf"), ("text/plain", "notes.txt"),
                                        ("text/plain", None)])
def test_unknown_transfer_encoding_is_opaque_never_text(proxy, sink, ctype, name):
    ct = f'{ctype}; name="{name}"' if name else ctype
    part = entity([("Content-Type", ct), ("Content-Transfer-Encoding", "x-gateway-b64")], b64(samples.pdf()))
    got = relay(proxy, sink, message(multipart(text(), part)))
    (d,) = decisions(got)
    assert d["verdict"] == "spoofed" and d["detected"] == "application/octet-stream"
    assert "unknown transfer encoding" in d["reason"]
    assert b64(samples.pdf())[:76] not in got


@pytest.mark.parametrize("cte", ["8-bit", "7-Bit", "8bits"])
def test_identity_encoding_typos_leave_the_text_body_alone(proxy, sink, cte):
    """Common misspellings of 7bit/8bit name no decoding at all: every reader shows the raw
    bytes, so the body is text to judge, not an unknown encoding to strip."""
    body = entity([("Content-Type", "text/plain; charset=utf-8"), ("Content-Transfer-Encoding", cte)],
                  "Grüße, the order number is 42.\r\n".encode())
    raw = message(multipart(body, attachment(samples.pdf(), "report.pdf", "application/pdf")))
    got = relay(proxy, sink, raw)
    assert [d["verdict"] for d in decisions(got)] == ["keep"]
    assert got.endswith(raw)  # unchanged, after our trace headers


def test_nameless_parts_count_towards_the_attachment_limit(make_proxy, sink):
    proxy = make_proxy({"downstream": {"max_attachments": 2}})
    images = [samples.png() + bytes(i * 100) for i in range(3)]
    parts = [entity([("Content-Type", "image/png"), ("Content-Transfer-Encoding", "base64")], b64(d))
             for d in images]
    got = relay(proxy, sink, message(multipart(text(), *parts)))
    assert sorted(d["verdict"] for d in decisions(got)) == ["keep", "keep", "offload"]
    kept = [p for p in scan.parse(got).walk() if p.content_type == "image/png"]
    assert len(kept) == 2
    assert "/f/" in body_text(got)


def test_parts_inside_an_encoded_message_count_against_max_mime_parts(make_proxy, sink):
    proxy = make_proxy({"policy": {"max_mime_parts": 10}})
    inner = message(multipart(*[text(f"part {i}\r\n") for i in range(12)]))
    unit = entity([("Content-Type", "message/rfc822"), ("Content-Transfer-Encoding", "base64")], b64(inner))
    code, reply = proxy.send(message(multipart(text(), unit)))
    assert code == 550 and reply.startswith(b"5.6.0") and b"more than 10 MIME parts" in reply
    assert sink.messages == []
