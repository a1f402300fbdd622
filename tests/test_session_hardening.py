"""Sessions a stranger cannot hold, and clean answers to odd clients (issue 11, round 2),
against the proxy process over loopback."""

from __future__ import annotations

import ssl
import subprocess

import pytest

from conftest import RawSession
from mail import message, text
from test_metrics import Scrape, scrape_until
from test_session_limits import assert_clean_log
from smtp_offload.app import DEFAULT_RESERVE
from smtp_offload.smtp.server import declared_size

DEADLINE = 60.0  # generous: the timeouts under test are 2-4 s; this only stops a broken test
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mx.test",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return {"tls_cert": str(crt), "tls_key": str(key)}


def lenient() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


class Tls:
    """A session after EHLO and a completed STARTTLS handshake."""

    def __init__(self, port: int):
        plain = RawSession(port)
        assert plain.command(b"EHLO client.test").startswith(b"250")
        assert plain.command(b"STARTTLS").startswith(b"220")
        self.sock = lenient().wrap_socket(plain.sock, server_hostname="mx.test")
        self.file = self.sock.makefile("rb")

    def lines(self, line: bytes) -> list[bytes]:
        """Every line of the reply to `line`."""
        self.sock.sendall(line + b"\r\n")
        out = [self.file.readline()]
        while out[-1][3:4] == b"-":
            out.append(self.file.readline())
        return out

    def command(self, line: bytes) -> bytes:
        return self.lines(line)[-1]

    def close(self) -> None:
        self.sock.close()


def no_internal_error(proxy) -> None:
    assert proxy.events("smtp_internal_error") == []
    assert_clean_log(proxy)


# -- 4. a declared SIZE buys no budget ----------------------------------------------------

def test_declared_size_reserves_no_more_than_the_default(make_proxy, sink):
    """t_budget_size.py: 11 sessions declaring 100 MiB held the whole 1 GiB budget and every
    honest message got 451 4.3.2. Here the budget takes 3 default reserves."""
    proxy = make_proxy({"server": {"max_inflight_bytes": 3 * DEFAULT_RESERVE}})
    holders = []
    try:
        for _ in range(2):
            s = RawSession(proxy.smtp_port)
            assert s.start_data(mail=b"MAIL FROM:<a@sender.test> SIZE=%d" % (100 * MiB)).startswith(b"354")
            s.send(b"Subject: slow\r\n")
            holders.append(s)
        m = scrape_until(proxy.links_port, lambda m: m("smtp_offload_inflight_bytes") == 2 * DEFAULT_RESERVE)
        assert m("smtp_offload_inflight_bytes") == 2 * DEFAULT_RESERVE
        assert proxy.send(message(text("honest\r\n")))[0] == 250
        for s in holders:
            s.send(b"\r\nbody\r\n.\r\n")
            assert s.reply().startswith(b"250 2.0.0")
    finally:
        for s in holders:
            s.close()
    m = scrape_until(proxy.links_port, lambda m: m("smtp_offload_inflight_bytes") == 0)
    assert m("smtp_offload_inflight_bytes") == 0
    assert len(sink.messages) == 3
    assert Scrape(proxy.links_port)("smtp_offload_refusals_total", reason="busy") == 0


# -- 6. malformed addresses ----------------------------------------------------------------

def test_malformed_addresses_get_a_syntax_reply(proxy, sink):
    """t_addr.py: the stdlib header parser raised IndexError/AttributeError: 451 4.3.0 and an
    error logged for what is the client's syntax error."""
    with RawSession(proxy.smtp_port) as s:
        assert s.command(b"EHLO client.test").startswith(b"250")
        for arg in (b"<", b'"', b"\\@[ ", b"\\a1\\\xc2\xb2==@[.\\"):
            assert s.command(b"MAIL FROM:" + arg).startswith(b"553 5.1.3"), arg
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250")
        for arg in (b"<", b'"', b"\\@[ "):
            assert s.command(b"RCPT TO:" + arg).startswith(b"553 5.1.3"), arg
        assert s.command(b"VRFY <").startswith(b"502 5.5.1")
        assert s.command(b"RCPT TO:<support@example.com>").startswith(b"250")
        assert s.command(b"DATA").startswith(b"354")
        s.send(message(text("still in step\r\n")) + b".\r\n")
        assert s.reply().startswith(b"250 2.0.0")
    assert len(sink.messages) == 1
    no_internal_error(proxy)


# -- 8. SIZE in ASCII digits only ------------------------------------------------------------

def test_size_must_be_ascii_digits(proxy, sink):
    """t_size.py: SIZE=² passed aiosmtpd's isdigit() and crashed int() (451 4.3.0, traceback);
    SIZE=١٢٣ was taken as 123."""
    for value in ("²", "١٢٣", "¹²", "-1", "1_000"):
        with RawSession(proxy.smtp_port) as s:
            assert s.command(b"EHLO client.test").startswith(b"250")
            reply = s.command(b"MAIL FROM:<a@sender.test> SIZE=" + value.encode())
            assert reply.startswith(b"501 5.5.4"), (value, reply)
    with RawSession(proxy.smtp_port) as s:
        assert s.start_data(mail=b"MAIL FROM:<a@sender.test> SIZE=123").startswith(b"354")
        s.send(message(text("ok\r\n")) + b".\r\n")
        assert s.reply().startswith(b"250 2.0.0")
    assert len(sink.messages) == 1
    no_internal_error(proxy)


@pytest.mark.parametrize("options,size", [
    (["SIZE=123"], 123), (["BODY=8BITMIME", "size=7"], 7), (["SIZE=١٢٣"], None), (["SIZE=²"], None),
    (["SIZE="], None), (["SIZE"], None), ([], None), (None, None),
])
def test_declared_size(options, size):
    assert declared_size(options) == size


# -- 9. no AUTH ----------------------------------------------------------------------------------

def test_auth_is_neither_offered_nor_accepted(make_proxy, sink, cert):
    """t_auth.py: AUTH LOGIN PLAIN was offered after STARTTLS and could never succeed (an MTA
    with credentials defers forever); AUTH LOGIN then a 20000-byte line was a traceback."""
    proxy = make_proxy({"server": cert})
    t = Tls(proxy.smtp_port)
    try:
        ehlo = t.lines(b"EHLO client.test")
        assert ehlo[-1].startswith(b"250") and not [x for x in ehlo if b"AUTH" in x], ehlo
        for line in (b"AUTH LOGIN", b"AUTH PLAIN AGZvbwBiYXI=", b"AUTH XOAUTH2", b"AUTH"):
            assert t.command(line) == b"502 5.5.1 Authentication not enabled\r\n", line
        assert t.command(b"AUTH LOGIN").startswith(b"502 5.5.1")
        assert t.command(b"A" * 20000).startswith(b"500 5.5.2")  # no challenge is open: a bad command
        assert t.command(b"NOOP").startswith(b"250")  # in step
        assert t.command(b"MAIL FROM:<a@sender.test>").startswith(b"250")  # no AUTH needed
    finally:
        t.close()
    with RawSession(proxy.smtp_port) as s:
        assert s.command(b"EHLO client.test").startswith(b"250")
        assert s.command(b"AUTH PLAIN").startswith(b"502 5.5.1")
    no_internal_error(proxy)
