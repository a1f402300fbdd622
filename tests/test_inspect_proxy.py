"""Issue 11, items 3 and 5, end to end: hostile attachments sent through the proxy process are
stripped with a notice and a decision header that say why; the classic false positives arrive intact."""

from __future__ import annotations

import struct

from tests.support import samples
from tests.support.mail import attachment, message, multipart, text
from tests.support.relayed import attachment_payloads, body_text, said, verdict_reasons

MIB = 1 << 20
XHTML = b"http://www.w3.org/1999/xhtml"


def unrecognised(n: int = 6000) -> bytes:
    """Bytes no signature, structure or text check recognises (a damaged or encrypted blob)."""
    return bytes((i * 131 + (i >> 8) * 7) % 256 for i in range(n))


def pe_with_damaged_optional_header() -> bytes:
    data = bytearray(samples.pe_exe())
    e_lfanew, = struct.unpack_from("<I", data, 0x3C)
    data[e_lfanew + 24:e_lfanew + 24 + 240] = b"\xde\xad\xbe\xef" * 60  # magic, sizes, directories: garbage
    return bytes(data)


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + bytes(4) + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00\x00\x00\x08free" + bytes(range(256)) * 4


HOSTILE = {
    "statement.pdf": (unrecognised(), "application/pdf", "spoofed",
                      "content is unrecognised binary data but it was declared as application/pdf"),
    "report.pdf": (pe_with_damaged_optional_header(), "application/pdf", "blocked",
                   "Windows executable disguised as PDF"),
    "invoice.html": (b'<!DOCTYPE html><html><body><p>Your invoice</p><iframe srcdoc="&lt;script&gt;'
                     b'location=&quot;https://evil.test/&quot;&lt;/script&gt;"></iframe></body></html>',
                     "text/html", "blocked", "HTML document with active content is not accepted "
                                             "(a script element in an srcdoc document)"),
    "data.xml": (b'<?xml version="1.0"?>\n<order id="1042"><x:script xmlns:x="' + XHTML
                 + b'">fetch("https://evil.test/")</x:script></order>', "application/xml", "blocked",
                 "XML document with active content is not accepted (a script element)"),
}


# What the notice tells the reader about each, in plain words.
SAYS = {
    "statement.pdf": "It is a file of unknown type labelled as a PDF document.",
    "report.pdf": "It is a Windows program disguised as a PDF document.",
    "invoice.html": "It is a web page (HTML) with active content (a script element in an srcdoc document)",
    "data.xml": "It is an XML document with active content (a script element)",
}


def test_hostile_attachments_are_stripped_and_the_notice_says_why(proxy, sink):
    files = [attachment(data, name, ctype) for name, (data, ctype, _, _) in HOSTILE.items()]
    msg = message(multipart(text(), *files, attachment(samples.pdf(), "ok.pdf", "application/pdf")))
    code, reply = proxy.send(msg)
    assert code == 250, reply
    got = sink.messages[0].content
    assert attachment_payloads(got) == {"ok.pdf": samples.pdf()}
    notice = body_text(got)
    verdicts = verdict_reasons(got)
    for name, (_, _, verdict, reason) in HOSTILE.items():
        assert verdicts[name] == (verdict, reason)
        assert f'"{name}"' in notice and SAYS[name] in said(got)
    assert verdicts["ok.pdf"][0] == "keep"
    assert {e["name"]: e["verdict"] for e in proxy.events("attachment")} == {
        **{name: v[2] for name, v in HOSTILE.items()}, "ok.pdf": "keep"}


def test_script_deep_inside_a_large_html_file_is_found(proxy, sink):
    """Beyond the first 8 MiB and before the last 8 MiB: the part that went unsearched before."""
    line = b'<tr><td>1042</td><td>Shipped &amp; invoiced</td><td><a href="https://example.com/o?id=1">view</a></td></tr>\n'
    rows = line * (8 * MIB // len(line) + 1000)
    page = b"<!DOCTYPE html><html><body><table>" + rows + b"</table><script>document.write(atob('TVqQ'))</script>" \
        + b"<table>" + rows + b"</table></body></html>"
    assert len(page) > 16 * MIB
    msg = message(multipart(text(), attachment(page, "export.html", "text/html")))
    code, reply = proxy.send(msg)
    assert code == 250, reply
    got = sink.messages[0].content
    assert attachment_payloads(got) == {}
    assert verdict_reasons(got)["export.html"] == (
        "blocked", "HTML document with active content is not accepted (a script element)")
    assert "export.html" in body_text(got)


NOT_SPOOFS = {
    "photo.jpg": (samples.jpeg(), "image/jpg"),
    "scan.jfif": (samples.jpeg(), "image/pjpeg"),
    "contract.docx": (samples.docx(), "application/zip"),
    "protected.docx": (samples.ole(), "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "report.csv": (samples.csv(), "application/vnd.ms-excel"),
    "letter.doc": (b"<html><body><p>Dear customer</p></body></html>\r\n", "application/msword"),
    "figures.xls": (b"<html><body><table><tr><td>1</td></tr></table></body></html>\r\n", "application/vnd.ms-excel"),
    "IMG_2041.HEIC": (ftyp(b"mif1", b"mif1", b"heix", b"miaf"), "image/heic"),
    "cars.csv": (b"BMW;Model;Price\r\n320i;1;42000\r\n", "text/csv"),
    "flow.xml": (b'<?xml version="1.0"?>\n<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL">'
                 b"<bpmn:script>total = a + b</bpmn:script></bpmn:definitions>\r\n", "application/xml"),
    "smime.p7s": (unrecognised(1500), "application/pkcs7-signature"),
    "blob.dat": (unrecognised(), "application/octet-stream"),
    "page.html": (b'<html><body><iframe srcdoc="&lt;p&gt;Hello&lt;/p&gt;"></iframe><pre>Use &lt;script&gt;</pre>'
                  b'<p>status online = yes</p></body></html>\r\n', "text/html"),
}


def test_classic_false_positives_are_delivered_intact(proxy, sink):
    msg = message(multipart(text(), *(attachment(d, n, t) for n, (d, t) in NOT_SPOOFS.items())))
    code, reply = proxy.send(msg)
    assert code == 250, reply
    got = sink.messages[0].content
    assert got.endswith(msg)  # nothing changed: byte for byte, after the trace headers
    assert attachment_payloads(got) == {n: d for n, (d, _) in NOT_SPOOFS.items()}
    assert {n: v for n, (v, _) in verdict_reasons(got).items()} == {n: "keep" for n in NOT_SPOOFS}
