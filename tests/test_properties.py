"""Property-based tests (hypothesis): the invariants hold for arbitrary input.

Pure pipeline: any bytes and any MIME tree either get a clear 5xx (or a policy refusal) or are relayed as one
unambiguous reading with no removed part left and only CRLF line ends.
Through the running proxy: the reply is always a valid code, never 500, and a 250 always
has its copy downstream. The example counts keep this a bounded fuzz run for CI.
"""

from __future__ import annotations

import smtplib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smtp_offload import config as config_mod
from smtp_offload.errors import PermanentError
from smtp_offload.model import Verdict
from smtp_offload.app import decide_policy
from smtp_offload.delivery.decide import decide
from smtp_offload.delivery.prepare import render
from tests.support import samples
from tests.support.mail import attachment, message, multipart, text
from tests.support.proc import Proxy, Sink

POLICY = decide_policy(config_mod.load(None, env={}))
FILES = [samples.pdf(), samples.png(), samples.jpeg(), samples.pe_exe(), samples.zip_file(), b"", samples.text(),
         samples.docx(), samples.elf()]
TYPES = ["application/pdf", "image/png", "image/jpeg", "application/octet-stream", "text/plain", "application/zip",
         "application/x-msdownload", "text/html", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"]
NAMES = ["a.pdf", "photo.jpg", "logo.png", "run.exe", "notes.txt", "doc.docx", "x.pdf.exe", "../../etc/passwd",
         "Отчёт.pdf", "evil\u202etxt.exe", None]


def leaf() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(lambda d, n, t: attachment(d, n, t), st.sampled_from(FILES), st.sampled_from(NAMES),
                  st.sampled_from(TYPES)),
        st.builds(lambda s: text(s + "\r\n"), st.text(alphabet="abc .\r\n-=", max_size=80)),
    )


trees = st.recursive(leaf(), lambda kids: st.builds(
    lambda parts, sub: multipart(*parts, subtype=sub), st.lists(kids, min_size=1, max_size=4),
    st.sampled_from(["mixed", "alternative", "related"])), max_leaves=8)


def check_invariants(raw: bytes) -> None:
    try:
        plan = decide(raw, POLICY)
    except PermanentError as exc:
        assert 550 <= exc.code < 560 and exc.status.startswith("5.")
        return
    if plan.refusal is not None:  # a policy refusal (say, an empty uuencoded a.exe in the text): clear, one line
        assert plan.refusal.startswith("550 5.7.1 ") and plan.refusal.isprintable() and plan.refusal.isascii()
        return
    out = render(plan)
    assert out.count(b"\r") == out.count(b"\r\n") == out.count(b"\n")
    again = decide(out, POLICY)
    assert again.analysis.ambiguities == ()
    kept = sorted(d.file.sha256 for d in plan.decisions if d.verdict is Verdict.KEEP)
    assert sorted(d.file.sha256 for d in again.decisions) == kept
    assert all(d.verdict is Verdict.KEEP for d in again.decisions)


@settings(max_examples=150, deadline=None)
@given(trees)
def test_any_mime_tree_keeps_the_invariants(tree):
    check_invariants(message(tree))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_keep_the_invariants(data):
    check_invariants(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b"--b", b"--b--", b"Content-Type: multipart/mixed; boundary=b",
                                 b"Content-Disposition: attachment; filename=x.exe", b"\r\n\r\n", b"JVBERi0=", b"x",
                                 b"Content-Transfer-Encoding: base64", b"begin 644 a.exe", b"end", b"\x00"]),
                max_size=40))
@example([b"\r\n", b"begin 644 a.exe", b"\r\n", b"end"])  # once found at random: an empty uuencoded file
def test_mime_shaped_noise_keeps_the_invariants(pieces):
    check_invariants(b"".join(pieces))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    sink = Sink()
    proxy = Proxy(tmp_path_factory.mktemp("prop"), sink.port).start()
    yield proxy, sink
    proxy.stop()
    sink.stop()


def _valid(code: int) -> bool:
    return 200 <= code < 600 and code != 500


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=2000), trees.map(message)))
def test_proxy_replies_are_always_valid(live, data):
    proxy, sink = live
    before = len(sink.messages)
    marker = f"<prop-{before}-{len(data)}@fuzz.test>".encode()
    with proxy.client() as c:
        c.ehlo("fuzz.test")
        c.mail("fuzz@sender.test")
        assert c.rcpt("support@example.com")[0] == 250
        try:
            code, _ = c.data(b"Message-ID: " + marker + b"\r\n" + data)
        except smtplib.SMTPDataError as exc:
            code = exc.smtp_code
    assert _valid(code), code
    if code == 250:
        assert len(sink.messages) == before + 1 and marker in sink.messages[-1].content
        got = sink.messages[-1].content
        assert got.count(b"\r") == got.count(b"\r\n") == got.count(b"\n") and b"\x00" not in got
    else:
        assert len(sink.messages) == before
