"""Azurite, Microsoft's Azure Storage emulator (npm, installed by scripts/system-deps into
.cache/azurite), its blob service started as a real process on a loopback port."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smtp_offload.config import AzureStorageConfig
from tests.support.env import ROOT, missing
from tests.support.net import free_port
from tests.support.proc import stop_process

AZURITE_BLOB = ROOT / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# The emulator's one account and its published key (the same in every Azurite, not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    blob_endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1
    proc: subprocess.Popen

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.blob_endpoint};")

    def new_container(self) -> str:
        """A fresh container: tests never see each other's blobs."""
        from azure.storage.blob import BlobServiceClient

        name = f"t-{uuid.uuid4().hex[:20]}"
        with BlobServiceClient.from_connection_string(self.connection_string) as svc:
            svc.create_container(name)
        return name

    def blob_names(self, container: str) -> list[str]:
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as svc:
            return sorted(svc.get_container_client(container).list_blob_names())


def _binary() -> str | None:
    if AZURITE_BLOB.exists():
        return str(AZURITE_BLOB)
    return shutil.which("azurite-blob")


def _wait(endpoint: str, proc: subprocess.Popen, log: Path) -> None:
    """Until the blob service answers HTTP (any status: an anonymous request gets an error)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"azurite exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            urllib.request.urlopen(f"{endpoint}?comp=list", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"azurite did not answer at {endpoint}:\n{log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    binary = _binary()
    if binary is None:
        missing(f"needs Azurite ({AZURITE_BLOB}: scripts/system-deps installs it with npm)")
    workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    log = workdir / "azurite.log"
    for attempt in range(3):
        port = free_port()
        with open(log, "wb") as out:
            # --loose: accept headers Azurite does not implement; --skipApiVersionCheck: the SDK
            # may be newer than the emulator.
            proc = subprocess.Popen([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port),
                                     "--location", str(workdir / "data"), "--silent", "--skipApiVersionCheck",
                                     "--loose"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
        try:
            _wait(endpoint, proc, log)
            break
        except (RuntimeError, TimeoutError):
            stop_process(proc)
            # free_port() gave a port someone else took before Azurite bound it: another port.
            if attempt == 2 or "EADDRINUSE" not in log.read_text(errors="replace"):
                shutil.rmtree(workdir, ignore_errors=True)
                raise
    try:
        yield Azurite(endpoint, proc)
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def azure_config(azurite: Azurite, prefix: str = "t") -> AzureStorageConfig:
    """A config for a fresh container of the running Azurite."""
    return AzureStorageConfig(container=azurite.new_container(), connection_string=azurite.connection_string,
                              prefix=prefix, connect_timeout=5, read_timeout=10)


def azure_down_config() -> AzureStorageConfig:
    """A config whose endpoint is a loopback port nobody listens on (a store that is down)."""
    endpoint = f"http://127.0.0.1:{free_port()}/{ACCOUNT}"
    return AzureStorageConfig(container="down", connection_string=(
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={endpoint};"),
        prefix="t", connect_timeout=1, read_timeout=1)
