"""Short links (links.short, links/grants.py): at most 100 characters with a 30-character
base_url, the grant kept in the store, and links mailed before (self-contained tokens) still
working. End to end through the proxy where it matters; the rest against a LinkServer."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from pathlib import Path

import pytest

from smtp_offload.config import LinksConfig
from smtp_offload.errors import StorageError
from smtp_offload.links import BadToken, ExpiredToken, Grant, grants
from smtp_offload.links.service import LinkService, mint
from smtp_offload.storage import LocalStore, StoredObject, make_key
from smtp_offload.storage.routed import RoutedStore
from tests.support.http import get
from tests.support.mail import attachment, message, multipart, text
from tests.support.relayed import body_text
from tests.support.samples import big_pdf

SECRET, OLD = b"s" * 40, b"o" * 40
BASE30 = "https://files.example-corp.com"  # 30 characters, as the issue asks
ANY_LINK = re.compile(r"https?://[^\s<>\"]+/f/[A-Za-z0-9._~%-]+")


def links_in(raw: bytes) -> set[str]:
    return set(ANY_LINK.findall(body_text(raw)))


async def stored(store, data: bytes = b"data", name: str = "scan.pdf", tenant: str | None = None) -> StoredObject:
    obj = StoredObject(key=make_key(name, tenant=tenant), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       content_type="application/pdf", filename=name, message_id="<m@example.com>",
                       tenant=tenant)
    return await store.put(data, obj)


def test_ids_are_short_and_carry_their_store() -> None:
    plain, routed = grants.new_id(SECRET), grants.new_id(SECRET, "a" * 16)
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", plain) and routed.startswith("a" * 16 + ".")
    # The longest link: a 30-character base and the longest store name.
    assert len(f"{BASE30}/f/{routed}") <= 100
    assert grants.is_link_id(plain) and grants.is_link_id(routed)
    assert not grants.is_link_id("v2.abc.def") and not grants.is_link_id(plain[:-1])
    # Never an option to the command line: `smtp-offload links show <id>` must read it as the link.
    assert not any(grants.new_id(SECRET).startswith("-") for _ in range(2000))


class NoRecords(LocalStore):
    """A store that must not be asked: a made-up id is refused by its MAC alone."""

    async def get_record(self, name: str) -> bytes:
        raise AssertionError(f"the store was asked for {name}")


async def test_a_made_up_or_altered_id_is_refused_without_asking_the_store(tmp_path: Path) -> None:
    service = LinkService(NoRecords(tmp_path), [SECRET], LinksConfig())
    real = grants.new_id(SECRET)
    altered = real[:5] + ("A" if real[5] != "A" else "B") + real[6:]
    for link in (altered, "A" * 32, grants.new_id(b"x" * 40), "eu." + real):
        with pytest.raises(BadToken):
            await service.grant(link)


async def test_round_trip_rotation_expiry_and_a_missing_or_unreadable_record(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    obj = await stored(store)
    minted = await mint(store, OLD, LinksConfig(base_url=BASE30), obj, 600)
    link = minted.url.rsplit("/f/", 1)[1]
    assert len(minted.url) <= 100
    # Made before the rotation: verifies while OLD is still configured.
    grant = await LinkService(store, [SECRET, OLD], LinksConfig()).grant(link)
    assert (grant.key, grant.token_id, grant.expires) == (obj.key, minted.token_id, minted.expires)
    with pytest.raises(BadToken):
        await LinkService(store, [SECRET], LinksConfig()).grant(link)

    expired = grants.new_id(SECRET)
    await grants.save(store, expired, Grant(obj.key, 1_700_000_000, "0123456789abcdef"), [SECRET])
    service = LinkService(store, [SECRET], LinksConfig())
    with pytest.raises(ExpiredToken) as e:
        await service.grant(expired)
    assert e.value.grant.key == obj.key  # the expired page and "Get a new link" need it
    assert (await service.grant(expired, allow_expired=True)).token_id == "0123456789abcdef"

    body = link.rsplit(".", 1)[-1]
    await store.delete_record(f"link/{body}")
    with pytest.raises(BadToken):  # deleted (retention): as if it never existed
        await LinkService(store, [OLD], LinksConfig()).grant(link)
    unreadable = grants.new_id(SECRET)
    await store.put_record(f"link/{unreadable}", b'{"key": 5}')
    with pytest.raises(BadToken):
        await service.grant(unreadable)


class DownRecords(LocalStore):
    """Fails as a store does: its message names the record (and so the link id)."""

    async def get_record(self, name: str) -> bytes:
        raise StorageError(f"reading record {name} failed: connection refused")

    async def put_record(self, name: str, data: bytes) -> None:
        raise StorageError(f"writing record {name} failed: connection refused")


async def test_a_store_that_cannot_answer_is_not_a_bad_link_and_its_error_names_no_link(tmp_path: Path) -> None:
    """Storage down must read "try again later", never "this link is not valid"; and the error,
    which reaches the audit log, must not carry the id: it is the link itself."""
    store = DownRecords(tmp_path)
    link = grants.new_id(SECRET)
    with pytest.raises(StorageError) as e:
        await LinkService(store, [SECRET], LinksConfig()).grant(link)
    assert link not in str(e.value) and "connection refused" in str(e.value)
    obj = await stored(store)
    with pytest.raises(StorageError) as e:
        await mint(store, SECRET, LinksConfig(), obj, 600)
    assert not re.search(r"[A-Za-z0-9_-]{32}", str(e.value)) and "connection refused" in str(e.value)


async def test_a_routed_file_keeps_its_link_record_in_its_own_store(tmp_path: Path) -> None:
    default, eu = LocalStore(tmp_path / "default"), LocalStore(tmp_path / "eu")
    store = RoutedStore(default, {"eu": eu}, {"acme-eu": "eu"})
    obj = await stored(store, tenant="acme-eu")
    assert obj.key.startswith("@eu/")
    minted = await mint(store, SECRET, LinksConfig(base_url=BASE30), obj, 600)
    link = minted.url.rsplit("/f/", 1)[1]
    assert link.startswith("eu.") and len(minted.url) <= 100
    body = link.split(".", 1)[1]
    assert await eu.list_records("link") == [f"link/{body}"]
    assert await default.list_records("link") == []  # nothing about an EU customer's file elsewhere
    assert (await LinkService(store, [SECRET], LinksConfig()).grant(link)).key == obj.key


def _links_cfg(**extra) -> dict:
    return {"policy": {"offload_over_bytes": 10_000}, "links": {"base_url": BASE30, **extra}}


def _served(proxy, link: str) -> str:
    """The mailed link, pointed at the proxy's link server (BASE30 is not this machine)."""
    return f"http://127.0.0.1:{proxy.links_port}" + urllib.parse.urlsplit(link).path


def test_the_mailed_link_is_at_most_100_characters_and_serves_the_file(make_proxy, sink) -> None:
    proxy = make_proxy(_links_cfg())
    data = big_pdf(60_000)
    name = "Schadenfoto mit einem wirklich sehr langen Dateinamen vom Kunden 2026-11-30.pdf"
    assert proxy.send(message(multipart(text(), attachment(data, name, "application/pdf"))))[0] == 250
    (link,) = links_in(sink.messages[-1].content)
    assert len(link) <= 100, link
    status, _, page = get(_served(proxy, link))
    assert status == 200 and "Schadenfoto" in page.decode()
    status, _, body = get(_served(proxy, link) + "/download")
    assert status == 200 and hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    # Nothing reached by a link, only a record of it:
    assert len(list((proxy.store / ".records" / "link").iterdir())) == 1


def test_links_mailed_as_tokens_keep_working_after_the_switch(make_proxy, sink) -> None:
    before = make_proxy(_links_cfg(short=False))
    data = big_pdf(40_000)
    assert before.send(message(multipart(text(), attachment(data, "old.pdf", "application/pdf"))))[0] == 250
    (old,) = links_in(sink.messages[-1].content)
    assert "/f/v2." in old and len(old) > 100  # what mail carried before
    before.stop()
    after = make_proxy({**_links_cfg(), "storage.local": {"path": str(before.store)},
                        "links": {"base_url": BASE30, "secret_file": str(before.tmp / "link-secret")}})
    status, _, body = get(_served(after, old) + "/download")
    assert status == 200 and body == data
    assert after.send(message(multipart(text(), attachment(data, "new.pdf", "application/pdf"))))[0] == 250
    (new,) = links_in(sink.messages[-1].content)
    assert len(new) <= 100 and get(_served(after, new) + "/download")[2] == data
    records = [json.loads(p.read_bytes()) for p in (before.store / ".records" / "link").iterdir()]
    assert [r["key"].rsplit("/", 1)[-1] for r in records] == ["new.pdf"]
