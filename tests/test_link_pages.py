"""The link pages as the agent reads them: a real LinkServer on loopback, a real LocalStore,
real HTTP from 127.0.0.1 (trusted as the SSO proxy where a test says so) or 127.0.0.2.

Covers what the landing page shows (visible From, Subject, received, expiry, size, type),
the expired page naming the file, "Get a new link" (identified agents only, never cross-site,
never for a revoked link; audited and counted), and branding, hostile branding included.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from smtp_offload.config import BrandingConfig, LinksConfig
from smtp_offload.links import Grant, link_url, sign
from smtp_offload.links.server import LinkServer
from smtp_offload.metrics import Metrics
from smtp_offload.storage import LocalStore, StoredObject, make_key
from smtp_offload.units import when
from tests.support.api import KEY
from tests.support.http import get as http_get
from tests.support.logs import RecordingLog
from tests.support.mail import attachment, message, multipart, text
from tests.support.portal import new_session
from tests.support.relayed import LINK, body_text
from tests.support.samples import big_pdf as samples_pdf

SECRET = b"p" * 40
FUTURE = 4_000_000_000
PAST = 1_700_000_000  # 2023-11-14 22:13:20 UTC
AGENT = "jane.doe@support.example.com"
IDENTITY = {"X-Auth-Request-Email": AGENT}
NAME = "Schadenfoto_Heckklappe.jpg"
FROM = "Erika Mustermann <erika@example.de>"
SUBJECT = "Claim 4711: photos of the damage"
DATA = b"\xff\xd8\xff\xe0" + bytes(150_000)
# A 1x1 PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


class Env:
    def __init__(self, store: LocalStore, log: RecordingLog, base: str, metrics: Metrics) -> None:
        self.store, self.log, self.base, self.metrics = store, log, base, metrics

    async def put(self, **kw: Any) -> StoredObject:
        fields = {"message_id": "<claim-4711@example.de>", "sender": "bounces+x1@mailer.example.de",
                  "date": "2026-11-20T10:00:00+00:00", "tenant": "CUST-1", "from_header": FROM, "subject": SUBJECT,
                  **kw}
        obj = StoredObject(key=make_key(NAME), size=len(DATA), sha256=hashlib.sha256(DATA).hexdigest(),
                           content_type="image/jpeg", filename=NAME, **fields)
        return await self.store.put(DATA, obj)

    def link(self, obj: StoredObject, expires: int = FUTURE, token_id: str | None = None) -> str:
        return link_url(self.base, sign(Grant(obj.key, expires, token_id or os.urandom(8).hex()), SECRET))

    async def request(self, method: str, url: str, headers: dict | None = None,
                      source: str = "127.0.0.1") -> tuple[int, Any, str]:
        """From `source`, the TCP peer the server sees; returns once the request's audit event is logged."""
        before = len(self.log.events)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0))) as http:
            async with http.request(method, url, headers=headers, allow_redirects=False) as r:
                out = r.status, r.headers, (await r.read()).decode("utf-8", "replace")
        for _ in range(1000):
            if len(self.log.events) > before:
                break
            await asyncio.sleep(0.01)
        return out

    def renewals(self) -> float:
        return self.metrics.registry.get_sample_value("smtp_offload_link_renewals_total") or 0.0


@pytest.fixture
async def make_env(tmp_path: Path):
    servers: list[LinkServer] = []

    async def make(branding: BrandingConfig | None = None, **links: Any) -> Env:
        log, metrics = RecordingLog(), Metrics()
        store = LocalStore(tmp_path / f"store{len(servers)}")
        server = LinkServer(store, [SECRET], LinksConfig(**links), log=log, metrics=metrics, branding=branding)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return Env(store, log, f"http://127.0.0.1:{server.port}", metrics)

    yield make
    for server in servers:
        await server.stop()


TRUSTED = {"trusted_proxies": ["127.0.0.1"]}


def rows(page: str) -> dict[str, str]:
    """The page's details list as text: {"From": "...", ...}."""
    return {html.unescape(k): html.unescape(re.sub(r"<[^>]+>", "", v))
            for k, v in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page)}


# -- the landing page ------------------------------------------------------------------------


async def test_landing_page_shows_the_file_and_the_customer_s_mail(make_env) -> None:
    env = await make_env()
    link = env.link(await env.put())
    status, headers, page = await env.request("GET", link)
    assert status == 200
    assert f"<h1>{NAME}</h1>" in page
    assert rows(page) == {"Size": "146.5 KiB", "Type": "JPEG image (image/jpeg)", "From": FROM,
                          "Subject": SUBJECT, "Received": "2026-11-20 10:00 UTC", "Link expires": when(FUTURE)}
    assert "came with the customer's email" in page and "support agent who sent" not in page
    assert 'class="button" href="./' in page and ">Download</a>" in page
    csp = headers["Content-Security-Policy"]
    assert "img-src data:" in csp and "form-action 'self'" in csp and "script-src" not in csp
    # A file stored before From was kept: the envelope sender stands in; no Subject row at all.
    old = await env.put(from_header=None, subject=None)
    status, _, page = await env.request("GET", env.link(old))
    assert status == 200 and rows(page)["From"] == "bounces+x1@mailer.example.de" and "Subject" not in rows(page)


# -- the expired page and "Get a new link" ---------------------------------------------------


async def test_expired_page_names_the_file_and_says_whom_to_ask(make_env) -> None:
    env = await make_env(**TRUSTED)
    link = env.link(await env.put(), PAST)
    # Nobody identified (no header; or a header from a peer that is not the SSO proxy): no button.
    for headers, source in ((None, "127.0.0.1"), (IDENTITY, "127.0.0.2")):
        status, _, page = await env.request("GET", link, headers, source)
        assert status == 410 and "<h1>This link has expired</h1>" in page
        assert "It expired on 2023-11-14 22:13 UTC." in page
        # The file, for whoever holds the link; not whose mail it was: the link may have leaked.
        assert rows(page) == {"File": NAME} and FROM not in html.unescape(page) and SUBJECT not in page
        assert "Ask your administrator for a new link" in html.unescape(page) and "smtp-offload links refresh" in page
        assert "<form" not in page and "Get a new link" not in page


async def test_an_identified_agent_gets_a_new_link_and_the_old_one_stays_expired(make_env) -> None:
    env = await make_env(**TRUSTED)
    obj = await env.put()
    old_id = "0123456789abcdef"
    link = env.link(obj, PAST, old_id)
    status, _, page = await env.request("GET", link, IDENTITY)
    assert status == 410 and {k: rows(page)[k] for k in ("File", "From", "Subject")} == {
        "File": NAME, "From": FROM, "Subject": SUBJECT}
    action = re.search(r'<form method="post" action="([^"]+)">', page).group(1)
    assert ">Get a new link</button>" in page and "Ask your administrator" not in page
    # The browser posts the form from the page itself. Under the page's Referrer-Policy
    # no-referrer, Chromium sends "Origin: null" even so; Sec-Fetch-Site vouches for it.
    renew = aiohttp.client.URL(link).join(aiohttp.client.URL(html.unescape(action)))
    assert str(renew) == link + "/renew"
    # The same expired page reached by the download link posts to the same place.
    status, _, page = await env.request("GET", link + "/download", IDENTITY)
    action = re.search(r'<form method="post" action="([^"]+)">', page).group(1)
    assert status == 410 and str(aiohttp.client.URL(link + "/download").join(aiohttp.client.URL(action))) == str(renew)
    status, headers, _ = await env.request("POST", str(renew), {**IDENTITY, "Origin": "null",
                                                                "Sec-Fetch-Site": "same-origin"})
    assert status == 303
    location = headers["Location"]
    assert location.startswith("/f/") and location != link.removeprefix(env.base)

    event = env.log.named("link_renew")[-1]
    assert event["status"] == 303 and event["agent"] == AGENT and event["token_id"] == old_id
    assert event["filename"] == NAME and event["customer"] == "CUST-1" and event["key"] == obj.key
    assert isinstance(event["new_token_id"], str) and event["new_token_id"] not in ("", old_id)
    assert "refusal" not in event and env.renewals() == 1

    # The new link works, also for the download; the old one is still expired.
    status, _, page = await env.request("GET", env.base + location)
    assert status == 200 and f"<h1>{NAME}</h1>" in page and rows(page)["From"] == FROM
    async with aiohttp.ClientSession() as http:
        async with http.get(env.base + location + "/download") as r:
            assert r.status == 200 and await r.read() == DATA
    assert (await env.request("GET", link))[0] == 410


@pytest.mark.parametrize("headers, source", [({}, "127.0.0.1"), (IDENTITY, "127.0.0.2")],
                         ids=["no-identity", "untrusted-peer"])
async def test_get_a_new_link_is_refused_to_whoever_is_not_identified(make_env, headers, source) -> None:
    env = await make_env(**TRUSTED)
    link = env.link(await env.put(), PAST)
    status, h, page = await env.request("POST", link + "/renew", {**headers, "Origin": env.base}, source)
    assert status == 403 and "Location" not in h
    assert "<h1>Sign in to get a new link</h1>" in page and "Ask your administrator" in html.unescape(page)
    event = env.log.named("link_renew")[-1]
    assert event["refusal"] == "agent_required" and "new_token_id" not in event and env.renewals() == 0


async def test_get_a_new_link_is_refused_in_presigned_mode(make_env) -> None:
    """It would mint the store's own URL, which nobody can revoke: never, not even for an agent."""
    env = await make_env(mode="presigned", **TRUSTED)
    link = env.link(await env.put(), PAST)
    status, h, page = await env.request("POST", link + "/renew", {**IDENTITY, "Origin": env.base})
    assert status == 403 and "Location" not in h and "<h1>New links are not made here</h1>" in page
    assert env.log.named("link_renew")[-1]["refusal"] == "invalid_request" and env.renewals() == 0


async def test_get_a_new_link_is_refused_cross_site(make_env) -> None:
    env = await make_env(**TRUSTED)
    link = env.link(await env.put(), PAST)
    for forged in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}, {"Origin": "null"},
                   {"Origin": "null", "Sec-Fetch-Site": "same-site"}, {"Origin": env.base, "Sec-Fetch-Site": "cross-site"},
                   {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}):
        status, h, page = await env.request("POST", link + "/renew", {**IDENTITY, **forged})
        assert status == 403 and "Location" not in h and "<h1>This request was refused</h1>" in page, forged
        event = env.log.named("link_renew")[-1]
        assert event["refusal"] == "cross_site" and "new_token_id" not in event
    assert env.renewals() == 0


async def test_get_a_new_link_refuses_a_revoked_link_and_a_file_that_is_gone(make_env) -> None:
    env = await make_env(**TRUSTED)
    obj = await env.put()
    token_id = "fedcba9876543210"
    link = env.link(obj, PAST, token_id)
    await env.store.revoke(token_id, obj.key)
    status, h, page = await env.request("POST", link + "/renew", {**IDENTITY, "Origin": env.base})
    assert status == 410 and "Location" not in h and "<h1>This link was revoked</h1>" in page
    assert env.log.named("link_renew")[-1]["refusal"] == "revoked"
    # A revoked expired link's page offers no button either.
    status, _, page = await env.request("GET", link, IDENTITY)
    assert status == 410 and {k: rows(page)[k] for k in ("File", "From", "Subject")} == {
        "File": NAME, "From": FROM, "Subject": SUBJECT} and "<form" not in page

    other = await env.put(message_id="<other@example.de>")
    gone_link = env.link(other, PAST)
    await env.store.delete(other.key)
    status, h, page = await env.request("POST", gone_link + "/renew", {**IDENTITY, "Origin": env.base})
    assert status == 404 and "Location" not in h and "<h1>This file is no longer available</h1>" in page
    assert env.renewals() == 0


# -- branding ------------------------------------------------------------------------------------


async def test_branding_is_on_every_page_and_escaped(make_env, tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    branding = BrandingConfig(name='Example </title><script>alert(1)</script> "Insurance"', logo_file=str(logo),
                              accent_colour="#aa3300", support_text="Questions? <b>Service desk</b> & more",
                              support_url='https://help.example/?a=1&b="><script>x</script>')
    env = await make_env(branding)
    obj = await env.put()
    pages = [(await env.request("GET", env.link(obj)))[2], (await env.request("GET", env.link(obj, PAST)))[2],
             (await env.request("GET", env.base + "/f/garbage"))[2]]
    for page in pages:
        assert "<script>" not in page and "<b>" not in page
        assert "Example &lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt; &quot;Insurance&quot;" in page
        assert f'<img src="data:image/png;base64,{base64.b64encode(PNG).decode()}" alt="">' in page
        assert "background:#aa3300" in page and "a{color:#aa3300}" in page
        assert ('<a href="https://help.example/?a=1&amp;b=&quot;&gt;&lt;script&gt;x&lt;/script&gt;" '
                'rel="noreferrer">Questions? &lt;b&gt;Service desk&lt;/b&gt; &amp; more</a>') in page


async def test_an_svg_logo_is_only_ever_an_image(make_env, tmp_path: Path) -> None:
    logo = tmp_path / "logo.svg"
    logo.write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    env = await make_env(BrandingConfig(name="Acme", logo_file=str(logo)))
    _, _, page = await env.request("GET", env.link(await env.put()))
    assert '<img src="data:image/svg+xml;base64,' in page and "<svg" not in page and "<script" not in page


# -- through the proxy: what prepare stores --------------------------------------------------


def test_the_proxy_keeps_the_decoded_from_and_subject_for_the_landing_page(make_proxy, sink) -> None:
    proxy = make_proxy({"policy": {"offload_over_bytes": 10_000}})
    # Folded, and the white space between two encoded-words is no character (RFC 2047 6.2).
    subject = "=?utf-8?q?Schaden_4711=3A_Fotos_der_?=\r\n =?utf-8?b?SGVja2tsYXBwZSDigJMg5pCN5YK3?="
    msg = message(multipart(text(), attachment(samples_pdf(60_000), "foto.pdf", "application/pdf")),
                  subject=subject, sender="=?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <juergen@sender.test>")
    assert proxy.send(msg)[0] == 250
    (link,) = set(LINK.findall(body_text(sink.messages[-1].content).encode()))
    with urllib.request.urlopen(link.decode(), timeout=30) as r:
        page = r.read().decode()
    shown = rows(page)
    assert shown["From"] == "Jürgen Müller <juergen@sender.test>"
    assert shown["Subject"] == "Schaden 4711: Fotos der Heckklappe – 損傷"
    assert shown["Type"] == "PDF document (application/pdf)"


def test_the_upload_portal_carries_the_branding(make_proxy, tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    proxy = make_proxy({"links": {"api_keys": [KEY]},
                        "branding": {"name": "Acme <Claims>", "logo_file": str(logo), "accent_colour": "#aa3300",
                                     "support_text": "Call <us>", "support_url": "https://help.example/?a=1&b=2"}})
    base = f"http://127.0.0.1:{proxy.links_port}"
    status, headers, page = http_get(new_session(base)["uploadUrl"])
    text = page.decode()
    assert status == 200 and "<title>Send files for case CASE-1042 – Acme &lt;Claims&gt;</title>" in text
    assert f'<img src="data:image/png;base64,{base64.b64encode(PNG).decode()}" alt="">' in text
    assert '<a href="https://help.example/?a=1&amp;b=2" rel="noreferrer">Call &lt;us&gt;</a>' in text
    assert "img-src 'self' data:" in headers["Content-Security-Policy"]
    href = re.search(r'href="([^"]*brand\.css[^"]*)"', text).group(1)
    status, headers, css = http_get(urllib.parse.urljoin(new_session(base)["uploadUrl"], href))
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    assert b".button{background:#aa3300}" in css
