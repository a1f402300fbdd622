"""A spooled message (a FileBytes) is inspected, planned and rewritten exactly as the same bytes
in memory, while only windows of it are held: large parts decoded by streaming into spool files
of their own and judged through a memory map."""

from __future__ import annotations

import dataclasses
import os
import tracemalloc

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_offload import config as config_mod
from smtp_offload import spool
from smtp_offload.app import decide_policy
from smtp_offload.delivery import decide as decide_mod
from smtp_offload.delivery.decide import decide
from smtp_offload.delivery.policy import Ambiguous, BareNewlines
from smtp_offload.delivery.prepare import render
from smtp_offload.errors import SmtpReplyError
from smtp_offload.inspect import InspectPolicy, judge
from smtp_offload.inspect.policy import KeepOrBlock
from smtp_offload.mime import codec, scan
from tests.support import samples
from tests.support.mail import attachment, b64, entity, message, multipart, rfc822, text
from tests.test_corpora import FILES
from tests.test_hostile_mime import CASES, HIDING_LINES, hostile_inputs, part


# -- streaming decoders -------------------------------------------------------------------------
_TOKENS = [b"Q", b"U", b"J", b"d", b"+", b"/", b"=", b"==", b"\r", b"\n", b"\r\n", b" ", b"-", b"*", b"\x00",
           b"\xff", b"A", b"F", b"0", b"9", b"a", b"f", b"=\r", b"=\r\n", b"=0A", b"=4", b"QUJD", b"=\n"]


def _streamed(body: bytes, cte: str, cuts: list[int], long_line: int | None) -> bytes:
    dec = codec.decoder(cte)
    if long_line is not None:
        dec.long_line = long_line  # cut long quoted-printable lines everywhere
    out, pos = [], 0
    for cut in sorted(c % (len(body) + 1) for c in cuts):
        out.append(dec.feed(body[pos:cut]))
        pos = cut
    return b"".join(out + [dec.feed(body[pos:]), dec.end()])


@settings(max_examples=1500, deadline=None)
@given(body=st.lists(st.sampled_from(_TOKENS), max_size=60).map(b"".join),
       cuts=st.lists(st.integers(0, 300), max_size=8),
       cte=st.sampled_from(["base64", "quoted-printable", "binary"]),
       long_line=st.sampled_from([None, 0, 1, 2, 3, 5]))
def test_streaming_decoders_give_exactly_what_decode_gives(body, cte, cuts, long_line):
    """Junk, pads in the middle, odd lengths, soft breaks and escapes cut anywhere."""
    assert _streamed(body, cte, cuts, long_line) == codec.decode(body, cte)


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["find", "startswith", "slice"]), st.integers(-5, 90),
                              st.integers(-5, 90), st.sampled_from([b"\r\n", b"--b", b"a", b"\r\n\r\n"])),
                    max_size=30))
def test_one_spool_file_answers_many_look_ups_as_bytes_do(tmp_path_factory, ops):
    """The read cache of one file carries over from one look-up to the next."""
    data = b"ab\r\n--b\r\nx\r\n\r\naaa--b--\r\n" * 3
    with _spooled(tmp_path_factory.getbasetemp(), data) as fb:
        spool.WINDOW, saved = 9, spool.WINDOW
        try:
            for op, a, b, sub in ops:
                if op == "find":
                    assert fb.find(sub, a, b) == data.find(sub, a, b)
                elif op == "startswith":
                    assert fb.startswith(sub, a, b) == data.startswith(sub, a, b)
                else:
                    assert fb[a:b] == data[a:b]
        finally:
            spool.WINDOW = saved


def _near_miss_reference(data: bytes, start: int, end: int, delim: bytes) -> bool:
    """scan._near_miss as it was before it searched for CRLF + delimiter (the oracle)."""
    pos = start
    while (i := data.find(delim, pos, end)) >= 0:
        pos = i + 1
        if i != start and data[i - 2:i] != b"\r\n":
            continue
        eol = data.find(b"\r\n", i, end)
        rest = data[i + len(delim):end if eol < 0 else eol]
        if rest.rstrip(b" \t") not in (b"", b"--"):
            return True
    return False


def _split_reference(data: bytes, body_start: int, end: int, boundary: bytes):
    """scan.split_multipart as it was before it searched for CRLF + delimiter (the oracle)."""
    delim = b"--" + boundary
    out, pos, cur = [], body_start, None
    while True:
        i = data.find(delim, pos, end)
        if i < 0:
            break
        if i != body_start and data[i - 2:i] != b"\r\n":
            pos = i + 1
            continue
        j = i + len(delim)
        closing = data.startswith(b"--", j, end)
        k = j + 2 if closing else j
        eol = data.find(b"\r\n", k, end)
        line_end = end if eol < 0 else eol
        if data[k:line_end].strip(b" \t"):
            pos = i + 1
            continue
        dstart = i - 2 if i != body_start else i
        if cur is not None:
            out.append((cur[0], dstart, cur[1]))
            cur = None
        if closing:
            return out, True
        cur = (min(line_end + 2, end), dstart)
        pos = cur[0]
    if cur is not None:
        out.append((cur[0], end, cur[1]))
    return out, False


_MIME_TOKENS = [b"--b", b"--b--", b"\r\n", b"\r\n--b\r\n", b" ", b"\t", b"x", b"-", b"\r", b"\n", b"--bX", b"--b ",
                b" " * 85, b"\t" * 78, b"--b--  ", b"\r\n\r\n", b"--b-- x", b"--bxx", b"\r\n--b  --"]


@settings(max_examples=1500, deadline=None)
@given(data=st.lists(st.sampled_from(_MIME_TOKENS), max_size=40).map(b"".join),
       start=st.integers(0, 400), length=st.integers(0, 400))
def test_multipart_splitting_finds_the_delimiters_it_always_found(tmp_path_factory, data, start, length):
    start = min(start, len(data))
    end = min(start + length, len(data))
    want = _split_reference(data, start, end, b"b")
    near = _near_miss_reference(data, start, end, b"--b")
    assert scan.split_multipart(data, start, end, b"b") == want
    assert scan._near_miss(data, start, end, b"--b") == near
    with _spooled(tmp_path_factory.getbasetemp(), data) as fb:
        assert scan.split_multipart(fb, start, end, b"b") == want
        assert scan._near_miss(fb, start, end, b"--b") == near


# -- judging through a memory map ---------------------------------------------------------------
def _spooled(directory, data: bytes, bare_newlines: bool = False) -> spool.FileBytes:
    w = spool.SpoolWriter(str(directory))
    w.write(data)
    return w.finish(eight_bit=not data.isascii(), bare_newlines=bare_newlines)


def _sample_files() -> dict[str, bytes]:
    files = {n: getattr(samples, n)() for n in samples.__all__ if n != "big_pdf"}
    files["big_pdf"] = samples.big_pdf(300_000)
    files["html with script"] = b"<html><body><p>hi</p><script>alert(1)</script></body></html>"
    files["svg with onload"] = b'<svg xmlns="http://www.w3.org/2000/svg" onload="go()"><rect/></svg>'
    files["utf-16 html"] = "<html><body onload='x()'>hi</body></html>".encode("utf-16")
    files["pdf+zip polyglot"] = samples.pdf() + samples.zip_file()
    files["empty"] = b""
    return files


def _corpus_attachments() -> dict[str, bytes]:
    out = {}
    for path in FILES:
        raw = scan.normalize_line_endings(path.read_bytes())
        try:
            plan = decide(raw, _POLICY)
        except SmtpReplyError:
            continue
        for d in plan.decisions:
            out[f"{path.name}:{d.file.part.path}"] = bytes(d.file.data)
    return out


_POLICY = decide_policy(config_mod.load(None, env={}))
_STRICT = dataclasses.replace(_POLICY.inspect, on_macros=KeepOrBlock.BLOCK, on_encrypted_archive=KeepOrBlock.BLOCK,
                              on_unknown=KeepOrBlock.BLOCK)


def test_judging_a_memory_map_equals_judging_bytes(tmp_path):
    """Every file the tests know, under several names and policies: the same Judgement read
    from bytes and through a map of a spool file."""
    files = {**_sample_files(), **_corpus_attachments()}
    assert len(files) > 40
    claims = [(None, None), ("application/pdf", "x.pdf"), ("text/plain", "x.txt"), ("text/html", "page.html"),
              ("application/octet-stream", "x.docx"), ("image/svg+xml", "x.svg")]
    for name, data in files.items():
        with _spooled(tmp_path, data) as fb, fb.mapped() as mm:
            assert (b"PK\x03\x04" in mm) == (b"PK\x03\x04" in data)  # "in" searches, as bytes' does
            for declared, filename in claims:
                for policy in (InspectPolicy(), _STRICT):
                    assert judge(mm, declared, filename, policy) == judge(data, declared, filename, policy), name


# -- the plan and the rewrite: bytes and spool file agree ---------------------------------------
def _messages() -> dict[str, bytes]:
    msgs: dict[str, bytes] = {}
    exts = {"pe_exe": "exe", "elf": "bin", "text": "txt", "csv": "csv", "ics": "ics", "vcard": "vcf"}
    for name, data in _sample_files().items():
        msgs[f"sample {name}"] = message(multipart(text(), attachment(data, f"f.{exts.get(name, 'pdf')}",
                                                                      "application/octet-stream")))
    qp = entity([("Content-Type", 'text/plain; name="notes.txt"'), ("Content-Transfer-Encoding", "quoted-printable"),
                 ("Content-Disposition", 'attachment; filename="notes.txt"')],
                codec.encode(samples.text(5000) + "é=ü\r\n".encode() * 300, "quoted-printable"))
    msgs["quoted-printable file"] = message(multipart(text(), qp))
    msgs["quoted-printable body"] = message(entity([("Content-Type", "text/plain; charset=utf-8"),
                                                    ("Content-Transfer-Encoding", "quoted-printable")],
                                                   codec.encode("Grüße\r\n".encode() * 2000, "quoted-printable")))
    uu = b"begin 644 run.exe\r\n" + b"".join(
        __import__("binascii").b2a_uu(samples.pe_exe()[i:i + 45]).replace(b"\n", b"\r\n")
        for i in range(0, len(samples.pe_exe()), 45)) + b"`\r\nend\r\n"
    msgs["uuencoded in the body"] = message(text("see below\r\n" + uu.decode("ascii")))
    msgs["stray binary text part"] = message(multipart(text(), attachment(samples.pdf(), "a.pdf", "application/pdf"),
                                                       entity([("Content-Type", "text/plain"),
                                                               ("Content-Transfer-Encoding", "base64")],
                                                              b64(samples.png()))))
    msgs["stray empty text part"] = message(multipart(text(), attachment(samples.pdf(), "a.pdf", "application/pdf"),
                                                      entity([("Content-Type", "text/plain"),
                                                              ("Content-Transfer-Encoding", "base64")],
                                                             b64(b" \r\n\t " * 50))))
    msgs["irregular encoding header"] = message(multipart(text(), entity(
        [("Content-Type", 'application/pdf; name="a.pdf"'), ("Content-Transfer-Encoding", "base64 (sent by x)"),
         ("Content-Disposition", 'attachment; filename="a.pdf"')], b64(samples.pdf()))))
    msgs["raw exe under a cleaned-up encoding"] = message(multipart(text(), entity(
        [("Content-Type", 'application/octet-stream; name="a.bin"'), ("Content-Transfer-Encoding", "BASE64;"),
         ("Content-Disposition", 'attachment; filename="a.bin"')], samples.elf())))
    msgs["forwarded message"] = message(multipart(text(), rfc822(message(multipart(
        text(), attachment(samples.pe_exe(), "x.pdf", "application/pdf"))))))
    msgs["base64 attached message"] = message(multipart(text(), entity(
        [("Content-Type", "message/rfc822"), ("Content-Transfer-Encoding", "base64")],
        b64(message(multipart(text(), attachment(samples.docx(), "d.docx", "application/octet-stream")))))))
    msgs["an .eml file"] = message(multipart(text(), attachment(
        message(multipart(text(), attachment(samples.png(), "p.png", "image/png"))), "fwd.eml",
        "application/octet-stream")))
    msgs["forged decision headers"] = message(multipart(text(), attachment(samples.pdf(), "a.pdf", "application/pdf")),
                                              extra=[("X-Smtp-Offload", "v=1; action=none")])
    msgs["only an attachment"] = message(attachment(samples.pe_exe(), "a.exe", "application/octet-stream"))
    msgs["html body and files"] = message(multipart(
        multipart(text(), entity([("Content-Type", "text/html; charset=utf-8")], b"<html><body><p>hi</p></body></html>"),
                  subtype="alternative"),
        attachment(samples.big_pdf(200_000), "big.pdf", "application/pdf"),
        attachment(samples.pe_exe(), "run.exe", "application/octet-stream")))
    for case, headers in CASES.items():
        msgs[f"hostile {case}"] = message(multipart(text(), part(headers, samples.pdf())))
    for case, line in HIDING_LINES.items():
        raw = message(multipart(text(), part([("Content-Type", "application/octet-stream"),
                                              ("Content-Disposition", 'attachment; filename="i.pdf"')],
                                             samples.pe_exe())))
        msgs[f"hiding {case}"] = raw.replace(b"\r\n", b"\r\n" + line + b"\r\n", 1)
    msgs.update({f"limits {k}": v for k, v in hostile_inputs().items()})
    unclosed = message(multipart(text(), attachment(samples.png(), "a.png", "image/png")))
    msgs["missing close delimiter"] = unclosed[:unclosed.rindex(b"--=_boundary")]
    msgs["bare newlines"] = message(text("one\nbare\rline\r\n")).replace(b"Subject", b"X-A: b\nSubject")
    for path in FILES:
        msgs[f"corpus {path.parent.name}/{path.name}"] = path.read_bytes()
    return msgs


MESSAGES = _messages()
_OFFLOAD_ALL = dataclasses.replace(_POLICY, plan=dataclasses.replace(_POLICY.plan, offload_over_bytes=1))
_REJECT_BARE = dataclasses.replace(_POLICY, bare_newlines=BareNewlines.REJECT,
                                   plan=dataclasses.replace(_POLICY.plan, on_ambiguous_mime=Ambiguous.REJECT))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _content(data) -> bytes:
    return data if isinstance(data, bytes) else data.read()


def _files(files) -> list:
    return [(f.part.path, f.name, f.size, f.sha256, f.wire_size, f.judgement, _content(f.data), _files(f.inner))
            for f in files]


def _outcome(raw, policy):
    """What decide and render make of `raw` (bytes or a FileBytes), comparable."""
    try:
        plan = decide(raw, policy)
    except SmtpReplyError as exc:
        return ("refused", exc.reply)
    try:
        an = plan.analysis
        # A spooled message's files were decoded into spool files (but an attached message's).
        assert all(isinstance(f.data, spool.FileBytes) == (not isinstance(raw, bytes) and f.part.embedded is None
                                                           and f.part.end > f.part.body_start) for f in an.files)
        out = render(plan)
        return (plan.refusal, an.message_id, an.forged_headers, an.partial, an.encrypted, an.uuencoded, an.containers,
                an.ambiguities, an.renamed, [(d.verdict, d.reason) for d in plan.decisions],
                _files(an.files), out if isinstance(out, bytes) else out.read_all())
    finally:
        plan.close()


@pytest.fixture
def stream_everything(monkeypatch):
    """Every part body of a spooled message is decoded by streaming (not only those over 1 MiB),
    through windows of an odd size (every search and every decoder crosses window edges)."""
    monkeypatch.setattr(decide_mod, "STREAM_OVER", 0)
    monkeypatch.setattr(spool, "WINDOW", 61)


@pytest.mark.parametrize("name", list(MESSAGES))
def test_a_spooled_message_is_decided_and_rendered_as_the_same_bytes(tmp_path, stream_everything, name):
    raw = MESSAGES[name]
    normalised = scan.normalize_line_endings(raw)
    before = _open_fds()
    for policy in (_POLICY, _OFFLOAD_ALL, _REJECT_BARE):
        with _spooled(tmp_path, normalised, bare_newlines=scan.has_bare_newlines(raw)) as fb:
            assert _outcome(fb, policy) == _outcome(raw, policy), name
    assert _open_fds() == before  # every spool file the plans made was closed
    assert list(tmp_path.iterdir()) == []


def test_large_files_of_a_spooled_message_live_in_spool_files_closed_with_the_plan(tmp_path):
    big = samples.big_pdf(3 * 1024 * 1024)
    raw = message(multipart(text(), attachment(big, "scan.pdf", "application/pdf"),
                            attachment(samples.pe_exe(), "run.exe", "application/octet-stream")))
    with _spooled(tmp_path, raw) as fb:
        plan = decide(fb, _OFFLOAD_ALL)
        pdf, exe = plan.analysis.files
        assert isinstance(pdf.data, spool.FileBytes) and pdf.data.read() == big  # over STREAM_OVER: streamed
        assert isinstance(exe.data, bytes)  # small: in memory
        assert pdf.data.directory == str(tmp_path)
        out = render(plan)
        assert isinstance(out, spool.Pieces)
        # What is kept is a range of the spool file, not a copy: the literals are only what is new.
        assert sum(len(p) for p in out.pieces if isinstance(p, bytes)) < 20_000
        assert out.read_all() == render(decide(raw, _OFFLOAD_ALL))
        plan.close()
        assert pdf.data.fd == -1


def test_a_spooled_message_is_decided_and_rendered_holding_windows_only(tmp_path):
    """A 24 MiB message whose 16 MiB file is offloaded and whose 6 MiB file is kept: what
    Python allocates on the way (decide, render, streaming the result) stays a few windows,
    not the message's size (in memory the same work holds it several times over)."""
    raw = message(multipart(text(), attachment(samples.big_pdf(16 * 1024 * 1024), "scan.pdf", "application/pdf"),
                            attachment(samples.big_pdf(2 * 1024 * 1024), "keep.pdf", "application/pdf")))
    policy = dataclasses.replace(_POLICY, plan=dataclasses.replace(_POLICY.plan, offload_over_bytes=8 * 1024 * 1024))
    with _spooled(tmp_path, raw) as fb:
        del raw
        tracemalloc.start()
        try:
            plan = decide(fb, policy)
            out = render(plan)
            sent = sum(len(chunk) for chunk in out.chunks())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert [d.verdict.value for d in plan.decisions] == ["offload", "keep"]
        assert sent == len(out) and len(out) > 2 * 1024 * 1024
        plan.close()
    assert peak < 8 * 1024 * 1024, f"{peak / 1048576:.1f} MiB held for a {len(fb) / 1048576:.1f} MiB message"


def test_spooled_mail_through_the_proxy_forged_results_signed_and_sealed(make_proxy, sink, tmp_path):
    """The auth steps on a spooled message, as in production: a forged Authentication-Results
    is dropped (the message copied without it), the rewritten message is ARC-sealed, a listed
    domain's signed message goes on untouched from its file; no spool file stays open."""
    from tests.support.dnsstub import DnsStub
    from tests.test_auth_signed import DNS, auth_overrides, dnsfunc, our_results, relayed, seal_tags, sign
    from tests.test_spool_receive import wait_no_spool_fds

    dns_server = DnsStub(DNS)
    try:
        cfg = auth_overrides(dns_server, {"on_signed": "skip", "skip_signed_domains": ["sender.test"],
                                          "offload_over_bytes": 100_000}, arc=True, tmp_path=tmp_path)
        proxy = make_proxy({**cfg, "server": {"spool_over_bytes": 64 * 1024}})
        big = samples.big_pdf(400_000)
        mail = message(multipart(text(), attachment(big, "scan.pdf", "application/pdf"),
                                 attachment(samples.pe_exe(), "invoice.pdf", "application/pdf")))
        forged = b"Authentication-Results: mx.test; dkim=pass header.d=bank.test\r\n" + mail
        got = relayed(proxy, sink, forged)
        assert b"bank.test" not in got and b"dkim=none" in our_results(got)
        assert b64(samples.pe_exe())[:76] not in got and b64(big)[:76] not in got  # stripped, offloaded
        assert b"verdict=blocked" in got and b"verdict=offload" in got
        assert [t[b"i"] for t in seal_tags(got)] == [b"1"]
        assert dkim.arc_verify(got, dnsfunc=dnsfunc)[0] == dkim.CV_Pass
        signed = sign(mail)
        got = relayed(proxy, sink, signed)
        assert got.endswith(signed) and b"action=skipped-signed" in got
        assert b"dkim=pass header.d=sender.test" in our_results(got) and dkim.verify(got, dnsfunc=dnsfunc)
        assert wait_no_spool_fds(proxy) == []
        assert list((proxy.tmp / "var" / "spool").iterdir()) == []
    finally:
        dns_server.stop()


async def test_a_cancelled_caller_waits_for_its_worker_thread_and_hands_over_what_it_made():
    """A session cancelled while decide reads its spool file in a thread: the file must not be
    closed under the thread (its descriptor could be another file's by then), and the plan the
    thread makes for nobody is closed by the orphan callback."""
    import asyncio
    import threading

    started, release, orphans = threading.Event(), threading.Event(), []

    def work() -> str:
        started.set()
        release.wait(30)
        return "plan"

    task = asyncio.ensure_future(spool.in_thread(work, orphan=orphans.append))
    await asyncio.to_thread(started.wait, 30)
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()  # twice: still waiting
    await asyncio.sleep(0.05)
    assert not task.done() and orphans == []
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert orphans == ["plan"]
