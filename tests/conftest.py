"""Fixtures only: the helpers they use, and the tests import, are in tests/support/."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tests.support.azurite import azurite  # noqa: F401  (session fixture: Azurite's blob service)
from tests.support.gcs import gcs_emulator  # noqa: F401  (session fixture: gcp-storage-emulator)
from tests.support.net import self_signed
from tests.support.proc import AWS_ENV, Proxy, S3Server, Sink

# Property tests explore at random on a workstation (and remember what failed); under CI they
# replay the same examples every run, so a red CI is a regression, never the luck of a draw.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[str, str]:
    """A certificate for the proxy's STARTTLS: (server.tls_cert, server.tls_key)."""
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def scripted():
    """Make scripted downstreams (tests/support/scripted.py): make(decide=None); stopped after
    the test, which fails if one of them met a bug of its own."""
    from tests.support.scripted import ScriptedDownstream

    servers: list = []

    def make(decide=None, **kwargs):
        servers.append(ScriptedDownstream(decide, **kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()
        assert s.errors == []


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def s3server():
    old = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    server = S3Server()
    yield server
    server.server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def make_proxy(tmp_path, sink):
    started: list[Proxy] = []

    def make(overrides: dict[str, dict] | None = None, downstream_port: int | None = None,
             env: dict[str, str] | None = None, wrapper: tuple[str, ...] = ()) -> Proxy:
        d = tmp_path / f"p{len(started)}"
        d.mkdir()
        p = Proxy(d, downstream_port or sink.port, overrides, env, wrapper).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def proxy(make_proxy) -> Proxy:
    return make_proxy()
