"""One contract for every store: the same tests against the local store, S3 (moto's server),
Azure Blob (Azurite), Google Cloud Storage (gcp-storage-emulator), and a routed store (local
by default, S3 for one tenant). What a backend cannot do is in CAPABILITIES, and in the
README's storage table: a test that does not apply says so by asserting the store's answer
(presign returns None), never by skipping.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from smtp_offload import spool
from smtp_offload.config import S3StorageConfig
from smtp_offload.errors import StorageError
from smtp_offload.storage import InvalidKey, LocalStore, RoutedStore, Store, StoredObject, close_store, make_key
from smtp_offload.storage.base import content_disposition
from tests.support.net import free_port

BACKENDS = ["local", "s3", "azure", "gcs", "routed"]
ROUTED_TENANT = "acme-eu"  # the routed backend sends this tenant's files to its S3 store


@dataclass(frozen=True)
class Caps:
    presign: bool  # makes URLs that download the object without us
    checks_sha256: bool  # refuses data whose sha256 is not the one described (S3 trusts the caller)


CAPABILITIES = {"local": Caps(presign=False, checks_sha256=True), "s3": Caps(presign=True, checks_sha256=False),
                "azure": Caps(presign=True, checks_sha256=True), "gcs": Caps(presign=True, checks_sha256=True),
                "routed": Caps(presign=False, checks_sha256=True)}


def _s3(s3server, **kw) -> Store:
    from smtp_offload.storage.s3 import S3Store

    return S3Store(S3StorageConfig(bucket=s3server.new_bucket(), endpoint_url=s3server.endpoint,
                                   region="us-east-1", prefix="t", **kw))


def _s3_down() -> Store:
    from smtp_offload.storage.s3 import S3Store

    return S3Store(S3StorageConfig(bucket="down-bucket", endpoint_url=f"http://127.0.0.1:{free_port()}",
                                   region="us-east-1", connect_timeout=2, read_timeout=2))


def _make(backend: str, request, tmp_path: Path, *, down: bool = False) -> Store:
    if backend == "local":
        store = LocalStore(tmp_path / "store")
        if down:  # the volume went away under a running store
            shutil.rmtree(tmp_path / "store")
        return store
    if backend == "s3":
        return _s3_down() if down else _s3(request.getfixturevalue("s3server"))
    if backend == "azure":
        from smtp_offload.storage.azure import AzureStore
        from tests.support.azurite import azure_config, azure_down_config

        return AzureStore(azure_down_config() if down else azure_config(request.getfixturevalue("azurite")))
    if backend == "gcs":
        from smtp_offload.storage.gcs import GcsStore
        from tests.support.gcs import gcs_config, gcs_down_config

        return GcsStore(gcs_down_config() if down else gcs_config(request.getfixturevalue("gcs_emulator")))
    assert backend == "routed"
    eu = _s3_down() if down else _s3(request.getfixturevalue("s3server"))
    default = _make("local", request, tmp_path, down=down)
    return RoutedStore(default, {"eu": eu}, {ROUTED_TENANT: "eu"})


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
async def store(backend, request, tmp_path) -> AsyncIterator[Store]:
    s = _make(backend, request, tmp_path)
    yield s
    await close_store(s)


@pytest.fixture
async def down_store(backend, request, tmp_path) -> AsyncIterator[Store]:
    s = _make(backend, request, tmp_path, down=True)
    yield s
    await close_store(s)


def payload(size: int, seed: int = 1) -> bytes:
    """Deterministic, incompressible-looking bytes (hash chain), so ranges cannot line up by luck."""
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def new_object(store: Store, data: bytes, name: str = "Rechnung Nr. 5 – Müller.pdf", *,
               tenant: str | None = None, **kw) -> StoredObject:
    return StoredObject(key=make_key(name, prefix=store.key_prefix, tenant=tenant), size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), content_type=kw.pop("content_type", "application/pdf"),
                        filename=name, tenant=tenant, **kw)


def tenants(backend: str) -> list[str | None]:
    """The tenants to store under: a routed store is tried on both of its stores."""
    return [None, ROUTED_TENANT] if backend == "routed" else [None]


async def read(store: Store, key: str, start: int = 0, end: int | None = None) -> bytes:
    it = await store.open(key, start, end)
    return b"".join([c async for c in it])


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


# -- put, stat, open --------------------------------------------------------------------------

async def test_put_then_stat_gives_back_every_field(store, backend):
    for tenant in tenants(backend):
        data = payload(70_000)
        obj = new_object(store, data, tenant=tenant, message_id="<m1@sender.test>", sender="kunde@sender.test",
                         date="2026-11-30T10:00:00+00:00", from_header="Jürgen Müller <kunde@sender.test>",
                         subject="Schaden 4711: Fotos – 損傷の写真 %41 <b>")
        stored = await store.put(data, obj)
        back = await store.stat(stored.key)
        assert back == stored
        assert (back.filename, back.size, back.sha256, back.content_type, back.tenant) == (
            "Rechnung Nr. 5 – Müller.pdf", len(data), hashlib.sha256(data).hexdigest(), "application/pdf", tenant)
        assert (back.message_id, back.sender, back.date) == ("<m1@sender.test>", "kunde@sender.test",
                                                              "2026-11-30T10:00:00+00:00")
        assert (back.from_header, back.subject) == ("Jürgen Müller <kunde@sender.test>",
                                                    "Schaden 4711: Fotos – 損傷の写真 %41 <b>")


async def test_metadata_that_is_absent_stays_absent(store):
    data = b"%PDF-1.4 small"
    stored = await store.put(data, new_object(store, data, "plain.pdf"))
    back = await store.stat(stored.key)
    assert (back.message_id, back.sender, back.date, back.tenant, back.from_header, back.subject) == (None,) * 6


async def test_get_returns_the_same_bytes_in_chunks(store, backend):
    for tenant in tenants(backend):
        data = payload(700_000)  # several CHUNK_SIZE chunks
        stored = await store.put(data, new_object(store, data, "big.bin", tenant=tenant,
                                                  content_type="application/octet-stream"))
        chunks = [c async for c in await store.open(stored.key)]
        assert len(chunks) >= 2
        assert b"".join(chunks) == data


async def test_an_empty_object_round_trips(store):
    stored = await store.put(b"", new_object(store, b"", "empty.txt", content_type="text/plain"))
    assert (await store.stat(stored.key)).size == 0
    assert await read(store, stored.key) == b""


@pytest.mark.parametrize("start, end", [(0, 1), (10, 100), (262_100, 262_200), (1, None), (699_995, None),
                                         (0, 700_000), (5000, 5000)])
async def test_a_range_reads_exactly_those_bytes(store, backend, start, end):
    for tenant in tenants(backend):
        data = payload(700_000, seed=start)
        stored = await store.put(data, new_object(store, data, "ranged.bin", tenant=tenant))
        assert await read(store, stored.key, start, end) == data[start:end]


async def test_a_bad_range_is_refused(store):
    data = payload(100)
    stored = await store.put(data, new_object(store, data))
    for start, end in ((-1, None), (50, 10)):
        with pytest.raises(ValueError):
            await read(store, stored.key, start, end)


async def test_data_that_disagrees_with_its_description_is_refused_and_not_stored(store, backend):
    data = payload(100)
    obj = new_object(store, data)
    with pytest.raises(ValueError):
        await store.put(data, replace(obj, size=99))
    if CAPABILITIES[backend].checks_sha256:  # a wrong hash would be shown to agents as the file's
        with pytest.raises(ValueError):
            await store.put(data[:-1] + b"x", obj)
    with pytest.raises(KeyError):
        await store.stat(obj.key)


# -- spooled files (FileBytes): read a chunk at a time, stored as their bytes would be -------------

BIG = 20 * 1024 * 1024 + 7  # past S3's multipart threshold (16 MiB), GCS's one-request 8 MiB, Azure's 4 MiB blocks


def spooled(tmp_path: Path, data: bytes) -> spool.FileBytes:
    w = spool.SpoolWriter(str(tmp_path))
    for at in range(0, len(data), 1 << 20):
        w.write(data[at:at + (1 << 20)])
    return w.finish()


async def test_a_spooled_file_is_stored_as_its_bytes_would_be(store, backend, tmp_path):
    """Every request path of every SDK: empty, one request, and many (multipart, resumable
    chunks, blocks); as an object and as a record (a held file of the quarantine)."""
    for tenant in tenants(backend):
        for data in (b"", payload(70_000, seed=3), os.urandom(BIG)):
            with spooled(tmp_path, data) as fb:
                obj = new_object(store, data, "scan.pdf", tenant=tenant, message_id="<m2@sender.test>")
                stored = await store.put(fb, obj)
                assert fb[:len(data)] == data  # the caller's file is still its own, open and whole
                back = await store.stat(stored.key)
                assert (back.key, back.size, back.sha256, back.message_id) == (
                    stored.key, len(data), obj.sha256, "<m2@sender.test>")
                assert hashlib.sha256(await read(store, stored.key)).digest() == hashlib.sha256(data).digest()
    with spooled(tmp_path, data) as fb:
        await store.put_record("quarantined/0123456789abcdef", fb)
    assert hashlib.sha256(await store.get_record("quarantined/0123456789abcdef")).digest() == \
        hashlib.sha256(data).digest()


async def test_a_spooled_file_that_disagrees_is_refused_and_what_the_key_held_stays(store, backend, tmp_path):
    good, bad = payload(1_500_000, seed=4), payload(1_500_000, seed=5)  # more than one chunk of any copy
    kept = await store.put(good, new_object(store, good, "same.pdf"))
    with spooled(tmp_path, bad) as fb:
        with pytest.raises(ValueError):
            await store.put(fb, replace(new_object(store, bad), key=kept.key, size=len(bad) - 1))
        if CAPABILITIES[backend].checks_sha256:  # hashed as read: the bad file never takes the key
            with pytest.raises(ValueError):
                await store.put(fb, replace(kept, size=len(bad)))
        fresh = new_object(store, bad)
        with pytest.raises(ValueError):
            await store.put(fb, replace(fresh, size=len(bad) + 1))
    with pytest.raises(KeyError):
        await store.stat(fresh.key)
    assert await store.stat(kept.key) == kept and await read(store, kept.key) == good
    fb.close()
    with pytest.raises(StorageError):  # a closed file is a failed put, not a traceback
        await store.put(fb, new_object(store, bad))


class FailsOnce:
    """An HTTP proxy on loopback in front of a test server. The first request carrying more
    than `over` bytes is read whole (after a 100 Continue, as a server would) and answered
    500: the store's SDK retries it, and must send the whole body again, from the file. Every
    other request is passed on, each over a connection of its own."""

    def __init__(self, upstream: str, over: int = 1024 * 1024) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.over, self.failed = over, 0
        self.lock = threading.Lock()  # S3 sends parts in parallel: exactly one of them fails
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}{parts.path}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            while head := self._head(f):
                fields = {k.strip().lower(): v.strip() for k, _, v in (
                    line.decode("latin-1").partition(":") for line in head.split(b"\r\n")[1:] if line)}
                if "chunked" in fields.get("transfer-encoding", ""):
                    raise AssertionError("a chunked upload: this proxy reads Content-Length bodies only")
                if fields.get("expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = f.read(int(fields.get("content-length", 0)))
                with self.lock:
                    fail = len(body) > self.over and not self.failed
                    self.failed += fail
                if fail:
                    error = b"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>injected</Message></Error>"
                    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(error), error))
                    return
                lines = [line for line in head.split(b"\r\n")
                         if not line.lower().startswith((b"expect:", b"connection:"))]
                with socket.create_connection(self.upstream) as up:
                    up.sendall(b"\r\n".join([*lines[:-2], b"Connection: close", b"", b""]) + body)
                    while chunk := up.recv(1 << 16):
                        conn.sendall(chunk)

    @staticmethod
    def _head(f) -> bytes:
        head = b""
        while (line := f.readline()) not in (b"\r\n", b""):
            head += line
        return head + b"\r\n" if head else b""

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("which", ["s3", "azure", "gcs"])
async def test_an_upload_retried_after_a_failed_request_sends_the_whole_file_again(which, request, tmp_path):
    data = os.urandom(BIG)
    if which == "s3":
        from smtp_offload.storage.s3 import S3Store

        s3server = request.getfixturevalue("s3server")
        proxy = FailsOnce(s3server.endpoint)
        store: Store = S3Store(S3StorageConfig(bucket=s3server.new_bucket(), endpoint_url=proxy.endpoint,
                                               region="us-east-1", prefix="t"))
    elif which == "azure":
        from smtp_offload.storage.azure import AzureStore
        from tests.support.azurite import azure_config

        cfg = azure_config(request.getfixturevalue("azurite"))
        endpoint = cfg.connection_string.split("BlobEndpoint=")[1].split(";")[0]
        proxy = FailsOnce(endpoint)
        store = AzureStore(replace(cfg, connection_string=cfg.connection_string.replace(endpoint, proxy.endpoint)))
    else:
        from smtp_offload.storage.gcs import GcsStore
        from tests.support.gcs import gcs_config

        cfg = gcs_config(request.getfixturevalue("gcs_emulator"))
        proxy = FailsOnce(cfg.endpoint_url)
        store = GcsStore(replace(cfg, endpoint_url=proxy.endpoint))
    try:
        with spooled(tmp_path, data) as fb:
            stored = await store.put(fb, new_object(store, data, "scan.pdf"))
        assert proxy.failed == 1  # one request of the upload failed after sending its bytes
        assert (await store.stat(stored.key)).size == len(data)
        assert hashlib.sha256(await read(store, stored.key)).digest() == hashlib.sha256(data).digest()
    finally:
        await close_store(store)
        proxy.close()


# -- missing objects and bad keys --------------------------------------------------------------

async def test_a_missing_object_is_a_key_error_everywhere(store, backend):
    for tenant in tenants(backend):
        key = (await store.put(b"x", new_object(store, b"x", tenant=tenant))).key
        await store.delete(key)
        with pytest.raises(KeyError):
            await store.stat(key)
        with pytest.raises(KeyError):  # on the await, before any byte: the caller can still answer 404
            await store.open(key)
        with pytest.raises(KeyError):
            await store.open(key, 1, 2)
        await store.delete(key)  # deleting an absent key is not an error


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/x.pdf", "a/../b.pdf", ".records/jobs/x.json",
                                 "t/.revoked/0123456789abcdef", "a//b.pdf", "a/./b", "a\\b", "x\x00y", ""])
async def test_a_key_that_could_not_be_ours_is_refused(store, key):
    for call in (store.stat(key), store.open(key), store.delete(key)):
        with pytest.raises(InvalidKey):
            await call
    with pytest.raises(InvalidKey):
        await store.put(b"x", replace(new_object(store, b"x"), key=key))


# -- idempotent put and delete ------------------------------------------------------------------

async def test_putting_the_same_key_again_replaces_it(store, backend):
    for tenant in tenants(backend):
        first = new_object(store, b"first version", "same.txt", tenant=tenant, content_type="text/plain")
        one = await store.put(b"first version", first)
        again = replace(first, size=len(b"second!"), sha256=hashlib.sha256(b"second!").hexdigest())
        two = await store.put(b"second!", again)
        assert one.key == two.key  # a retried message lands on the same key: no second copy
        assert await read(store, two.key) == b"second!"
        assert (await store.stat(two.key)).sha256 == again.sha256


async def test_delete_removes_the_object_and_nothing_else(store, backend):
    for tenant in tenants(backend):
        a = await store.put(b"aaa", new_object(store, b"aaa", "a.txt", tenant=tenant))
        b = await store.put(b"bbb", new_object(store, b"bbb", "b.txt", tenant=tenant))
        await store.delete(a.key)
        with pytest.raises(KeyError):
            await store.stat(a.key)
        assert await read(store, b.key) == b"bbb"


# -- revocation -------------------------------------------------------------------------------

async def test_revoke_is_seen_and_only_for_that_link(store, backend):
    for tenant in tenants(backend):
        key = (await store.put(b"x", new_object(store, b"x", tenant=tenant))).key
        token, other = (os.urandom(8).hex() for _ in range(2))
        assert not await store.is_revoked(token, key)
        await store.revoke(token, key)
        await store.revoke(token, key)  # twice is fine
        assert await store.is_revoked(token, key)
        assert not await store.is_revoked(other, key)
        by_id = os.urandom(8).hex()  # revoked by id alone: the file's store is not known
        await store.revoke(by_id)
        assert await store.is_revoked(by_id, key) and await store.is_revoked(by_id)


@pytest.mark.parametrize("token_id", ["../x", "a/b", "", "x" * 65, ".hidden"])
async def test_a_revocation_id_that_could_escape_is_refused(store, token_id):
    with pytest.raises(KeyError):
        await store.revoke(token_id)


# -- presigned URLs ----------------------------------------------------------------------------

async def test_presign_downloads_the_bytes_under_the_original_name_or_says_it_cannot(store, backend):
    data = payload(50_000)
    stored = await store.put(data, new_object(store, data, "Bericht März.pdf"))
    url = await store.presign(stored, 120)
    if not CAPABILITIES[backend].presign:
        assert url is None  # the link service streams the bytes itself
        return
    assert url.startswith("http://127.0.0.1:")
    status, headers, body = fetch(url)
    assert status == 200 and body == data
    assert headers["content-disposition"] == content_disposition("Bericht März.pdf")
    if backend != "gcs":  # the emulator ignores response-content-type (README: storage table)
        assert headers["content-type"] == "application/pdf"


# -- records -----------------------------------------------------------------------------------

async def test_records_round_trip_list_and_delete(store):
    await store.put_record("jobs/j1.json", b'{"a": 1}')
    await store.put_record("jobs/j2.json", b'{"a": 2}')
    await store.put_record("idem/j1.json", b"{}")
    await store.put_record("jobs/j1.json", b'{"a": 3}')  # replaced
    assert await store.get_record("jobs/j1.json") == b'{"a": 3}'
    assert await store.list_records("jobs") == ["jobs/j1.json", "jobs/j2.json"]
    assert await store.list_records("jobs", "j2") == ["jobs/j2.json"]
    await store.delete_record("jobs/j1.json")
    await store.delete_record("jobs/j1.json")
    with pytest.raises(KeyError):
        await store.get_record("jobs/j1.json")
    assert await store.list_records("jobs") == ["jobs/j2.json"]


@pytest.mark.parametrize("name", ["../x", "jobs/../../x", "Jobs/x", "jobs/a/b", "jobs/", "jobs/x.json/"])
async def test_a_record_name_that_could_escape_is_refused(store, name):
    with pytest.raises(InvalidKey):
        await store.put_record(name, b"x")
    with pytest.raises(InvalidKey):
        await store.get_record(name)


async def test_records_and_revocations_are_not_objects(store):
    await store.put_record("jobs/secret.json", b"{}")
    token = os.urandom(8).hex()
    await store.revoke(token)
    for key in (f"{store.key_prefix}/.records/jobs/secret.json".lstrip("/"),
                f"{store.key_prefix}/.revoked/{token}".lstrip("/")):
        with pytest.raises(KeyError):
            await store.stat(key)


# -- health -------------------------------------------------------------------------------------

async def test_check_passes_on_a_working_store(store):
    await store.check()


async def test_a_store_that_is_down_says_so_and_never_claims_a_file_is_missing(down_store):
    data = b"%PDF-1.4 x"
    obj = new_object(down_store, data, tenant=ROUTED_TENANT if isinstance(down_store, RoutedStore) else None)
    calls: list[Callable] = [lambda: down_store.check(), lambda: down_store.put(data, obj),
                             lambda: down_store.stat(obj.key), lambda: down_store.open(obj.key),
                             lambda: down_store.is_revoked("0123456789abcdef", obj.key),
                             lambda: down_store.put_record("jobs/x.json", b"{}")]
    for call in calls:
        with pytest.raises(StorageError) as caught:
            await call()
        assert not isinstance(caught.value, KeyError)
        assert str(caught.value)  # a reason an operator can read


# -- isolation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["s3", "gcs"])
async def test_a_hung_store_does_not_stall_the_others(which, tmp_path, request):
    """An endpoint that accepts connections and never answers (a blackholed region) holds only
    its own store's worker threads: a local store still answers while twenty calls hang."""
    import asyncio
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(128)  # connections complete in the backlog; nothing is ever read or answered
    endpoint = f"http://127.0.0.1:{hole.getsockname()[1]}"
    if which == "s3":
        from smtp_offload.storage.s3 import S3Store

        request.getfixturevalue("s3server")  # its credentials in the environment: requests are signed and sent

        hung: Store = S3Store(S3StorageConfig(bucket="hung-bucket", endpoint_url=endpoint, region="us-east-1",
                                              connect_timeout=60, read_timeout=60))
    else:
        from smtp_offload.config import GcsStorageConfig
        from smtp_offload.storage.gcs import GcsStore

        hung = GcsStore(GcsStorageConfig(bucket="hung-bucket", endpoint_url=endpoint, timeout=60))
    local = LocalStore(tmp_path / "local")
    stored = await local.put(b"%PDF-1.4 x", new_object(local, b"%PDF-1.4 x"))
    calls = [asyncio.create_task(hung.stat(f"a/{i}.pdf")) for i in range(20)]
    try:
        await asyncio.sleep(0)  # let them all start
        async def served() -> None:
            for _ in range(3):  # stat and open on the loop's default pool: still served
                assert (await local.stat(stored.key)).size == 10
                assert await read(local, stored.key) == b"%PDF-1.4 x"

        # A bound far above the milliseconds this takes, so a regression fails instead of hanging
        # for the hung calls' 60 s timeouts; not a measure of speed.
        await asyncio.wait_for(served(), 30)
        assert not any(t.done() for t in calls)  # the hung store's calls are still waiting
    finally:
        hole.close()  # their connections are reset: the worker threads end
        for t in calls:
            t.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await close_store(hung)


async def test_a_hostile_file_name_is_stored_and_its_metadata_stays_within_every_store_s_limits(store, backend):
    """S3 takes 2 KiB of metadata, Azure and GCS 8 KiB: a name the sender made 3,000 characters
    long is clipped in the metadata (keeping its extension), never a failed put; a From and
    Subject made as long (and with line breaks and a bidi override) give way, shortened and clean."""
    name = "é" * 3000 + ".pdf"
    hostile = "写真\r\n\u202e" * 1000
    stored = await store.put(b"%PDF-1.4 x", new_object(store, b"%PDF-1.4 x", name, from_header=hostile,
                                                        subject=hostile, message_id="<m@x>"))
    back = await store.stat(stored.key)
    assert back.filename.endswith(".pdf") and back.filename.startswith("é" * 100) and len(back.filename) <= 200
    assert back.message_id == "<m@x>"
    for shown in (back.from_header, back.subject):
        assert shown is None or (len(shown) <= 200 and set(shown) <= set("写真 …")), shown
    assert await read(store, stored.key) == b"%PDF-1.4 x"
