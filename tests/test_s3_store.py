"""S3Store against moto's S3-compatible HTTP server on loopback."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest

from smtp_offload.config import S3StorageConfig
from smtp_offload.errors import StorageError
from smtp_offload.storage import StoredObject, make_key
from smtp_offload.storage.base import clip_filename
from smtp_offload.storage.s3 import S3Store
from tests.support import samples
from tests.support.net import free_port
from tests.support.proc import write_config


def store_for(s3server, **kw) -> tuple[S3Store, str]:
    bucket = kw.pop("bucket", None) or s3server.new_bucket()
    cfg = S3StorageConfig(bucket=bucket, endpoint_url=s3server.endpoint, region="us-east-1", **kw)
    return S3Store(cfg), bucket


def new_object(store: S3Store, data: bytes, name: str, **kw) -> StoredObject:
    return StoredObject(key=make_key(name, prefix=store.key_prefix, tenant=kw.pop("tenant", None)), size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), content_type=kw.pop("content_type", "application/pdf"),
                        filename=name, **kw)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


async def test_small_upload_metadata_and_presigned_download(s3server):
    store, bucket = store_for(s3server, sse="AES256")
    data = samples.pdf()
    obj = new_object(store, data, "Rechnung Nr. 5 – Müller.pdf", message_id="<m1@sender.test>",
                     sender="kunde@sender.test", date="2026-11-23T10:00:00+00:00", tenant="example.com")
    await store.put(data, obj)
    head = s3server.client().head_object(Bucket=bucket, Key=obj.key)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "application/pdf"
    assert "filename*=UTF-8''Rechnung" in head["ContentDisposition"]
    assert head["Metadata"]["sha256"] == obj.sha256
    assert urllib.parse.unquote(head["Metadata"]["filename"]) == obj.filename
    back = await store.stat(obj.key)
    assert back == obj
    url = await store.presign(obj, 60)
    assert "X-Amz-Expires=60" in url
    assert hashlib.sha256(fetch(url)).hexdigest() == obj.sha256
    chunks = [c async for c in await store.open(obj.key)]
    assert b"".join(chunks) == data


async def test_multipart_upload(s3server):
    store, bucket = store_for(s3server, multipart_threshold=5 * 1024 * 1024, part_size=5 * 1024 * 1024)
    data = samples.big_pdf(12 * 1024 * 1024)
    obj = new_object(store, data, "scan.pdf")
    await store.put(data, obj)
    head = s3server.client().head_object(Bucket=bucket, Key=obj.key)
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert hashlib.sha256(fetch(await store.presign(obj, 60))).hexdigest() == obj.sha256


async def test_kms_encryption_is_requested(s3server):
    key_id = s3server.client("kms").create_key()["KeyMetadata"]["KeyId"]
    store, bucket = store_for(s3server, sse="aws:kms", kms_key_id=key_id)
    obj = new_object(store, b"secret", "a.txt", content_type="text/plain")
    await store.put(b"secret", obj)
    head = s3server.client().head_object(Bucket=bucket, Key=obj.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]


@pytest.mark.parametrize("name", ["../../etc/passwd", "C:\\Users\\x\\Отчёт.pdf", "a" * 400 + ".pdf",
                                  "evil\r\nX-Injected: 1.pdf", "\u202etxt.exe"])
async def test_key_sanitising(s3server, name):
    store, bucket = store_for(s3server, prefix="mail/in")
    obj = new_object(store, b"data", name, tenant="Example.COM")
    key_parts = obj.key.split("/")
    assert key_parts[:3] == ["mail", "in", "example.com"]
    assert ".." not in key_parts and all(p and not p.startswith(".") for p in key_parts)
    assert not any(c in obj.key for c in "\r\n\x00\\\u202e")
    assert len(key_parts[-1].encode()) <= 150
    await store.put(b"data", obj)
    assert s3server.keys(bucket) == [obj.key]
    assert (await store.stat(obj.key)).filename == clip_filename(name)  # 200 characters at most in metadata


async def test_missing_object_and_delete(s3server):
    store, bucket = store_for(s3server)
    with pytest.raises(KeyError):
        await store.stat("nope/never")
    obj = new_object(store, b"x", "x.bin")
    await store.put(b"x", obj)
    await store.delete(obj.key)
    await store.delete(obj.key)  # idempotent
    assert s3server.keys(bucket) == []


async def test_revocation_markers(s3server):
    store, bucket = store_for(s3server)
    assert not await store.is_revoked("abc123")
    await store.revoke("abc123")
    assert await store.is_revoked("abc123")
    assert not await store.is_revoked("abc124")
    other, _ = store_for(s3server, bucket=bucket)  # another instance sees it
    assert await other.is_revoked("abc123")


async def test_check_ok_and_clear_errors(s3server):
    store, _ = store_for(s3server)
    await store.check()
    missing, _ = store_for(s3server, bucket="no-such-bucket-here")
    with pytest.raises(StorageError) as err:
        await missing.check()
    assert "does not exist" in str(err.value) and err.value.permanent
    down = S3Store(S3StorageConfig(bucket="x-bucket", endpoint_url=f"http://127.0.0.1:{free_port()}",
                                   region="us-east-1", connect_timeout=1, read_timeout=1))
    with pytest.raises(StorageError) as err:
        await down.check()
    assert "cannot reach" in str(err.value) and not err.value.permanent


def _check_config(tmp_path, storage: dict, env: dict) -> subprocess.CompletedProcess:
    cfg = write_config(tmp_path / "c.toml", {"storage": {"backend": "s3"}, "storage.s3": storage})
    return subprocess.run([sys.executable, "-m", "smtp_offload", "check-config", "--config", str(cfg)],
                          capture_output=True, text=True, env=env, timeout=60)


def test_check_config_reports_storage_problems_in_one_line(tmp_path, s3server):
    import os

    bucket = s3server.new_bucket()
    env = dict(os.environ)
    r = _check_config(tmp_path, {"bucket": bucket, "endpoint_url": s3server.endpoint}, env)
    assert r.returncode == 0 and "reachable and writable" in r.stdout, r.stderr
    r = _check_config(tmp_path, {"bucket": "wrong-bucket", "endpoint_url": s3server.endpoint}, env)
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    no_creds = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    no_creds.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent",
                    AWS_EC2_METADATA_DISABLED="true")
    r = _check_config(tmp_path, {"bucket": bucket, "endpoint_url": s3server.endpoint, "region": "us-east-1"},
                      no_creds)
    assert r.returncode == 1 and "no AWS credentials" in r.stderr and "Traceback" not in r.stderr


def test_credentials_in_config_file_are_refused(tmp_path):
    cfg = write_config(tmp_path / "c.toml", {"storage.s3": {"bucket": "abc", "aws_secret_access_key": "x"}})
    r = subprocess.run([sys.executable, "-m", "smtp_offload", "check-config", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "storage.s3.aws_secret_access_key" in r.stderr and "never go in this file" in r.stderr


def test_s3_config_validation(tmp_path):
    from smtp_offload import config as config_mod
    from smtp_offload.errors import ConfigError

    for sections, key in [
        ({"storage": {"backend": "s3"}}, "storage.s3.bucket"),
        ({"storage": {"backend": "s3"}, "storage.s3": {"bucket": "abc", "sse": "des"}}, "storage.s3.sse"),
        ({"storage": {"backend": "s3"}, "storage.s3": {"bucket": "abc", "kms_key_id": "k"}}, "storage.s3.kms_key_id"),
        ({"storage": {"backend": "s3"}, "storage.s3": {"bucket": "abc", "part_size": 1024}}, "storage.s3.part_size"),
        ({"links": {"mode": "presigned"}}, "links.mode"),
        ({"storage": {"backend": "s3"}, "storage.s3": {"bucket": "abc"},
          "links": {"mode": "presigned", "ttl_seconds": 8 * 86400}}, "links.ttl_seconds"),
    ]:
        path = write_config(tmp_path / "v.toml", sections)
        with pytest.raises(ConfigError) as err:
            config_mod.load(path, env={})
        assert key in str(err.value)


async def test_records_round_trip_and_no_object_call_reaches_them(s3server):
    store, bucket = store_for(s3server, prefix="mail/in")
    await store.put_record("jobs/abc.json", b'{"status": "PENDING"}')
    assert await store.get_record("jobs/abc.json") == b'{"status": "PENDING"}'
    assert "mail/in/.records/jobs/abc.json" in s3server.keys(bucket)
    for key in ("mail/in/.records/jobs/abc.json", "mail/in/.revoked/x", "mail/in/../x", "mail//in", "/abs"):
        with pytest.raises(KeyError):
            await store.stat(key)
        with pytest.raises(KeyError):
            await store.open(key)
        with pytest.raises(KeyError):
            await store.delete(key)
    with pytest.raises(KeyError):
        await store.get_record("jobs/../../x")
    await store.delete_record("jobs/abc.json")
    with pytest.raises(KeyError):
        await store.get_record("jobs/abc.json")
