"""The header block model (mime/headers.py) and the first-token reading shared by
Content-Transfer-Encoding and Content-Type."""

from __future__ import annotations

import pytest

from smtp_offload.mime.headers import Field, fields, first_token


def shape(data: bytes, *args) -> list[tuple[str, bytes]]:
    return [(f.name, f.raw) for f in fields(data, *args)]


def test_fields_by_offsets():
    data = b"From: a@b.test\r\nSubject: hi\r\n\r\nbody: not a header\r\n"
    got = fields(data)
    assert [(f.name, f.start, f.end) for f in got] == [("from", 0, 16), ("subject", 16, 29)]
    assert all(data[f.start:f.end] == f.raw for f in got)
    assert got[0] == Field("from", b"From: a@b.test\r\n", 0, 16)
    assert got[0].value == b" a@b.test\r\n" and got[0].colon


def test_folded_lines_belong_to_their_field():
    data = b"Subject: one\r\n two\r\n\tthree\r\nTo: x\r\n\r\n"
    assert shape(data) == [("subject", b"Subject: one\r\n two\r\n\tthree\r\n"), ("to", b"To: x\r\n")]
    assert fields(data)[0].value == b" one\r\n two\r\n\tthree\r\n"


def test_name_is_lower_case_and_stripped():
    assert shape(b"X-Mailer : x\r\nCONTENT-type:text/plain\r\n") == [
        ("x-mailer", b"X-Mailer : x\r\n"), ("content-type", b"CONTENT-type:text/plain\r\n")]
    # only ASCII letters are lowered: the name encodes back to the bytes it was read from
    assert fields(b"X-\xc0: y\r\n")[0].name.encode("latin-1") == b"x-\xc0"


def test_a_line_without_colon_is_a_field_of_its_own():
    data = b"A: 1\r\njunk line\r\n folded\r\nB: 2\r\n"
    got = fields(data)
    assert [(f.name, f.raw, f.colon) for f in got] == [
        ("a", b"A: 1\r\n", True), ("junk line", b"junk line\r\n folded\r\n", False), ("b", b"B: 2\r\n", True)]
    assert got[1].value == b""


def test_colon_on_a_continuation_line_names_the_field():
    # "Authentication-Results\r\n : x" unfolds to an obsolete-syntax field "Authentication-Results : x"
    f = fields(b"Authentication-Results\r\n : mx.test; dkim=pass\r\n")[0]
    assert (f.name, f.colon, f.value) == ("authentication-results", False, b" mx.test; dkim=pass\r\n")


def test_first_line_folded_starts_a_field():
    assert shape(b" Subject: x\r\n y\r\nTo: z\r\n") == [("subject", b" Subject: x\r\n y\r\n"), ("to", b"To: z\r\n")]


def test_bare_lf_and_cr_stay_inside_the_line():
    data = b"A: 1\nB: 2\r\nC: 3\r\r\n\nD: 4\r\n"
    assert shape(data) == [("a", b"A: 1\nB: 2\r\n"), ("c", b"C: 3\r\r\n"), ("d", b"\nD: 4\r\n")]
    assert shape(b"A: 1\n\nbody\r\n") == [("a", b"A: 1\n\nbody\r\n")]  # no empty line: LF LF is none


def test_block_ends_at_the_first_empty_line_or_at_stop():
    data = b"A: 1\r\nB: 2\r\n\r\nC: 3\r\n"
    assert shape(data) == [("a", b"A: 1\r\n"), ("b", b"B: 2\r\n")]
    assert shape(data, 6) == [("b", b"B: 2\r\n")]
    assert shape(data, 0, 6) == [("a", b"A: 1\r\n")]
    assert shape(data, 14) == [("c", b"C: 3\r\n")]
    assert fields(b"\r\nA: 1\r\n") == []  # an empty header block
    assert fields(b"") == []


def test_header_block_without_body():
    assert shape(b"A: 1\r\nB: 2\r\n") == [("a", b"A: 1\r\n"), ("b", b"B: 2\r\n")]
    assert shape(b"A: 1\r\nB: 2") == [("a", b"A: 1\r\n"), ("b", b"B: 2")]  # the last line unterminated
    got = fields(b"A: 1\r\n x")
    assert got[0].raw == b"A: 1\r\n x" and got[0].end == 8


def test_offsets_with_start_and_stop_inside_a_message():
    data = b"--b\r\nContent-Type: text/plain\r\n x=1\r\nX: y\r\n\r\nbody"
    got = fields(data, 5, 43)
    assert [(f.name, data[f.start:f.end]) for f in got] == [
        ("content-type", b"Content-Type: text/plain\r\n x=1\r\n"), ("x", b"X: y\r\n")]


@pytest.mark.parametrize("value, token", [
    ("base64", "base64"),
    ("  (comment) base64 (more)", "base64"),
    ("((nested) \\) still) base64", "base64"),
    ("base(x)64", "base"),
    ('"base64";', "base64"),
    (";, base64", "base64"),
    ("(unclosed base64", ""),
    ("", ""),
])
def test_first_token_with_separators(value, token):
    sep = lambda c: c.isspace() or c in ';,"'  # noqa: E731
    assert first_token(value, sep) == token


def test_first_token_skips_less_than_it_stops_at():
    wsp = " \t".__contains__
    end = " \t;,".__contains__
    assert first_token(" (c) text/plain; x", end, wsp) == "text/plain"
    assert first_token(";text/plain", end, wsp) == ""  # ";" ends the token but is not skipped
