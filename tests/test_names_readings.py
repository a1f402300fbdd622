"""Issue 11, round 2: every reading of a file name a client may see is judged, and names that
only look odd (one encoded-word, a folded one, an RTL mark) are not held against a real file.
Also: parameters we cannot re-emit as read never crash a rewrite, and prose that mentions
"begin 644" is no uuencoded file. End to end through the proxy process, plus unit checks."""

from __future__ import annotations

import base64
import binascii
import urllib.parse

import pytest

from smtp_offload.carriers import uuencoded_files
from smtp_offload.inspect.names import name_problem
from smtp_offload.mime import scan
from tests.support import samples
from tests.support.mail import attachment, b64, entity, message, multipart, text
from tests.support.proc import Proxy, Sink
from tests.support.relayed import attachment_payloads, body_text, verdict_reasons

JS = b'var s = new ActiveXObject("WScript.Shell");\r\ns.Run("calc");\r\n'
HEAD = (b"From: Customer <customer@sender.test>\r\nTo: support@example.com\r\nSubject: names\r\n"
        b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <names@sender.test>\r\nMIME-Version: 1.0\r\n")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One proxy (default config) and its downstream for the tests that need nothing else."""
    sink = Sink()
    proxy = Proxy(tmp_path_factory.mktemp("names"), sink.port).start()
    yield proxy, sink
    proxy.stop()
    sink.stop()


def relay(live, msg: bytes) -> bytes:
    proxy, sink = live
    before = len(sink.messages)
    code, reply = proxy.send(msg)
    assert code == 250, reply
    assert len(sink.messages) == before + 1
    return sink.messages[-1].content


def refused(live, msg: bytes) -> tuple[int, bytes]:
    proxy, sink = live
    before = len(sink.messages)
    code, reply = proxy.send(msg)
    assert len(sink.messages) == before
    return code, reply


def part(headers: list[tuple[str, str]], data: bytes) -> bytes:
    return entity(headers + [("Content-Transfer-Encoding", "base64")], b64(data))


# --- R1: a parameter that cannot be re-emitted as read never crashes the rewrite -------------

def test_non_ascii_parameter_name_in_the_text_body_does_not_crash_the_notice(live):
    body = b"Content-Type: text/plain; format=flowed; x\xc3\xa9=1\r\n\r\nHello\r\n"
    got = relay(live, message(multipart(body, attachment(samples.pe_exe(), "a.exe", "application/octet-stream"))))
    assert attachment_payloads(got) == {}
    notice = body_text(got)
    assert '"a.exe"' in notice and notice.rstrip().endswith("Hello")
    (plain,) = [p for p in scan.parse(got).walk() if p.content_type == "text/plain"]
    head = got[plain.start:plain.header_end]
    assert b'format="flowed"' in head and b"x\xc3\xa9" not in head and head.isascii()


@pytest.mark.parametrize("ctype", ["application/pdf; x\u00e9=1", "applicati\u00f3n/pdf", "application/pdf; q=\"a\\\"b\""])
def test_rebuilt_attachment_headers_are_written_whatever_the_parameters(live, ctype):
    # Two different names: the headers are rebuilt into one reading, whatever else they carry.
    pdf = samples.pdf()
    msg = message(multipart(text(), part([("Content-Type", f'{ctype}; name="a.pdf"'),
                                          ("Content-Disposition", 'attachment; filename="b.pdf"')], pdf)))
    got = relay(live, msg)
    (p,) = [p for p in scan.parse(got).walk() if p.is_attachment]
    head = got[p.start:p.header_end]
    assert head.isascii() and b"name*=UTF-8''b.pdf" in head and b"a.pdf" not in head
    assert attachment_payloads(got) == {"b.pdf": pdf}


def test_parameters_are_written_safely():
    from smtp_offload.mime.rewrite import _param
    assert _param("format", "flowed") == '; format="flowed"'
    assert _param("x\u00e9", "1") == ""
    assert _param("a b", "1") == "" and _param("a;b", "1") == ""
    assert _param("q", 'a"b\\c') == '; q="a\\"b\\\\c"'
    assert _param("q", "caf\u00e9") == "; q*=UTF-8''caf%C3%A9"
    assert _param("q", "a\tb") == "; q*=UTF-8''a%09b"


# --- B1: readings standard parsers and Thunderbird see ---------------------------------------

TRICKY_NAMES = {
    "quoted-pair": 'filename="invoice.j\\s"',  # RFC 5322: \s is s (compat32 leaves it)
    "language in an encoded-word": 'filename="=?utf-8*en?Q?report.vbs?="',  # RFC 2231 section 5
    "unknown charset": 'filename="=?x-unknown?Q?setup.hta?="',  # Thunderbird shows the Q text
    "unknown charset, B": 'filename="=?x-unknown?B?c2V0dXAuaHRh?="',
}


@pytest.mark.parametrize("case", list(TRICKY_NAMES))
def test_every_reading_of_a_name_is_judged(live, case):
    msg = message(multipart(text(), part([("Content-Type", "application/octet-stream"),
                                          ("Content-Disposition", "attachment; " + TRICKY_NAMES[case])], JS)))
    got = relay(live, msg)
    assert attachment_payloads(got) == {} and b64(JS)[:40] not in got
    ((_, (verdict, reason)),) = verdict_reasons(got).items()
    assert verdict == "blocked" and "extension are not accepted" in reason


def test_the_three_readings_in_one_message(live):
    msg = trio()
    got = relay(live, msg)
    assert attachment_payloads(got) == {}
    assert sorted(v for v, _ in verdict_reasons(got).values()) == ["blocked"] * 3


def trio() -> bytes:
    parts = [part([("Content-Type", "application/octet-stream"), ("Content-Disposition", "attachment; " + cd)], JS)
             for cd in ('filename="invoice.j\\s"', 'filename="=?utf-8*en?Q?report.vbs?="',
                        'filename="=?x-unknown?Q?setup.hta?="')]
    return message(multipart(text(), *parts))


def names_of(headers: bytes) -> list[str]:
    return scan.parse(headers + b"\r\nx").names


def test_readings_unit():
    assert names_of(b'Content-Disposition: attachment; filename="invoice.j\\s"\r\n') == ["invoice.j\\s", "invoice.js"]
    assert names_of(b'Content-Disposition: attachment; filename="=?utf-8*en?Q?report.vbs?="\r\n')[0] == "report.vbs"
    assert set(names_of(b'Content-Disposition: attachment; filename="=?x-unknown?Q?set=75p.hta?="\r\n')) >= \
        {"setup.hta", "set=75p.hta", "=?x-unknown?Q?set=75p.hta?="}
    # The hot path: nothing to read twice.
    assert names_of(b'Content-Disposition: attachment; filename="report.pdf"\r\n') == ["report.pdf"]


# --- B5: names outside filename/name ---------------------------------------------------------

SINGLE_LEAF = {
    "disposition name": [("Content-Type", "text/plain"),
                         ("Content-Disposition", 'attachment; filename="invoice.txt"; name="invoice.js"')],
    "disposition name alone": [("Content-Type", "application/octet-stream"),
                               ("Content-Disposition", 'attachment; name="invoice.js"')],
    "Content-Name": [("Content-Type", "application/octet-stream"), ("Content-Disposition", "attachment"),
                     ("Content-Name", "invoice.js")],
    "X-Sun-Data-Name": [("Content-Type", "application/octet-stream"), ("X-Sun-Data-Name", "invoice.js")],
}


@pytest.mark.parametrize("case", list(SINGLE_LEAF))
def test_names_thunderbird_reads_outside_filename_and_name_are_judged(live, case):
    got = relay(live, HEAD + part(SINGLE_LEAF[case], JS))
    assert b64(JS)[:40] not in got and JS not in got
    ((_, (verdict, _)),) = verdict_reasons(got).items()
    assert verdict == "blocked"
    # The message became its notice: no header but our decision names the file any more.
    head = got[:got.index(b"\r\n\r\n")].replace(b"\r\n\t", b" ").split(b"\r\n")
    assert [h for h in head if b"invoice" in h and not h.startswith(b"X-Smtp-Offload-Attachment:")] == []


def test_content_name_inside_a_multipart_is_judged(live):
    msg = message(multipart(text(), part([("Content-Type", "application/octet-stream"),
                                          ("Content-Name", "=?utf-8?Q?invoice.js?=")], JS)))
    got = relay(live, msg)
    assert attachment_payloads(got) == {}
    assert [v for v, _ in verdict_reasons(got).values()] == ["blocked"]


def test_a_content_name_that_disagrees_is_dropped_when_the_headers_are_rebuilt(live):
    pdf = samples.pdf()
    msg = message(multipart(text(), part([("Content-Type", 'application/pdf; name="a.pdf"'),
                                          ("Content-Disposition", 'attachment; filename="a.pdf"'),
                                          ("Content-Name", "b.pdf")], pdf)))
    got = relay(live, msg)
    assert attachment_payloads(got) == {"a.pdf": pdf}
    (p,) = [p for p in scan.parse(got).walk() if p.is_attachment]
    head = got[p.start:p.header_end]
    assert b"Content-Name" not in head and b"b.pdf" not in head and p.names == ["a.pdf"]


# --- F1: prose is no uuencoded file; real blocks still are, however they end -----------------

PROSE = {
    "begin 644 then end of story": "Hi,\r\nbegin 644 is the mode uuencode writes by default.\r\nend of story.\r\n",
    "begin 0755 then prose": "Steps:\r\nbegin 0755 /usr/local/bin\r\nthen restart the service\r\nendpoint is ready\r\n",
    "begin at the very end": "The last line says\r\nbegin 644 nothing\r\n",
}


@pytest.mark.parametrize("case", list(PROSE))
def test_prose_mentioning_uuencode_is_delivered_unchanged(live, case):
    msg = message(text(PROSE[case]))
    got = relay(live, msg)
    assert got.endswith(msg)


def uu_lines(data: bytes) -> list[bytes]:
    return [binascii.b2a_uu(data[i:i + 45]).rstrip(b"\n") for i in range(0, len(data), 45)]


# Blocks Thunderbird decodes (mimeunty.cpp ends one at any line starting with "end" in any
# case, or at the end of the text; its decoder masks every character to 6 bits).
_SHIFT = bytes(c + 64 if 0x21 <= c <= 0x3f else c for c in range(256))
UU_BLOCKS = {
    "standard": lambda ls: b"\r\n".join(ls) + b"\r\n`\r\nend\r\n",
    "no end line": lambda ls: b"\r\n".join(ls) + b"\r\n",
    "END cut here": lambda ls: b"\r\n".join(ls) + b"\r\nEND------ Cut Here ------\r\n",
    "lower-case characters and junk": lambda ls: b"\r\n".join(l[:1] + l[1:].translate(_SHIFT) + b"~~" for l in ls)
    + b"\r\nend\r\n",
}


@pytest.mark.parametrize("case", list(UU_BLOCKS))
def test_a_uuencoded_executable_is_refused_however_its_block_ends(live, case):
    block = b"begin 644 invoice.pdf\r\n" + UU_BLOCKS[case](uu_lines(samples.pe_exe()))
    msg = message(entity([("Content-Type", "text/plain; charset=utf-8")], b"Please run this:\r\n" + block))
    code, reply = refused(live, msg)
    assert code == 550 and b"5.7.1" in reply and b"invoice.pdf" in reply


def test_uuencoded_files_unit():
    exe = samples.pe_exe()
    for case, build in UU_BLOCKS.items():
        assert uuencoded_files(b"x\r\nbegin 644 a.exe\r\n" + build(uu_lines(exe))) == [("a.exe", exe)], case
    for prose in PROSE.values():
        assert all(data for _, data in uuencoded_files(prose.encode()))  # never an empty "file"
    assert uuencoded_files(PROSE["begin 644 then end of story"].encode()) == []
    # Any line at all decodes (a decoder error would be a 451 on every retry), to as many
    # bytes as its length character says.
    for first in range(256):
        for length in range(70):
            line = bytes([first]) + bytes((first * 7 + i * 13) % 256 for i in range(length))
            if b"\n" in line or b"\r" in line:
                continue
            (_, data), = uuencoded_files(b"begin 644 a\r\n" + line + b"\r\nend\r\n") or [("a", b"")]
            assert len(data) in (0, (first - 32) & 63), (first, length)


# --- F2 / F3: encoded-word names, folded or not, are one name --------------------------------

def test_folded_encoded_word_name_of_a_real_pdf_is_delivered_unchanged(live):
    pdf = samples.pdf()
    words = "=?iso-8859-1?Q?=DCbersicht_Rechnungen_2024_Kunde_M=FCller_GmbH_final?=\r\n\t=?iso-8859-1?Q?.pdf?="
    msg = message(multipart(text(), part([("Content-Type", f'application/pdf;\r\n\tname="{words}"'),
                                          ("Content-Disposition", f'attachment;\r\n\tfilename="{words}"')], pdf)))
    got = relay(live, msg)
    assert got.endswith(msg)
    name = "\u00dcbersicht Rechnungen 2024 Kunde M\u00fcller GmbH final.pdf"
    assert verdict_reasons(got) == {name: ("keep", "content is a PDF, consistent with how it is labelled")}


def test_long_encoded_word_name_of_a_real_pdf_is_delivered_unchanged(live):
    # 64 characters, 300 encoded: the undecoded reading's length is the encoding's, not the name's.
    name = "\u898b\u7a4d\u66f8" * 20 + ".pdf"
    raw = name.encode()
    words = "\r\n ".join("=?utf-8?B?" + base64.b64encode(raw[i:i + 45]).decode() + "?=" for i in range(0, len(raw), 45))
    pdf = samples.pdf()
    msg = message(multipart(text(), part([("Content-Type", f'application/pdf;\r\n name="{words}"'),
                                          ("Content-Disposition", f'attachment;\r\n filename="{words}"')], pdf)))
    got = relay(live, msg)
    assert got.endswith(msg)
    assert verdict_reasons(got) == {name: ("keep", "content is a PDF, consistent with how it is labelled")}


OUTLOOK_PDF = [("Content-Type", 'application/pdf; name="=?utf-8?Q?=C3=9Cbersicht.pdf?="'),
               ("Content-Disposition", 'attachment; filename="=?utf-8?Q?=C3=9Cbersicht.pdf?="')]


def test_encoded_word_name_is_no_conflict(live):
    msg = message(multipart(text(), part(OUTLOOK_PDF, samples.pdf())))
    got = relay(live, msg)
    assert got.endswith(msg)  # not rebuilt: a DKIM signature survives
    assert [v for v, _ in verdict_reasons(got).values()] == ["keep"]


def test_encoded_word_name_is_accepted_when_ambiguous_mime_is_refused(make_proxy, sink):
    proxy = make_proxy({"policy": {"on_ambiguous_mime": "reject"}})
    msg = message(multipart(text(), part(OUTLOOK_PDF, samples.pdf())))
    code, reply = proxy.send(msg)
    assert code == 250, reply
    assert sink.messages[-1].content.endswith(msg)
    # A real conflict still is one.
    conflict = message(multipart(text(), part([("Content-Type", 'application/pdf; name="a.pdf"'),
                                               ("Content-Disposition", 'attachment; filename="b.pdf"')],
                                              samples.pdf())))
    code, reply = proxy.send(conflict)
    assert code == 550 and b"5.6.0" in reply and b"conflicting file names" in reply


def test_two_different_names_are_still_rebuilt_into_one(live):
    pdf = samples.pdf()
    msg = message(multipart(text(), part([("Content-Type", 'application/pdf; name="=?utf-8?Q?a.pdf?="'),
                                          ("Content-Disposition", 'attachment; filename="b.pdf"')], pdf)))
    got = relay(live, msg)
    (p,) = [p for p in scan.parse(got).walk() if p.is_attachment]
    head = got[p.start:p.header_end]
    assert b"filename*=UTF-8''b.pdf" in head and b"name*=UTF-8''b.pdf" in head and b"a.pdf" not in head


# --- F4: right-to-left marks are no disguise; overrides are -----------------------------------

def rfc2231(name: str) -> str:
    return "UTF-8''" + urllib.parse.quote(name, safe="")


def test_hebrew_name_with_a_right_to_left_mark_is_kept(live):
    pdf = samples.pdf()
    name = "\u200f\u05d3\u05d5\u05d7 \u05db\u05e1\u05e4\u05d9.pdf"
    msg = message(multipart(text(), part([("Content-Type", f"application/pdf; name*={rfc2231(name)}"),
                                          ("Content-Disposition", f"attachment; filename*={rfc2231(name)}")], pdf)))
    got = relay(live, msg)
    assert got.endswith(msg)
    assert verdict_reasons(got) == {name: ("keep", "content is a PDF, consistent with how it is labelled")}


def test_right_to_left_override_still_disguises(live):
    name = "invoice\u202efdp.exe"
    msg = message(multipart(text(), part([("Content-Type", f"application/pdf; name*={rfc2231(name)}"),
                                          ("Content-Disposition", f"attachment; filename*={rfc2231(name)}")],
                                         samples.pdf())))
    got = relay(live, msg)
    assert attachment_payloads(got) == {}
    ((_, (verdict, _)),) = verdict_reasons(got).items()
    assert verdict in ("blocked", "spoofed")


@pytest.mark.parametrize("mark", ["\u200e", "\u200f", "\u061c"])
def test_marks_are_no_name_problem(mark):
    assert name_problem(f"{mark}\u05d3\u05d5\u05d7.pdf") is None
    assert name_problem(f"a{mark}x.pdf") is None


# --- Found on the way: a boundary is read as written -----------------------------------------

def test_an_encoded_word_boundary_hides_no_part(live):
    b = "=?utf-8?Q?x?="
    body = (f"--{b}\r\n".encode() + text() + f"\r\n--{b}\r\n".encode()
            + attachment(samples.pe_exe(), "a.exe", "application/octet-stream") + f"\r\n--{b}--\r\n".encode())
    msg = HEAD + f'Content-Type: multipart/mixed; boundary="{b}"\r\n\r\n'.encode() + body
    got = relay(live, msg)
    assert attachment_payloads(got) == {}
    assert [(n, v) for n, (v, _) in verdict_reasons(got).items()] == [("a.exe", "blocked")]
    assert samples.pe_exe() not in got and b64(samples.pe_exe())[:60] not in got
