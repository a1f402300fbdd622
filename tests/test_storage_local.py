"""LocalStore and the key/name helpers, against a real directory."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from smtp_offload import spool
from smtp_offload.errors import StorageError
from smtp_offload.storage import CHUNK_SIZE, LocalStore, StoredObject, make_key, safe_filename


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def new_object(data: bytes, filename: str = "report.pdf", content_type: str = "application/pdf", **kw) -> StoredObject:
    return StoredObject(key=make_key(filename), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                        content_type=content_type, filename=filename, **kw)


async def _put(store: LocalStore, data: bytes, filename: str = "report.pdf", **kw):
    return await store.put(data, new_object(data, filename, **kw))


async def _read(store: LocalStore, key: str) -> list[bytes]:
    return [c async for c in await store.open(key)]


async def test_round_trip_put_stat_open_delete(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = os.urandom(CHUNK_SIZE * 2 + 12345)  # forces several chunks
    obj = await _put(store, data, "Quartalsbericht Ü.pdf", message_id="<m1@example.org>")

    assert obj.size == len(data)
    assert obj.filename == "Quartalsbericht Ü.pdf"
    assert obj.key.endswith("/Quartalsbericht Ü.pdf")
    assert await store.stat(obj.key) == obj

    chunks = await _read(store, obj.key)
    assert len(chunks) == 3 and all(len(c) <= CHUNK_SIZE for c in chunks)
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == obj.sha256

    await store.delete(obj.key)
    with pytest.raises(KeyError):
        await store.stat(obj.key)
    with pytest.raises(KeyError):
        await store.open(obj.key)
    await store.delete(obj.key)  # idempotent


async def test_empty_object_round_trips(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    obj = await _put(store, b"", "empty.txt")
    assert (await store.stat(obj.key)).size == 0
    assert await _read(store, obj.key) == []


async def test_modes_and_no_leftover_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "a" / "store"
    store = LocalStore(root)
    assert _mode(root) == 0o700
    obj = await _put(store, b"%PDF-1.7 hello")
    data_path = root / obj.key
    assert _mode(data_path) == 0o600
    # Every directory between root and the object is private too, not umask-default 0755.
    d = data_path.parent
    while d != root:
        assert _mode(d) == 0o700, d
        d = d.parent
    siblings = sorted(p.name for p in data_path.parent.iterdir())
    assert siblings == [f".{data_path.name}.meta.json", data_path.name]
    assert _mode(data_path.parent / siblings[0]) == 0o600


async def test_sidecar_holds_metadata(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    obj = await _put(store, b"abc", "a.pdf", message_id="<x@y>")
    meta = json.loads((tmp_path / obj.key).with_name(".a.pdf.meta.json").read_text())
    assert meta == {
        "key": obj.key,
        "filename": "a.pdf",
        "content_type": "application/pdf",
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "size": 3,
        "message_id": "<x@y>",
        "sender": None,
        "date": None,
        "tenant": None,
        "from_header": None,
        "subject": None,
    }


async def test_put_rejects_wrong_sha256(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(ValueError):
        await store.put(b"abc", dataclasses.replace(new_object(b"abc", "a.txt"), sha256="0" * 64))
    assert list(tmp_path.rglob("a.txt")) == []


async def test_put_os_error_becomes_storage_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalStore(root)
    root.rmdir()
    root.write_text("not a directory")  # works even as root, unlike chmod
    with pytest.raises(StorageError):
        await _put(store, b"data")
    with pytest.raises(StorageError):
        await store.check()


async def test_check_passes_on_writable_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    await store.check()
    assert list((tmp_path / "s").iterdir()) == []  # the probe file is cleaned up


async def test_missing_root_reads_as_storage_error_not_absent(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalStore(root)
    obj = await _put(store, b"data")
    shutil.rmtree(root)  # e.g. the volume is not mounted
    with pytest.raises(StorageError):
        await store.stat(obj.key)


async def test_size_mismatch_is_storage_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    obj = await _put(store, b"0123456789")
    (tmp_path / obj.key).write_bytes(b"0123")
    with pytest.raises(StorageError):
        await store.stat(obj.key)


TRAVERSAL_KEYS = [
    "../outside.txt",
    "a/../../outside.txt",
    "2024/01/01/../../../outside.txt",
    "/etc/passwd",
    str(Path("/etc/passwd")),
    "a\\..\\..\\outside.txt",
    "a\x00b",
    "",
    ".",
    "..",
    "a//b",
    "a/./b",
    "link/outside.txt",  # symlink inside root pointing out
]


@pytest.mark.parametrize("key", TRAVERSAL_KEYS)
async def test_traversal_keys_refused(tmp_path: Path, key: str) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    root = tmp_path / "root" / "store"
    store = LocalStore(root)
    (root / "link").symlink_to(tmp_path)
    for call in (store.stat, store.open, store.delete):
        with pytest.raises((KeyError, ValueError)):
            await call(key)
    assert outside.read_text() == "secret"


async def test_internal_files_are_not_addressable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    obj = await _put(store, b"x", "a.pdf")
    sidecar_key = obj.key.rsplit("/", 1)[0] + "/.a.pdf.meta.json"
    with pytest.raises(KeyError):
        await store.open(sidecar_key)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\a\\b.pdf", "b.pdf"),
        ("/abs/path/x.txt", "x.txt"),
        ("evil\r\nX-Header: 1.txt", "evil_X-Header_ 1.txt"),
        ("nul\x00byte.pdf", "nul_byte.pdf"),
        (".htaccess", "htaccess"),
        ("...", "file"),
        ("", "file"),
        ("   ", "file"),
        ("../", "file"),
        ("Отчёт 2024.pdf", "Отчёт 2024.pdf"),
        ("日本語の資料.docx", "日本語の資料.docx"),
        ("invoice\u202efdp.exe", "invoice_fdp.exe"),  # bidi override used to fake an extension
        ('a<>:"|?*b.txt', "a_b.txt"),
        ("trailing dots. . .", "trailing dots"),
        ("CON.txt", "_CON.txt"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


@pytest.mark.parametrize("stem_char", ["a", "ж", "語", "𝒜"])  # 1-, 2-, 3- and 4-byte UTF-8
def test_safe_filename_caps_length_and_keeps_extension(stem_char: str) -> None:
    result = safe_filename(stem_char * 500 + ".pdf")
    assert result.endswith(".pdf")
    assert len(result.encode("utf-8")) <= 150
    assert result.startswith(stem_char * 10)
    assert result.encode("utf-8").decode("utf-8") == result  # no split characters


def test_make_key_layout_and_uniqueness() -> None:
    now = datetime(2024, 3, 9, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 2024-03-10 in UTC
    k1, k2 = make_key("../x/Report.pdf", now), make_key("../x/Report.pdf", now)
    assert re.fullmatch(r"2024/03/10/[0-9a-f]{32}/Report\.pdf", k1)
    assert k1 != k2
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/[0-9a-f]{32}/file", make_key(""))


def _open_store_after(barrier, root: str) -> None:
    barrier.wait()
    LocalStore(Path(root))


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Workers, the CLI and a serving proxy may open the same store path at the same moment:
    whoever creates the directory, the others must not fail on it."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for round_ in range(40):
        root = tmp_path / f"r{round_}" / "deep" / "store"
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_store_after, args=(barrier, str(root))) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6, f"round {round_}"
        assert root.is_dir()


async def test_records_round_trip_stay_out_of_reach_and_are_swept(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put_record("jobs/abc.json", b"{}")
    await store.put_record("idem/def.json", b"{}")
    assert await store.get_record("jobs/abc.json") == b"{}"
    for bad in ("../x", "jobs/../../x", "jobs/a/b", "/etc/passwd", "jobs/", "Jobs/x"):
        with pytest.raises(KeyError):
            await store.get_record(bad)
    with pytest.raises(KeyError):
        await store.stat(".records/jobs/abc.json")  # no object key reaches a record
    old = tmp_path / ".records" / "jobs" / "abc.json"
    os.utime(old, (old.stat().st_atime - 7200, old.stat().st_mtime - 7200))
    assert await store.sweep_records(3600) == 1
    with pytest.raises(KeyError):
        await store.get_record("jobs/abc.json")
    assert await store.get_record("idem/def.json") == b"{}"
    await store.delete_record("idem/def.json")
    await store.delete_record("idem/def.json")  # idempotent


def _vm(field: str) -> int:
    """A VmRSS/VmHWM figure of this process, in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


async def test_a_spooled_file_is_copied_a_chunk_at_a_time(tmp_path: Path) -> None:
    """Storing a 64 MiB spooled file grows the process's peak memory by far less than the file
    (measured: about 1 MiB, the copy's buffer; holding the file would be 64 MiB and more)."""
    size, block = 64 * 1024 * 1024, os.urandom(1024 * 1024)
    w, h = spool.SpoolWriter(str(tmp_path)), hashlib.sha256()
    for i in range(size // len(block)):
        chunk = i.to_bytes(4, "big") + block[4:]  # no two blocks alike
        h.update(chunk)
        w.write(chunk)
    del block, chunk
    store = LocalStore(tmp_path / "store")
    await _put(store, b"warm-up")  # the worker thread and the key's directories exist already
    with w.finish() as fb:
        obj = StoredObject(key=make_key("scan.pdf"), size=size, sha256=h.hexdigest(), content_type="application/pdf",
                           filename="scan.pdf")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak (VmHWM) starts again from the resident size now
        before = _vm("VmRSS")
        assert _vm("VmHWM") < before + 4 * 1024 * 1024  # the reset worked: the measure can fail
        assert await store.put(fb, obj) == obj
        grown = _vm("VmHWM") - before
    assert grown < size // 4, f"peak memory grew by {grown} bytes storing {size}"
    copied = hashlib.sha256()
    async for c in await store.open(obj.key):
        copied.update(c)
    assert copied.hexdigest() == obj.sha256 and (await store.stat(obj.key)).size == size


async def test_a_spooled_file_with_another_hash_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = os.urandom(3 * 1024 * 1024)
    w = spool.SpoolWriter(str(tmp_path))
    w.write(data)
    with w.finish() as fb:
        with pytest.raises(ValueError):  # found at the end of the copy, before it takes the key
            await store.put(fb, dataclasses.replace(new_object(data, "a.pdf"), sha256="0" * 64))
        obj = await store.put(fb, new_object(data, "a.pdf"))  # the same file, told right: stored
    assert sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file()) == [".a.pdf.meta.json", "a.pdf"]
    assert b"".join(await _read(store, obj.key)) == data
