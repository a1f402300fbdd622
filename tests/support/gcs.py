"""gcp-storage-emulator (PyPI) as a real process on loopback, fresh buckets in it, and a
service-account key made here to sign URLs with.

What the emulator does and does not do (found by reading and running it): JSON API uploads
(multipart and resumable), custom metadata, contentDisposition, listing by prefix, ranged
GETs (`bytes=a-b` and `bytes=a-`), and path-style GETs `/<bucket>/<object>`, so it serves
the path of a V4 signed URL, honouring response-content-disposition but not
response-content-type. It never checks a signature, an expiry or a credential, never
answers 403, and answers a missing bucket with a bare 404: tests check signatures
themselves, against the public key of the key made here.
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from smtp_offload.config import GcsStorageConfig
from tests.support.env import missing
from tests.support.net import free_port
from tests.support.proc import stop_process


@dataclass
class GcsEmulator:
    endpoint: str
    proc: subprocess.Popen

    def create_bucket(self, name: str) -> None:
        body = json.dumps({"name": name}).encode()
        req = urllib.request.Request(f"{self.endpoint}/storage/v1/b", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200, resp.status

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object name in `bucket` under `prefix`, internal ones included."""
        q = urllib.parse.urlencode({"prefix": prefix} if prefix else {})
        with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b/{bucket}/o?{q}", timeout=10) as resp:
            return sorted(o["name"] for o in json.load(resp).get("items") or [])


def _executable() -> str | None:
    # The venv's console script sits beside its python, which need not be on PATH.
    beside = Path(sys.executable).with_name("gcp-storage-emulator")
    return str(beside) if beside.is_file() else shutil.which("gcp-storage-emulator")


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_emulator(log: Path) -> GcsEmulator:
    exe = _executable()
    if exe is None:
        missing("gcp-storage-emulator not installed (pip install -e '.[test]')")
    for _ in range(3):  # a port taken between free_port() and the bind: another port
        port = free_port()
        with open(log, "ab") as out:
            proc = subprocess.Popen([exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(endpoint):
                return GcsEmulator(endpoint, proc)
            time.sleep(0.1)
        stop_process(proc)
    raise RuntimeError(f"gcp-storage-emulator did not start; its output:\n{log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory) -> GcsEmulator:
    emulator = start_emulator(tmp_path_factory.mktemp("gcs") / "emulator.log")
    yield emulator
    stop_process(emulator.proc)


def gcs_config(gcs_emulator: GcsEmulator, prefix: str = "t", *, signing: bool = True, **extra) -> GcsStorageConfig:
    """A fresh bucket in the emulator (a unique name) and the config of a store over it; with
    `signing`, the store signs URLs with signing_key() as it would with a service account."""
    bucket = f"offload-{uuid.uuid4().hex[:16]}"
    gcs_emulator.create_bucket(bucket)
    if signing:
        extra.setdefault("credentials_file", str(signing_key()[0]))
    return GcsStorageConfig(bucket=bucket, prefix=prefix, endpoint_url=gcs_emulator.endpoint, timeout=10, **extra)


def gcs_down_config() -> GcsStorageConfig:
    """A store on a loopback port nobody listens on (short timeout: each call gives up fast)."""
    return GcsStorageConfig(bucket="any-bucket", prefix="t", endpoint_url=f"http://127.0.0.1:{free_port()}", timeout=1)


_SIGNING_KEY: tuple[Path, bytes] | None = None


def signing_key() -> tuple[Path, bytes]:
    """One service-account key for the whole run (made once: RSA key generation is slow)."""
    global _SIGNING_KEY
    if _SIGNING_KEY is None:
        directory = Path(tempfile.mkdtemp(prefix="gcs-signer-"))
        atexit.register(shutil.rmtree, directory, True)
        _SIGNING_KEY = service_account_key(directory)
    return _SIGNING_KEY


def service_account_key(directory: Path) -> tuple[Path, bytes]:
    """A service-account JSON key file made here (never known to Google) and its public key
    (PEM): URLs signed with it verify against that key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "smtp-offload-test", "private_key_id": uuid.uuid4().hex,
            "private_key": pem, "client_email": "signer@smtp-offload-test.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"}
    path = directory / "signer.json"
    path.write_text(json.dumps(info))
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public
