"""Real-world messages: parse, judge and rewrite every one without a crash, and keep the
ones that need no change byte-identical. Skipped where ../shared/corpora is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import CORPORA
from smtp_offload import config as config_mod
from smtp_offload.errors import PermanentError
from smtp_offload.mime import scan
from smtp_offload.model import Verdict
from smtp_offload.pipeline import normalize_line_endings
from smtp_offload.process import Processor


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
def processor():
    return Processor(config_mod.load(None, env={}), store=None, secret=None, log=None)


@pytest.mark.skipif(not FILES, reason="no corpus (../shared/corpora and CPython's test data absent)")
@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_message(path, processor):
    raw = normalize_line_endings(path.read_bytes())
    try:
        an, rejection = processor.evaluate(raw)
    except PermanentError as exc:  # past a structure limit (e.g. flanker's 3,000-part "endless" message)
        assert (exc.code, exc.status) == (550, "5.6.0") and "MIME parts" in exc.text
        return
    assert rejection is None  # default policy strips, never rejects
    from smtp_offload.pipeline import render
    out = render(an)
    if not an.changed and not an.forged_headers and not an.ambiguities:
        assert out == raw
        return
    # One reading: what we relay has no ambiguity left, and judging it again agrees.
    again, _ = processor.evaluate(out)
    assert again.ambiguities == []
    assert {a.sha256 for a in again.attachments} == {a.sha256 for a in an.attachments if a.verdict is Verdict.KEEP}
    # Rewritten: every kept attachment is still there with the same bytes, the changed ones are gone.
    after = {p.path: p for p in scan.parse(out).walk() if p.is_attachment}
    kept = [a for a in an.attachments if a.verdict is Verdict.KEEP]
    assert len(after) == len(kept)
    for a in kept:  # kept files keep their bytes (headers too, unless they had to be rebuilt)
        whole, body = raw[a.part.start:a.part.end], raw[a.part.body_start:a.part.end]
        assert any((out[p.body_start:p.end] == body) if a.part.ambiguities else (out[p.start:p.end] == whole)
                   for p in after.values())
