"""Real-world messages: parse, judge and rewrite every one without a crash, and keep the
ones that need no change byte-identical. Skipped where ../shared/corpora is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtp_offload import config as config_mod
from smtp_offload.errors import PermanentError
from smtp_offload.mime import scan
from smtp_offload.model import Verdict
from smtp_offload.app import decide_policy
from smtp_offload.delivery.decide import decide
from smtp_offload.delivery.prepare import render
from smtp_offload.mime.scan import normalize_line_endings
from tests.support.env import CORPORA, missing


def _stdlib_email_data() -> Path | None:
    try:
        import test.test_email
    except ImportError:
        return None
    p = Path(test.test_email.__file__).parent / "data"
    return p if p.is_dir() else None


def corpus() -> list[Path]:
    files = []
    if (CORPORA / "flanker").is_dir():
        files += sorted(p for p in (CORPORA / "flanker").rglob("*") if p.is_file() and
                        (p.suffix == ".eml" or p.parent.name == "dkim") and p.name != "README")
    data = _stdlib_email_data()
    if data:
        files += sorted(data.glob("msg_*.txt"))
    return files


FILES = corpus()


@pytest.fixture(scope="module")
def policy():
    return decide_policy(config_mod.load(None, env={}))


NO_CORPUS = "no corpus (../shared/corpora and CPython's test data absent)"


def test_shared_corpora_present():
    """Without ../shared/corpora the tests below see CPython's few messages only."""
    if not (CORPORA / "flanker").is_dir():
        missing(f"no corpus at {CORPORA / 'flanker'} (../shared/corpora)")


@pytest.mark.parametrize("path", FILES or [None], ids=lambda p: f"{p.parent.name}/{p.name}" if p else "none")
def test_corpus_message(path, policy):
    if path is None:
        missing(NO_CORPUS)
    raw = normalize_line_endings(path.read_bytes())
    try:
        plan = decide(raw, policy)
    except PermanentError as exc:  # past a structure limit (e.g. flanker's 3,000-part "endless" message)
        assert (exc.code, exc.status) == (550, "5.6.0") and "MIME parts" in exc.text
        return
    assert plan.refusal is None  # default policy strips, never rejects
    an = plan.analysis
    out = render(plan)
    if not plan.changed and not an.forged_headers and not an.ambiguities:
        assert out == raw
        return
    # One reading: what we relay has no ambiguity left, and judging it again agrees.
    again = decide(out, policy)
    assert again.analysis.ambiguities == ()
    assert {d.file.sha256 for d in again.decisions} == \
        {d.file.sha256 for d in plan.decisions if d.verdict is Verdict.KEEP}
    # Rewritten: every kept attachment is still there with the same bytes, the changed ones are gone.
    after = {p.path: p for p in scan.parse(out).walk() if p.is_attachment}
    kept = [d.file for d in plan.decisions if d.verdict is Verdict.KEEP]
    assert len(after) == len(kept)
    for f in kept:  # kept files keep their bytes (headers too, unless they had to be rebuilt)
        whole, body = raw[f.part.start:f.part.end], raw[f.part.body_start:f.part.end]
        assert any((out[p.body_start:p.end] == body) if f.part.ambiguities else (out[p.start:p.end] == whole)
                   for p in after.values())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from tests.support.proc import Proxy, Sink

    if not FILES:
        missing(NO_CORPUS)
    sink = Sink()
    proxy = Proxy(tmp_path_factory.mktemp("corpus"), sink.port,
                  {"policy": {"offload_over_bytes": 200_000}}).start()
    yield proxy, sink
    proxy.stop()
    sink.stop()


def test_whole_corpus_through_the_running_proxy(live, policy):
    """Every real-world message ends in a well-formed reply; whatever is relayed parses as one
    reading, carries only CRLF, and contains no part the policy removed."""
    import smtplib

    proxy, sink = live
    outcomes = {}
    for path in FILES:
        before = len(sink.messages)
        with proxy.client() as c:
            c.ehlo("corpus.test")
            c.mail("corpus@sender.test")
            assert c.rcpt("support@example.com")[0] == 250
            try:
                # as a sending MTA would put it on the wire: CRLF line ends (files on disk have LF)
                code, reply = c.data(normalize_line_endings(path.read_bytes()))
            except smtplib.SMTPDataError as exc:
                code, reply = exc.smtp_code, exc.smtp_error
        assert code in (250, 550, 552) and reply[:1] in b"245" and reply[1:2] == b".", (path.name, code, reply)
        outcomes[path.name] = code
        if code != 250:
            assert len(sink.messages) == before
            continue
        got = sink.messages[-1].content
        assert got.count(b"\r") == got.count(b"\r\n") == got.count(b"\n") and b"\x00" not in got
        again = decide(got, policy)
        assert again.analysis.ambiguities == ()
        assert all(d.verdict is Verdict.KEEP for d in again.decisions), path.name
    assert list(outcomes.values()).count(250) >= len(FILES) - 3  # refusals are the rare hostile ones
