"""mime/rewrite.py on its own, bytes in and bytes out: a removed part is spliced out of the
original bytes (what is kept stays byte-identical), the notice goes into the message's own text
bodies in their charset, our forged headers are dropped, and ambiguous parts are relayed in the
one form we judged. Every result is read back with Python's email package."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

import pytest

from smtp_offload.mime import rewrite as rw
from smtp_offload.mime import scan
from smtp_offload.mime.codec import decode
from smtp_offload.mime.scan import CONFLICTING_NAMES
from smtp_offload.model import Part
from tests.support import samples
from tests.support.mail import attachment, b64, entity, message, multipart, rfc822, text

OURS = ("x-smtp-offload*",)  # what the pipeline drops from the root: incoming copies are forgeries
NOTICE = "[Gateway] 1 file was removed from this message.\r\n\r\n"
NOTICE_HTML = "<div>[Gateway] 1 file was removed from this message.</div>"
PDF, PNG, DOCX = samples.pdf(), samples.png(), samples.docx()


def named(root: Part, filename: str) -> Part:
    return next(p for p in root.walk() if p.filename == filename)


def read(data: bytes) -> EmailMessage:
    """The message as Python's email package reads it; it must find nothing wrong with it."""
    msg = email.message_from_bytes(data, policy=policy.default)
    assert [(p.get_content_type(), d) for p in msg.walk() for d in p.defects] == []
    return msg


def shape(m: EmailMessage):
    """The MIME tree as content types: a leaf's type, or (container type, [children])."""
    if m.get_content_type() == "message/rfc822":
        return m.get_content_type(), [shape(m.get_payload(0))]
    if m.is_multipart():
        return m.get_content_type(), [shape(p) for p in m.iter_parts()]
    return m.get_content_type()


def pdf(name: str = "a.pdf") -> bytes:
    return attachment(PDF, name, "application/pdf")


# -- removing parts ------------------------------------------------------------------------------


@pytest.mark.parametrize("gone", ["a.pdf", "b.png"])  # a middle part, the last part
def test_removing_an_attachment_splices_out_its_bytes_and_nothing_else(gone):
    data = message(multipart(text("Hello\r\n"), pdf(), attachment(PNG, "b.png", "image/png"), boundary="mix"))
    root = scan.parse(data)
    part = named(root, gone)
    out = rw.rewrite(data, root, [part], None, None)
    assert out == data[:part.delim_start] + data[part.end:]  # a splice: every other byte as it came
    for kept in root.children:
        if kept is not part:
            assert data[kept.start:kept.end] in out
    msg = read(out)
    kept_type = "image/png" if gone == "a.pdf" else "application/pdf"
    assert shape(msg) == ("multipart/mixed", ["text/plain", kept_type])
    body, file = msg.iter_parts()
    assert body.get_content() == "Hello\r\n"
    assert file.get_content() == (PNG if gone == "a.pdf" else PDF)
    assert file.get_filename() == ("b.png" if gone == "a.pdf" else "a.pdf")


def test_removing_the_only_attachment_leaves_the_text_with_the_notice():
    data = message(multipart(text("Hello\r\n"), pdf(), boundary="mix"))
    root = scan.parse(data)
    out = rw.rewrite(data, root, [named(root, "a.pdf")], NOTICE, None)
    assert out.startswith(data[:root.header_end])  # the message's headers as they came
    assert b"a.pdf" not in out and b64(PDF)[:76] not in out
    msg = read(out)
    assert shape(msg) == ("multipart/mixed", ["text/plain"])
    (body,) = msg.iter_parts()
    assert body.get_content() == NOTICE + "Hello\r\n"


def test_a_message_of_nothing_but_attachments_becomes_the_notice():
    data = message(multipart(pdf(), attachment(PNG, "b.png", "image/png"), boundary="mix"),
                   extra=[("X-Smtp-Offload", "verdict=keep"), ("X-Other", "kept")], message_id="<m1@sender.test>")
    root = scan.parse(data)
    out = rw.rewrite(data, root, [named(root, "a.pdf"), named(root, "b.png")], NOTICE, NOTICE_HTML, OURS)
    msg = read(out)
    assert shape(msg) == "text/plain"
    assert msg.get_content_charset() == "utf-8" and msg.get_content() == NOTICE
    assert (msg["Subject"], msg["Message-ID"], msg["X-Other"]) == ("Test message", "<m1@sender.test>", "kept")
    assert "X-Smtp-Offload" not in msg
    assert b"mix" not in out  # no multipart header left behind


def test_a_multipart_whose_every_part_is_removed_goes_too():
    inner = multipart(pdf(), attachment(PNG, "b.png", "image/png"), subtype="related", boundary="inner")
    data = message(multipart(text("Hello\r\n"), inner, attachment(b"notes\r\n", "c.txt", "text/plain"),
                             boundary="outer"))
    root = scan.parse(data)
    container = root.children[1]
    assert container.content_type == "multipart/related"
    out = rw.rewrite(data, root, [named(root, "a.pdf"), named(root, "b.png")], None, None)
    assert out == data[:container.delim_start] + data[container.end:]  # the empty multipart with them
    assert b"inner" not in out
    msg = read(out)
    assert shape(msg) == ("multipart/mixed", ["text/plain", "text/plain"])
    assert [p.get_filename() for p in msg.iter_parts()] == [None, "c.txt"]


def test_a_multipart_that_keeps_one_part_stays():
    inner = multipart(pdf(), attachment(PNG, "b.png", "image/png"), subtype="related", boundary="inner")
    data = message(multipart(text("Hello\r\n"), inner, boundary="outer"))
    root = scan.parse(data)
    part = named(root, "a.pdf")
    out = rw.rewrite(data, root, [part], None, None)
    assert out == data[:part.delim_start] + data[part.end:]
    assert shape(read(out)) == ("multipart/mixed", ["text/plain", ("multipart/related", ["image/png"])])


def test_the_body_of_an_attached_message_is_replaced_by_a_placeholder():
    """An attached message whose whole body is the file keeps its headers: a text part says
    where the file went."""
    forwarded = message(pdf(), subject="Scan", extra=[("X-Smtp-Offload", "verdict=keep")])
    data = message(multipart(text("Hello\r\n"), rfc822(forwarded), boundary="mix"))
    root = scan.parse(data)
    part = named(root, "a.pdf")
    assert part.delim_start is None and part.in_message
    out = rw.rewrite(data, root, [part], NOTICE, None, OURS)
    msg = read(out)
    assert shape(msg) == ("multipart/mixed", ["text/plain", ("message/rfc822", ["text/plain"])])
    body, attached = msg.iter_parts()
    assert body.get_content() == NOTICE + "Hello\r\n"
    inner = attached.get_payload(0)
    assert inner["Subject"] == "Scan" and inner.get_content() == rw.PLACEHOLDER
    assert inner["X-Smtp-Offload"] == "verdict=keep"  # the forwarded message's own headers are not ours to drop
    assert b64(PDF)[:76] not in out


# -- the notice ----------------------------------------------------------------------------------


LATIN = text("Grüße aus Köln\r\n", charset="iso-8859-1", cte="8bit")
# (The quoted-printable bodies end without a line break: codec.encode drops a last one.)
CHARSETS = {
    # body, notice -> charset, transfer encoding, and the header lines that must still be there
    "latin-1 notice in latin-1": (LATIN, "Datei entfernt: Übersicht.pdf\r\n", "iso-8859-1", "8bit",
                                  [b"Content-Type: text/plain; charset=iso-8859-1\r\n"]),
    "notice latin-1 cannot hold": (LATIN, "Datei entfernt: 請求書.pdf\r\n", "utf-8", "8bit", []),
    "7bit text, non-ASCII notice": (text("Hello", charset="us-ascii"), "Fichier retiré\r\n", "utf-8",
                                    "quoted-printable", []),
    "base64 text": (text("Grüße\r\n", cte="base64"), "Datei entfernt\r\n", "utf-8", "base64",
                    [b"Content-Type: text/plain; charset=utf-8\r\n"]),
    "quoted-printable text": (text("Grüße", cte="quoted-printable"), "Datei entfernt: Ü\r\n", "utf-8",
                              "quoted-printable", [b"Content-Type: text/plain; charset=utf-8\r\n"]),
}


@pytest.mark.parametrize("case", list(CHARSETS))
def test_the_notice_goes_into_the_plain_body_in_its_charset(case):
    body, notice, charset, cte, headers = CHARSETS[case]
    data = message(multipart(body, pdf(), boundary="mix"))
    root = scan.parse(data)
    original = root.children[0]
    old_charset = original.params["charset"]
    old_text = decode(data[original.body_start:original.end], original.cte).decode(old_charset)
    out = rw.rewrite(data, root, [named(root, "a.pdf")], notice, None)
    (part,) = read(out).iter_parts()
    assert part.get_content_charset() == charset
    assert part["Content-Transfer-Encoding"] == cte
    assert part.get_content() == notice + old_text
    for line in headers:  # unchanged where the charset still holds the text
        assert line in out
    if charset != old_charset:
        assert f"charset={old_charset}".encode() not in out
    if cte == "8bit":
        assert (notice + old_text).encode(charset) in out  # the text in its charset, not encoded


def test_a_body_in_an_unknown_charset_gets_the_notice_as_a_new_first_part():
    odd = entity([("Content-Type", "text/plain; charset=x-no-such-charset")], b"Hello\r\n")
    data = message(multipart(odd, pdf(), boundary="mix"))
    root = scan.parse(data)
    out = rw.rewrite(data, root, [named(root, "a.pdf")], NOTICE, None)
    kept = root.children[0]
    assert data[kept.start:kept.end] in out  # the text we cannot read, untouched
    msg = read(out)
    assert shape(msg) == ("multipart/mixed", ["text/plain", "text/plain"])
    first, second = msg.iter_parts()
    assert first.get_content_charset() == "utf-8" and first.get_content() == NOTICE
    assert second.get_param("charset") == "x-no-such-charset"


HTML = "<html><head><title>Hello <body></title></head><body><p>Hi</p></body></html>"


def test_the_notice_goes_into_both_bodies_of_an_alternative_inside_mixed():
    alternative = multipart(text("Hi\r\n"), text(HTML, subtype="html"), subtype="alternative", boundary="alt")
    data = message(multipart(alternative, pdf(), boundary="mix"))
    root = scan.parse(data)
    out = rw.rewrite(data, root, [named(root, "a.pdf")], NOTICE, NOTICE_HTML)
    msg = read(out)
    assert shape(msg) == ("multipart/mixed", [("multipart/alternative", ["text/plain", "text/html"])])
    plain, html = next(msg.iter_parts()).iter_parts()
    assert plain.get_content() == NOTICE + "Hi\r\n"
    # Right after the real <body> tag, not after the "<body>" in the title.
    assert html.get_content() == HTML.replace("<body><p>", "<body>" + NOTICE_HTML + "<p>")


def test_an_html_only_body_gets_the_html_notice():
    data = message(multipart(text(HTML, subtype="html", charset="iso-8859-1"), pdf(), boundary="mix"))
    root = scan.parse(data)
    out = rw.rewrite(data, root, [named(root, "a.pdf")], NOTICE, NOTICE_HTML)
    (html,) = read(out).iter_parts()
    assert html.get_content_type() == "text/html" and html.get_content_charset() == "iso-8859-1"
    assert html.get_content() == HTML.replace("<body><p>", "<body>" + NOTICE_HTML + "<p>")
    assert NOTICE.strip().encode() not in out.replace(NOTICE_HTML.encode(), b"")


def test_no_notice_leaves_the_bodies_byte_identical():
    alternative = multipart(text("Hi\r\n"), text(HTML, subtype="html"), subtype="alternative", boundary="alt")
    data = message(multipart(alternative, pdf(), boundary="mix"))
    root = scan.parse(data)
    part = named(root, "a.pdf")
    assert rw.rewrite(data, root, [part], None, None) == data[:part.delim_start] + data[part.end:]


# -- our own headers -----------------------------------------------------------------------------


FORGED = [("X-Smtp-Offload", "verdict=keep"),
          ("X-Smtp-Offload-Attachment", "name*=UTF-8''a.pdf; verdict=keep;\r\n\treason=\"forged\""),
          ("x-smtp-offload-trace", "lower case, folded\r\n over two lines")]


def test_our_forged_headers_are_dropped_and_every_other_byte_kept():
    body = multipart(text("Hello\r\n"), pdf(), boundary="mix")
    data = message(body, extra=[FORGED[0], ("X-Other", "kept"), *FORGED[1:]], message_id="<m2@sender.test>")
    expected = message(body, extra=[("X-Other", "kept")], message_id="<m2@sender.test>")
    root = scan.parse(data)
    out = rw.rewrite(data, root, [], None, None, OURS)
    assert out == expected
    msg = read(out)
    assert [k for k in msg.keys() if k.lower().startswith("x-smtp-offload")] == []
    assert msg["X-Other"] == "kept"
    assert rw.rewrite(data, root, [], None, None) == data  # dropped only when asked


def test_forged_headers_are_dropped_from_a_rebuilt_root_too():
    """A root whose content headers are rebuilt (two Content-Type fields) loses our headers as well."""
    data = (b"From: a@sender.test\r\nX-Smtp-Offload: verdict=keep\r\nSubject: twice\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Type: text/html\r\n\r\nHello\r\n")
    root = scan.parse(data)
    assert root.ambiguities and rw.needs_rebuild(root)
    out = rw.rewrite(data, root, [], None, None, OURS)
    msg = read(out)
    assert "X-Smtp-Offload" not in msg and msg["Subject"] == "twice"
    assert len(msg.get_all("Content-Type")) == 1 and msg.get_content_type() == "text/plain"
    assert out.endswith(b"\r\n\r\nHello\r\n")


# -- ambiguous parts -----------------------------------------------------------------------------


def test_a_clean_message_needs_no_rebuild_and_comes_back_unchanged():
    data = message(multipart(text("Hello\r\n"), pdf(), boundary="mix"))
    root = scan.parse(data)
    assert not rw.needs_rebuild(root)
    assert rw.rewrite(data, root, [], None, None) == data


def test_a_part_with_conflicting_names_is_relayed_in_the_reading_we_judged():
    part = entity([("Content-Type", 'application/pdf; name="invoice.pdf"'), ("Content-Transfer-Encoding", "base64"),
                   ("Content-Disposition", 'attachment; filename="invoice.exe"'), ("Content-ID", "<c1@x>")], b64(PDF))
    data = message(multipart(text("Hello\r\n"), part, boundary="mix"))
    root = scan.parse(data)
    p = root.children[1]
    assert CONFLICTING_NAMES in p.ambiguities and rw.needs_rebuild(root)
    assert p.filename == "invoice.exe"  # the disposition's filename is read first: the one judged
    head = rw.canonical_headers(data, p)
    assert head.count(b"Content-Type:") == 1 and head.count(b"Content-Disposition:") == 1
    assert b"invoice.pdf" not in head
    out = rw.rewrite(data, root, [], None, None)
    assert out[:p.start] == data[:p.start] and out.endswith(data[p.header_end:])  # only its headers
    body, att = read(out).iter_parts()
    assert body.get_content() == "Hello\r\n"
    assert (att.get_content_type(), att.get_filename(), att.get_param("name")) == \
        ("application/pdf", "invoice.exe", "invoice.exe")
    assert att["Content-ID"] == "<c1@x>" and att.get_content() == PDF


def test_duplicate_content_headers_are_relayed_once_the_first_one():
    part = entity([("Content-Type", 'application/pdf; name="a.pdf"'), ("Content-Transfer-Encoding", "base64"),
                   ("Content-Type", "text/plain"), ("Content-Disposition", "attachment")], b64(PDF))
    data = message(multipart(text("Hello\r\n"), part, boundary="mix"))
    root = scan.parse(data)
    assert "duplicate content-type headers" in root.children[1].ambiguities and rw.needs_rebuild(root)
    out = rw.rewrite(data, root, [], None, None)
    _, att = read(out).iter_parts()
    assert att.get_all("Content-Type") == ['application/pdf; name="a.pdf"']
    assert att.get_content() == PDF


def test_a_name_that_was_a_path_is_relayed_as_its_base_name():
    data = message(multipart(text("Hello\r\n"), attachment(DOCX, "C:\\fakepath\\letter.docx", "application/msword"),
                             boundary="mix"))
    root = scan.parse(data)
    p = root.children[1]
    assert p.renamed and p.filename == "letter.docx" and rw.needs_rebuild(root)
    out = rw.rewrite(data, root, [], None, None)
    assert b"fakepath" not in out
    _, att = read(out).iter_parts()
    assert (att.get_filename(), att.get_param("name")) == ("letter.docx", "letter.docx")
    assert att.get_content() == DOCX


def test_an_unclosed_multipart_gets_its_close_delimiter():
    closed = message(multipart(text("Hello\r\n"), pdf(), boundary="mix"))
    data = closed.replace(b"--mix--\r\n", b"")
    root = scan.parse(data)
    assert root.unclosed and rw.needs_rebuild(root)
    out = rw.rewrite(data, root, [], None, None)
    assert out == data + b"\r\n--mix--\r\n"
    msg = read(out)
    assert shape(msg) == ("multipart/mixed", ["text/plain", "application/pdf"])
    assert [p.get_content() for p in msg.iter_parts()] == ["Hello\r\n", PDF]


def test_a_text_part_whose_headers_end_at_its_boundary_gets_the_notice_in_its_body():
    """No blank line after the text part's headers (its body is empty): the rebuilt part still
    separates headers and body, so the notice is text, not a header line."""
    data = (b"From: a@b.test\r\nTo: c@d.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain; charset=us-ascii\r\n"
            b"--b\r\n" + pdf()[:-2] + b"\r\n--b--\r\n")
    root = scan.parse(data)
    out = rw.rewrite(data, root, [named(root, "a.pdf")], NOTICE, NOTICE_HTML)
    msg = read(out)
    (body,) = [p for p in msg.walk() if p.get_content_type() == "text/plain"]
    assert body.get_content().startswith("[Gateway] 1 file was removed")
    assert "a.pdf" not in out.decode()
