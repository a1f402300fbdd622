"""The quarantine's pure parts and its records in real local stores, in process: ids, metadata,
the routing of held files to the tenant's store, the release message, the notice, the table."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import email.utils
import hashlib
import json
import os
import threading
import unicodedata
from datetime import datetime, timedelta, timezone

import pytest

from smtp_offload import spool
from smtp_offload.api.keys import Refused
from smtp_offload.config import DownstreamConfig, DownstreamTls
from smtp_offload.delivery.decide import DecidePolicy, decide_file
from smtp_offload.delivery.policy import HoldPolicy
from smtp_offload.model import FileOutcome, Verdict
from smtp_offload.notice import render as notice
from smtp_offload.quarantine import message
from smtp_offload.quarantine.command import as_json, table
from smtp_offload.quarantine.records import Held, Holder, Item, Origin, new_id, parse_id
from smtp_offload.quarantine.service import Quarantine
from smtp_offload.relay import Downstream
from smtp_offload.storage.local import LocalStore
from smtp_offload.storage.routed import RoutedStore, named
from tests.support import samples

EXE = samples.pe_exe()


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def __getattr__(self, level: str):
        return lambda event, **fields: self.events.append((level, event, fields))


def origin(tenant: str | None = None, message_id: str | None = "<m1@sender.test>") -> Origin:
    return Origin.of(message_id=message_id, subject="=?utf-8?q?Rechnung_M=C3=A4rz?=\r\n\t(2)", sender="a@sender.test",
                     recipients=("support@example.com",), from_header="Ann <a@sender.test>",
                     received=datetime.now(timezone.utc).isoformat(timespec="seconds"), tenant=tenant)


def judged(data: bytes = EXE, name: str = "invoice.pdf"):
    return decide_file(data, name, "application/pdf", DecidePolicy()).file


def item(**changes) -> Item:
    base = dict(id="0123456789abcdef", message_id="<m1@sender.test>", subject="Invoice", sender="a@sender.test",
                recipients=("support@example.com", "sales@example.com"), from_header="Ann <a@sender.test>",
                filename="invoice.pdf", size=len(EXE), sha256=hashlib.sha256(EXE).hexdigest(),
                detected_type="application/x-dosexec", verdict="blocked", reason="Windows executable",
                received="2026-11-23T10:00:00+00:00", tenant="example.com")
    return Item(**{**base, **changes})


def test_ids_carry_the_store_name_and_follow_the_message():
    assert parse_id(new_id("", "seed")) == ("", new_id("", "seed"))
    assert new_id("eu", "seed") == "eu-" + new_id("", "seed") and parse_id(new_id("eu", "seed"))[0] == "eu"
    assert new_id("", None) != new_id("", None)  # no Message-ID: random
    for bad in ("", "0123456789ABCDEF", "../0123456789abcdef", "0123456789abcdef.json", "x" * 20, None, 7,
                "Eu-0123456789abcdef", "-0123456789abcdef"):
        with pytest.raises(KeyError):
            parse_id(bad)


def test_origin_reads_encoded_words_and_drops_line_breaks():
    o = origin()
    assert o.subject == "Rechnung März (2)" and o.from_header == "Ann <a@sender.test>"


def test_an_item_round_trips_and_belongs_to_its_tenant_only():
    i = item()
    assert Item.from_bytes(i.to_bytes()) == i
    assert i.belongs_to(None) and i.belongs_to("Example.COM") and not i.belongs_to("other.test")
    assert not item(tenant=None).belongs_to("example.com")
    public = i.public(30)
    assert public["expiresAt"] == "2026-12-23T10:00:00Z" and public["released"] is False
    assert "storage" not in str(public).lower()


def test_a_held_file_goes_to_its_tenants_store(tmp_path):
    default, eu = LocalStore(tmp_path / "default"), LocalStore(tmp_path / "eu")
    store = RoutedStore(default, {"eu": eu}, {"example.de": "eu"})
    log = Log()
    holder = Holder(store, timeout=30, log=log)

    async def go():
        here = await holder.hold(judged(), "blocked", "Windows executable", origin("example.com"), "2")
        there = await holder.hold(judged(), "blocked", "Windows executable", origin("Example.DE"), "2")
        again = await holder.hold(judged(), "blocked", "Windows executable", origin("Example.DE"), "2")
        return here, there, again, (await Held(store).scan()).items, await default.list_records("quarantine"), \
            await eu.list_records("quarantine"), await Held(store).data(there)

    here, there, again, items, in_default, in_eu, data = asyncio.run(go())
    assert parse_id(here)[0] == "" and there.startswith("eu-") and again == there  # a retry holds it once
    assert in_default == [f"quarantine/{here}.json"] and in_eu == [f"quarantine/{there}.json"]
    assert data == EXE and {i.id for i in items} == {here, there}
    assert [e[1] for e in log.events] == ["quarantine_hold"] * 2 + ["quarantine_hold_exists"]


def test_a_spooled_file_is_held_from_its_file_in_the_tenants_store(tmp_path):
    """A large attachment of a spooled message is a FileBytes: held (copied a chunk at a time)
    with its size and sha256, its bytes given back whole, the caller's file left open."""
    data = EXE + os.urandom(3 * 1024 * 1024)
    f = judged(data)
    w = spool.SpoolWriter(str(tmp_path))
    w.write(data)
    default, eu = LocalStore(tmp_path / "default"), LocalStore(tmp_path / "eu")
    store = RoutedStore(default, {"eu": eu}, {"example.de": "eu"})
    log = Log()

    async def go():
        with w.finish() as fb:
            qid = await Holder(store, timeout=30, log=log).hold(dataclasses.replace(f, data=fb), "blocked",
                                                                "Windows executable", origin("example.de"), "2")
            assert fb[:2] == b"MZ"  # still the caller's, open
        return qid, await Held(store).get(qid), await Held(store).data(qid), await default.list_records("quarantined")

    qid, kept, held, in_default = asyncio.run(go())
    assert qid.startswith("eu-") and in_default == []
    assert (kept.size, kept.sha256) == (len(data), hashlib.sha256(data).hexdigest()) == (f.size, f.sha256)
    assert held == data
    assert [e[1] for e in log.events] == ["quarantine_hold"]


def test_a_store_that_fails_holds_nothing_and_says_so(tmp_path):
    store = LocalStore(tmp_path / "s")
    (tmp_path / "s" / ".records").mkdir(exist_ok=True)
    (tmp_path / "s" / ".records" / "quarantined").write_text("in the way")  # every write of the bytes fails
    log = Log()
    assert asyncio.run(Holder(store, timeout=30, log=log).hold(judged(), "blocked", "x", origin(), "2")) is None
    ((level, event, fields),) = log.events
    assert (level, event, fields["error"]) == ("warning", "quarantine_hold_failed", "StorageError")
    assert asyncio.run(Held(store).scan()).items == []


def test_the_release_message_is_threaded_and_carries_the_file():
    at = datetime(2026, 11, 24, 9, 30, tzinfo=timezone.utc)
    raw = message.render(item(), EXE, None, sender="postmaster@mx.test", by="cli:root", released_at=at)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == "postmaster@mx.test" and msg["To"] == "support@example.com, sales@example.com"
    assert msg["In-Reply-To"] == msg["References"] == "<m1@sender.test>" and msg["Auto-Submitted"] == "auto-generated"
    assert msg["Subject"] == "Released from quarantine: Invoice"
    (att,) = msg.iter_attachments()
    assert att.get_content() == EXE and att.get_filename() == "invoice.pdf"
    note = msg.get_body(("plain",)).get_content()
    assert "cli:root" in note and "blocked: Windows executable" in note and "0123456789abcdef" in note
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998 and raw.isascii()


def test_a_large_release_is_a_link_and_a_bad_message_id_is_not_threaded():
    link = FileOutcome(judged(), Verdict.OFFLOAD, "r", "k", "http://links.test/f/tok", 1_900_000_000)
    raw = message.render(item(message_id="not-an-id\r\nBcc: x@y"), None, link, sender="q@mx.test", by="key-1",
                         released_at=datetime.now(timezone.utc))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["In-Reply-To"] is None and msg["Bcc"] is None and list(msg.iter_attachments()) == []
    assert "http://links.test/f/tok" in msg.get_body(("plain",)).get_content()


def test_the_notice_quotes_the_id_only_when_a_copy_was_kept():
    f = judged()
    kept = FileOutcome(f, Verdict.BLOCKED, "Windows executable", quarantine_id="eu-0123456789abcdef")
    plain, html = notice([kept])
    for text in (plain, html):
        assert "A copy is held in quarantine" in text
        # the text notice wraps its lines; read it as one paragraph
        assert "an administrator can release it with quarantine id eu-0123456789abcdef." in " ".join(text.split())
    plain, html = notice([FileOutcome(f, Verdict.BLOCKED, "Windows executable")])
    assert "quarantine" not in plain and "quarantine" not in html


def test_the_table_has_one_line_per_item():
    rows = table([item(), item(id="eu-0123456789abcdef", released_at="2026-11-24T09:30:00Z",
                               received=(datetime(2026, 11, 23, 10, tzinfo=timezone.utc)
                                         + timedelta(hours=1)).isoformat())]).splitlines()
    assert rows[0].split() == ["id", "received", "from", "to", "file", "verdict", "reason"]
    assert rows[1].startswith("0123456789abcdef") and "2026-11-23 10:00" in rows[1] and "invoice.pdf" in rows[1]
    assert "blocked (released)" in rows[2]
    assert table([]) == "nothing is held in quarantine"


# -- review fixes: partial listing and purge, release against delete, kept ids, what is shown --

def quarantine(store, log: Log, downstream_port: int = 9, **policy) -> Quarantine:
    cfg = DownstreamConfig(host="127.0.0.1", port=downstream_port, tls=DownstreamTls.NONE)
    return Quarantine(store=store, policy=HoldPolicy(quarantine=True, **policy), preparer=None,
                      offload_over_bytes=10_000_000, downstream=lambda: Downstream(cfg, "mx.test"),
                      hostname="mx.test", log=log)


async def put(store, **changes) -> Item:
    i = item(**changes)
    await Held(store).put(i, EXE, named(store, parse_id(i.id)[0]))
    return i


def test_one_store_down_or_one_bad_record_hides_and_stops_nothing_else(tmp_path):
    default, eu = LocalStore(tmp_path / "default"), LocalStore(tmp_path / "eu")
    store = RoutedStore(default, {"eu": eu}, {"example.de": "eu"})
    log = Log()
    q = quarantine(store, log, quarantine_retention_days=7)
    records = tmp_path / "default" / ".records" / "quarantine"

    async def go():
        old = await put(store, id="00000000000000aa", received="2020-01-01T00:00:00+00:00")
        new = await put(store, id="00000000000000bb", received=datetime.now(timezone.utc).isoformat())
        await put(store, id="eu-00000000000000cc", tenant="example.de", received="2020-01-01T00:00:00+00:00")
        (records / "00000000000000dd.json").write_text("{not json")
        (records / "00000000000000ee.json").write_text(item(received="yesterday").to_bytes().decode())
        # A record naming another id: deleting "it" would delete that other item.
        (records / "00000000000000ff.json").write_bytes(item(id=new.id).to_bytes())
        (tmp_path / "eu").rename(tmp_path / "eu-unmounted")
        listed = await q.list()
        purged = await q.purge()
        return old, new, listed, purged, await q.list()

    old, new, listed, purged, after = asyncio.run(go())
    assert [i.id for i in listed.items] == [old.id, new.id] and list(listed.unavailable) == ["eu"]
    assert sorted(listed.unreadable) == ["00000000000000dd", "00000000000000ee", "00000000000000ff"]
    assert purged.purged == [old.id] and purged.unavailable == ["eu"] and not purged.complete
    assert [i.id for i in after.items] == [new.id]
    warned = {(e, f.get("store") or f.get("id")) for level, e, f in log.events if level == "warning"}
    assert {("quarantine_list_store_unavailable", "eu"), ("quarantine_list_unreadable", "00000000000000dd"),
            ("quarantine_purge_store_unavailable", "eu")} <= warned
    (tmp_path / "default").rename(tmp_path / "default-unmounted")
    with pytest.raises(Refused) as nothing:  # no store answered: not an empty list
        asyncio.run(q.list())
    assert nothing.value.status == 503


def test_a_purge_goes_on_past_an_item_it_cannot_delete(tmp_path):
    store = LocalStore(tmp_path / "s")
    log = Log()
    q = quarantine(store, log, quarantine_retention_days=7)

    async def go():
        for qid in ("00000000000000aa", "00000000000000bb"):
            await put(store, id=qid, received="2020-01-01T00:00:00+00:00")
        # The bytes' name taken by a directory that is not empty: deleting that item fails.
        data = tmp_path / "s" / ".records" / "quarantined"
        (data / "00000000000000aa").unlink()
        (data / "00000000000000aa").mkdir()
        (data / "00000000000000aa" / "x").write_text("x")
        return await q.purge()

    done = asyncio.run(go())
    assert done.purged == ["00000000000000bb"] and done.failed == ["00000000000000aa"]
    assert ("warning", "quarantine_purge_failed") in [(lv, e) for lv, e, _ in log.events]


def test_a_delete_during_a_release_elsewhere_is_not_undone(tmp_path, sink):
    """Another instance (or the command line) deletes the item while this one's release is on
    its way downstream: the release must not write the item back."""
    store = LocalStore(tmp_path / "s")
    log = Log()
    q = quarantine(store, log, sink.port)
    elsewhere = Held(LocalStore(tmp_path / "s"))
    accept = sink.recorder.handle_DATA

    async def delete_then_accept(server, session, envelope):
        await elsewhere.delete("0123456789abcdef")
        return await accept(server, session, envelope)

    sink.recorder.handle_DATA = delete_then_accept

    async def go():
        await put(store)
        released = await q.release("0123456789abcdef", "cli:test")
        return released, (await Held(store).scan()).items

    released, left = asyncio.run(go())
    assert released.released_by == "cli:test" and len(sink.messages) == 1  # it was delivered
    assert left == [] and not list((tmp_path / "s").rglob("0123456789abcdef*"))
    assert [(lv, e) for lv, e, _ in log.events if e == "quarantine_release_unrecorded"] == [
        ("warning", "quarantine_release_unrecorded")]


def test_a_delete_here_waits_for_the_release_in_flight(tmp_path, sink):
    store = LocalStore(tmp_path / "s")
    log = Log()
    q = quarantine(store, log, sink.port)
    in_data, go_on = threading.Event(), threading.Event()
    accept = sink.recorder.handle_DATA

    async def held_up(server, session, envelope):
        in_data.set()
        await asyncio.to_thread(go_on.wait, 60)
        return await accept(server, session, envelope)

    sink.recorder.handle_DATA = held_up

    async def go():
        await put(store)
        release = asyncio.create_task(q.release("0123456789abcdef", "cli:test"))
        await asyncio.to_thread(in_data.wait, 60)
        delete = asyncio.create_task(q.delete("0123456789abcdef", "cli:test"))
        # Time for a delete that does not wait to finish first (and the release to write the
        # item back); one that waits is simply still waiting. The outcome below is the same
        # however long this takes.
        await asyncio.wait({delete}, timeout=0.5)
        go_on.set()
        await release
        await delete
        return (await Held(store).scan()).items

    assert asyncio.run(go()) == []
    assert [e for _, e, _ in log.events if e in ("quarantine_release", "quarantine_delete")] == [
        "quarantine_release", "quarantine_delete"]


def test_the_same_message_again_keeps_the_item_it_found(tmp_path):
    """The id follows what the sender chose: sending the message again, to other recipients,
    must neither redirect a release nor clear the released state."""
    store = LocalStore(tmp_path / "s")
    holder = Holder(store, timeout=30, log=Log())
    again = dataclasses.replace(origin(), recipients=("someone-else@example.com",))

    async def go():
        qid = await holder.hold(judged(), "blocked", "x", origin(), "2")
        first = await Held(store).get(qid)
        await Held(store).save(dataclasses.replace(first, released_at="2026-11-24T09:30:00Z", released_by="cli:a"))
        same = await holder.hold(judged(), "blocked", "x", again, "2")
        await holder.discard((same,))  # that second delivery failing takes nothing of the first
        return qid, same, await Held(store).get(qid)

    qid, same, kept = asyncio.run(go())
    assert same == qid and kept.recipients == ("support@example.com",)
    assert (kept.released_at, kept.released_by) == ("2026-11-24T09:30:00Z", "cli:a")


def test_a_failed_delivery_discards_what_it_held_and_the_retry_holds_it_again(tmp_path):
    store = LocalStore(tmp_path / "s")
    holder = Holder(store, timeout=30, log=Log())

    async def go():
        qid = await holder.hold(judged(), "blocked", "x", origin(), "2")
        await holder.discard((qid,))
        gone = (await Held(store).scan()).items
        return qid, gone, await holder.hold(judged(), "blocked", "x", origin(), "2"), (await Held(store).scan()).items

    qid, gone, retried, items = asyncio.run(go())
    assert gone == [] and retried == qid and [i.id for i in items] == [qid]


HOSTILE = "\x1b]0;pwned\x07inv\x9b2J\u202eoice\u2028fdp.exe"


def test_the_table_and_the_json_show_no_terminal_controls():
    rows = table([item(filename=HOSTILE, subject=HOSTILE, reason="bad\x1b[31m" + HOSTILE,
                       from_header="\u200fAnn\x00", recipients=("a\x1b[2J@example.com",))])
    assert not [c for c in rows if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c != "\n"]
    assert len(rows.splitlines()) == 2 and "?]0;pwned?inv?2J?oice?fdp.exe" in rows
    out = as_json({"fileName": HOSTILE, "ok": "Rechnung März"})
    assert not [c for c in out if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c != "\n"]
    assert json.loads(out) == {"fileName": HOSTILE, "ok": "Rechnung März"} and "März" in out


def test_the_released_attachment_has_an_ascii_name_and_the_real_one():
    raw = message.render(item(filename="Rechnung März.pdf"), EXE, None, sender="p@mx.test", by="cli:root",
                         released_at=datetime.now(timezone.utc))
    (att,) = email.message_from_bytes(raw, policy=email.policy.default).iter_attachments()
    # As written (compat32 keeps header text as it is; the default policy rewrites it).
    (disposition,) = [" ".join(p["Content-Disposition"].split()) for p in
                      email.message_from_bytes(raw, policy=email.policy.compat32).walk() if p["Content-Disposition"]]
    assert 'filename="Rechnung Marz.pdf";' in disposition  # for clients that read no RFC 2231
    assert "filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf" in disposition
    assert att.get_content() == EXE
    assert raw.isascii() and max(len(line) for line in raw.split(b"\r\n")) <= 998
