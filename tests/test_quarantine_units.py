"""The quarantine's pure parts and its records in real local stores, in process: ids, metadata,
the routing of held files to the tenant's store, the release message, the notice, the table."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
from datetime import datetime, timedelta, timezone

import pytest

from smtp_offload.delivery.decide import DecidePolicy, decide_file
from smtp_offload.model import FileOutcome, Verdict
from smtp_offload.notice import render as notice
from smtp_offload.quarantine import message
from smtp_offload.quarantine.command import table
from smtp_offload.quarantine.records import Held, Holder, Item, Origin, new_id, parse_id
from smtp_offload.storage.local import LocalStore
from smtp_offload.storage.routed import RoutedStore
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
        return here, there, again, await Held(store).items(), await default.list_records("quarantine"), \
            await eu.list_records("quarantine"), await Held(store).data(there)

    here, there, again, items, in_default, in_eu, data = asyncio.run(go())
    assert parse_id(here)[0] == "" and there.startswith("eu-") and again == there  # a retry holds it once
    assert in_default == [f"quarantine/{here}.json"] and in_eu == [f"quarantine/{there}.json"]
    assert data == EXE and {i.id for i in items} == {here, there}
    assert [e[1] for e in log.events] == ["quarantine_hold"] * 3


def test_a_store_that_fails_holds_nothing_and_says_so(tmp_path):
    store = LocalStore(tmp_path / "s")
    (tmp_path / "s" / ".records").mkdir(exist_ok=True)
    (tmp_path / "s" / ".records" / "quarantined").write_text("in the way")  # every write of the bytes fails
    log = Log()
    assert asyncio.run(Holder(store, timeout=30, log=log).hold(judged(), "blocked", "x", origin(), "2")) is None
    ((level, event, fields),) = log.events
    assert (level, event, fields["error"]) == ("warning", "quarantine_hold_failed", "StorageError")
    assert asyncio.run(Held(store).items()) == []


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
        assert "An administrator can release it: quarantine id eu-0123456789abcdef" in text
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
