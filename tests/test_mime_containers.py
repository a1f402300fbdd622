"""Parts and containers a client shows that a strict reading would miss, end to end through the
proxy: Content-Types read as the most lenient client reads them, message/news and other message/*
containers, .eml files, opaque S/MIME signed data, and text parts outside the message body."""

from __future__ import annotations

import email
import email.policy
import shutil
import subprocess
from pathlib import Path

import pytest

from smtp_offload.mime import cms, scan
from tests.support import samples
from tests.support.env import missing
from tests.support.mail import attachment, b64, entity, message, multipart, text
from tests.support.relayed import (EXE, assert_exe_gone, attachment_payloads, body_text, decisions, relay,
                                   said)

SCRIPT_PAGE = b"<html><body><script>var a=document.createElement('a');a.download='invoice.exe';a.click()" \
              b"</script></body></html>\r\n"


def forwarded(*files: bytes, subject: str = "fwd") -> bytes:
    return message(multipart(text("forwarded\r\n"), *files), subject=subject)


def exe_part(name: str = "invoice.exe") -> bytes:
    return attachment(EXE, name, "application/octet-stream")


def python_leaves(raw: bytes) -> list[bytes]:
    """What Python's email package (a reader some helpdesk platforms use) finds in the relayed
    message: the decoded payload of every leaf, attached messages included."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return [p.get_payload(decode=True) or b"" for p in msg.walk() if not p.is_multipart()
            and p.get_content_maintype() != "message"]


def header_of(raw: bytes, part_path: str, name: str = "content-type") -> str:
    part = next(p for p in scan.parse(raw).walk() if p.path == part_path)
    return str(scan.headers(raw, part.start, part.header_end)[name])


# --- B2: containers recognised by more than their exact label -----------------------------------

@pytest.mark.parametrize("ctype", ["message/rfc822 (forwarded)", "message/rfc822,", "message/rfc822\tx",
                                   "Message/RFC822 ; x=y", "message/news", "message/x-forwarded",
                                   "=?us-ascii?q?message/rfc822", "x?message/rfc822"])
def test_attached_message_labels_are_read_as_clients_read_them(proxy, sink, ctype):
    raw = message(multipart(text(), entity([("Content-Type", ctype)], forwarded(exe_part()))))
    got = relay(proxy, sink, raw)
    assert_exe_gone(got)
    assert EXE not in python_leaves(got)
    (d,) = decisions(got)
    assert (d["verdict"], d["name*"]) == ("blocked", "UTF-8''invoice.exe")
    assert '"invoice.exe" (1.0 KiB) was removed.\r\n  It is a program file (.exe)' in body_text(got)
    assert b"Subject: fwd" in got  # the forwarded message stays, without the file


@pytest.mark.parametrize("ctype", ["message/rfc822", "message/news", "message/x-forwarded"])
def test_every_attached_message_counts_as_one_attachment_for_the_planner(make_proxy, sink, ctype):
    """Whatever its message/* label, an attached message is shown as one attachment, and the
    files inside it are not: with downstream.max_attachments = 1 and a PDF beside it, one of
    the two must be offloaded so the platform gets no more attachments than it takes."""
    proxy = make_proxy({"downstream": {"max_attachments": 1}})
    inside = forwarded(*(attachment(samples.pdf(), f"scan{i}.pdf", "application/pdf") for i in range(3)))
    raw = message(multipart(text(), entity([("Content-Type", ctype)], inside),
                            attachment(samples.pdf(), "beside.pdf", "application/pdf")))
    got = relay(proxy, sink, raw)
    assert "offload" in [d["verdict"] for d in decisions(got)]


def test_a_type_readers_read_two_ways_is_relayed_in_the_reading_we_judged(proxy, sink):
    """compat32 (Python) reads "x?message/rfc822" as an unknown leaf, Thunderbird as a message:
    the relayed header names the type we judged, so every reader finds the same parts."""
    pdf_inside = forwarded(attachment(samples.pdf(), "scan.pdf", "application/pdf"))
    raw = message(multipart(text(), entity([("Content-Type", "x?message/rfc822")], pdf_inside)))
    got = relay(proxy, sink, raw)
    assert header_of(got, "2") == "message/rfc822"
    assert [(d["part"], d["verdict"]) for d in decisions(got)] == [("2.1.2", "keep")]
    assert pdf_inside in got  # only the header was rebuilt
    assert samples.pdf() in python_leaves(got)


@pytest.mark.parametrize("ctype", ['x?multipart/mixed; boundary="inner"', 'multipart/mixed,text/plain; boundary=inner',
                                   '=?us-ascii?q?multipart/mixed;\r\n boundary="inner"'])
def test_multipart_labels_with_junk_are_containers_at_the_top(proxy, sink, ctype):
    body = multipart(text(), exe_part(), boundary="inner").split(b"\r\n\r\n", 1)[1]
    raw = message(entity([("Content-Type", ctype)], body))
    got = relay(proxy, sink, raw)
    assert_exe_gone(got)
    assert EXE not in python_leaves(got)
    relayed = email.message_from_bytes(got)  # compat32, as the proxy's own header parser reads it
    assert (relayed.get_content_type(), relayed.get_param("boundary")) == ("multipart/mixed", "inner")
    assert header_of(got, "").startswith("multipart/mixed;")  # the parameters as they came


def test_an_ambiguous_type_is_refused_when_the_policy_says_so(make_proxy, sink):
    proxy = make_proxy({"policy": {"on_ambiguous_mime": "reject"}})
    body = multipart(text(), attachment(samples.pdf(), "a.pdf", "application/pdf"),
                     boundary="inner").split(b"\r\n\r\n", 1)[1]
    code, reply = proxy.send(message(entity([("Content-Type", 'x?multipart/mixed; boundary="inner"')], body)))
    assert (code, reply) == (550, b"5.6.0 Ambiguous MIME structure: part header: a Content-Type that readers "
                                  b"type differently")
    assert sink.messages == []


@pytest.mark.parametrize("cte", ["7bit", "base64"])
def test_an_eml_file_is_judged_as_the_message_it_opens_as(proxy, sink, cte):
    inner = forwarded(exe_part())
    headers = [("Content-Type", 'application/octet-stream; name="scan.eml"'),
               ("Content-Disposition", 'inline; filename="scan.eml"')]
    if cte == "base64":
        headers.append(("Content-Transfer-Encoding", "base64"))
    got = relay(proxy, sink, message(multipart(text(), entity(headers, b64(inner) if cte == "base64" else inner))))
    assert_exe_gone(got)
    assert b"Subject: fwd" not in got and b64(inner)[:76] not in got  # the whole unit is gone
    (d,) = decisions(got)
    assert (d["verdict"], d["name*"]) == ("blocked", "UTF-8''scan.eml")
    assert 'an attached email with "invoice.exe" in it: a program file (.exe); programs are not' in said(got)


def test_honest_eml_file_and_plain_text_named_eml_are_kept(proxy, sink):
    inner = forwarded(attachment(samples.pdf(), "scan.pdf", "application/pdf"))
    eml = attachment(inner, "fwd.eml", "application/octet-stream")
    notes = attachment(b"just some notes, no message here\r\n", "notes.eml", "text/plain")
    raw = message(multipart(text(), eml, notes))
    got = relay(proxy, sink, raw)
    assert got.endswith(raw)
    reasons = {d["name*"]: (d["verdict"], d["reason"]) for d in decisions(got)}
    assert reasons["UTF-8''fwd.eml"] == ("keep", "an email message; the 1 file(s) in it were inspected")
    assert reasons["UTF-8''notes.eml"][0] == "keep"


def test_binary_named_eml_is_judged_as_a_file(proxy, sink):
    got = relay(proxy, sink, message(multipart(text(), attachment(samples.png(), "photo.eml",
                                                                  "application/octet-stream"))))
    (d,) = decisions(got)
    assert d["verdict"] == "spoofed" and d["detected"] == "image/png"


# --- B4: opaque S/MIME signed data ---------------------------------------------------------------

@pytest.fixture(scope="module")
def signer(tmp_path_factory) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        missing("openssl not installed (Debian package openssl)")
    d = tmp_path_factory.mktemp("smime")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=customer@sender.test", "-keyout", str(d / "k.pem"), "-out", str(d / "c.pem")],
                   check=True, capture_output=True)
    return d / "k.pem", d / "c.pem"


def openssl_cms(signer: tuple[Path, Path], content: bytes, *args: str) -> bytes:
    """`openssl cms` reading `content` on stdin and writing DER (or BER with -stream) to stdout."""
    key, cert = signer
    out = subprocess.run(["openssl", "cms", *args, "-outform", "DER", "-binary"]
                         + (["-signer", str(cert), "-inkey", str(key)] if "-sign" in args else [str(cert)]),
                         input=content, check=True, capture_output=True)
    return out.stdout


def smime(blob: bytes, smime_type: str | None = "signed-data", name: str | None = "smime.p7m",
          ctype: str = "application/pkcs7-mime") -> bytes:
    ct = ctype + (f"; smime-type={smime_type}" if smime_type else "") + (f'; name="{name}"' if name else "")
    headers = [("Content-Type", ct), ("Content-Transfer-Encoding", "base64")]
    if name:
        headers.append(("Content-Disposition", f'attachment; filename="{name}"'))
    return entity(headers, b64(blob))


def mime_entity(*files: bytes) -> bytes:
    """What a client signs: a MIME entity (no message headers)."""
    return multipart(text("signed text\r\n"), *files)


@pytest.mark.parametrize("stream", [False, True], ids=["der", "ber-stream"])
def test_opaque_signed_message_with_an_executable_is_stripped(proxy, sink, signer, stream):
    blob = openssl_cms(signer, mime_entity(exe_part()), "-sign", "-nodetach", *(["-stream"] if stream else []))
    assert cms.signed_content(blob) is not None
    got = relay(proxy, sink, message(smime(blob)))  # the whole message is the signed blob
    assert_exe_gone(got)
    assert b64(blob)[:76] not in got
    (d,) = decisions(got)
    assert (d["verdict"], d["name*"]) == ("blocked", "UTF-8''smime.p7m")
    assert d["reason"].startswith("the signed content carries 'invoice.exe': executable files")
    assert '"smime.p7m" (' in body_text(got) and 'signed content with "invoice.exe" in it: a program' in said(got)


def test_signed_content_in_a_p7m_file_or_without_smime_type_is_unwrapped(proxy, sink, signer):
    blob = openssl_cms(signer, mime_entity(attachment(EXE, "report.pdf", "application/pdf")), "-sign", "-nodetach")
    parts = [smime(blob, smime_type=None, name="a.p7m"),
             smime(blob, smime_type=None, name="b.p7m", ctype="application/octet-stream"),
             smime(blob, smime_type="signed-data", name=None, ctype="application/x-pkcs7-mime")]
    got = relay(proxy, sink, message(multipart(text(), *parts)))
    assert_exe_gone(got)
    verdicts = [(d["part"], d["verdict"]) for d in decisions(got)]
    assert verdicts == [("2", "blocked"), ("3", "blocked"), ("4", "blocked")]
    assert "part-4.p7m" in body_text(got) and "a Windows program disguised as a PDF document" in said(got)


def test_honest_signed_message_is_relayed_untouched_and_not_counted_as_encrypted(make_proxy, sink, signer):
    proxy = make_proxy({"policy": {"on_encrypted": "reject"}})
    blob = openssl_cms(signer, mime_entity(attachment(samples.pdf(), "scan.pdf", "application/pdf")),
                       "-sign", "-nodetach")
    raw = message(smime(blob))
    got = relay(proxy, sink, raw)
    assert got.endswith(raw + b"\r\n")  # the signature still verifies downstream
    (d,) = decisions(got)
    assert d["verdict"] == "keep"
    assert d["reason"] == "S/MIME signed content (the signature is not verified); the 1 file(s) in it were inspected"


@pytest.mark.parametrize("blob", ["truncated", "junk"])
def test_signed_data_that_cannot_be_unwrapped_counts_as_encrypted(make_proxy, sink, signer, blob):
    proxy = make_proxy({"policy": {"on_encrypted": "reject"}})
    good = openssl_cms(signer, mime_entity(exe_part()), "-sign", "-nodetach")
    data = good[:len(good) // 2] if blob == "truncated" else samples.text(300)
    code, reply = proxy.send(message(multipart(text(), smime(data))))
    assert (code, reply) == (550, b"5.7.1 Encrypted messages cannot be inspected and are not accepted")
    assert sink.messages == []


def test_enveloped_data_still_counts_as_encrypted(make_proxy, sink, signer):
    proxy = make_proxy({"policy": {"on_encrypted": "reject"}})
    blob = openssl_cms(signer, mime_entity(exe_part()), "-encrypt")
    code, _ = proxy.send(message(smime(blob, smime_type="enveloped-data")))
    assert code == 550 and sink.messages == []


def test_signed_content_that_reads_two_ways_is_stripped_not_rebuilt(proxy, sink, signer):
    """An encoded message is rebuilt into one reading; signed content cannot be (its signature
    would break), so one whose inner MIME is ambiguous is removed."""
    ambiguous = mime_entity(attachment(samples.pdf(), "scan.pdf", "application/pdf")).replace(
        b"Content-Type: application/pdf", b"Content-Type: application/pdf\r\nContent-Type: text/plain", 1)
    blob = openssl_cms(signer, ambiguous, "-sign", "-nodetach")
    got = relay(proxy, sink, message(multipart(text(), smime(blob))))
    assert b64(blob)[:76] not in got
    (d,) = decisions(got)
    assert d["verdict"] == "spoofed" and "can be read more than one way" in d["reason"]


# --- B8: text parts outside the message body -----------------------------------------------------

def html_part(body: bytes, disposition: str | None = None) -> bytes:
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Transfer-Encoding", "7bit")]
    if disposition:
        headers.append(("Content-Disposition", disposition))
    return entity(headers, body)


@pytest.mark.parametrize("disposition", [None, "inline"])
def test_html_with_script_after_an_attachment_is_blocked(proxy, sink, disposition):
    pdf = attachment(samples.pdf(), "invoice.pdf", "application/pdf")
    got = relay(proxy, sink, message(multipart(text(), pdf, html_part(SCRIPT_PAGE, disposition))))
    assert b"<script>" not in got
    assert attachment_payloads(got) == {"invoice.pdf": samples.pdf()}
    verdicts = [(d["part"], d["verdict"]) for d in decisions(got)]
    assert verdicts == [("2", "keep"), ("3", "blocked")]
    notice = body_text(got)
    assert '"part-3.html"' in notice and "It is a web page (HTML) with active content (" in said(got)
    assert notice.rstrip().endswith("Regards")  # the notice went into the real body


def test_harmless_html_after_an_attachment_is_kept_and_not_counted(make_proxy, sink):
    proxy = make_proxy({"downstream": {"max_attachments": 1}})
    raw = message(multipart(text(), attachment(samples.pdf(), "invoice.pdf", "application/pdf"),
                            html_part(b"<p>Sent from my phone</p>\r\n")))
    got = relay(proxy, sink, raw)
    assert got.endswith(raw)  # the one real attachment fits the limit: nothing offloaded
    assert [(d["part"], d["verdict"]) for d in decisions(got)] == [("2", "keep"), ("3", "keep")]


def test_the_notice_goes_into_the_real_html_body_not_a_footer(proxy, sink):
    body = multipart(text("plain body\r\n"), text("<html><body><p>html body</p></body></html>", subtype="html"),
                     subtype="alternative")
    footer = html_part(b"<p>footer</p><img src=x onerror=alert(1)>\r\n")
    got = relay(proxy, sink, message(multipart(body, exe_part("run.exe"), footer)))
    assert_exe_gone(got)
    assert b"onerror" not in got
    assert sorted(d["verdict"] for d in decisions(got)) == ["blocked", "blocked"]
    html = body_text(got, "html")
    assert "html body" in html and ">run.exe<" in html
    assert body_text(got).rstrip().endswith("plain body")


def test_apple_mail_text_around_an_inline_attachment_stays_body(proxy, sink):
    """Apple Mail splits the text around an inline file: the pieces after it are judged, kept
    when harmless, and the notice goes into the first piece of each alternative."""
    pdf = attachment(samples.pdf(), "scan.pdf", "application/pdf", disposition="inline")
    plain = multipart(text("before\r\n"), pdf, text("after\r\n"))
    html = multipart(text("<html><body>before</body></html>", subtype="html"), pdf,
                     text("<html><body>after</body></html>", subtype="html"))
    raw = message(multipart(multipart(plain, html, subtype="alternative"), exe_part("x.exe")))
    got = relay(proxy, sink, raw)
    assert_exe_gone(got)
    verdicts = sorted((d["part"], d["verdict"]) for d in decisions(got))
    assert verdicts == [("1.1.2", "keep"), ("1.2.2", "keep"), ("1.2.3", "keep"), ("2", "blocked")]
    assert body_text(got).rstrip().endswith("before") and '"x.exe"' in body_text(got)
    assert "before" in body_text(got, "html") and ">x.exe<" in body_text(got, "html")
    assert b"<html><body>after</body></html>" in got


def test_a_text_plain_part_after_an_attachment_is_judged_when_it_is_no_text(proxy, sink):
    pdf = attachment(samples.pdf(), "invoice.pdf", "application/pdf")
    hidden = entity([("Content-Type", "text/plain"), ("Content-Transfer-Encoding", "base64")], b64(EXE))
    footer = text("-- \r\nACME support\r\n")
    got = relay(proxy, sink, message(multipart(text(), pdf, hidden, footer)))
    assert_exe_gone(got)
    assert [(d["part"], d["verdict"]) for d in decisions(got)] == [("2", "keep"), ("3", "blocked")]
    assert "ACME support" in got.decode()


# --- pure functions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    ("message/rfc822", "message/rfc822"), ("Message/RFC822 (forwarded)", "message/rfc822"),
    ("message/rfc822,", "message/rfc822"), ("message/rfc822\tx", "message/rfc822"),
    ("(note) message/rfc822", "message/rfc822"), ("message/rfc822(note)", "message/rfc822"),
    ("=?us-ascii?q?message/rfc822", "message/rfc822"), ("x?multipart/mixed; boundary=b", "multipart/mixed"),
    ("image/jpeg name=a.jpg", "image/jpeg"), ("text", None), ("", None), ("=?x?q?a/b?=", None),
    ('"message/rfc822"', None),
])
def test_media_type(value, expected):
    assert scan.media_type(value) == expected


def test_signed_content_is_none_for_anything_but_attached_signed_data(signer):
    content = mime_entity(exe_part())
    assert cms.signed_content(openssl_cms(signer, content, "-sign", "-nodetach")) == content
    assert cms.signed_content(openssl_cms(signer, content, "-sign")) is None  # detached: no content
    assert cms.signed_content(openssl_cms(signer, content, "-encrypt")) is None
    assert cms.signed_content(b"\x30\x80" * 50_000) is None  # nesting past asn1crypto's limit
    assert cms.signed_content(b"") is None
