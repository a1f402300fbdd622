"""The link service end to end: a real LinkServer on loopback, a real LocalStore, real HTTP.

Covers the landing page, the download, the error pages, secret rotation, the JSON API,
the `links` command line and the audit events.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest

from smtp_offload.config import LinksConfig
from smtp_offload.errors import ConfigError, StorageError
from smtp_offload.links import BadToken, ExpiredToken, Grant, link_url, new_grant, sign, verify
from smtp_offload.links.outcomes import outcome_of
from smtp_offload.links.server import LinkServer
from smtp_offload.links.service import PRESIGN_MAX_TTL, Gone, InvalidRequest, LinkService, Revoked, mint
from smtp_offload.links.tokens import message_ref
from smtp_offload.storage import LocalStore, StoredObject, make_key
from tests.support.mail import attachment, message, multipart, text
from tests.support.relayed import LINK, body_text
from tests.support.samples import big_pdf as samples_pdf
from tests.support.logs import RecordingLog

SECRET = b"n" * 40  # signs
OLD = b"o" * 40  # verifies only (rotated out)
API_KEY = "k" * 32
AUTH = {"Authorization": f"Bearer {API_KEY}"}
FUTURE = 4_000_000_000
PAST = 1_700_000_000  # 2023-11-14 22:13:20 UTC
NAME = "<b>x</b>&.pdf"


@dataclass
class Env:
    store: LocalStore
    cfg: LinksConfig
    log: RecordingLog
    http: aiohttp.ClientSession
    base: str
    secrets: list[bytes] = field(default_factory=lambda: [SECRET, OLD])

    async def put(self, data: bytes, filename: str = NAME, content_type: str = "application/pdf",
                  **kw: Any) -> StoredObject:
        kw = {"message_id": "<m1@example.com>", "sender": "alice@example.com",
              "date": "2026-11-20T10:00:00+00:00", "tenant": "example.com", **kw}
        obj = StoredObject(key=make_key(filename), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                           content_type=content_type, filename=filename, **kw)
        return await self.store.put(data, obj)

    def token(self, obj: StoredObject, expires: int = FUTURE, secret: bytes = SECRET, **kw: Any) -> str:
        grant = Grant(obj.key, expires, os.urandom(8).hex(), **kw)
        return sign(grant, secret)

    def url(self, token: str) -> str:
        return link_url(self.base, token)

    async def grant(self, link: str, secrets: list[bytes] | None = None) -> Grant:
        """The grant behind a link the service made (a short id or a token), expired or not."""
        service = LinkService(self.store, secrets or [SECRET], self.cfg)
        return await service.grant(unquote(link.rsplit("/f/", 1)[-1]), allow_expired=True)

    async def get(self, url: str, **kw: Any) -> tuple[int, Any, bytes]:
        async with self.http.get(url, allow_redirects=False, **kw) as r:
            return r.status, r.headers, await r.read()

    async def api(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                  raw: bytes | None = None, **kw: Any) -> tuple[int, Any, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        async with self.http.request(method, f"{self.base}/api/v1/links/{path}", data=data,
                                     headers=AUTH if headers is None else headers, **kw) as r:
            return r.status, r.headers, await r.json(content_type=None)


@pytest.fixture
async def make_env(tmp_path: Path):
    servers: list[LinkServer] = []
    async with aiohttp.ClientSession() as http:

        async def make(api_keys: list[str] | None = None, secrets: list[bytes] | None = None) -> Env:
            store = LocalStore(tmp_path / "store")
            cfg = LinksConfig(api_keys=[API_KEY] if api_keys is None else api_keys, click_ttl_seconds=60)
            log = RecordingLog()
            env = Env(store, cfg, log, http, "", secrets or [SECRET, OLD])
            server = LinkServer(store, env.secrets, cfg, log=log)
            await server.start("127.0.0.1", 0)
            servers.append(server)
            env.base = cfg.base_url = f"http://127.0.0.1:{server.port}"  # refresh mints links to it
            return env

        yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def env(make_env) -> Env:
    return await make_env()


def _page_headers_ok(h) -> None:
    assert h["Content-Type"].startswith("text/html")
    assert h["Content-Security-Policy"].startswith("default-src 'none'; style-src 'unsafe-inline'")
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "no-referrer"
    assert "no-store" in h["Cache-Control"]


def _self_contained(body: str) -> None:
    assert "<script" not in body.lower()
    assert not re.search(r"src=|@import|url\(|https?://", body)  # no external resources


# -- landing page -------------------------------------------------------------


async def test_landing_page_shows_the_file_escaped(env: Env) -> None:
    obj = await env.put(os.urandom(1_234_567))
    token = env.token(obj)
    status, headers, raw = await env.get(env.url(token))
    body = raw.decode()
    assert status == 200
    _page_headers_ok(headers)
    _self_contained(body)
    assert "&lt;b&gt;x&lt;/b&gt;&amp;.pdf" in body and "<b>x</b>" not in body  # the name, escaped
    for text in ("1.2 MiB", "application/pdf", "alice@example.com", "2026-11-20 10:00 UTC",
                 "2096-10-02 07:06 UTC"):  # size, detected type, sender, received, link expiry
        assert text in body, text
    assert f'<a class="button" href="./{token}/download"' in body  # a plain link, no script
    assert obj.key not in body and obj.sha256 not in body


async def test_landing_page_escapes_sender_and_type(env: Env) -> None:
    obj = await env.put(b"data", "a.txt", 'text/plain; x="<i>"', sender='"><script>alert(1)</script>')
    status, _, raw = await env.get(env.url(env.token(obj)))
    assert status == 200
    assert b"<script>" not in raw and b"&lt;script&gt;" in raw and b"&lt;i&gt;" in raw


async def test_get_and_head_never_consume(env: Env) -> None:
    data = os.urandom(50_000)
    obj = await env.put(data)
    token = env.token(obj)
    for _ in range(3):  # a scanner's fetches must not use the link up
        assert (await env.get(env.url(token)))[0] == 200
        async with env.http.head(env.url(token)) as r:
            assert r.status == 200 and await r.read() == b""
        status, _, body = await env.get(env.url(token) + "/download")
        assert status == 200 and body == data
    assert not (env.store.root / ".revoked").exists()
    await env.log.settle()
    assert [e["status"] for e in env.log.named("link_view")] == [200] * 6
    assert [e["status"] for e in env.log.named("link_download")] == [200] * 3


# -- download -----------------------------------------------------------------


async def test_download_streams_exact_bytes_with_headers(env: Env) -> None:
    data = os.urandom(700_000)  # several chunks
    obj = await env.put(data, 'Отчёт "Q1"\u202e 2024.pdf')
    status, h, body = await env.get(env.url(env.token(obj)) + "/download")
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == obj.sha256
    assert h["Content-Type"] == "application/pdf" and h["Content-Length"] == str(len(data))
    assert h["X-Content-Type-Options"] == "nosniff" and h["Referrer-Policy"] == "no-referrer"
    assert h["Content-Security-Policy"].startswith("default-src 'none'")
    m = re.fullmatch(r"""attachment; filename="([ -~]+)"; filename\*=UTF-8''([A-Za-z0-9%._~-]+)""",
                     h["Content-Disposition"])
    assert m, h["Content-Disposition"]
    # From the original name, made safe: no quote, no bidi override.
    assert unquote(m.group(2)) == "Отчёт _Q1_ 2024.pdf" and m.group(1).endswith(".pdf")


async def test_unknown_or_malformed_content_type_is_octet_stream(env: Env) -> None:
    obj = await env.put(b"abc", "a.bin", "not a type\r\nX-Evil: 1")
    status, h, _ = await env.get(env.url(env.token(obj)) + "/download")
    assert status == 200 and h["Content-Type"] == "application/octet-stream" and "X-Evil" not in h


async def test_head_on_download_mints_nothing(env: Env) -> None:
    obj = await env.put(b"abc")
    async with env.http.head(env.url(env.token(obj)) + "/download") as r:
        assert r.status == 405 and "GET" in r.headers["Allow"]
    await env.log.settle()
    assert env.log.named("link_download") == []


# -- refusals -----------------------------------------------------------------


def _no_internals(body: str, env: Env, obj: StoredObject) -> None:
    for secret in (obj.key, obj.key.split("/")[3], str(env.store.root), "Traceback", "Error", obj.sha256):
        assert secret not in body, secret


@pytest.mark.parametrize("suffix", ["", "/download"])
async def test_tampered_link_is_403(env: Env, suffix: str) -> None:
    obj = await env.put(b"secret bytes")
    token = env.token(obj)
    forged = token[:8] + ("A" if token[8] != "A" else "B") + token[9:]
    for bad in (forged, "garbage", env.token(obj, secret=b"x" * 40)):
        status, h, raw = await env.get(env.url(bad) + suffix)
        body = raw.decode()
        assert status == 403 and "This link is not valid" in body
        _page_headers_ok(h)
        _self_contained(body)
        _no_internals(body, env, obj)


@pytest.mark.parametrize("suffix", ["", "/download"])
async def test_expired_link_is_410_with_date_and_advice(env: Env, suffix: str) -> None:
    obj = await env.put(b"old")
    status, h, raw = await env.get(env.url(env.token(obj, PAST)) + suffix)
    body = raw.decode()
    assert status == 410
    # The reader is an agent: whom to ask (no "Get a new link" button without an identified agent).
    assert "expired on 2023-11-14 22:13 UTC" in body and "Ask your administrator for a new link" in body
    assert "Get a new link" not in body and "<form" not in body
    _page_headers_ok(h)
    _no_internals(body, env, obj)


@pytest.mark.parametrize("suffix", ["", "/download"])
async def test_deleted_object_is_404(env: Env, suffix: str) -> None:
    obj = await env.put(b"gone soon")
    await env.store.delete(obj.key)
    status, _, raw = await env.get(env.url(env.token(obj)) + suffix)
    assert status == 404 and "no longer available" in raw.decode()
    _no_internals(raw.decode(), env, obj)


async def test_link_for_another_message_is_404(env: Env) -> None:
    obj = await env.put(b"someone else's", message_id="<other@example.com>")
    grant = new_grant(obj.key, 3600, "<m1@example.com>")  # made for a different message
    status, _, _ = await env.get(env.url(sign(grant, SECRET)) + "/download")
    assert status == 404


@pytest.mark.parametrize("suffix", ["", "/download"])
async def test_store_failure_is_503_without_internals(env: Env, suffix: str) -> None:
    obj = await env.put(b"data")
    token = env.token(obj)
    env.store.root.rename(env.store.root.with_name("moved"))  # as if the volume were unmounted
    status, _, raw = await env.get(env.url(token) + suffix)
    body = raw.decode()
    assert status == 503 and "try again" in body
    _no_internals(body, env, obj)
    await env.log.settle()
    (event,) = env.log.named("link_download" if suffix else "link_view")
    assert event["level"] == "warning" and event["status"] == 503 and "error" in event


async def test_unknown_paths_are_404(env: Env) -> None:
    obj = await env.put(b"x")
    for path in (f"/f/{env.token(obj)}/other", "/f/", "/api/v1/links/nope"):
        assert (await env.get(env.base + path))[0] == 404


# -- secret rotation ----------------------------------------------------------


async def test_rotation_old_secret_verifies_new_tokens_use_first(env: Env) -> None:
    obj = await env.put(b"rotated")
    old_token = env.token(obj, secret=OLD)
    assert (await env.get(env.url(old_token)))[0] == 200
    status, _, body = await env.get(env.url(old_token) + "/download")
    assert status == 200 and body == b"rotated"
    status, _, out = await env.api("POST", "refresh", {"token": old_token})
    assert status == 200
    assert (await env.grant(out["url"])).key == obj.key
    with pytest.raises(BadToken):
        await env.grant(out["url"], [OLD])  # made with the first secret only


# -- API ----------------------------------------------------------------------


async def test_api_auth(env: Env) -> None:
    obj = await env.put(b"x")
    body = {"key": obj.key}
    status, h, out = await env.api("POST", "refresh", body, headers={})
    assert status == 401 and h["WWW-Authenticate"].startswith("Bearer") and "error" in out
    for wrong in ("Bearer " + "j" * 32, "Bearer " + API_KEY[:-1], "Basic " + API_KEY, API_KEY, "Bearer "):
        status, h, out = await env.api("POST", "refresh", body, headers={"Authorization": wrong})
        assert status == 401 and h["WWW-Authenticate"].startswith("Bearer"), wrong
        assert API_KEY not in json.dumps(out)
    status, h, out = await env.api("POST", "refresh", body, headers={"Authorization": f"bearer {API_KEY}"})
    assert status == 200 and h["Cache-Control"] == "no-store"


async def test_api_disabled_without_keys(make_env) -> None:
    env = await make_env(api_keys=[])
    for method, path in (("POST", "refresh"), ("POST", "revoke"), ("GET", "show?token=x")):
        status, _, out = await env.api(method, path, {})
        assert status == 404 and out == {"error": "API disabled"}


async def test_refresh_expired_token_gives_a_working_link(env: Env) -> None:
    data = os.urandom(10_000)
    obj = await env.put(data)
    expired = env.token(obj, PAST, message_ref="0" * 16)
    assert (await env.get(env.url(expired)))[0] == 410
    before = int(time.time())
    status, _, out = await env.api("POST", "refresh", {"token": expired, "ttl_seconds": 3600})
    assert status == 200, out
    assert set(out) == {"url", "token_id", "expires", "expires_at", "key"} and out["key"] == obj.key
    assert before + 3600 <= out["expires"] <= int(time.time()) + 3600
    grant = await env.grant(out["url"])
    assert grant.token_id == out["token_id"] and grant.message_ref == hashlib.sha256(
        b"<m1@example.com>").hexdigest()[:16]
    assert re.fullmatch(re.escape(env.base) + r"/f/[A-Za-z0-9_-]{32}", out["url"])  # a short link
    assert (await env.get(out["url"]))[0] == 200
    status, _, body = await env.get(out["url"] + "/download")
    assert status == 200 and body == data


async def test_refresh_by_key_default_ttl_and_missing_object(env: Env) -> None:
    obj = await env.put(b"by key")
    before = int(time.time())
    status, _, out = await env.api("POST", "refresh", {"key": obj.key})
    assert status == 200 and before + env.cfg.ttl_seconds <= out["expires"] <= int(time.time()) + env.cfg.ttl_seconds
    assert (await env.get(out["url"] + "/download"))[2] == b"by key"
    for body in ({"key": "2024/01/01/none/x.pdf"}, {"key": "../../etc/passwd"}):
        status, _, out = await env.api("POST", "refresh", body)
        assert status == 404 and out == {"error": "file no longer available"}
    await env.store.delete(obj.key)
    status, _, _ = await env.api("POST", "refresh", {"token": env.token(obj, PAST)})
    assert status == 404


@pytest.mark.parametrize("body,message", [
    ({}, "exactly one of"),
    ({"token": "a", "key": "b"}, "exactly one of"),
    ({"key": 5}, "non-empty string"),
    ({"key": "k", "ttl_seconds": 0}, "ttl_seconds"),
    ({"key": "k", "ttl_seconds": "60"}, "ttl_seconds"),
    ({"key": "k", "ttl_seconds": 10**12}, "ttl_seconds"),
    ({"key": "k", "extra": 1}, "unknown field: extra"),
    ({"token": "v2.forged.x"}, "token is not valid"),
])
async def test_refresh_bad_requests_are_400(env: Env, body: dict, message: str) -> None:
    status, _, out = await env.api("POST", "refresh", body)
    assert status == 400 and message in out["error"], out


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"token"', b"\xff\xfe"])
async def test_bad_json_is_400(env: Env, raw: bytes) -> None:
    for path in ("refresh", "revoke"):
        status, h, out = await env.api("POST", path, raw=raw)
        assert status == 400 and out == {"error": "request body must be a JSON object"}
        assert h["Content-Type"].startswith("application/json")


async def test_revoke_kills_that_link_only(env: Env) -> None:
    obj = await env.put(b"revocable")
    revoked, other = env.token(obj), env.token(obj)
    status, _, out = await env.api("POST", "revoke", {"token": revoked})
    token_id = verify(revoked, [SECRET]).token_id
    assert status == 200 and out == {"revoked": token_id}
    for suffix in ("", "/download"):
        status, h, raw = await env.get(env.url(revoked) + suffix)
        assert status == 410 and "This link was revoked" in raw.decode()
        _page_headers_ok(h)
        _no_internals(raw.decode(), env, obj)
    assert (await env.get(env.url(other) + "/download"))[2] == b"revocable"
    # A revoked link cannot be brought back by refreshing it; an operator can refresh by key.
    status, _, out = await env.api("POST", "refresh", {"token": revoked})
    assert status == 410 and out == {"error": "link was revoked"}
    await env.log.settle()
    statuses = [(e["token_id"], e["status"]) for e in env.log.named("link_download")]
    assert statuses == [(token_id, 410), (verify(other, [SECRET]).token_id, 200)]


async def test_revoke_by_token_id_and_expired_token(env: Env) -> None:
    obj = await env.put(b"x")
    token = env.token(obj)
    token_id = verify(token, [SECRET]).token_id
    status, _, out = await env.api("POST", "revoke", {"token_id": token_id})
    assert status == 200 and out == {"revoked": token_id}
    assert (await env.get(env.url(token)))[0] == 410
    expired = env.token(obj, PAST)
    status, _, out = await env.api("POST", "revoke", {"token": expired})
    assert status == 200 and await env.store.is_revoked(out["revoked"])
    for body in ({"token_id": "../x"}, {"token_id": "ABC"}, {}, {"token": "nope"}):
        assert (await env.api("POST", "revoke", body))[0] == 400, body


async def test_show(env: Env) -> None:
    obj = await env.put(b"shown", "report.pdf", from_header="Jörg Müller <joerg@example.de>",
                        subject="Schaden 4711: Bericht")
    token = env.token(obj, PAST)
    status, _, out = await env.api("GET", "show", params={"token": token})
    assert status == 200
    assert out["token_id"] == verify(token, [SECRET], now=0).token_id
    assert out["expires"] == PAST and out["expires_at"] == "2023-11-14T22:13:20Z"
    assert out["expired"] is True and out["revoked"] is False and out["key"] == obj.key
    assert out["object"] == {"key": obj.key, "filename": "report.pdf", "size": 5, "content_type": "application/pdf",
                             "sha256": obj.sha256, "message_id": "<m1@example.com>", "sender": "alice@example.com",
                             "date": "2026-11-20T10:00:00+00:00", "tenant": "example.com",
                             "from_header": "Jörg Müller <joerg@example.de>", "subject": "Schaden 4711: Bericht"}
    await env.api("POST", "revoke", {"token": token})
    await env.store.delete(obj.key)
    status, _, out = await env.api("GET", "show", params={"token": token})
    assert status == 200 and out["revoked"] is True and out["object"] is None
    assert (await env.api("GET", "show"))[0] == 400
    assert (await env.api("GET", "show", params={"token": "forged"}))[0] == 400


# -- audit --------------------------------------------------------------------


async def test_audit_one_event_per_view_and_download(env: Env) -> None:
    obj = await env.put(b"audited")
    token = env.token(obj)
    ua = {"User-Agent": "Scanner/1.0"}
    await env.get(env.url(token), headers=ua)
    await env.get(env.url(token) + "/download", headers=ua)
    await env.log.settle()  # a streamed download is logged after its last byte
    await env.get(env.url("garbage"), headers=ua)
    await env.get(env.url(env.token(obj, PAST)) + "/download", headers=ua)
    await env.api("POST", "revoke", {"token": token})
    await env.log.settle()
    assert [(e["event"], e["status"]) for e in env.log.events] == [
        ("link_view", 200), ("link_download", 200), ("link_view", 403), ("link_download", 410), ("link_api", 200)]
    view, download, forged, expired, api = env.log.events
    grant = verify(token, [SECRET])
    for e in (view, download):
        assert {k: e[k] for k in ("remote", "user_agent", "token_id", "storage_key", "message_id", "tenant")} == {
            "remote": "127.0.0.1", "user_agent": "Scanner/1.0", "token_id": grant.token_id,
            "storage_key": obj.key, "message_id": "<m1@example.com>", "tenant": "example.com"}
    assert download["via"] == "stream"
    assert forged["token_id"] is None and forged["storage_key"] is None
    assert expired["storage_key"] == obj.key and expired["token_id"]
    assert api["action"] == "revoke" and api["token_id"] == grant.token_id
    dump = repr(env.log.events)
    for secret in (token, token.split(".")[2], SECRET.decode(), OLD.decode(), API_KEY):
        assert secret not in dump


# -- command line -------------------------------------------------------------


def _cli(*args: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smtp_offload", "links", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "SMTP_OFFLOAD_LINK_SECRET": ""})


def _write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "smtp-offload.toml"
    path.write_text(f'[storage.local]\npath = "{tmp_path / "store"}"\n\n'
                    f'[links]\nbase_url = "https://files.example.com"\nttl_seconds = 7200\n'
                    f'secret = "{SECRET.decode()}"\nold_secrets = ["{OLD.decode()}"]\n{extra}')
    return path


async def test_cli_refresh_revoke_show(env: Env, tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    obj = await env.put(b"via cli", "cli.pdf")
    old = env.token(obj, PAST, secret=OLD)

    before = int(time.time())
    r = _cli("refresh", "--token", old, "--ttl", "600", config=config)
    after = int(time.time())
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["url"].startswith("https://files.example.com/f/") and out["key"] == obj.key
    new_token = out["url"].rsplit("/f/", 1)[1]
    assert (await env.grant(new_token)).token_id == out["token_id"]
    assert before + 600 <= out["expires"] <= after + 600  # the requested lifetime, from the moment of refresh
    # The link works on the (already running) server: same secrets, same store.
    assert (await env.get(env.url(new_token) + "/download"))[2] == b"via cli"

    before = int(time.time())
    r = _cli("refresh", "--key", obj.key, config=config)
    assert r.returncode == 0 and before + 7200 <= json.loads(r.stdout)["expires"] <= int(time.time()) + 7200

    r = _cli("show", "--token", new_token, config=config)
    shown = json.loads(r.stdout)
    assert r.returncode == 0 and shown["revoked"] is False and shown["object"]["filename"] == "cli.pdf"

    r = _cli("revoke", "--token", new_token, config=config)
    assert r.returncode == 0 and json.loads(r.stdout) == {"revoked": out["token_id"]}
    assert (await env.get(env.url(new_token) + "/download"))[0] == 410  # seen by the running server
    assert json.loads(_cli("show", "--token", new_token, config=config).stdout)["revoked"] is True

    other = env.token(obj)
    r = _cli("revoke", "--token-id", verify(other, [SECRET]).token_id, config=config)
    assert r.returncode == 0 and (await env.get(env.url(other)))[0] == 410


def test_cli_refusals_and_usage(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    r = _cli("refresh", "--key", "2024/01/01/none/x.pdf", config=config)
    assert r.returncode == 1 and "no longer available" in r.stderr and r.stdout == ""
    r = _cli("show", "--token", "forged", config=config)
    assert r.returncode == 1 and "not valid" in r.stderr
    r = _cli("refresh", "--token", "a", "--key", "b", config=config)
    assert r.returncode == 2 and "not allowed with" in r.stderr  # argparse: mutually exclusive
    # No secret configured and no secret file: refuse rather than invent a secret nobody shares.
    bare = tmp_path / "bare.toml"
    bare.write_text(f'[storage.local]\npath = "{tmp_path / "store"}"\n[links]\n'
                    f'secret_file = "{tmp_path / "missing-secret"}"\n')
    r = _cli("show", "--token", "x", config=bare)
    assert r.returncode == 2 and "missing-secret" in r.stderr
    assert not (tmp_path / "missing-secret").exists()


# -- against the proxy process: the API's refusals, the CLI on the links in the mail ---------


def _proxy_with_api(make_proxy):
    return make_proxy({"policy": {"offload_over_bytes": 10_000}, "links": {"api_keys": [API_KEY]}})


def _post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={**AUTH, "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _audited(proxy, count: int) -> list[dict[str, Any]]:
    """The proxy's link_api events, once `count` of them are in its log."""
    deadline = time.monotonic() + 20
    while len(events := proxy.events("link_api")) < count:
        assert time.monotonic() < deadline, events
        time.sleep(0.05)
    return events


@pytest.mark.parametrize("body", [
    b"[" * 30_000 + b"]" * 30_000,  # nested past the parser's recursion limit, within MAX_BODY_BYTES
    b'{"token": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    b'{"key": {"a": ' * 3_000 + b"1" + b"}" * 3_000 + b"}",
], ids=["list", "in-a-field", "objects"])
def test_api_deeply_nested_json_is_400(make_proxy, body: bytes) -> None:
    proxy = _proxy_with_api(make_proxy)
    assert len(body) < 64 * 1024
    for path in ("refresh", "revoke"):
        status, headers, raw = _post(f"http://127.0.0.1:{proxy.links_port}/api/v1/links/{path}", body)
        assert status == 400 and headers["Content-Type"].startswith("application/json"), raw[:300]
        assert json.loads(raw) == {"error": "request body must be a JSON object"}
    assert [e["status"] for e in _audited(proxy, 2)] == [400, 400]
    assert proxy.events("link_api_internal_error") == []


def test_api_body_over_the_limit_is_413_and_audited_as_sent(make_proxy) -> None:
    proxy = _proxy_with_api(make_proxy)
    url = f"http://127.0.0.1:{proxy.links_port}/api/v1/links/refresh"
    status, headers, raw = _post(url, b"[" * 100_000 + b"]" * 100_000)  # the 100k-deep body of the report
    assert status == 413 and headers["Content-Type"].startswith("application/json")
    assert "larger than" in json.loads(raw)["error"]
    status, _, raw = _post(url, b"{}", headers={"Authorization": "Bearer " + "j" * 32})
    assert status == 401
    (big, unauthorized) = _audited(proxy, 2)
    assert (big["status"], big["level"], big["action"]) == (413, "info", "refresh")
    assert "larger than" in big["error"]
    assert unauthorized["status"] == 401


def _offloaded_link(proxy, sink) -> str:
    data = samples_pdf(60_000)
    msg = message(multipart(text(), attachment(data, "cli.pdf", "application/pdf")))
    assert proxy.send(msg)[0] == 250
    (link,) = set(LINK.findall(body_text(sink.messages[-1].content).encode()))
    return link.decode()


def _cli_proxy(proxy, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smtp_offload", "links", *args, "--config", str(proxy.config)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SMTP_OFFLOAD_LINK_SECRET": ""}, cwd=proxy.tmp)


def test_cli_takes_the_link_as_it_appears_in_the_mail(make_proxy, sink) -> None:
    proxy = _proxy_with_api(make_proxy)
    url = _offloaded_link(proxy, sink)
    token = url.rsplit("/f/", 1)[1]
    for given in (url, url + "/download", url + "/renew", url + "?utm_source=mail", url + "/", url + "/download/?x=1#top",
                  token, f" {url}\n"):
        r = _cli_proxy(proxy, "show", given)
        assert r.returncode == 0, (given, r.stderr)
        shown = json.loads(r.stdout)
        assert shown["object"]["filename"] == "cli.pdf" and shown["revoked"] is False, given
    r = _cli_proxy(proxy, "show", "--token", url + "/download")  # --token takes the whole link too
    assert r.returncode == 0 and json.loads(r.stdout)["token_id"] == shown["token_id"]

    r = _cli_proxy(proxy, "refresh", url + "/download?from=mail", "--ttl", "600")
    assert r.returncode == 0, r.stderr
    fresh = json.loads(r.stdout)["url"]
    assert fresh.startswith(f"http://127.0.0.1:{proxy.links_port}/f/") and fresh != url
    assert urllib.request.urlopen(fresh + "/download", timeout=30).read().startswith(b"%PDF")

    r = _cli_proxy(proxy, "revoke", url + "/")
    assert r.returncode == 0 and json.loads(r.stdout) == {"revoked": shown["token_id"]}
    with pytest.raises(urllib.error.HTTPError) as gone:  # seen by the running link server
        urllib.request.urlopen(url, timeout=30)
    assert gone.value.code == 410
    assert urllib.request.urlopen(fresh, timeout=30).status == 200  # the other link still works


def test_cli_link_usage_and_refusals(make_proxy, sink) -> None:
    proxy = _proxy_with_api(make_proxy)
    url = _offloaded_link(proxy, sink)
    r = _cli_proxy(proxy, "show")
    assert r.returncode == 2 and "URL-OR-TOKEN" in r.stderr
    r = _cli_proxy(proxy, "show", url, "--token", url)
    assert r.returncode == 2 and "not allowed with" in r.stderr
    r = _cli_proxy(proxy, "refresh", url, "--key", "2024/01/01/x/y.pdf")
    assert r.returncode == 2 and "not allowed with" in r.stderr
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    r = _cli_proxy(proxy, "show", tampered + "/download")
    assert r.returncode == 1 and "not valid" in r.stderr and r.stdout == ""
    r = _cli_proxy(proxy, "revoke", f"http://127.0.0.1:{proxy.links_port}/f/")
    assert r.returncode == 1 and "Traceback" not in r.stderr


# -- one minter, one table of refusals ----------------------------------------


class _Presigner(LocalStore):
    """A store that presigns (as S3 does), recording what it was asked."""

    asked: list[tuple[str, int]]

    async def presign(self, obj: StoredObject, ttl: int) -> str | None:
        self.asked = [*getattr(self, "asked", []), (obj.key, ttl)]
        return f"https://bucket.example/{obj.key}?X-Amz-Expires={ttl}"


@pytest.mark.parametrize("short", [True, False], ids=["short-id", "token"])
async def test_mint_redirect_mode_makes_a_link_to_the_link_service(tmp_path: Path, short: bool) -> None:
    store = LocalStore(tmp_path / "store")
    env = Env(store, LinksConfig(short=short), RecordingLog(), None, "")  # type: ignore[arg-type]
    obj = await env.put(b"minted")
    cfg = LinksConfig(base_url="https://files.example.com/", short=short)
    before = int(time.time())
    minted = await mint(store, SECRET, cfg, obj, 600)
    link = unquote(minted.url.rsplit("/f/", 1)[1])
    assert minted.url.startswith("https://files.example.com/f/" + ("" if short else "v2.")) and minted.key == obj.key
    grant = await env.grant(minted.url)
    if not short:
        assert verify(link, [SECRET]) == grant  # self-contained: no lookup needed
    assert (grant.key, grant.token_id, grant.expires) == (obj.key, minted.token_id, minted.expires)
    assert grant.message_ref == message_ref("<m1@example.com>")  # bound to its message
    assert before + 600 <= minted.expires <= int(time.time()) + 600
    with pytest.raises(BadToken):  # made with the secret given, nothing else
        await env.grant(minted.url, [OLD])


async def test_mint_presigned_mode_uses_the_store_and_cannot_be_revoked(tmp_path: Path) -> None:
    cfg = LinksConfig(mode="presigned")
    store = _Presigner(tmp_path / "store")
    obj = await Env(store, cfg, RecordingLog(), None, "").put(b"minted")  # type: ignore[arg-type]
    before = int(time.time())
    minted = await mint(store, SECRET, cfg, obj, 900)
    assert minted.url == f"https://bucket.example/{obj.key}?X-Amz-Expires=900" and minted.token_id is None
    assert store.asked == [(obj.key, 900)] and before + 900 <= minted.expires <= int(time.time()) + 900
    plain = LocalStore(tmp_path / "store")  # cannot presign
    with pytest.raises(InvalidRequest, match="^this store cannot make presigned URLs$"):
        await mint(plain, SECRET, cfg, obj, 900)


async def test_refresh_in_presigned_mode_mints_through_the_store(tmp_path: Path) -> None:
    cfg = LinksConfig(mode="presigned")
    store = _Presigner(tmp_path / "store")
    obj = await Env(store, cfg, RecordingLog(), None, "").put(b"minted")  # type: ignore[arg-type]
    service = LinkService(store, [SECRET], cfg)
    minted = await service.refresh(key=obj.key, ttl=60)
    assert minted.url.endswith("X-Amz-Expires=60") and minted.token_id is None
    with pytest.raises(InvalidRequest, match="cannot exceed"):
        await service.refresh(key=obj.key, ttl=PRESIGN_MAX_TTL + 1)


_GRANT = Grant("2026/11/20/abc/x.pdf", PAST, "0123456789abcdef")

# exception -> (kind, API status, page status, exit code, JSON message, command's message, page title)
OUTCOMES = [
    (ExpiredToken(_GRANT), "expired", 410, 410, 1, "link has expired", "link has expired",
     "This link has expired"),
    (BadToken("bad mac"), "bad_token", 400, 403, 1, "token is not valid", "token is not valid",
     "This link is not valid"),
    (Revoked(_GRANT), "revoked", 410, 410, 1, "link was revoked", "link was revoked", "This link was revoked"),
    (Gone("k"), "gone", 404, 404, 1, "file no longer available", "file no longer available",
     "This file is no longer available"),
    (InvalidRequest("ttl_seconds must be an integer"), "invalid_request", 400, 400, 1,
     "ttl_seconds must be an integer", "ttl_seconds must be an integer", "This link is not valid"),
    (StorageError("bucket down"), "storage_unavailable", 503, 503, 1, "storage unavailable, try again later",
     "storage unavailable: bucket down", "Temporarily unavailable"),
    (FileNotFoundError(2, "No such file", "/srv/store"), "storage_unavailable", 503, 503, 1,
     "storage unavailable, try again later", "storage unavailable: [Errno 2] No such file: '/srv/store'",
     "Temporarily unavailable"),
]


@pytest.mark.parametrize(("exc", "kind", "api", "page", "code", "message", "cli", "title"), OUTCOMES,
                         ids=[type(o[0]).__name__ for o in OUTCOMES])
def test_outcome_table(exc: Exception, kind: str, api: int, page: int, code: int, message: str, cli: str,
                       title: str) -> None:
    o = outcome_of(exc)
    assert o is not None
    assert (o.kind, o.api_status, o.page_status, o.exit_code, o.message, o.cli_message) == (
        kind, api, page, code, message, cli)
    assert o.as_json() == {"error": message}
    assert f"<title>{title}</title>" in o.page
    # Storage details go to operators (log, terminal), never onto a page or into the JSON.
    assert o.detail == (str(exc) if kind == "storage_unavailable" else None)
    if o.detail:
        assert o.detail not in o.page and o.detail not in o.message


def test_outcome_expired_page_names_the_date() -> None:
    o = outcome_of(ExpiredToken(_GRANT))
    assert o is not None and "expired on 2023-11-14 22:13 UTC" in o.page


@pytest.mark.parametrize("exc", [KeyError("k"), ValueError("x"), RuntimeError("bug"), ConfigError("c")])
def test_outcome_of_a_bug_is_none(exc: Exception) -> None:
    assert outcome_of(exc) is None  # the caller's 500 / traceback, not a refusal
