"""Tokens, the link secret and the download server, end to end over real HTTP."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from pathlib import Path
from urllib.parse import quote, unquote

import aiohttp
import pytest
from test_storage_local import new_object
import structlog
from structlog.testing import capture_logs

from smtp_offload.errors import ConfigError
from smtp_offload.links import BadToken, ExpiredToken, link_url, load_secret, sign, verify
from smtp_offload.links.server import LinkServer
from smtp_offload.storage import LocalStore

SECRET = b"s" * 32
KEY = "2024/05/01/0123456789abcdef0123456789abcdef/Отчёт 2024.pdf"
FUTURE = 4_000_000_000


# -- tokens -------------------------------------------------------------------


def test_sign_verify_round_trip() -> None:
    token = sign(KEY, FUTURE, SECRET)
    assert verify(token, SECRET) == KEY
    assert token.startswith("v1.")
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)  # URL-safe, no padding
    assert KEY not in token and "=" not in token


def _swap_char(s: str, i: int) -> str:
    return s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1 :]


def test_tampered_payload_is_bad() -> None:
    token = sign(KEY, FUTURE, SECRET)
    _, payload, mac = token.split(".")
    with pytest.raises(BadToken):
        verify(f"v1.{_swap_char(payload, 5)}.{mac}", SECRET)
    # A payload naming another key (or a later expiry) under the original signature.
    other = sign("2024/05/01/ffff/other.pdf", FUTURE + 1, b"x" * 32).split(".")[1]
    with pytest.raises(BadToken):
        verify(f"v1.{other}.{mac}", SECRET)


def test_tampered_signature_is_bad() -> None:
    token = sign(KEY, FUTURE, SECRET)
    with pytest.raises(BadToken):
        verify(_swap_char(token, len(token) - 3), SECRET)


def test_wrong_secret_is_bad() -> None:
    with pytest.raises(BadToken):
        verify(sign(KEY, FUTURE, SECRET), b"t" * 32)


@pytest.mark.parametrize("cut", [1, 10, 43, 44, 60])
def test_truncated_is_bad(cut: int) -> None:
    token = sign(KEY, FUTURE, SECRET)
    with pytest.raises(BadToken):
        verify(token[:-cut], SECRET)


@pytest.mark.parametrize(
    "token", ["", "v1.", "v1..", "garbage", "v2" + sign(KEY, FUTURE, SECRET)[2:], "v1.ä.ö", "v1." + "A" * 10_000]
)
def test_malformed_is_bad(token: str) -> None:
    with pytest.raises(BadToken):
        verify(token, SECRET)


def test_expiry_uses_now() -> None:
    token = sign(KEY, 1_700_000_000, SECRET)
    assert verify(token, SECRET, now=1_699_999_999) == KEY
    with pytest.raises(ExpiredToken) as exc:
        verify(token, SECRET, now=1_700_000_001)
    assert exc.value.expires == 1_700_000_000
    assert not isinstance(exc.value, BadToken)


def test_expired_and_forged_is_bad_not_expired() -> None:
    # A forger must not learn anything from an "expired" answer.
    with pytest.raises(BadToken):
        verify(sign(KEY, 1, b"t" * 32), SECRET, now=2)


# -- secret -------------------------------------------------------------------


def test_secret_generated_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "link.secret"
    log = structlog.get_logger()
    with capture_logs() as logs:
        first = load_secret(None, path, log)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().strip() == first
    assert [e["event"] for e in logs] == ["link_secret_generated"]
    assert logs[0]["path"] == str(path)
    assert first.decode() not in repr(logs)

    with capture_logs() as logs:
        assert load_secret(None, path, log) == first
    assert logs == []  # reused, not regenerated


def test_configured_secret_wins_and_short_one_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "link.secret"
    assert load_secret("k" * 32, path, structlog.get_logger()) == b"k" * 32
    assert not path.exists()
    with pytest.raises(ConfigError, match=r"links\.secret"):
        load_secret("k" * 31, path, structlog.get_logger())


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.secret"
    path.write_text("z" * 64)
    path.chmod(0o640)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_secret(None, path, structlog.get_logger())


def test_secret_file_too_short_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.secret"
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_secret(None, path, structlog.get_logger())


# -- server -------------------------------------------------------------------

NAME = 'Отчёт "Q1" 2024.pdf'


@pytest.fixture
async def env(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    server = LinkServer(store, SECRET, log=structlog.get_logger())
    await server.start("127.0.0.1", 0)
    async with aiohttp.ClientSession() as http:
        yield store, server, http, f"http://127.0.0.1:{server.port}"
    await server.stop()


async def _put(store: LocalStore, data: bytes, filename: str = NAME, content_type: str = "application/pdf"):
    return await store.put(data, new_object(data, filename, content_type))


def _assert_security_headers(h) -> None:
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Cache-Control"] == "private, no-store"
    assert h["Content-Security-Policy"] == "default-src 'none'"
    assert h["Referrer-Policy"] == "no-referrer"


async def test_valid_link_downloads_exact_bytes_twice(env) -> None:
    store, _, http, base = env
    data = os.urandom(600_000)
    obj = await _put(store, data)
    url = link_url(base, sign(obj.key, int(time.time()) + 3600, SECRET), NAME)
    for _ in range(2):  # a scanner's fetch must not use the link up
        async with http.get(url) as r:
            body = await r.read()
            assert r.status == 200
            assert hashlib.sha256(body).hexdigest() == obj.sha256
            assert r.headers["Content-Type"] == "application/pdf"
            assert r.headers["Content-Length"] == str(len(data))
            _assert_security_headers(r.headers)
            cd = r.headers["Content-Disposition"]
    m = re.fullmatch(r"""attachment; filename="([ -~]+)"; filename\*=UTF-8''([A-Za-z0-9%._~-]+)""", cd)
    assert m, cd
    assert '"' not in m.group(1) and m.group(1).endswith(".pdf")
    assert unquote(m.group(2)) == obj.filename == "Отчёт _Q1_ 2024.pdf"


async def test_name_segment_is_optional_and_cosmetic(env) -> None:
    store, _, http, base = env
    obj = await _put(store, b"hello")
    token = sign(obj.key, FUTURE, SECRET)
    for path in (f"/f/{token}", f"/f/{token}/anything-else.exe"):
        async with http.get(base + path) as r:
            assert r.status == 200 and await r.read() == b"hello"


async def test_head_returns_headers_without_body(env) -> None:
    store, _, http, base = env
    obj = await _put(store, b"x" * 1000, "data.csv", "text/csv")
    async with http.head(f"{base}/f/{sign(obj.key, FUTURE, SECRET)}") as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == "1000"
        assert r.headers["Content-Type"] == "text/csv"
        assert r.headers["Content-Disposition"].startswith('attachment; filename="data.csv"')
        _assert_security_headers(r.headers)
        assert await r.read() == b""


async def _get_error(http, url: str, status: int) -> str:
    async with http.get(url) as r:
        body = await r.text()
        assert r.status == status, body
        assert r.headers["Content-Type"].startswith("text/html")
        _assert_security_headers(r.headers)
    assert "<html" in body
    assert not re.search(r"src=|href=|@import|url\(", body)  # self-contained: no external resources
    return body


async def test_tampered_link_is_403(env) -> None:
    store, _, http, base = env
    obj = await _put(store, b"secret bytes")
    token = sign(obj.key, FUTURE, SECRET)
    body = await _get_error(http, f"{base}/f/{_swap_char(token, 8)}", 403)
    assert "not valid" in body
    assert obj.key not in body and "secret bytes" not in body


async def test_expired_link_is_410_with_date(env) -> None:
    store, _, http, base = env
    obj = await _put(store, b"old")
    body = await _get_error(http, f"{base}/f/{sign(obj.key, 1_700_000_000, SECRET)}", 410)
    assert "expired on 2023-11-14 22:13 UTC" in body
    assert "ask the sender" in body
    assert obj.key not in body and obj.key.split("/")[3] not in body


async def test_deleted_object_is_404(env) -> None:
    store, _, http, base = env
    obj = await _put(store, b"gone soon")
    await store.delete(obj.key)
    body = await _get_error(http, f"{base}/f/{sign(obj.key, FUTURE, SECRET)}", 404)
    assert "no longer available" in body
    assert obj.key not in body and obj.key.split("/")[3] not in body


async def test_store_failure_is_503_without_internals(env) -> None:
    store, _, http, base = env
    obj = await _put(store, b"data")
    store.root.rename(store.root.with_name("moved"))  # as if the volume were unmounted
    body = await _get_error(http, f"{base}/f/{sign(obj.key, FUTURE, SECRET)}", 503)
    assert "try again" in body
    assert obj.key.split("/")[3] not in body and str(store.root) not in body and "Error" not in body


async def test_healthz(env) -> None:
    _, _, http, base = env
    async with http.get(f"{base}/healthz") as r:
        assert r.status == 200 and await r.text() == "ok"


async def test_each_download_logged_without_token_signature(env) -> None:
    store, _, http, base = env
    obj = await _put(store, b"logged")
    token = sign(obj.key, FUTURE, SECRET)
    with capture_logs() as logs:
        async with http.get(f"{base}/f/{token}") as r:
            await r.read()
        async with http.get(f"{base}/f/{_swap_char(token, 8)}") as r:
            await r.read()
    served = [e for e in logs if e["event"] == "link_served"]
    assert [(e["key"], e["status"], e["remote"]) for e in served] == [
        (obj.key, 200, "127.0.0.1"),
        (None, 403, "127.0.0.1"),
    ]
    dump = repr(logs)
    assert token.split(".")[2] not in dump and SECRET.decode() not in dump


async def test_link_url_quotes_name_and_reaches_the_file(env) -> None:
    store, _, http, base = env
    obj = await _put(store, b"via link_url")
    token = sign(obj.key, FUTURE, SECRET)
    url = link_url(base + "/", token, "../weird/na me#?.pdf")
    assert url == f"{base}/f/{token}/{quote('na me_.pdf', safe='')}"
    async with http.get(url) as r:
        assert r.status == 200 and await r.read() == b"via link_url"


async def test_server_port_and_restart(tmp_path: Path) -> None:
    server = LinkServer(LocalStore(tmp_path), SECRET, log=structlog.get_logger())
    with pytest.raises(RuntimeError):
        server.port
    await server.start("127.0.0.1", 0)
    port = server.port
    assert port > 0
    await server.stop()
    await server.stop()  # idempotent
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"http://127.0.0.1:{port}/healthz")
