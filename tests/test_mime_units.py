"""Pure functions behind "every leaf judged, the notice where the reader sees it, names disarmed":
the transfer-encoding reader, the lenient decoder, the HTML body finder, the name disarmer,
and which parts count as files."""

from __future__ import annotations

import quopri

import pytest

from smtp_offload import config as config_mod
from smtp_offload.errors import PermanentError
from smtp_offload.inspect.names import base_name, disarm
from smtp_offload.mime import scan
from smtp_offload.mime.codec import decode, parse_cte
from smtp_offload.mime.htmlbody import notice_offset
from smtp_offload.model import Verdict
from smtp_offload.app import decide_policy
from smtp_offload.delivery.decide import decide
from smtp_offload.delivery.prepare import render
from tests.support import samples
from tests.support.decoys import BROWSER_ONLY, DECOYS, MARK, Visible
from tests.support.mail import attachment, b64, entity, message, multipart, text

EXE = samples.pe_exe()


# --- Content-Transfer-Encoding ------------------------------------------------

@pytest.mark.parametrize("header,mechanism", [
    (None, "7bit"), ("", "7bit"), ("base64", "base64"), ("BASE64", "base64"), ("Base64", "base64"),
    ("base64 (comment)", "base64"), ("(comment) base64", "base64"), ("base64(comment)", "base64"),
    ("base64 (nested (comment) \\) here)", "base64"), ("  base64\t", "base64"), ("base64;", "base64"),
    ('"base64"', "base64"), ("Quoted-Printable", "quoted-printable"), ("(only a comment)", "7bit"),
    ("8BIT", "8bit"), ("x-uuencode", "x-uuencode"), ("8-bit", "8bit"), ("7-BIT", "7bit"), ("8bits", "8bit"),
    ("base(x)64", "base"),  # a comment separates tokens: "base" is no mechanism, so opaque
    ("base64)", "base64)"),  # a stray parenthesis is no separator: unknown, so opaque
])
def test_parse_cte(header, mechanism):
    assert parse_cte(header) == mechanism


# --- base64 as lenient clients decode it ---------------------------------------

def test_base64_keeps_decoding_after_a_pad_in_mid_stream():
    body = b64(EXE[:2]) + b"\r\n" + b64(EXE[2:])  # "TVo=" then the rest
    assert b"=\r\n" in body
    assert decode(body, "base64") == EXE
    assert decode(memoryview(body), "base64") == EXE


@pytest.mark.parametrize("body,expected", [
    (b"TWFu\r\nTWE=", b"ManMa"),  # ordinary trailing pad
    (b"TWE=TQ==TWFu", b"MaMMan"),  # three runs, each padded
    (b"TW*Fu!!", b"Man"),  # characters outside the alphabet are skipped
    (b"TWFuT", b"Man"),  # a lone trailing character carries no whole byte
    (b"TWFuTW", b"ManM"),  # missing padding
    (b"", b""), (b"====", b""), (b"\r\n", b""),
])
def test_base64_is_lenient(body, expected):
    assert decode(body, "base64") == expected


def test_well_formed_base64_and_qp_decode_as_before():
    data = samples.pdf() * 3
    assert decode(b64(data), "base64") == data
    assert decode(b"a=3Db=\r\nc", "quoted-printable") == b"a=bc"
    assert decode(b"raw", "x-unknown") == b"raw"


# --- Where the HTML notice goes ------------------------------------------------

def _with_mark(doc: str) -> str:
    at = notice_offset(doc)
    return doc[:at] + f"<div>{MARK}</div>" + doc[at:]


@pytest.mark.parametrize("case", list(DECOYS))
def test_notice_offset_is_in_the_body_never_in_a_decoy(case):
    doc = DECOYS[case]
    out = _with_mark(doc)
    p = Visible()
    p.feed(out)
    p.close()
    assert MARK in "".join(p.shown), out
    if "<body><p>text" in doc:  # a real <body> tag: the notice goes right after it
        assert out.count(f"<body><div>{MARK}") == 1


@pytest.mark.parametrize("case", list(BROWSER_ONLY))
def test_notice_offset_follows_the_html_tokenizer(case):
    doc, around = BROWSER_ONLY[case]
    assert around in _with_mark(doc)


@pytest.mark.parametrize("doc,before", [
    ("<html><head></head><body class='a>b'>x", "<html><head></head><body class='a>b'>"),
    ("<!DOCTYPE html>\r\n<html>\r\n<head><meta charset=utf-8>\r\n</head>\r\n<BODY>\r\nx", "<BODY>"),
    ("<title>unterminated", ""),
    ("", ""),
    ("<html><head></head></html>", "<html><head></head>"),
])
def test_notice_offset_positions(doc, before):
    assert doc[:notice_offset(doc)].endswith(before)


# --- Names --------------------------------------------------------------------

@pytest.mark.parametrize("raw,shown", [
    ("C:\\fakepath\\scan.pdf", "scan.pdf"), ("../x.pdf", "x.pdf"), ("/etc/x.pdf", "x.pdf"),
    ("\\\\server\\share\\x.pdf", "x.pdf"), ("..\\..\\a b.pdf", "a b.pdf"), ("c:/temp/a.pdf", "a.pdf"),
    ("scan.pdf", "scan.pdf"), ("</b> & co.pdf", "</b> & co.pdf"),  # a slash in an ordinary name stays
])
def test_disarm(raw, shown):
    assert disarm(raw) == shown


def test_base_name():
    assert base_name("a/b\\c.pdf") == "c.pdf" and base_name("dir/") == "dir" and base_name("/") == ""


def test_scan_reads_the_base_name_and_marks_the_part_for_rebuilding():
    raw = message(multipart(text(), attachment(samples.pdf(), "C:\\fakepath\\scan.pdf", "application/pdf")))
    part = scan.parse(raw).children[1]
    # In a quoted string Thunderbird unescapes every backslash (RFC 5322 quoted-pairs): judged too.
    assert (part.filename, part.names, part.renamed) == ("scan.pdf", ["scan.pdf", "C:fakepathscan.pdf"], True)
    assert part.ambiguities == []  # two readings of one name, no conflict
    plain = scan.parse(message(multipart(text(), attachment(samples.pdf(), "scan.pdf", "application/pdf"))))
    assert plain.children[1].renamed is False


# --- Which parts are files ------------------------------------------------------

def _leaf(ctype: str, cte: str = "base64", extra: list[tuple[str, str]] = ()) -> bytes:
    return entity([("Content-Type", ctype), ("Content-Transfer-Encoding", cte), *extra], b64(b"data"))


@pytest.mark.parametrize("leaf,is_file", [
    (_leaf("application/octet-stream"), True),
    (_leaf("image/png", extra=[("Content-ID", "<x@y>")]), True),
    (_leaf("audio/mpeg"), True),
    (_leaf("text/plain"), False),
    (_leaf("text/html"), False),
    (_leaf("text/plain", cte="x-unknown"), True),  # unknown encoding: opaque bytes, a file candidate
    (_leaf("message/delivery-status", cte="7bit"), False),
    (entity([("Content-Type", "message/rfc822"), ("Content-Transfer-Encoding", "base64")],
            b64(message(text()))), True),  # an encoded attached message is one unit
    (entity([("Content-Type", "message/rfc822")], message(text())), False),  # a container
    (entity([("Content-Type", 'message/external-body; access-type="URL"')], b""), False),
])
def test_which_leaves_are_files(leaf, is_file):
    part = scan.parse(message(multipart(text(), leaf))).children[1]
    assert part.is_attachment is is_file


@pytest.fixture(scope="module")
def policy():
    return decide_policy(config_mod.load(None, env={}))


def _encoded_message(inner: bytes, cte: str = "base64") -> bytes:
    body = b64(inner) if cte == "base64" else quopri.encodestring(inner)
    return entity([("Content-Type", "message/rfc822"), ("Content-Transfer-Encoding", cte)], body)


def test_encoded_message_is_one_unit_named_after_the_bad_file_inside(policy):
    inner = message(multipart(text(), attachment(EXE, "invoice.pdf", "application/pdf")))
    plan = decide(message(multipart(text(), _encoded_message(inner))), policy)
    (unit,) = plan.decisions
    assert unit.verdict is Verdict.BLOCKED
    assert unit.reason.startswith('the attached message carries "invoice.pdf": ')
    assert [i.name for i in unit.file.inner] == ["invoice.pdf"]


def test_parts_inside_an_encoded_message_count_against_the_limits():
    inner = message(multipart(*[text(f"part {i}\r\n") for i in range(8)]))
    raw = message(multipart(text(), _encoded_message(inner)))
    assert scan.parse(raw, scan.Limits(max_parts=20)).children[1].embedded is not None
    with pytest.raises(scan.MimeError, match="more than 10 MIME parts"):
        scan.parse(raw, scan.Limits(max_parts=10))
    with pytest.raises(scan.MimeError, match="deeper than 2 levels"):
        scan.parse(raw, scan.Limits(max_depth=2))


def test_an_ambiguous_encoded_message_is_relayed_in_the_reading_we_judged(policy):
    inner = message(multipart(text(), attachment(samples.pdf(), "../scan.pdf", "application/pdf"),
                              boundary="inner-b")).replace(b"--inner-b--\r\n", b"")  # unclosed too
    raw = message(multipart(text(), _encoded_message(inner)))
    plan = decide(raw, policy)
    assert plan.decisions[0].verdict is Verdict.KEEP
    out = render(plan)
    again = decide(out, policy)
    assert again.analysis.ambiguities == () and not again.analysis.renamed
    unit = scan.parse(out).children[1]
    inner_part = unit.embedded.children[1]
    assert inner_part.filename == "scan.pdf" and not unit.embedded.unclosed
    assert decode(unit.embedded_data[inner_part.body_start:inner_part.end], inner_part.cte) == samples.pdf()


def test_structure_errors_inside_an_encoded_message_refuse_the_message(policy):
    inner = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--bX\r\nx\r\n"
    with pytest.raises(PermanentError) as exc:
        decide(message(multipart(text(), _encoded_message(inner))), policy)
    assert (exc.value.code, exc.value.status) == (550, "5.6.0")


def test_landing_page_shows_the_base_name_of_a_stored_path():
    from smtp_offload.links import pages
    from smtp_offload.links.tokens import Grant
    from smtp_offload.storage.base import StoredObject

    obj = StoredObject(key="2026/01/01/x/scan.pdf", size=3, sha256="0" * 64, content_type="application/pdf",
                       filename="C:\\fakepath\\scan.pdf")
    page = pages.landing(obj, Grant(obj.key, 2_000_000_000, "0123456789abcdef"), "token")
    assert "<h1>scan.pdf</h1>" in page and "<title>Download scan.pdf</title>" in page and "fakepath" not in page
