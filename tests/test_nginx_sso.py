"""deploy/nginx: the link service behind a real nginx that signs agents in with auth_request.

The example config is rendered with test ports, a throw-away certificate and a temporary
prefix, checked with `nginx -t` and run by the Debian nginx as the current user. The proxy
runs as in production (its own process) with links.require_agent, trusting only 127.0.0.1
(nginx). oauth2-proxy is not packaged in Debian, so a stand-in on loopback answers its
`/oauth2/auth` contract: 202 with X-Auth-Request-Email for a known session cookie (as
`--set-xauthrequest` does), 401 without one; `/oauth2/sign_in` answers 200 with a sign-in
page, as oauth2-proxy's does for a browser without a session.
"""

from __future__ import annotations

import html
import re
import time

import aiohttp
import pytest
from aiohttp import web

from tests.support import samples
from tests.support.env import ROOT
from tests.support.mail import attachment, message, multipart, text
from tests.support.net import free_port, self_signed
from tests.support.nginx import Nginx
from tests.support.relayed import body_text

EXAMPLE = ROOT / "deploy" / "nginx" / "smtp-offload-links.conf"
AGENT = "agent.smith@support.example.com"
SESSIONS = {"session-agent": AGENT, "session-without-email": ""}  # cookie value -> what --set-xauthrequest sends
COOKIE = "_oauth2_proxy"  # oauth2-proxy's default cookie name
CUSTOMER = "CUST-4711"
FORGED = "ceo@victim.example"
SIGN_IN_MARK = "oauth2-proxy stand-in: sign in"


def render(site: str, *, port: int, links_port: int, oauth_port: int, cert: tuple[str, str], log: str) -> str:
    """The example with test ports and certificate; every replaced line must be there exactly
    once, so the test fails rather than silently runs something else when the example changes."""
    for old, new in [("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                     ("server 127.0.0.1:8025;", f"server 127.0.0.1:{links_port};"),
                     ("server 127.0.0.1:4180;", f"server 127.0.0.1:{oauth_port};"),
                     ("/etc/ssl/certs/files.example.com.pem;", f"{cert[0]};"),
                     ("/etc/ssl/private/files.example.com.key;", f"{cert[1]};"),
                     ("/var/log/nginx/smtp-offload-links.access.log", log)]:
        assert site.count(old) == 1, old
        site = site.replace(old, new)
    return site


async def _auth(request: web.Request) -> web.Response:
    email = SESSIONS.get(request.cookies.get(COOKIE, ""))
    if email is None:
        return web.Response(status=401)
    return web.Response(status=202, headers={"X-Auth-Request-Email": email} if email else {})


async def _sign_in(request: web.Request) -> web.Response:
    rd = html.escape(request.headers.get("X-Auth-Request-Redirect", ""))
    return web.Response(text=f"<h1>{SIGN_IN_MARK}</h1><p>rd={rd}</p>", content_type="text/html")


@pytest.fixture
async def oauth2_stand_in():
    app = web.Application()
    app.router.add_get("/oauth2/auth", _auth)
    app.router.add_get("/oauth2/sign_in", _sign_in)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


@pytest.fixture
def nginx_prefix(tmp_path):
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    started: list[Nginx] = []
    yield prefix, started
    for n in started:
        n.stop()


def _events(proxy, name: str, count: int) -> list[dict]:
    """The proxy's `name` events once `count` are logged (a download is logged after its last byte)."""
    deadline = time.monotonic() + 20
    while len(events := proxy.events(name)) < count:
        assert time.monotonic() < deadline, (name, count, events)
        time.sleep(0.05)
    return events


async def _get(http: aiohttp.ClientSession, url: str, **kw) -> tuple[int, bytes]:
    async with http.get(url, allow_redirects=False, ssl=False, **kw) as r:
        return r.status, await r.read()


async def test_agents_sign_in_through_nginx_and_the_audit_names_agent_and_customer(
        make_proxy, sink, oauth2_stand_in, nginx_prefix) -> None:
    prefix, started = nginx_prefix
    port = free_port()
    proxy = make_proxy({
        "policy": {"offload_over_bytes": 10_000},
        "storage": {"tenant": "header:X-Customer-Id"},
        "links": {"base_url": f"https://127.0.0.1:{port}", "trusted_proxies": ["127.0.0.1"],
                  "require_agent": True, "sign_in_url": "/oauth2/start"},
    })
    site = render(EXAMPLE.read_text(), port=port, links_port=proxy.links_port, oauth_port=oauth2_stand_in,
                  cert=self_signed(prefix, cn="files.example.com"), log=str(prefix / "links-access.log"))
    nginx = Nginx(prefix, site)
    checked = nginx.check()
    assert checked.returncode == 0 and "syntax is ok" in checked.stderr, checked.stderr
    nginx.start(port)
    started.append(nginx)

    data = samples.big_pdf(60_000)
    msg = b"X-Customer-Id: " + CUSTOMER.encode() + b"\r\n" + \
        message(multipart(text(), attachment(data, "contract.pdf", "application/pdf")))
    assert proxy.send(msg)[0] == 250
    (link,) = set(re.findall(rf"https://127\.0\.0\.1:{port}/f/[A-Za-z0-9._~%-]+", body_text(sink.messages[-1].content)))
    path = link.split(f":{port}", 1)[1]

    async with aiohttp.ClientSession() as http:
        # No session: nginx shows the SSO's sign-in page; the link service is never asked.
        status, body = await _get(http, link + "/download")
        assert status == 200 and SIGN_IN_MARK in body.decode() and data not in body
        assert f"rd={path}/download" in body.decode()  # back to the link after signing in
        assert (await _get(http, link))[1].decode().count(SIGN_IN_MARK) == 1
        assert proxy.events("link_download") == [] and proxy.events("link_view") == []

        # Signed in: the page and the file; the agent comes from the SSO, not from the client.
        signed_in = {"Cookie": f"{COOKIE}=session-agent", "X-Auth-Request-Email": FORGED,
                     "X-Forwarded-Email": FORGED}
        status, page = await _get(http, link, headers=signed_in)
        assert status == 200 and b"contract.pdf" in page
        status, body = await _get(http, link + "/download", headers=signed_in)
        assert status == 200 and body == data

        # A session the SSO names nobody for (oauth2-proxy without --set-xauthrequest): the
        # client's own identity headers are cleared by nginx, so no agent, and no file.
        nameless = {**signed_in, "Cookie": f"{COOKIE}=session-without-email"}
        status, body = await _get(http, link + "/download", headers=nameless)
        assert status == 401 and b"signed-in support agents" in body and data not in body

        # Around nginx, straight to the link service from another address: the forged header
        # is not believed, whatever X-Forwarded-For says.
        direct = f"http://127.0.0.1:{proxy.links_port}{path}/download"
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as stranger:
            status, body = await _get(stranger, direct, headers={"X-Auth-Request-Email": FORGED,
                                                                  "X-Forwarded-For": "127.0.0.1"})
        assert status == 401 and data not in body and b"contract.pdf" not in body

    (view,) = _events(proxy, "link_view", 1)
    # By what they are, not by order: the download is logged after its last byte, which the
    # client may have read before the next request is logged.
    downloads = {(e["status"], e["remote"]): e for e in _events(proxy, "link_download", 3)}
    served, nameless_ev, forged_ev = (downloads[200, "127.0.0.1"], downloads[401, "127.0.0.1"],
                                      downloads[401, "127.0.0.2"])
    for e in (view, served):
        assert e["status"] == 200 and e["agent"] == AGENT and e["agent_header"] == "X-Auth-Request-Email"
        assert e["customer"] == e["tenant"] == CUSTOMER
        assert e["filename"] == "contract.pdf" and e["size"] == len(data) and e["sha256"]
        assert e["key"] == e["storage_key"] and e["remote"] == "127.0.0.1"
    assert (nameless_ev["status"], nameless_ev["agent"], nameless_ev["refusal"]) == (401, None, "agent_required")
    assert "agent_ignored" not in nameless_ev  # nginx sent no identity header at all
    assert (forged_ev["status"], forged_ev["agent"], forged_ev["agent_ignored"]) == (401, None, "untrusted_peer")
    assert forged_ev["customer"] == CUSTOMER  # who tried to open whose file, even when refused
    assert FORGED not in proxy.log_path.read_text()
    # nginx's access log has the requests, never the link itself (the credential).
    logged = (prefix / "links-access.log").read_text()
    assert "GET /f/- HTTP/" in logged and "GET /f/-/download HTTP/" in logged
    assert path.rsplit("/", 1)[1] not in logged


async def test_api_and_other_paths_are_not_behind_sso(make_proxy, sink, oauth2_stand_in, nginx_prefix) -> None:
    prefix, started = nginx_prefix
    port = free_port()
    key = "k" * 32
    proxy = make_proxy({"links": {"trusted_proxies": ["127.0.0.1"], "require_agent": True, "api_keys": [key]}})
    nginx = Nginx(prefix, render(EXAMPLE.read_text(), port=port, links_port=proxy.links_port,
                                 oauth_port=oauth2_stand_in, cert=self_signed(prefix),
                                 log=str(prefix / "links-access.log")))
    nginx.start(port)
    started.append(nginx)
    base = f"https://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        # Bearer keys, no session: the API answers itself (here: a token that is not valid).
        status, body = await _get(http, f"{base}/api/v1/links/show", params={"token": "forged"},
                                  headers={"Authorization": f"Bearer {key}"})
        assert status == 400 and b"token is not valid" in body
        for internal in ("/metrics", "/readyz", "/healthz"):
            assert (await _get(http, base + internal))[0] == 404
        status, body = await _get(http, base + "/")  # where oauth2-proxy lands a fresh sign-in
        assert status == 200 and b"signed in" in body
        # The customers' upload portal: its page's own script and style come through, no sign-in.
        for asset, mark in (("portal.js", b"function"), ("portal.css", b"{")):
            status, body = await _get(http, f"{base}/portal/static/{asset}")
            assert status == 200 and mark in body and SIGN_IN_MARK.encode() not in body
