"""The agent's identity in the link service: a real LinkServer on loopback, a real LocalStore,
real HTTP from 127.0.0.1 or 127.0.0.2 (a client bound to another loopback address is
another peer to the server).

Covers which identity headers are believed (trusted peers only, first configured header
present, valid values only), links.require_agent's sign-in page, and the agent, customer
and file fields of every link_view / link_download audit event, refusals included.
(nginx and an oauth2-proxy in front: tests/test_nginx_sso.py.)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from smtp_offload.config import LinksConfig
from smtp_offload.links import Grant, link_url, sign
from smtp_offload.links.server import LinkServer
from smtp_offload.links.service import AgentHeaders, valid_agent
from smtp_offload.storage import LocalStore, StoredObject, make_key
from tests.support.logs import RecordingLog

SECRET = b"a" * 40
API_KEY = "k" * 32
FUTURE = 4_000_000_000
PAST = 1_700_000_000
AGENT = "jane.doe@support.example.com"
NAME = "Q3 <statement>.pdf"
DATA = b"%PDF-1.7 the customer's statement"


class Env:
    def __init__(self, store: LocalStore, log: RecordingLog, base: str) -> None:
        self.store, self.log, self.base = store, log, base

    async def put(self, data: bytes = DATA, filename: str = NAME, tenant: str | None = "CUST-1") -> StoredObject:
        obj = StoredObject(key=make_key(filename), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                           content_type="application/pdf", filename=filename, message_id="<m@example.com>",
                           sender="customer@example.org", date="2026-11-20T10:00:00+00:00", tenant=tenant)
        return await self.store.put(data, obj)

    def link(self, obj: StoredObject, expires: int = FUTURE) -> str:
        return link_url(self.base, sign(Grant(obj.key, expires, os.urandom(8).hex()), SECRET))

    async def get(self, url: str, headers: dict | None = None, source: str = "127.0.0.1",
                  method: str = "GET") -> tuple[int, Any, bytes]:
        """From `source`: the TCP peer the server sees. A link request returns once its one
        audit event is logged (a download's comes after its last byte, which the client may
        have read first)."""
        before = len(self.log.events)
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.request(method, url, headers=headers, allow_redirects=False) as r:
                out = r.status, r.headers, await r.read()
        if "/f/" in url:
            for _ in range(1000):
                if len(self.log.events) > before:
                    break
                await asyncio.sleep(0.01)
            assert len(self.log.events) == before + 1, self.log.events[before:]
        return out

    async def last(self, event: str) -> dict[str, Any]:
        return self.log.named(event)[-1]


@pytest.fixture
async def make_env(tmp_path: Path):
    servers: list[LinkServer] = []

    async def make(**links: Any) -> Env:
        cfg = LinksConfig(api_keys=[API_KEY], **links)
        log = RecordingLog()
        store = LocalStore(tmp_path / f"store{len(servers)}")
        server = LinkServer(store, [SECRET], cfg, log=log)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return Env(store, log, f"http://127.0.0.1:{server.port}")

    yield make
    for server in servers:
        await server.stop()


TRUSTED = {"trusted_proxies": ["127.0.0.1"]}


# -- which header is believed ---------------------------------------------------------


async def test_trusted_proxy_names_the_agent_on_view_and_download(make_env) -> None:
    env = await make_env(**TRUSTED)
    obj = await env.put()
    link = env.link(obj)
    headers = {"X-Auth-Request-Email": AGENT}
    assert (await env.get(link, headers))[0] == 200
    status, _, body = await env.get(link + "/download", headers)
    assert status == 200 and body == DATA
    for event in ("link_view", "link_download"):
        e = await env.last(event)
        assert e["agent"] == AGENT and e["agent_header"] == "X-Auth-Request-Email" and "agent_ignored" not in e
        # The correlation: who, whose, which file.
        assert {k: e[k] for k in ("customer", "filename", "key", "size", "sha256")} == {
            "customer": "CUST-1", "filename": NAME, "key": obj.key, "size": len(DATA),
            "sha256": hashlib.sha256(DATA).hexdigest()}
        # The older names still carry the same.
        assert e["tenant"] == "CUST-1" and e["storage_key"] == obj.key and e["message_id"] == "<m@example.com>"


@pytest.mark.parametrize("links", [{}, {"trusted_proxies": ["127.0.0.2"]}, {"trusted_proxies": ["10.0.0.0/8"]}],
                         ids=["nobody-trusted", "another-address", "another-network"])
async def test_header_from_an_untrusted_peer_is_ignored(make_env, links) -> None:
    env = await make_env(**links)
    obj = await env.put()
    status, _, body = await env.get(env.link(obj) + "/download", {"X-Auth-Request-Email": AGENT,
                                                                   "X-Forwarded-For": "127.0.0.2"})
    assert status == 200 and body == DATA  # without require_agent the link works as before
    e = await env.last("link_download")
    assert e["agent"] is None and e["agent_ignored"] == "untrusted_peer" and e["level"] == "info"
    assert e["customer"] == "CUST-1"
    assert AGENT not in repr(env.log.events)


async def test_peer_is_the_connection_not_x_forwarded_for(make_env) -> None:
    env = await make_env(**TRUSTED)
    obj = await env.put()
    await env.get(env.link(obj), {"X-Auth-Request-Email": AGENT, "X-Forwarded-For": "127.0.0.1"}, source="127.0.0.2")
    e = await env.last("link_view")
    assert (e["agent"], e["agent_ignored"], e["remote"]) == (None, "untrusted_peer", "127.0.0.2")


async def test_behind_a_trusted_proxy_the_client_is_the_one_x_forwarded_for_names(make_env) -> None:
    """What the audit (and the portal's per-client limit) calls `remote`: the customer or agent
    the reverse proxy saw, not the proxy's one address."""
    env = await make_env(**TRUSTED)
    obj = await env.put()
    await env.get(env.link(obj), {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
    assert (await env.last("link_view"))["remote"] == "203.0.113.9"
    await env.get(env.link(obj), {"X-Forwarded-For": "203.0.113.9"}, source="127.0.0.2")  # not via the proxy
    assert (await env.last("link_view"))["remote"] == "127.0.0.2"


@pytest.mark.parametrize("peer,forwarded,client", [
    ("127.0.0.1", ["198.51.100.7"], "198.51.100.7"),
    ("127.0.0.1", ["198.51.100.7, 10.1.2.3"], "198.51.100.7"),  # a second trusted hop is skipped
    ("127.0.0.1", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),  # what the client wrote left of it is not
    ("127.0.0.1", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),  # two header lines read as one list
    ("127.0.0.1", ["198.51.100.7, not-an-address"], "127.0.0.1"),  # garbage ends the trust
    ("127.0.0.1", ["10.1.2.3"], "127.0.0.1"),  # only proxies: the peer
    ("127.0.0.1", [], "127.0.0.1"),
    ("192.0.2.1", ["198.51.100.7"], "192.0.2.1"),  # an untrusted peer's header means nothing
])
def test_client_address_behind_trusted_proxies(peer: str, forwarded: list[str], client: str) -> None:
    agents = AgentHeaders(LinksConfig(trusted_proxies=["127.0.0.1", "10.1.0.0/16"]))
    headers = CIMultiDictProxy(CIMultiDict([("X-Forwarded-For", v) for v in forwarded]))
    assert agents.client(peer, headers) == client


async def test_trusted_network_in_cidr_form(make_env) -> None:
    env = await make_env(trusted_proxies=["127.0.0.0/30"])
    obj = await env.put()
    await env.get(env.link(obj), {"X-Forwarded-Email": AGENT}, source="127.0.0.2")
    assert (await env.last("link_view"))["agent"] == AGENT


async def test_no_header_no_agent_and_nothing_ignored(make_env) -> None:
    env = await make_env(**TRUSTED)
    obj = await env.put()
    await env.get(env.link(obj))
    e = await env.last("link_view")
    assert e["agent"] is None and "agent_ignored" not in e and "agent_header" not in e


async def test_first_configured_header_present_wins(make_env) -> None:
    env = await make_env(**TRUSTED)
    obj = await env.put()
    link = env.link(obj)
    both = {"X-Auth-Request-Email": "first@example.com", "X-Forwarded-Email": "second@example.com"}
    await env.get(link, both)
    assert (await env.last("link_view"))["agent"] == "first@example.com"
    await env.get(link, {"X-Forwarded-Email": "second@example.com"})
    e = await env.last("link_view")
    assert (e["agent"], e["agent_header"]) == ("second@example.com", "X-Forwarded-Email")

    swapped = await make_env(trusted_proxies=["127.0.0.1"], agent_headers=["X-Forwarded-Email", "X-Auth-Request-Email"])
    obj = await swapped.put()
    await swapped.get(swapped.link(obj), both)
    assert (await swapped.last("link_view"))["agent"] == "second@example.com"

    only = await make_env(trusted_proxies=["127.0.0.1"], agent_headers=["X-Remote-User"])
    obj = await only.put()
    await only.get(only.link(obj), {**both, "x-remote-user": "jdoe"})  # header names are case-insensitive
    assert (await only.last("link_view"))["agent"] == "jdoe"


@pytest.mark.parametrize("value", [
    "two words@example.com", "<jane@example.com>", "a@example.com, b@example.com", "x" * 300 + "@example.com",
    "jane@example.com/../x", '"jane"@example.com', "jane\u202e@example.com", "@nobody.test", "jane@",
])
async def test_invalid_value_names_nobody_and_does_not_fall_through(make_env, value: str) -> None:
    env = await make_env(**TRUSTED)
    obj = await env.put()
    await env.get(env.link(obj), {"X-Auth-Request-Email": value, "X-Forwarded-Email": "second@example.com"})
    e = await env.last("link_view")
    assert (e["agent"], e["agent_header"], e["agent_ignored"]) == (None, "X-Auth-Request-Email", "invalid")
    assert value not in repr(env.log.events)


async def test_a_repeated_identity_header_names_nobody(make_env) -> None:
    env = await make_env(**TRUSTED)
    obj = await env.put()
    headers = CIMultiDict([("X-Auth-Request-Email", AGENT), ("X-Auth-Request-Email", "other@example.com")])
    await env.get(env.link(obj), headers)
    e = await env.last("link_view")
    assert (e["agent"], e["agent_ignored"]) == (None, "invalid")


@pytest.mark.parametrize("value,ok", [
    ("jane.doe@support.example.com", True), ("jdoe", True), ("j.doe+tag@example.co.uk", True),
    ("Jürgen@bücher.example", True), ("svc_agent-7", True),
    ("", False), ("jane doe", False), ("jane\x00@example.com", False), ("jane\t@example.com", False),
    ("a@b@c", False), ("DOMAIN\\jdoe", False), ("x" * 65, False), ("a" * 64 + "@" + "b" * 190, False),
])
def test_valid_agent(value: str, ok: bool) -> None:
    assert valid_agent(value) is ok


@pytest.mark.parametrize("peer,trusted", [
    ("127.0.0.1", True), ("::ffff:127.0.0.1", True), ("10.1.2.3", True), ("10.2.0.1", False),
    ("fd00::5", True), ("fe80::1%eth0", False), ("", False), (None, False), ("/run/links.sock", False),
])
def test_trusted_peers(peer: str | None, trusted: bool) -> None:
    agents = AgentHeaders(LinksConfig(trusted_proxies=["127.0.0.1", "10.1.0.0/16", "fd00::/64"]))
    assert agents.trusts(peer) is trusted
    headers = CIMultiDictProxy(CIMultiDict({"X-Auth-Request-Email": AGENT}))
    assert (agents.identify(peer, headers).name == AGENT) is trusted


# -- links.require_agent ----------------------------------------------------------------


def _no_metadata(body: bytes, obj: StoredObject) -> None:
    text = body.decode()
    for leak in (obj.filename, "statement", obj.key, "customer@example.org", "application/pdf", "CUST-1",
                 obj.sha256, "Download"):
        assert leak not in text, leak


@pytest.mark.parametrize("suffix", ["", "/download"])
async def test_require_agent_without_identity_gets_the_sign_in_page(make_env, suffix: str) -> None:
    env = await make_env(trusted_proxies=["127.0.0.1"], require_agent=True,
                         sign_in_url='https://sso.example.com/oauth2/start?rd=/"><script>')
    obj = await env.put()
    for url in (env.link(obj), env.link(obj, PAST), env.base + "/f/forged"):
        status, headers, body = await env.get(url + suffix)
        assert status == 401 and headers["Content-Type"].startswith("text/html")
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert "no-store" in headers["Cache-Control"] and "Location" not in headers
        assert "Content-Disposition" not in headers
        page = body.decode()
        assert "available to signed-in support agents" in page and "<script" not in page
        assert 'href="https://sso.example.com/oauth2/start?rd=/&quot;&gt;&lt;script&gt;"' in page
        _no_metadata(body, obj)
    # the same page whatever the token: nothing to tell a live link from a dead one
    pages = {(await env.get(url + suffix))[2] for url in (env.link(obj), env.link(obj, PAST), env.base + "/f/x")}
    assert len(pages) == 1


async def test_require_agent_page_without_a_sign_in_url(make_env) -> None:
    env = await make_env(trusted_proxies=["127.0.0.1"], require_agent=True)
    obj = await env.put()
    status, _, body = await env.get(env.link(obj), {"X-Auth-Request-Email": AGENT}, source="127.0.0.2")
    assert status == 401 and b"Sign in with your work account" in body and b"href" not in body
    _no_metadata(body, obj)
    status, _, body = await env.get(env.link(obj), method="HEAD")
    assert status == 401 and body == b""


async def test_require_agent_with_identity_serves_the_file(make_env) -> None:
    env = await make_env(trusted_proxies=["127.0.0.1"], require_agent=True, sign_in_url="/oauth2/start")
    obj = await env.put()
    headers = {"X-Auth-Request-Email": AGENT}
    status, _, page = await env.get(env.link(obj), headers)
    assert status == 200 and b"Q3 &lt;statement&gt;.pdf" in page
    status, _, body = await env.get(env.link(obj) + "/download", headers)
    assert status == 200 and body == DATA
    # ...and a refusal is still the refusal's own page for a signed-in agent
    assert (await env.get(env.link(obj, PAST), headers))[0] == 410


async def test_require_agent_refusal_is_audited_with_the_customer(make_env) -> None:
    env = await make_env(trusted_proxies=["127.0.0.1"], require_agent=True)
    obj = await env.put()
    await env.get(env.link(obj) + "/download", {"X-Auth-Request-Email": AGENT}, source="127.0.0.2")
    e = await env.last("link_download")
    assert (e["status"], e["refusal"], e["agent"], e["agent_ignored"]) == (401, "agent_required", None,
                                                                            "untrusted_peer")
    assert (e["customer"], e["filename"], e["key"]) == ("CUST-1", NAME, obj.key)
    await env.get(env.base + "/f/forged")
    e = await env.last("link_view")
    assert (e["status"], e["refusal"], e["key"], e["customer"]) == (401, "agent_required", None, None)


async def test_require_agent_leaves_the_api_alone(make_env) -> None:
    env = await make_env(trusted_proxies=["127.0.0.1"], require_agent=True)
    obj = await env.put()
    token = env.link(obj).rsplit("/f/", 1)[1]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{env.base}/api/v1/links/show", params={"token": token},
                            headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            assert r.status == 200
            assert (await r.json())["object"]["filename"] == NAME
    assert (await env.get(f"{env.base}/healthz"))[0] == 200


# -- the audit of refusals ----------------------------------------------------------------


async def test_expired_and_revoked_refusals_name_agent_customer_and_file(make_env) -> None:
    env = await make_env(**TRUSTED)
    obj = await env.put()
    headers = {"X-Auth-Request-Email": AGENT}
    await env.get(env.link(obj, PAST) + "/download", headers)
    expired = await env.last("link_download")
    revoked_link = env.link(obj)
    token = re.sub(r".*/f/", "", revoked_link)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{env.base}/api/v1/links/revoke", json={"token": token},
                             headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            assert r.status == 200
    await env.get(revoked_link, headers)
    revoked = await env.last("link_view")
    for e, refusal in ((expired, "expired"), (revoked, "revoked")):
        assert (e["status"], e["refusal"], e["agent"]) == (410, refusal, AGENT)
        assert {k: e[k] for k in ("customer", "filename", "key", "size", "sha256")} == {
            "customer": "CUST-1", "filename": NAME, "key": obj.key, "size": len(DATA),
            "sha256": hashlib.sha256(DATA).hexdigest()}


async def test_gone_and_forged_refusals_say_what_is_known(make_env) -> None:
    env = await make_env(**TRUSTED)
    obj = await env.put()
    link = env.link(obj)
    await env.store.delete(obj.key)
    headers = {"X-Auth-Request-Email": AGENT}
    await env.get(link, headers)
    gone = await env.last("link_view")
    assert (gone["status"], gone["refusal"], gone["agent"], gone["key"]) == (404, "gone", AGENT, obj.key)
    assert gone["customer"] is None and gone["filename"] is None
    await env.get(env.base + "/f/forged/download", headers)
    forged = await env.last("link_download")
    assert (forged["status"], forged["refusal"], forged["agent"]) == (403, "bad_token", AGENT)
    assert all(forged[k] is None for k in ("customer", "filename", "key", "size", "sha256"))


async def test_a_file_without_a_tenant_has_a_null_customer(make_env) -> None:
    env = await make_env(**TRUSTED)
    obj = await env.put(tenant=None)
    await env.get(env.link(obj), {"X-Auth-Request-Email": AGENT})
    e = await env.last("link_view")
    assert e["customer"] is None and e["agent"] == AGENT and e["filename"] == NAME
