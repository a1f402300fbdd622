"""The portal's pure parts (links, tus metadata, the customer's words) and its runner's
sweep, in-process against a real local store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import structlog

from smtp_offload import config
from smtp_offload.app import build_pipeline, decide_policy, make_portal
from smtp_offload.auth import Authenticator
from smtp_offload.delivery.decide import decide_file
from smtp_offload.harness import files
from smtp_offload.metrics import Metrics
from smtp_offload.portal import words
from smtp_offload.portal.session import FileState, LinkRefused, sign, verify
from smtp_offload.portal.tus import metadata
from smtp_offload.storage import LocalStore, RoutedStore

SECRET, OLD = b"s" * 40, b"o" * 40


def _portal(tmp_path: Path, downstream_port: int, store=None):
    """A Portal in this process as app.py builds it, on a local store (or `store`), delivering to the sink."""
    cfg = config.Config()
    cfg.portal.spool_dir = str(tmp_path / "spool")
    cfg.server.accepted_domains = ["example.com"]
    cfg.downstream.host, cfg.downstream.port, cfg.downstream.tls = "127.0.0.1", downstream_port, \
        config.DownstreamTls.NONE
    store = store or LocalStore(tmp_path / "store")
    log = structlog.get_logger()
    pipeline = build_pipeline(cfg, store, [SECRET], log, Metrics(), "mx.test", Authenticator(cfg.auth, "mx.test"))
    return make_portal(cfg, pipeline.preparer, [SECRET], "mx.test", log), cfg, store


def test_a_link_verifies_with_the_current_or_an_old_secret_and_nothing_else():
    exp = int(time.time()) + 60
    token = sign(SECRET, "0" * 20, exp)
    assert verify([SECRET], token) == ("0" * 20, exp)
    assert verify([OLD, SECRET], token) == ("0" * 20, exp)  # rotation: still valid
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), token.replace("0" * 20, "1" * 20), "", "x.y.z",
                token + ".", token.upper()):
        with pytest.raises(LinkRefused) as e:
            verify([SECRET], bad)
        assert e.value.why == "tampered"
    with pytest.raises(LinkRefused) as e:
        verify([SECRET], token, now=exp)
    assert e.value.why == "expired" and e.value.expires == exp


@pytest.mark.parametrize("header, expected", [
    ("filename YS5wZGY=,filetype YXBwbGljYXRpb24vcGRm", {"filename": b"a.pdf", "filetype": b"application/pdf"}),
    ("filename YS5wZGY=,is_confidential", {"filename": b"a.pdf", "is_confidential": b""}),
    ("", {}),
])
def test_tus_metadata(header, expected):
    assert metadata(header) == expected


@pytest.mark.parametrize("header", ["filename ***", "filename a b", "filename YS5wZGY"])
def test_tus_metadata_refuses_what_it_cannot_read(header):
    with pytest.raises(ValueError):
        metadata(header)


@pytest.mark.parametrize("name, data, expected", [
    ("invoice.pdf", files.pe_exe(), "refused: this file is a Windows program, not a PDF — please send the original PDF"),
    ("photo.jpg", files.pe_exe(), "refused: this file is a Windows program, not a JPEG image — please send the "
                                  "original JPEG image"),
    ("scan.pdf", files.jpeg(), "refused: this file is a JPEG image, not a PDF — please send the original PDF"),
    ("scan.pdf", b"", "refused: this file is empty — please choose the file again"),
    ("setup.exe", b"MZ" + b"\0" * 300, "refused: programs and scripts cannot be accepted — please send a document "
                                       "or a picture"),
])
def test_refusals_in_plain_words(name, data, expected):
    d = decide_file(data, name, None, decide_policy(config.Config()))
    assert words.refusal(d.verdict, d.reason, d.file.judgement.detected_type, name) == expected


def test_not_accepted_lists_what_is():
    assert words.not_accepted("exe", ["pdf", "jpg"]) == \
        "refused: .exe files are not accepted here — please send one of: PDF, JPG"


async def test_at_expiry_received_files_are_delivered_then_everything_is_removed(tmp_path: Path, sink):
    portal, cfg, store = _portal(tmp_path, sink.port)
    made = [await portal.create({"caseId": case, "to": "a@example.com", "customerId": "acme", **ttl}, None, "acme")
            for case, ttl in (("C1", {"ttlSeconds": 60}), ("C2", {}), ("C3", {"ttlSeconds": 60}))]
    s_old, s_new, s_empty = [await portal.records.load(x["sessionId"]) for x in made]
    for s in (s_old, s_new):  # one accepted file staged
        f = await portal.begin(s, "a.pdf", 10, None)
        path = tmp_path / f"{s.id}.pdf"
        path.write_bytes(files.big_pdf(20_000))
        assert (await portal.judge(s, f, path, None)).state == FileState.RECEIVED
    for s in (s_old, s_new, s_empty):  # an upload half done in the spool
        partial = Path(cfg.portal.spool_dir) / sign(SECRET, s.id, s.expires) / ".resources"
        partial.mkdir(parents=True)
        (partial / "upload").write_bytes(b"half")

    later = s_old.expires + 1
    await portal.tick(now=later)  # C1 expired with a received file nobody sent: delivered, not dropped
    await portal.settle()
    assert len(sink.messages) == 1 and b"[Case C1]" in sink.messages[0].content
    assert sorted(await portal.records.sessions()) == sorted([s_old.id, s_new.id])  # C3 had nothing: gone
    await portal.tick(now=later)  # C1 was delivered: now it goes too
    assert await portal.records.sessions() == [s_new.id]
    staged = await store.list_records("portalstaged")
    assert len(staged) == 1 and staged[0].startswith(f"portalstaged/{s_new.id}-")
    assert not await store.list_records("portalfile", s_old.id)
    assert [d.name.split(".")[0] for d in Path(cfg.portal.spool_dir).iterdir()] == [s_new.id]
    assert list(await portal.records.open_sessions("acme", time.time())) == [s_new.id]
    assert len(sink.messages) == 1
    await portal.stop()


def test_a_check_that_never_finished_stops_holding_up_send_after_a_while():
    from smtp_offload.portal.session import ABANDONED, FileEntry, busy

    now = time.time()
    checking = FileEntry(id="0" * 16, name="a.pdf", size=1, created=now, state=FileState.CHECKING, updated=now)
    uploading = checking.with_(state=FileState.UPLOADING)
    assert busy([checking], now) and busy([uploading], now)
    assert not busy([checking], now + ABANDONED) and not busy([uploading], now + ABANDONED)
    assert not busy([checking.with_(state=FileState.RECEIVED)], now)


async def test_a_judgement_that_fails_leaves_the_file_failed_not_checking(tmp_path: Path, sink):
    portal, _cfg, _store = _portal(tmp_path, sink.port)
    made = await portal.create({"caseId": "C1", "to": "a@example.com"}, None, None)
    s = await portal.records.load(made["sessionId"])
    f = await portal.begin(s, "a.pdf", 10, None)
    judged = await portal.judge(s, f, tmp_path / "vanished.pdf", None)  # the spool file is gone
    assert judged.state == FileState.FAILED and "please add this file again" in judged.message
    assert [x.state for x in await portal.records.files(s.id)] == [FileState.FAILED]
    await portal.stop()


async def test_a_routed_customers_staged_and_sent_files_stay_in_their_store(tmp_path: Path, sink):
    default, eu = LocalStore(tmp_path / "us"), LocalStore(tmp_path / "eu")
    portal, cfg, store = _portal(tmp_path, sink.port, RoutedStore(default, {"eu": eu}, {"acme-eu": "eu"}))
    made = await portal.create({"caseId": "C9", "to": "a@example.com", "customerId": "acme-eu"}, None, "acme-eu")
    s = await portal.records.load(made["sessionId"])
    f = await portal.begin(s, "a.pdf", 10, None)
    path = tmp_path / "a.pdf"
    path.write_bytes(files.big_pdf(20_000))
    assert (await portal.judge(s, f, path, None)).state == FileState.RECEIVED
    assert len(await eu.list_records("portalstaged")) == 1  # the customer's bytes: in their region
    assert await default.list_records("portalstaged") == []
    assert await default.list_records("portal") == [f"portal/{s.id}.json"]  # the session: service state
    # The route changes before Send (acme-eu now goes to the default store): the staged file is
    # still found where it was put, and the sent one goes where acme-eu's files go now.
    portal, cfg, store = _portal(tmp_path, sink.port, RoutedStore(default, {"eu": eu}, {}))
    await portal.send(s.id, "customer")
    await portal.settle()
    assert len(sink.messages) == 1
    (sent,) = [x for x in await portal.records.files(s.id)]
    assert sent.staged_in == "eu" and not sent.storage_key.startswith("@")
    assert (await store.stat(sent.storage_key)).tenant == "acme-eu"
    assert await eu.list_records("portalstaged") == []
