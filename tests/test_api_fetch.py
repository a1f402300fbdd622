"""The SSRF-safe fetch of a file at a caller's URL (smtp_offload/api/fetch.py).

Against a real aiohttp server on 127.0.0.1 that counts the requests it gets, so "refused"
means refused before anything reached it. No network beyond loopback: the tests that name
other hosts make the event loop fail on any DNS lookup or connection. Backoff waits go to a
fake sleep that records them; only the timeout test waits for real (0.5 s of a 5 s route).
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
import ssl

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from smtp_offload.api.fetch import (
    FetchError,
    FetchPolicy,
    SafeResolver,
    allow_list,
    check_url,
    fetch,
    is_public,
    open_session,
    parse_ip,
    retry_after,
    status_error,
)
from tests.support.net import free_port

BODY = bytes(range(256)) * 1000  # 256,000 bytes
# A signed URL's query: it must reach the server byte for byte and never appear in a message.
SIGNED = "X-Amz-Signature=SECRET%2Fpart&X-Amz-Expires=60"
LOCAL = FetchPolicy(allow_hosts=("127.0.0.1",), timeout=10.0)


def answer(status: int, headers: dict[str, str] | None = None):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers=headers)
    return handler


class Origin:
    """The file's server: one route per answer a fetch can meet."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.raw_paths: list[str] = []
        self.stop = asyncio.Event()  # set at teardown: ends the routes that hang
        self.calls: dict[str, int] = {}
        self.port = 0
        self.tls_port = 0

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http", port: int | None = None) -> str:
        return f"{scheme}://{host}:{port or self.port}{path}?{SIGNED}"

    def app(self) -> web.Application:
        @web.middleware
        async def count(request: web.Request, handler):
            self.hits.append(request.path)
            self.raw_paths.append(request.raw_path)
            self.calls[request.path] = self.calls.get(request.path, 0) + 1
            return await handler(request)

        app = web.Application(middlewares=[count])
        app.router.add_get("/file", self.file)
        app.router.add_get("/flaky", self.flaky)
        app.router.add_get("/busy", answer(429))
        app.router.add_get("/unavailable", answer(503, {"Retry-After": "1"}))
        app.router.add_get("/far", answer(429, {"Retry-After": "3600"}))
        app.router.add_get("/status/{n}", self.status)
        app.router.add_get("/redirect/{n}", self.redirect)
        app.router.add_get("/to-metadata", answer(302, {"Location": "http://169.254.169.254/latest/meta-data/"}))
        app.router.add_get("/to-localhost", self.to("http://localhost:{port}/file"))
        app.router.add_get("/to-rebinding", self.to("https://rebind.example:{port}/file"))
        app.router.add_get("/to-userinfo", self.to("http://u:p@127.0.0.1:{port}/file"))
        app.router.add_get("/nolocation", answer(302))
        app.router.add_get("/huge", self.huge)
        app.router.add_get("/endless", self.endless)
        app.router.add_get("/slow", self.slow)
        return app

    async def file(self, request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/pdf")

    async def flaky(self, request: web.Request) -> web.Response:
        n = self.calls["/flaky"]
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "3"})
        if n == 2:
            return web.Response(status=429)  # no Retry-After: our own backoff
        return web.Response(body=BODY)

    async def redirect(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=BODY)
        # Odd steps absolute, even steps relative: both are resolved and re-checked.
        location = f"http://127.0.0.1:{self.port}/redirect/{n - 1}" if n % 2 else f"{n - 1}"
        return web.Response(status=302, headers={"Location": location})

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["n"]))

    def to(self, location: str):
        """A redirect to `location`, its {port} this server's (known once it listens)."""
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=302, headers={"Location": location.format(port=self.port)})
        return handler

    async def huge(self, request: web.Request) -> web.StreamResponse:
        # Declares a terabyte, sends 1,000 bytes and hangs: a client that read the body instead
        # of refusing the length would time out, not answer too_large.
        resp = web.StreamResponse()
        resp.content_length = 10**12
        await resp.prepare(request)
        await resp.write(b"x" * 1000)
        await self.hang()
        return resp

    async def endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: chunked
        await resp.prepare(request)
        try:
            for _ in range(64):  # 4 MiB, far past the tests' limit
                await resp.write(b"y" * 65536)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return resp

    async def slow(self, request: web.Request) -> web.Response:
        await self.hang()
        return web.Response(body=b"late")

    async def hang(self) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), 5)
        except asyncio.TimeoutError:
            pass


async def _serve(ssl_context: ssl.SSLContext | None):
    """An Origin on a loopback port, over TLS with `ssl_context`; stopped after the test."""
    o = Origin()
    runner = web.AppRunner(o.app(), shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    o.port = runner.addresses[0][1]
    yield o
    o.stop.set()
    await runner.cleanup()


@pytest.fixture
async def origin(request):
    async for o in _serve(None):
        yield o


@pytest.fixture
async def tls_origin(cert):
    """The same server over TLS, with a self-signed certificate no client trusts."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    async for o in _serve(ctx):
        yield o


@pytest.fixture
async def no_network(monkeypatch):
    """Fail the test on any DNS lookup or connection the event loop is asked for."""
    loop = asyncio.get_running_loop()

    async def boom(*args, **kwargs):
        raise AssertionError(f"the fetch touched the network: {args!r}")

    monkeypatch.setattr(loop, "getaddrinfo", boom)
    monkeypatch.setattr(loop, "create_connection", boom)


class Sleeps(list):
    """A fake asyncio.sleep: records the delays asked for, waits for none."""

    async def __call__(self, delay: float) -> None:
        self.append(delay)


async def failing(url: str, policy: FetchPolicy = LOCAL, **kwargs) -> FetchError:
    """The FetchError a fetch raises; its message is checked for what it must never carry."""
    with pytest.raises(FetchError) as info:
        await fetch(url, io.BytesIO(), policy, **kwargs)
    err = info.value
    assert str(err) == err.message
    for leak in ("SECRET", "X-Amz", "Traceback", "/work/", "site-packages"):
        assert leak not in err.message
    return err


# --- fetching ------------------------------------------------------------------------------


async def test_fetches_a_file_over_http_from_an_allow_listed_ip(origin):
    buf = io.BytesIO()
    assert await fetch(origin.url("/file"), buf, LOCAL) == len(BODY)
    assert buf.getvalue() == BODY
    assert origin.hits == ["/file"]
    # The signature went out as given: yarl's re-quoting would have turned %2F into /.
    assert origin.raw_paths == [f"/file?{SIGNED}"]


async def test_a_cidr_allow_list_opens_the_range(origin):
    buf = io.BytesIO()
    assert await fetch(origin.url("/file"), buf, FetchPolicy(allow_hosts=("127.0.0.0/8",))) == len(BODY)
    assert buf.getvalue() == BODY


async def test_a_body_of_exactly_max_bytes_is_accepted(origin):
    buf = io.BytesIO()
    assert await fetch(origin.url("/file"), buf, FetchPolicy(("127.0.0.1",), max_bytes=len(BODY))) == len(BODY)


async def test_a_shared_session_serves_several_fetches(origin):
    async with open_session(LOCAL) as session:
        for _ in range(2):
            buf = io.BytesIO()
            assert await fetch(origin.url("/file"), buf, LOCAL, session=session) == len(BODY)
    assert origin.hits == ["/file", "/file"]


async def test_a_session_without_the_safe_resolver_is_not_taken(origin):
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(ValueError, match="open_session"):
            await fetch(origin.url("/file"), io.BytesIO(), LOCAL, session=plain)
    async with open_session(FetchPolicy()) as other_policy:
        with pytest.raises(ValueError, match="same policy"):
            await fetch(origin.url("/file"), io.BytesIO(), LOCAL, session=other_policy)
    assert origin.hits == []


# --- where a fetch may go ------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_loopback_without_the_allow_list_is_refused_before_any_request(origin, scheme):
    err = await failing(origin.url("/file", scheme=scheme), FetchPolicy())
    assert (err.status, err.error) == (400, "url_not_allowed")
    assert origin.hits == []


async def test_a_name_resolving_to_loopback_is_refused_by_the_resolver(origin):
    err = await failing(origin.url("/file", host="localhost", scheme="https"), FetchPolicy())
    assert (err.status, err.error) == (400, "url_not_allowed")
    assert "resolves to" in err.message and "localhost" in err.message
    assert origin.hits == []


async def test_a_name_on_the_allow_list_may_be_private_and_use_http(origin):
    buf = io.BytesIO()
    policy = FetchPolicy(allow_hosts=("LocalHost.",))  # names match case-insensitively
    assert await fetch(origin.url("/file", host="localhost"), buf, policy) == len(BODY)
    assert buf.getvalue() == BODY


async def test_a_cidr_allow_list_passes_a_name_through_the_resolver(origin):
    # https to the plain-http server: the TLS handshake fails (502), so the resolver let it by.
    policy = FetchPolicy(allow_hosts=("127.0.0.0/8", "::1/128"))
    err = await failing(origin.url("/file", host="localhost", scheme="https"), policy)
    assert (err.status, err.error) == (502, "fetch_failed")
    assert "TLS" in err.message


async def test_http_to_a_public_name_is_refused_without_network(no_network):
    err = await failing("http://example.com/x?" + SIGNED, FetchPolicy())
    assert (err.status, err.error) == (400, "url_not_allowed")
    assert "https" in err.message


@pytest.mark.parametrize("url", [
    "https://10.0.0.1/f",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/f",
    "https://0.0.0.0/f",
    "https://100.64.0.1/f",
    "https://192.168.1.1/f",
    "https://224.0.0.1/f",
    "https://[fe80::1]/f",
    "https://[fc00::1]/f",
    "https://[::ffff:127.0.0.1]/f",
    "https://[::ffff:a9fe:a9fe]/f",
    "https://[2002:7f00:1::]/f",
    "https://127.1/f",
    "https://2130706433/f",
    "https://0x7f.1/f",
])
async def test_internal_ip_literals_are_refused_without_network(no_network, url):
    err = await failing(f"{url}?{SIGNED}", FetchPolicy())
    assert (err.status, err.error) == (400, "url_not_allowed")


@pytest.mark.parametrize("host", ["10.0.0.1", "169.254.169.254", "::1", "0.0.0.0", "127.0.0.1"])
async def test_the_resolver_refuses_internal_ip_literals_too(host):
    # aiohttp never asks a resolver about an IP literal (check_url covers that); the resolver
    # still refuses one on its own, and numeric hosts need no DNS.
    with pytest.raises(OSError, match="internal address"):
        await SafeResolver().resolve(host, 443, socket.AF_UNSPEC)


@pytest.mark.parametrize("url", [
    "https://user:pass@example.com/x",
    "https://user@example.com/x",
    "https://@example.com/x",
])
async def test_userinfo_is_refused(no_network, url):
    err = await failing(url, FetchPolicy())
    assert (err.status, err.error) == (400, "url_not_allowed")
    assert "user name or password" in err.message
    assert "pass@" not in err.message.replace("user:pass@host", "")


@pytest.mark.parametrize("url", [
    "ftp://example.com/x",
    "file:///etc/passwd",
    "gopher://example.com/x",
    "example.com/x",
    "https:///x",
    "https://example.com:99999/x",
    "https://example.com:0/x",
    "",
])
async def test_urls_that_are_not_https_links_are_refused(no_network, url):
    err = await failing(url, FetchPolicy())
    assert (err.status, err.error) == (400, "url_not_allowed")


# --- redirects -----------------------------------------------------------------------------


async def test_a_redirect_chain_of_three_is_followed(origin):
    buf = io.BytesIO()
    assert await fetch(origin.url("/redirect/3"), buf, LOCAL) == len(BODY)
    assert origin.hits == ["/redirect/3", "/redirect/2", "/redirect/1", "/redirect/0"]


async def test_a_fourth_redirect_is_refused(origin):
    err = await failing(origin.url("/redirect/4"))
    assert (err.status, err.error) == (502, "fetch_failed")
    assert "redirected more than 3 times" in err.message
    assert origin.hits == ["/redirect/4", "/redirect/3", "/redirect/2", "/redirect/1"]


@pytest.mark.parametrize("path", ["/to-metadata", "/to-localhost", "/to-userinfo"])
async def test_each_redirect_target_is_checked_again(origin, path):
    err = await failing(origin.url(path))
    assert (err.status, err.error) == (400, "url_not_allowed")
    assert "redirected to another link, which was refused" in err.message
    assert origin.hits == [path]  # the target was never asked


async def test_a_redirect_to_a_name_resolving_inside_is_refused_by_the_resolver(origin, monkeypatch):
    # The session's resolver answers rebind.example with a public and a private address.
    monkeypatch.setattr(aiohttp, "ThreadedResolver", lambda: FakeDNS("93.184.216.34", "10.0.0.5"))
    err = await failing(origin.url("/to-rebinding"))
    assert (err.status, err.error) == (400, "url_not_allowed")
    assert "rebind.example resolves to" in err.message and "10.0.0.5" in err.message
    assert origin.hits == ["/to-rebinding"]


async def test_a_redirect_without_location_fails(origin):
    err = await failing(origin.url("/nolocation"))
    assert (err.status, err.error) == (502, "fetch_failed")
    assert "302" in err.message


# --- answers -------------------------------------------------------------------------------


async def test_429_is_retried_after_retry_after_then_with_backoff(origin):
    sleeps, buf = Sleeps(), io.BytesIO()
    assert await fetch(origin.url("/flaky"), buf, LOCAL, sleep=sleeps) == len(BODY)
    assert sleeps == [3.0, 2.0]  # Retry-After: 3, then our backoff for the second retry
    assert buf.getvalue() == BODY
    assert origin.hits == ["/flaky"] * 3


async def test_429_forever_gives_up_after_max_retries(origin):
    sleeps = Sleeps()
    err = await failing(origin.url("/busy"), sleep=sleeps)
    assert (err.status, err.error) == (502, "fetch_failed")
    assert "kept answering 429 (too many requests)" in err.message
    assert sleeps == [1.0, 2.0, 4.0]
    assert origin.hits == ["/busy"] * 4


async def test_503_is_retried_too(origin):
    sleeps = Sleeps()
    err = await failing(origin.url("/unavailable"), FetchPolicy(("127.0.0.1",), max_retries=2), sleep=sleeps)
    assert (err.status, err.error) == (502, "fetch_failed")
    assert "503" in err.message
    assert sleeps == [1.0, 1.0]


async def test_a_retry_after_past_the_budget_gives_up_at_once(origin):
    sleeps = Sleeps()
    err = await failing(origin.url("/far"), sleep=sleeps)
    assert (err.status, err.error) == (502, "fetch_failed")
    assert "3600" in err.message
    assert sleeps == []
    assert origin.hits == ["/far"]


async def test_no_retries_when_max_retries_is_zero(origin):
    sleeps = Sleeps()
    await failing(origin.url("/busy"), FetchPolicy(("127.0.0.1",), max_retries=0), sleep=sleeps)
    assert sleeps == [] and origin.hits == ["/busy"]


@pytest.mark.parametrize("status", [401, 403, 410])
async def test_a_refused_link_is_reported_as_expired(origin, status):
    err = await failing(origin.url(f"/status/{status}"))
    assert (err.status, err.error) == (422, "url_expired")
    assert f"HTTP {status}" in err.message and "fresh URL" in err.message


async def test_404_is_not_found(origin):
    err = await failing(origin.url("/status/404"))
    assert (err.status, err.error) == (422, "url_not_found")


@pytest.mark.parametrize("status", [500, 400, 204])
async def test_other_statuses_fail(origin, status):
    err = await failing(origin.url(f"/status/{status}"))
    assert (err.status, err.error) == (502, "fetch_failed")
    assert f"answered HTTP {status}" in err.message


async def test_a_declared_length_over_the_limit_is_refused_unread(origin):
    err = await failing(origin.url("/huge"), FetchPolicy(("127.0.0.1",), max_bytes=1000, timeout=10))
    assert (err.status, err.error) == (413, "too_large")
    assert "1000 bytes" in err.message


async def test_a_chunked_body_over_the_limit_is_cut_off(origin):
    buf = io.BytesIO()
    with pytest.raises(FetchError) as info:
        await fetch(origin.url("/endless"), buf, FetchPolicy(("127.0.0.1",), max_bytes=200_000))
    assert (info.value.status, info.value.error) == (413, "too_large")
    assert len(buf.getvalue()) <= 200_000


async def test_a_body_one_byte_over_the_limit_is_refused(origin):
    err = await failing(origin.url("/file"), FetchPolicy(("127.0.0.1",), max_bytes=len(BODY) - 1))
    assert (err.status, err.error) == (413, "too_large")


async def test_a_slow_server_times_out(origin):
    err = await failing(origin.url("/slow"), FetchPolicy(("127.0.0.1",), timeout=0.5))
    assert (err.status, err.error) == (504, "fetch_timeout")
    assert "0.5 seconds" in err.message


async def test_a_refused_connection_is_a_fetch_failure():
    err = await failing(f"http://127.0.0.1:{free_port()}/x?{SIGNED}")
    assert (err.status, err.error) == (502, "fetch_failed")
    assert "refused the connection" in err.message


async def test_https_to_a_plain_http_server_is_a_fetch_failure(origin):
    err = await failing(origin.url("/file", scheme="https"))
    assert (err.status, err.error) == (502, "fetch_failed")
    assert "TLS" in err.message


async def test_an_untrusted_certificate_is_a_fetch_failure(tls_origin):
    err = await failing(tls_origin.url("/file", scheme="https"))
    assert (err.status, err.error) == (502, "fetch_failed")
    assert "certificate was not accepted" in err.message
    assert tls_origin.hits == []


# --- the pure helpers ----------------------------------------------------------------------


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True),
    ("2606:4700::1", True),
    ("::ffff:8.8.8.8", True),
    ("2002:808:808::", True),
    ("127.0.0.1", False),
    ("10.1.2.3", False),
    ("172.16.0.1", False),
    ("192.168.0.1", False),
    ("169.254.169.254", False),
    ("100.64.0.1", False),
    ("0.0.0.0", False),
    ("224.0.0.1", False),
    ("233.1.1.1", False),
    ("240.0.0.1", False),
    ("255.255.255.255", False),
    ("192.0.2.1", False),
    ("::1", False),
    ("::", False),
    ("fe80::1", False),
    ("fc00::1", False),
    ("ff0e::1", False),
    ("::ffff:127.0.0.1", False),
    ("::ffff:169.254.169.254", False),
    ("2002:7f00:1::", False),
    ("2002:a00:1::", False),
    ("64:ff9b::7f00:1", False),
    ("2001:db8::1", False),
])
def test_is_public(address, public):
    assert is_public(ipaddress.ip_address(address)) is public


def test_parse_ip():
    assert parse_ip("[::1]") == ipaddress.ip_address("::1")
    assert parse_ip("::ffff:127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_ip("fe80::1%eth0") is not None
    assert parse_ip("example.com") is None
    assert parse_ip("127.1") is None


def test_allow_list():
    allow = allow_list(("Files.Internal.", "10.0.0.0/8", "192.168.1.7", "[fd00::1]"))
    assert allow.host("files.internal") and allow.host("FILES.INTERNAL.")
    assert allow.host("10.9.8.7") and allow.host("192.168.1.7") and allow.host("fd00::1")
    assert not allow.host("192.168.1.8") and not allow.host("other.internal")
    assert allow.address(ipaddress.ip_address("::ffff:10.0.0.1").ipv4_mapped)
    assert not allow.address(ipaddress.ip_address("::a00:1"))  # a v6 address is not in a v4 network


def test_a_bad_cidr_fails_when_the_policy_is_made():
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        FetchPolicy(allow_hosts=("10.0.0.0/33",))


def test_a_policy_keeps_its_allow_list_as_a_tuple():
    assert FetchPolicy(allow_hosts=["127.0.0.1"]).allow_hosts == ("127.0.0.1",)  # type: ignore[arg-type]


def test_check_url_keeps_a_signed_url_as_given():
    url = check_url("https://Files.Example.com/a%2Fb/doc.pdf?sig=a%2Fb%2Bc&t=1")
    assert url.host == "files.example.com"
    assert str(url).endswith("/a%2Fb/doc.pdf?sig=a%2Fb%2Bc&t=1")


def test_check_url_allows_http_only_to_listed_hosts():
    check_url("http://files.internal/x", ("files.internal",))
    check_url("http://10.1.2.3/x", ("10.0.0.0/8",))
    with pytest.raises(FetchError, match="https"):
        check_url("http://files.internal/x", ("10.0.0.0/8",))  # a name is not judged by a CIDR before DNS


def test_check_url_messages_omit_the_query():
    for url in ("http://example.com/x?sig=SECRET", "https://10.0.0.1/x?sig=SECRET", "ftp://h/x?sig=SECRET"):
        with pytest.raises(FetchError) as info:
            check_url(url)
        assert "SECRET" not in info.value.message


def test_retry_after():
    now = 1_800_000_000.0
    assert retry_after(None) is None
    assert retry_after("") is None
    assert retry_after("5") == 5.0
    assert retry_after(" 120 ") == 120.0
    assert retry_after("-1") is None
    assert retry_after("soon") is None
    assert retry_after("1.5") is None
    http_date = "Fri, 15 Jan 2027 08:00:30 GMT"  # 1_800_000_030
    assert retry_after(http_date, now=now) == pytest.approx(30.0)
    assert retry_after("Fri, 15 Jan 2027 07:59:00 GMT", now=now) == 0.0  # already past


def test_status_error():
    assert (status_error(403, "h").status, status_error(403, "h").error) == (422, "url_expired")
    assert status_error(410, "h").message.startswith("the file's link has expired or was refused (HTTP 410)")
    assert (status_error(404, "h").status, status_error(404, "h").error) == (422, "url_not_found")
    assert (status_error(418, "h").status, status_error(418, "h").error) == (502, "fetch_failed")


class FakeDNS(AbstractResolver):
    """A resolver that answers every name with the given addresses."""

    def __init__(self, *addresses: str):
        self.addresses = addresses

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": a, "port": port, "proto": 0, "flags": 0,
                 "family": socket.AF_INET6 if ":" in a else socket.AF_INET} for a in self.addresses]

    async def close(self) -> None:
        pass


async def test_the_resolver_passes_a_name_with_only_public_addresses():
    results = await SafeResolver((), FakeDNS("93.184.216.34", "2606:2800:220:1::1")).resolve("example.com", 443)
    assert [r["host"] for r in results] == ["93.184.216.34", "2606:2800:220:1::1"]


@pytest.mark.parametrize("addresses", [("93.184.216.34", "10.0.0.5"), ("::ffff:169.254.169.254",), ("127.0.0.1",),
                                       ("93.184.216.34", "fe80::1%1")])
async def test_the_resolver_refuses_a_name_when_any_address_is_internal(addresses):
    with pytest.raises(OSError, match="rebind.example resolves to"):
        await SafeResolver((), FakeDNS(*addresses)).resolve("rebind.example", 443)


async def test_the_resolver_honours_the_allow_list():
    assert await SafeResolver(("10.0.0.0/8",), FakeDNS("10.0.0.5")).resolve("files.internal", 443)
    assert await SafeResolver(("FILES.internal",), FakeDNS("10.0.0.5", "192.168.0.1")).resolve("files.internal", 443)
    with pytest.raises(OSError):
        await SafeResolver(("10.0.0.0/8",), FakeDNS("10.0.0.5", "192.168.0.1")).resolve("files.internal", 443)


async def test_a_host_name_that_does_not_resolve_is_the_callers_to_fix():
    # The sandbox resolves no public names: a DNS failure is what any outside name gets here.
    err = await failing("https://no-such-host.invalid/file.pdf", FetchPolicy(timeout=20))
    assert (err.status, err.error) == (422, "url_unreachable") and "no-such-host.invalid" in err.message
