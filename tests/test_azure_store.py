"""AzureStore against Azurite (a real process on loopback), and the proxy with storage.backend = "azure"
end to end over SMTP and HTTP. What every store must do alike is in tests/test_store_contract.py."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
import urllib.parse
from dataclasses import replace

import pytest

from smtp_offload.config import AzureStorageConfig
from smtp_offload.errors import StorageError
from smtp_offload.storage import StoredObject, content_disposition, make_key
from smtp_offload.storage.azure import AzureStore
from tests.support import samples
from tests.support.azurite import ACCOUNT, ACCOUNT_KEY, azure_config, azure_down_config
from tests.support.http import get
from tests.support.mail import big_message
from tests.support.proc import refused_start, write_config
from tests.support.relayed import LINK, assert_fails_open, attachment_payloads, body_text


def new_object(store: AzureStore, data: bytes, name: str, **kw) -> StoredObject:
    return StoredObject(key=make_key(name, prefix=store.key_prefix, tenant=kw.get("tenant")), size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), content_type=kw.pop("content_type", "application/pdf"),
                        filename=name, **kw)


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET with urllib; header names lower-cased (Azurite sends them in lower case)."""
    status, headers, body = get(url)
    return status, {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture
async def store(azurite):
    s = AzureStore(azure_config(azurite))
    yield s
    await s.close()


async def test_sas_url_downloads_the_bytes_as_an_attachment(store):
    data = samples.pdf()
    obj = new_object(store, data, "Rechnung Nr. 5 – Müller.pdf")
    await store.put(data, obj)
    url = await store.presign(obj, 120)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["sp"] == ["r"]  # read only
    status, headers, body = fetch(url)
    assert status == 200 and body == data
    assert headers["content-type"] == "application/pdf"
    assert headers["content-disposition"] == content_disposition(obj.filename)
    assert "filename*=UTF-8''Rechnung" in headers["content-disposition"]


async def test_the_sas_url_itself_names_the_download_and_expires(store):
    # The headers come from the URL, not only from the blob's properties: a blob stored by
    # another tool (or an older version) still downloads under the original name.
    data = b"plain bytes"
    obj = new_object(store, data, "x.txt", content_type="text/plain")
    await store.put(data, obj)
    url = await store.presign(replace(obj, content_type="application/pdf", filename="Отчёт.pdf"), 60)
    status, headers, _ = fetch(url)
    assert status == 200 and headers["content-type"] == "application/pdf"
    assert headers["content-disposition"] == content_disposition("Отчёт.pdf")
    short = await store.presign(obj, 1)
    time.sleep(2.5)  # past the URL's expiry (whole seconds)
    assert fetch(short)[0] == 403


async def test_a_sas_url_reads_only_its_own_blob(store, azurite):
    data = b"one file"
    obj = new_object(store, data, "a.txt", content_type="text/plain")
    other = new_object(store, b"another file", "b.txt", content_type="text/plain")
    await store.put(data, obj)
    await store.put(b"another file", other)
    url = await store.presign(obj, 120)
    query = url.partition("?")[2]
    assert get(f"{azurite.blob_endpoint}/{store.container}/{urllib.parse.quote(other.key)}?{query}")[0] == 403
    assert get(url)[2] == data


async def test_unicode_metadata_round_trips_through_ascii_headers(store, azurite):
    data = b"%PDF-1.4 tiny"
    obj = new_object(store, data, "Отчёт 2026 – 東京.pdf", message_id="<m1@sender.test>",
                     sender="müller@bücher.test", date="2026-11-23T10:00:00+00:00", tenant="exämple.com")
    await store.put(data, obj)
    assert await store.stat(obj.key) == obj
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(azurite.connection_string) as svc:
        props = svc.get_blob_client(store.container, obj.key).get_blob_properties()
    assert all(v.isascii() for v in props.metadata.values())
    assert set(props.metadata) == {"filename", "sha256", "message_id", "sender", "date", "tenant"}


async def test_ranged_reads(store):
    data = bytes(range(256)) * (5 * 1024 * 1024 // 256 + 7)  # more than one download request
    obj = new_object(store, data, "big.bin", content_type="application/octet-stream")
    await store.put(data, obj)

    async def read(start=0, end=None) -> bytes:
        return b"".join([c async for c in await store.open(obj.key, start, end)])

    chunks = [c async for c in await store.open(obj.key)]
    assert b"".join(chunks) == data and max(map(len, chunks)) <= 256 * 1024
    assert await read(10, 20) == data[10:20]
    assert await read(len(data) - 5) == data[-5:]
    assert await read(4 * 1024 * 1024 - 3, 4 * 1024 * 1024 + 3) == data[4 * 1024 * 1024 - 3: 4 * 1024 * 1024 + 3]
    assert await read(7, 7) == b""
    assert await read(len(data)) == b""
    with pytest.raises(KeyError):
        await store.open(obj.key.replace("big.bin", "other.bin"), 10, 20)
    early = await store.open(obj.key)
    assert len(await early.__anext__()) > 0
    await early.aclose()  # stopping early is allowed and releases what it held


async def test_empty_file(store):
    obj = new_object(store, b"", "empty.txt", content_type="text/plain")
    await store.put(b"", obj)
    assert (await store.stat(obj.key)).size == 0
    assert [c async for c in await store.open(obj.key)] == []


async def test_records_revocations_and_probes_stay_out_of_object_keys(store, azurite):
    """Where internal objects live in the container (their behaviour: tests/test_store_contract.py)."""
    await store.put_record("job/a1.json", b"{}")
    await store.revoke("abc123")
    await store.check()
    assert sorted(azurite.blob_names(store.container)) == ["t/.records/job/a1.json", "t/.revoked/abc123"]
    with pytest.raises(KeyError):
        await store.stat("t/.records/job/a1.json")


async def test_delete_is_idempotent(store):
    obj = new_object(store, b"x", "x.txt")
    await store.put(b"x", obj)
    await store.delete(obj.key)
    await store.delete(obj.key)
    with pytest.raises(KeyError):
        await store.stat(obj.key)


async def test_missing_container_is_permanent_and_says_so(azurite):
    s = AzureStore(AzureStorageConfig(container="no-such-container", connection_string=azurite.connection_string))
    try:
        with pytest.raises(StorageError) as err:
            await s.check()
        assert err.value.permanent and "container 'no-such-container' does not exist" in str(err.value)
        with pytest.raises(StorageError) as err:
            await s.stat("2026/01/01/abc/x.pdf")  # not a KeyError: the whole store is unusable
        assert err.value.permanent
    finally:
        await s.close()


async def test_a_wrong_account_key_is_permanent(azurite):
    wrong = azurite.connection_string.replace(ACCOUNT_KEY, "d3Jvbmc=" * 11)
    s = AzureStore(AzureStorageConfig(container=azurite.new_container(), connection_string=wrong))
    try:
        with pytest.raises(StorageError) as err:
            await s.check()
        assert err.value.permanent and ("refused" in str(err.value) or "denied" in str(err.value))
    finally:
        await s.close()


async def test_a_malformed_connection_string_is_permanent():
    s = AzureStore(AzureStorageConfig(container="c-1", connection_string="AccountName=x;nonsense"))
    with pytest.raises(StorageError) as err:
        await s.check()
    assert err.value.permanent and "connection string" in str(err.value)
    await s.close()


async def test_a_down_endpoint_is_temporary_and_says_so():
    s = AzureStore(azure_down_config())
    try:
        with pytest.raises(StorageError) as err:
            await s.check()
        assert not err.value.permanent and "cannot reach the Azure Blob endpoint http://127.0.0.1:" in str(err.value)
    finally:
        await s.close()


def sas_connection_string(azurite, container: str) -> str:
    """A connection string that holds a SAS for one container instead of the account key."""
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    sas = generate_container_sas(ACCOUNT, container, account_key=ACCOUNT_KEY,
                                 permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    return f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}"


async def test_a_sas_connection_string_works_but_cannot_presign(azurite, store):
    assert await store.presign_problem() is None  # the account key signs
    container = azurite.new_container()
    s = AzureStore(AzureStorageConfig(container=container, connection_string=sas_connection_string(azurite, container)))
    try:
        await s.check()
        obj = new_object(s, b"data", "d.txt", content_type="text/plain")
        await s.put(b"data", obj)
        assert await s.presign(obj, 60) is None  # the link server streams instead
        assert "AccountKey" in await s.presign_problem()
    finally:
        await s.close()


# -- end to end: the proxy process with storage.backend = "azure" ----------------------------

def azure_overrides(azurite, container: str, **links) -> dict:
    return {"storage": {"backend": "azure"},
            "storage.azure": {"container": container, "connection_string": azurite.connection_string,
                              "prefix": "offload"},
            "policy": {"offload_over_bytes": 50_000},
            **({"links": links} if links else {})}


def test_redirect_mode_sends_each_click_to_a_short_sas_url(make_proxy, sink, azurite):
    container = azurite.new_container()
    proxy = make_proxy(azure_overrides(azurite, container, click_ttl_seconds=120))
    msg, data = big_message()
    assert proxy.send(msg)[0] == 250
    got = sink.messages[0].content
    assert attachment_payloads(got) == {}
    assert azurite.blob_endpoint not in body_text(got)  # the mail never holds a direct storage URL
    (link,) = set(LINK.findall(body_text(got).encode()))
    status, headers, _ = get(link.decode().rstrip("/") + "/download", follow=False)
    assert status in (302, 303), status
    location = headers["Location"]
    assert location.startswith(azurite.blob_endpoint + "/" + container + "/offload/")
    status, headers, body = fetch(location)
    assert status == 200 and hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert headers["content-disposition"] == content_disposition("scan.pdf")
    assert headers["content-type"] == "application/pdf"
    (key,) = [n for n in azurite.blob_names(container) if "/." not in n]
    assert key.startswith("offload/") and key.endswith("/scan.pdf")


def test_presigned_mode_puts_the_sas_url_in_the_mail(make_proxy, sink, azurite):
    container = azurite.new_container()
    proxy = make_proxy(azure_overrides(azurite, container, mode="presigned", ttl_seconds=3600))
    msg, data = big_message()
    assert proxy.send(msg)[0] == 250
    notice = body_text(sink.messages[0].content)
    (url,) = re.findall(r"http://127\.0\.0\.1:\d+/devstoreaccount1/\S+&sig=\S+", notice)
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["sp"] == ["r"]
    status, _, body = get(url)
    assert status == 200 and hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_missing_container_stops_the_start_with_one_line(tmp_path, sink, azurite):
    out = refused_start(tmp_path, sink.port, azure_overrides(azurite, "no-such-container"))
    assert "azure://no-such-container/offload" in out and "does not exist" in out


def test_presigned_mode_refuses_to_start_on_a_store_that_cannot_sign(tmp_path, sink, azurite):
    container = azurite.new_container()
    overrides = azure_overrides(azurite, container, mode="presigned", ttl_seconds=3600)
    overrides["storage.azure"]["connection_string"] = sas_connection_string(azurite, container)
    out = refused_start(tmp_path, sink.port, overrides)
    assert 'links.mode = "presigned"' in out and "AccountKey" in out


def test_a_down_store_fails_open(make_proxy, sink):
    down = azure_down_config()
    proxy = make_proxy({"storage": {"backend": "azure"},
                        "storage.azure": {"container": down.container, "connection_string": down.connection_string,
                                          "connect_timeout": 1, "read_timeout": 1},
                        "policy": {"offload_over_bytes": 50_000}})
    assert_fails_open(proxy, sink, *big_message())


def test_check_config_checks_azure_online(tmp_path, azurite):
    good = write_config(tmp_path / "good.toml", {
        "storage": {"backend": "azure"},
        "storage.azure": {"container": azurite.new_container(), "connection_string": azurite.connection_string}})
    r = subprocess.run([sys.executable, "-m", "smtp_offload", "check-config", "--config", str(good)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Azure container" in r.stdout and "reachable and writable" in r.stdout
    assert ACCOUNT_KEY not in r.stdout + r.stderr
    bad = write_config(tmp_path / "bad.toml", {
        "storage": {"backend": "azure"},
        "storage.azure": {"container": "no-such-container", "connection_string": azurite.connection_string}})
    r = subprocess.run([sys.executable, "-m", "smtp_offload", "check-config", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr
