"""GcsStore against gcp-storage-emulator on loopback, and the proxy with storage.backend = "gcs"
end to end over SMTP and HTTP. What the emulator cannot check (signatures, expiry, 403s) is
listed in tests/support/gcs.py; signatures are verified here against the test key instead."""

from __future__ import annotations

import binascii
import hashlib
import json
import os
import re
import urllib.parse
import urllib.request

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from smtp_offload.errors import StorageError
from smtp_offload.storage import CHUNK_SIZE, StoredObject, content_disposition, make_key
from smtp_offload.storage.gcs import GcsStore
from tests.support import samples
from tests.support.gcs import gcs_config, gcs_down_config, service_account_key
from tests.support.http import get
from tests.support.mail import big_message
from tests.support.proc import refused_start
from tests.support.relayed import LINK, assert_fails_open, attachment_payloads, body_text

UNICODE_NAME = "Отчёт №5 – Müller 報告.pdf"


def new_object(store: GcsStore, data: bytes, name: str, **kw) -> StoredObject:
    return StoredObject(key=make_key(name, prefix=store.key_prefix, tenant=kw.get("tenant")), size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), content_type=kw.pop("content_type", "application/pdf"),
                        filename=name, **kw)


def object_resource(emulator, bucket: str, key: str) -> dict:
    url = f"{emulator.endpoint}/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def verify_v4_signature(url: str, public_pem: bytes) -> None:
    """Rebuild the V4 string-to-sign from the URL (Google's documented canonical request) and
    check X-Goog-Signature against the key's public half: raises InvalidSignature otherwise."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    signature = dict(query)["X-Goog-Signature"]
    canonical_query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                               for k, v in sorted(q for q in query if q[0] != "X-Goog-Signature"))
    request = "\n".join(["GET", parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"])
    q = dict(query)
    scope = q["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(["GOOG4-RSA-SHA256", q["X-Goog-Date"], scope, hashlib.sha256(request.encode()).hexdigest()])
    key = serialization.load_pem_public_key(public_pem)
    key.verify(binascii.unhexlify(signature), to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())


# -- the store ------------------------------------------------------------------

async def test_unicode_metadata_round_trips_and_the_object_carries_its_download_headers(gcs_emulator):
    cfg = gcs_config(gcs_emulator)
    store = GcsStore(cfg)
    data = samples.pdf()
    obj = new_object(store, data, UNICODE_NAME, message_id="<m1@sender.test>", sender="kundé@sender.test",
                     date="2026-11-23T10:00:00+00:00", tenant="example.com")
    try:
        assert await store.put(data, obj) == obj
        assert await store.stat(obj.key) == obj
        res = object_resource(gcs_emulator, cfg.bucket, obj.key)
        assert res["contentType"] == "application/pdf"
        assert res["contentDisposition"] == content_disposition(UNICODE_NAME)
        # Stored percent-encoded: the same values come back as x-goog-meta-* HTTP headers.
        assert all(v.isascii() for v in res["metadata"].values())
        assert res["metadata"]["sha256"] == obj.sha256 and "message-id" in res["metadata"]
        assert b"".join([c async for c in await store.open(obj.key)]) == data
    finally:
        await store.close()


async def test_ranged_reads_stream_in_chunks(gcs_emulator):
    store = GcsStore(gcs_config(gcs_emulator))
    data = os.urandom(CHUNK_SIZE * 2 + 1000)
    obj = new_object(store, data, "big.bin", content_type="application/octet-stream")
    await store.put(data, obj)
    try:
        chunks = [c async for c in await store.open(obj.key)]
        assert b"".join(chunks) == data and len(chunks) >= 3 and max(map(len, chunks)) <= CHUNK_SIZE
        assert b"".join([c async for c in await store.open(obj.key, 10, 20)]) == data[10:20]
        assert b"".join([c async for c in await store.open(obj.key, CHUNK_SIZE + 5)]) == data[CHUNK_SIZE + 5:]
        assert [c async for c in await store.open(obj.key, 7, 7)] == []
        reader = await store.open(obj.key)
        assert len(await reader.__anext__()) > 0
        await reader.aclose()  # stopping early releases the connection
        with pytest.raises(ValueError):
            await store.open(obj.key, 20, 10)
    finally:
        await store.close()


async def test_absent_objects(gcs_emulator):
    store = GcsStore(gcs_config(gcs_emulator))
    key = make_key("gone.pdf", prefix=store.key_prefix)
    with pytest.raises(KeyError):
        await store.stat(key)
    with pytest.raises(KeyError):
        await store.open(key)  # on the await, before any iteration
    with pytest.raises(KeyError):
        await store.open(key, 3, 3)
    await store.delete(key)  # idempotent
    data = samples.pdf()
    obj = new_object(store, data, "there.pdf")
    await store.put(data, obj)
    await store.delete(obj.key)
    await store.delete(obj.key)
    with pytest.raises(KeyError):
        await store.stat(obj.key)
    await store.close()


async def test_check_writes_and_removes_its_probe(gcs_emulator):
    cfg = gcs_config(gcs_emulator, prefix="offload")
    store = GcsStore(cfg)
    await store.check()
    assert gcs_emulator.names(cfg.bucket) == []
    await store.close()


async def test_missing_bucket_is_a_permanent_readable_error(gcs_emulator):
    cfg = gcs_config(gcs_emulator)
    store = GcsStore(type(cfg)(bucket="no-such-bucket-here", prefix="t", endpoint_url=gcs_emulator.endpoint))
    for attempt in (store.check(), store.put(b"x", new_object(store, b"x", "x.txt", content_type="text/plain")),
                    store.put_record("jobs/abc", b"{}"), store.list_records("jobs")):
        with pytest.raises(StorageError) as err:
            await attempt
        assert err.value.permanent and str(err.value) == "bucket 'no-such-bucket-here' does not exist"
    await store.close()


async def test_unreachable_endpoint_is_a_passing_error(gcs_emulator):
    store = GcsStore(gcs_down_config())
    for attempt in (store.check(), store.stat(make_key("a.pdf", prefix="t")), store.list_records("jobs")):
        with pytest.raises(StorageError) as err:
            await attempt
        assert not err.value.permanent
        assert str(err.value) == f"cannot reach the GCS endpoint {store.endpoint}"
    await store.close()


async def test_unreadable_key_file_is_permanent(gcs_emulator, tmp_path):
    (tmp_path / "key.json").write_text("{not json")
    store = GcsStore(gcs_config(gcs_emulator, credentials_file=str(tmp_path / "key.json")))
    with pytest.raises(StorageError) as err:
        await store.check()
    assert err.value.permanent and f"cannot read storage.gcs.credentials_file {tmp_path / 'key.json'}" in str(err.value)
    await store.close()


async def test_records_and_revocations_live_under_dot_segments(gcs_emulator):
    """Where internal objects live in the bucket (their behaviour: tests/test_store_contract.py),
    where no object key, and so no link, reaches them."""
    cfg = gcs_config(gcs_emulator, prefix="offload")
    store = GcsStore(cfg)
    await store.put_record("jobs/a1.json", b"{}")
    await store.revoke("abc123")
    await store.check()
    assert sorted(gcs_emulator.names(cfg.bucket)) == ["offload/.records/jobs/a1.json", "offload/.revoked/abc123"]
    await store.close()


async def test_without_a_key_an_emulator_store_cannot_sign(gcs_emulator, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    store = GcsStore(gcs_config(gcs_emulator, signing=False))
    obj = new_object(store, b"x", "x.pdf")
    assert await store.presign(obj, 60) is None  # the link service streams instead
    assert "credentials_file" in await store.presign_problem()
    await store.close()


async def test_signed_url_is_v4_for_the_object_and_serves_it(gcs_emulator, tmp_path):
    key_file, public = service_account_key(tmp_path)
    store = GcsStore(gcs_config(gcs_emulator, credentials_file=str(key_file)))
    data = samples.pdf()
    obj = new_object(store, data, UNICODE_NAME)
    await store.put(data, obj)
    assert await store.presign_problem() is None
    url = await store.presign(obj, 120)
    parts = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(parts.query))
    assert url.startswith(f"{gcs_emulator.endpoint}/{store.bucket_name}/")
    assert urllib.parse.unquote(parts.path) == f"/{store.bucket_name}/{obj.key}"
    assert q["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256" and q["X-Goog-Expires"] == "120"
    assert q["X-Goog-Credential"].startswith("signer@smtp-offload-test.iam.gserviceaccount.com/")
    assert q["response-content-disposition"] == content_disposition(UNICODE_NAME)
    assert q["response-content-type"] == "application/pdf"
    verify_v4_signature(url, public)
    # The emulator serves the signed path (it cannot check the signature: done above).
    status, headers, body = get(url)
    assert status == 200 and body == data
    assert headers["Content-Disposition"] == content_disposition(UNICODE_NAME)
    await store.close()


# -- end to end: the proxy process with storage.backend = "gcs" ---------------------------

def gcs_overrides(cfg, **links) -> dict:
    return {"storage": {"backend": "gcs"},
            "storage.gcs": {"bucket": cfg.bucket, "endpoint_url": cfg.endpoint_url, "prefix": "offload",
                            **({"credentials_file": cfg.credentials_file} if cfg.credentials_file else {})},
            "policy": {"offload_over_bytes": 50_000},
            **({"links": links} if links else {})}


def offloaded_link(sink) -> str:
    got = sink.messages[0].content
    assert attachment_payloads(got) == {}
    (link,) = set(LINK.findall(body_text(got).encode()))
    return link.decode()


def stored(emulator, bucket: str) -> list[str]:
    return [n for n in emulator.names(bucket) if "/." not in n]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_redirect_mode_redirects_to_a_signed_url_that_downloads_the_file(make_proxy, sink, gcs_emulator, tmp_path):
    key_file, public = service_account_key(tmp_path)
    cfg = gcs_config(gcs_emulator, credentials_file=str(key_file))
    proxy = make_proxy(gcs_overrides(cfg, click_ttl_seconds=120))
    msg, data = big_message()
    assert proxy.send(msg)[0] == 250
    link = offloaded_link(sink)
    assert gcs_emulator.endpoint not in body_text(sink.messages[0].content)  # no storage URL in the mail
    status, _, page = get(link)
    assert status == 200 and b"scan.pdf" in page
    status, headers, _ = get(link.rstrip("/") + "/download", follow=False)
    assert status in (302, 303), status
    location = headers["Location"]
    assert location.startswith(f"{gcs_emulator.endpoint}/{cfg.bucket}/offload/")
    assert dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["X-Goog-Expires"] == "120"
    verify_v4_signature(location, public)
    status, _, body = get(location)
    assert status == 200 and sha(body) == sha(data)
    (key,) = stored(gcs_emulator, cfg.bucket)
    assert key.startswith("offload/") and key.endswith("/scan.pdf")


def test_redirect_mode_without_a_signing_key_streams_through_the_link_service(make_proxy, sink, gcs_emulator):
    cfg = gcs_config(gcs_emulator, signing=False)
    proxy = make_proxy(gcs_overrides(cfg), env={"GOOGLE_APPLICATION_CREDENTIALS": ""})
    msg, data = big_message()
    assert proxy.send(msg)[0] == 250
    status, headers, body = get(offloaded_link(sink).rstrip("/") + "/download", follow=False)
    assert status == 200 and sha(body) == sha(data)
    # A 200 with the bytes, not a redirect: the link service streamed them from the store.
    assert headers["Content-Disposition"] == content_disposition("scan.pdf")


def test_presigned_mode_puts_the_signed_url_in_the_mail(make_proxy, sink, gcs_emulator, tmp_path):
    key_file, _ = service_account_key(tmp_path)
    cfg = gcs_config(gcs_emulator, credentials_file=str(key_file))
    proxy = make_proxy(gcs_overrides(cfg, mode="presigned", ttl_seconds=3600))
    msg, data = big_message()
    assert proxy.send(msg)[0] == 250
    notice = body_text(sink.messages[0].content)
    (url,) = re.findall(r"http://127\.0\.0\.1:\d+/\S+X-Goog-Signature=\w+", notice)
    assert url.startswith(gcs_emulator.endpoint)
    assert dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["X-Goog-Expires"] == "3600"
    status, _, body = get(url)
    assert status == 200 and body == data


def test_presigned_mode_without_a_signing_key_stops_the_start(tmp_path, sink, gcs_emulator):
    cfg = gcs_config(gcs_emulator, signing=False)
    out = refused_start(tmp_path, sink.port, gcs_overrides(cfg, mode="presigned", ttl_seconds=3600), env={"GOOGLE_APPLICATION_CREDENTIALS": ""})
    assert "cannot sign URLs" in out and "storage.gcs.credentials_file" in out


def test_wrong_bucket_stops_the_start_with_one_line(tmp_path, sink, gcs_emulator):
    cfg = gcs_config(gcs_emulator)
    cfg.bucket = "no-such-bucket-x"
    out = refused_start(tmp_path, sink.port, gcs_overrides(cfg))
    assert "gs://no-such-bucket-x/offload" in out and "does not exist" in out


def test_unreachable_store_fails_open(make_proxy, sink, gcs_emulator):
    overrides = gcs_overrides(gcs_down_config())
    overrides["storage.gcs"]["timeout"] = 1
    assert_fails_open(make_proxy(overrides), sink, *big_message())
