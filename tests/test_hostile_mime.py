"""MIME that parsers read differently, and MIME built to make parsers work hard."""

from __future__ import annotations

import threading

import pytest

from smtp_offload import config as config_mod
from smtp_offload.errors import PermanentError
from smtp_offload.mime import scan
from smtp_offload.model import Verdict
from smtp_offload.app import decide_policy
from smtp_offload.delivery.decide import decide
from smtp_offload.delivery.prepare import render
from tests.support import samples
from tests.support.mail import b64, entity, message, multipart, text


@pytest.fixture(scope="module")
def policy():
    return decide_policy(config_mod.load(None, env={}))


def part(headers: list[tuple[str, str]], data: bytes) -> bytes:
    return entity(headers + [("Content-Transfer-Encoding", "base64")], b64(data))


def one_reading(policy, raw: bytes):
    """Judge, rebuild, judge again: the second reading must agree and be unambiguous."""
    an = decide(raw, policy)
    out = render(an)
    again = decide(out, policy)
    assert again.analysis.ambiguities == ()
    return an, out, again


CASES = {
    "filename vs name": [("Content-Type", 'application/pdf; name="report.exe"'),
                         ("Content-Disposition", 'attachment; filename="report.pdf"')],
    "two filenames": [("Content-Type", "application/pdf"),
                      ("Content-Disposition", 'attachment; filename="report.pdf"; filename="report.exe"')],
    "2231 vs plain": [("Content-Type", "application/pdf"),
                      ("Content-Disposition", "attachment; filename*0=\"report.p\"; filename*1=\"df\"; "
                                              'filename="report.exe"')],
    "encoded-word in quotes": [("Content-Type", "application/pdf"),
                               ("Content-Disposition", 'attachment; filename="=?utf-8?B?cmVwb3J0LmV4ZQ==?="')],
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_name_reading_is_judged(policy, case):
    raw = message(multipart(text(), part(CASES[case], samples.pdf())))
    an, out, again = one_reading(policy, raw)
    (a,) = an.decisions
    assert a.verdict is Verdict.BLOCKED, (a.file.part.names, a.reason)
    assert again.decisions == ()  # stripped: no reading of it is left


def test_duplicate_content_headers_keep_our_reading(policy):
    headers = [("Content-Type", 'image/png; name="logo.png"'), ("Content-Disposition", 'attachment; filename="logo.png"'),
               ("Content-Transfer-Encoding", "base64"), ("Content-Type", 'application/x-msdownload; name="logo.exe"'),
               ("Content-Disposition", 'attachment; filename="logo.exe"'), ("Content-Transfer-Encoding", "7bit")]
    raw = message(multipart(text(), entity(headers, b64(samples.png()))))
    an, out, again = one_reading(policy, raw)
    assert any("duplicate" in x for x in an.analysis.ambiguities)
    (a,) = again.decisions
    assert (a.file.name, a.file.declared_type, a.verdict) == ("logo.png", "image/png", Verdict.KEEP)
    assert b"logo.exe" not in out and b"x-msdownload" not in out and out.count(b"Content-Transfer-Encoding") == 2


def test_missing_closing_boundary_is_added(policy):
    raw = message(multipart(text(), part([("Content-Type", "image/png"), ("Content-Disposition",
                                                                          'attachment; filename="a.png"')],
                                         samples.png())))
    raw = raw[: raw.rindex(b"--=_boundary")]  # cut the close delimiter
    an, out, again = one_reading(policy, raw)
    assert an.analysis.ambiguities == ("part body: missing closing boundary",)
    assert out.rstrip().endswith(b"--")
    assert [a.file.sha256 for a in again.decisions] == [a.file.sha256 for a in an.decisions]


def test_conflicting_boundaries_and_near_miss_delimiters_are_refused(policy):
    bad = message(entity([("Content-Type", 'multipart/mixed; boundary="aaa"; boundary="bbb"')],
                         b"--aaa\r\n\r\nx\r\n--bbb\r\n\r\ny\r\n--aaa--\r\n"))
    with pytest.raises(PermanentError) as err:
        decide(bad, policy)
    assert (err.value.code, err.value.status) == (550, "5.6.0") and "boundary" in err.value.text
    near = message(entity([("Content-Type", 'multipart/mixed; boundary="aaa"')], b"--aaaX\r\n\r\nx\r\n--aaaX--\r\n"))
    with pytest.raises(PermanentError):
        decide(near, policy)


def hostile_inputs() -> dict[str, bytes]:
    deep = b"x\r\n"
    for i in range(500):
        deep = entity([("Content-Type", f'multipart/mixed; boundary="b{i}"')], b"--b%d\r\n" % i + deep + b"\r\n--b%d--\r\n" % i)
    many = entity([("Content-Type", 'multipart/mixed; boundary="z"')], b"--z\r\n\r\n" * 100_000 + b"--z--\r\n")
    words = "\r\n ".join(["=?utf-8?q?a?="] * 20_000)  # folded: every line is short
    return {
        "500 levels": message(deep),
        "100,000 empty parts": message(many),
        "20,000 encoded-words in a file name": message(multipart(text(), part(
            [("Content-Type", "application/pdf"), ("Content-Disposition", f'attachment; filename="{words}"')],
            samples.pdf()))),
        "1 MiB of header": message(text(), extra=[("X-Filler", "\r\n ".join(["y" * 70] * 16_000))]),
    }


@pytest.mark.parametrize("name", list(hostile_inputs()))
def test_structure_limits(policy, name):
    with pytest.raises(PermanentError) as err:
        decide(hostile_inputs()[name], policy)
    assert (err.value.code, err.value.status) == (550, "5.6.0")


def test_encoded_word_subject_is_not_parsed_at_all(policy):
    raw = message(text(), subject=" ".join(["=?utf-8?q?a?="] * 20_000))
    an = decide(raw, policy)
    assert render(an) is an.analysis.data  # relayed untouched, nothing decoded


def test_parts_counter_stops_at_the_limit():
    many = entity([("Content-Type", 'multipart/mixed; boundary="z"')], b"--z\r\n\r\n" * 100_000 + b"--z--\r\n")
    scanner = scan._Scanner(many, scan.Limits(max_parts=50))
    with pytest.raises(scan.MimeError):
        scanner.entity(0, len(many), "", 0, False, "text/plain")
    assert scanner.parts == 51  # it stopped right after the limit, not after 100,000


def test_hostile_messages_through_the_proxy_while_others_flow(proxy, sink):
    replies: dict[str, tuple[int, bytes]] = {}

    def send(name: str, raw: bytes) -> None:
        replies[name] = proxy.send(raw)

    threads = [threading.Thread(target=send, args=(n, raw)) for n, raw in hostile_inputs().items()]
    for t in threads:
        t.start()
    small = proxy.send(message(text("small and urgent\r\n")))  # shares the event loop with the hostile ones
    for t in threads:
        t.join(60)
    assert small[0] == 250
    assert {n: r[0] for n, r in replies.items()} == {n: 550 for n in hostile_inputs()}
    assert all(r[1].startswith(b"5.6.0") for r in replies.values())
    assert len(sink.messages) == 1


def test_reject_policy_for_ambiguous_mime(make_proxy, sink):
    proxy = make_proxy({"policy": {"on_ambiguous_mime": "reject"}})
    raw = message(multipart(text(), part(CASES["filename vs name"], samples.pdf())))
    code, reply = proxy.send(raw)
    assert code == 550 and reply.startswith(b"5.6.0") and b"conflicting file names" in reply
    assert sink.messages == []


HIDING_LINES = {
    "space before the colon (RFC 5322 obs-optional)": b"X-Mailer : mailer 1.0",
    "a junk line": b"this line is no header field",
    "a control character in a field name": b"X-Bad\x01: x",
}


@pytest.mark.parametrize("case", list(HIDING_LINES))
def test_header_lines_a_strict_parser_stops_at_hide_nothing(proxy, sink, case):
    """compat32 ends the header block at a line that is not a well-formed field; mail clients
    read on and see the Content-Type below it. Our reading must be the lenient one."""
    raw = message(multipart(text("see attached\r\n"), part(
        [("Content-Type", "application/octet-stream"),
         ("Content-Disposition", 'attachment; filename="invoice.pdf"')], samples.pe_exe())))
    hidden = raw.replace(b"\r\n", b"\r\n" + HIDING_LINES[case] + b"\r\n", 1)
    assert hidden.index(HIDING_LINES[case]) < hidden.index(b"Content-Type: multipart/mixed")
    code, _ = proxy.send(hidden)
    assert code == 250
    relayed = sink.messages[-1].content
    assert b64(samples.pe_exe())[:60] not in relayed
    assert b"verdict=blocked" in relayed
