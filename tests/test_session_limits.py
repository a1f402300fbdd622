"""Sessions a stranger cannot hold (issue 11, item 8), against the proxy process over loopback:
a command line or a pre-DATA dialogue trickled to keep the idle timer alive, one address
taking every session, and a false SIZE that reserved too little of the in-flight budget."""

from __future__ import annotations

import select
import socket
import time

import pytest

from smtp_offload import config as config_mod
from smtp_offload.errors import ConfigError
from smtp_offload.smtp.server import Limits, client_key
from tests.support.mail import message, text
from tests.support.net import RawSession, closed
from tests.support.proc import assert_clean_log
from tests.support.scrape import Scrape, scrape_until

DEADLINE = 30.0  # generous: a deadline under test is 1-2 s; this only stops a broken test


def trickle(s: RawSession, data: bytes, every: float = 0.2) -> bytes:
    """Send `data` one byte at a time, pausing `every` seconds between bytes, until the proxy
    answers; return the first line of its answer (b"" if it sent nothing at all)."""
    for b in data:
        if select.select([s.sock], [], [], every)[0]:
            break
        try:
            s.sock.sendall(bytes([b]))
        except OSError:  # the proxy closed the connection meanwhile
            break
    try:
        return s.file.readline()
    except ConnectionResetError:
        return b""


def connect(port: int, source: str = "127.0.0.1", proxy_header: bytes | None = None) -> RawSession:
    """A RawSession from `source` (any 127.x address reaches the proxy), optionally with a
    PROXY v1 header written first, as a load balancer would."""
    s = RawSession.__new__(RawSession)
    s.sock = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
    if proxy_header is not None:
        s.sock.sendall(proxy_header)
    s.file = s.sock.makefile("rb")
    s.greeting = s.file.readline()
    return s


def v1(src: str) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    dst = "::1" if ":" in src else "127.0.0.1"
    return f"PROXY {family} {src} {dst} 40000 25\r\n".encode()


def until_greeted(open_session, timeout: float = DEADLINE) -> RawSession:
    """A closed session's slot is freed when the proxy notices the close: retry until then."""
    deadline = time.monotonic() + timeout
    while True:
        s = open_session()
        if s.greeting.startswith(b"220") or time.monotonic() > deadline:
            return s
        s.close()
        time.sleep(0.05)


# -- a command line trickled byte by byte -------------------------------------

def test_trickled_command_line_is_cut_off(make_proxy, sink):
    proxy = make_proxy({"server": {"command_timeout": 1, "idle_timeout": 30, "envelope_timeout": 60}})
    with RawSession(proxy.smtp_port) as s:
        assert s.greeting.startswith(b"220")
        assert s.command(b"EHLO client.test").startswith(b"250")
        # every byte within the idle timeout; the line as a whole far past command_timeout
        answer = trickle(s, b"NOOP " + b"x" * 100 + b"\r\n")
        assert answer.startswith(b"421 4.4.2"), answer
        assert closed(s)
    assert Scrape(proxy.links_port)("smtp_offload_refusals_total", reason="command_timeout") == 1
    assert_clean_log(proxy)


def test_trickled_greeting_is_cut_off_with_proxy_protocol(make_proxy, sink):
    """After the PROXY header the same deadline applies to the first command line."""
    proxy = make_proxy({"server": {"proxy_protocol": True, "command_timeout": 1, "idle_timeout": 30}})
    s = connect(proxy.smtp_port, proxy_header=v1("192.0.2.50"))
    with s:
        assert s.greeting.startswith(b"220")
        answer = trickle(s, b"EHLO " + b"c" * 100 + b"\r\n")
        assert answer.startswith(b"421 4.4.2"), answer
        assert closed(s)


# -- a dialogue that never reaches DATA -----------------------------------------

def test_dialogue_that_never_reaches_data_is_closed(make_proxy, sink):
    proxy = make_proxy({"server": {"envelope_timeout": 2, "idle_timeout": 30, "command_timeout": 30}})
    with RawSession(proxy.smtp_port) as s:
        assert s.command(b"EHLO client.test").startswith(b"250")
        commands = [b"MAIL FROM:<a@sender.test>", b"RCPT TO:<support@example.com>", b"NOOP", b"RSET"]
        answer = b""
        deadline = time.monotonic() + DEADLINE
        i = 0
        while time.monotonic() < deadline:  # always busy, never idle, never DATA
            try:
                answer = s.command(commands[i % len(commands)])
            except ConnectionResetError:
                answer = b""
            if not answer.startswith((b"250", b"221")):
                break
            i += 1
            time.sleep(0.2)
        assert answer.startswith(b"421 4.4.2"), answer
        assert closed(s)
    assert Scrape(proxy.links_port)("smtp_offload_refusals_total", reason="envelope_timeout") == 1
    assert sink.messages == []
    assert_clean_log(proxy)


def test_envelope_deadline_restarts_after_each_message(make_proxy, sink):
    """The deadlines bound one line and one dialogue, not the session: a client that keeps
    sending messages, with pauses full of complete commands, stays as long as it likes."""
    proxy = make_proxy({"server": {"envelope_timeout": 6, "command_timeout": 1, "idle_timeout": 30}})
    with RawSession(proxy.smtp_port) as s:
        assert s.command(b"EHLO client.test").startswith(b"250")
        for i in range(4):  # about 7.5 s of pauses in all, each dialogue well under 6 s
            if i:
                until = time.monotonic() + 2.5
                while time.monotonic() < until:
                    assert s.command(b"NOOP").startswith(b"250")
                    time.sleep(0.25)
            assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250")
            assert s.command(b"RCPT TO:<support@example.com>").startswith(b"250")
            assert s.command(b"DATA").startswith(b"354")
            s.send(message(text(f"message {i}\r\n")) + b".\r\n")
            assert s.reply().startswith(b"250 2.0.0")
        assert s.command(b"QUIT").startswith(b"221")
    assert len(sink.messages) == 4


# -- sessions per client address ------------------------------------------------

def test_one_address_cannot_take_every_session(make_proxy, sink):
    proxy = make_proxy({"server": {"max_sessions_per_client": 2}})
    held = [connect(proxy.smtp_port) for _ in range(2)]
    try:
        assert all(h.greeting.startswith(b"220") for h in held)
        third = connect(proxy.smtp_port)
        with third:
            assert third.greeting == b"421 4.7.0 Too many connections from your address, try again later\r\n"
            assert closed(third)
        other = connect(proxy.smtp_port, source="127.0.0.2")  # another address still gets in
        with other:
            assert other.greeting.startswith(b"220")
            assert other.command(b"EHLO other.test").startswith(b"250")
        held.pop().close()  # a session that ends gives its address its slot back
        with until_greeted(lambda: connect(proxy.smtp_port)) as again:
            assert again.greeting.startswith(b"220")
    finally:
        for h in held:
            h.close()
    assert Scrape(proxy.links_port)("smtp_offload_refusals_total", reason="max_sessions_per_client") >= 1
    (ev, *_) = [e for e in proxy.events("session_refused") if e.get("reason") == "max_sessions_per_client"]
    assert ev["client"] == "127.0.0.1"
    assert_clean_log(proxy)


def test_sessions_are_counted_by_the_proxy_protocol_address(make_proxy, sink):
    """Every TCP connection comes from 127.0.0.1 here (the load balancer); the limit applies
    to the client each PROXY header names. IPv6 clients are counted per /64."""
    proxy = make_proxy({"server": {"proxy_protocol": True, "max_sessions_per_client": 2}})
    port = proxy.smtp_port
    held = [connect(port, proxy_header=v1(a)) for a in ("192.0.2.1", "192.0.2.1", "2001:db8::1", "2001:db8::2")]
    try:
        assert all(h.greeting.startswith(b"220") for h in held)
        for over in ("192.0.2.1", "2001:db8::ffff"):  # the same address; the same /64
            s = connect(port, proxy_header=v1(over))
            with s:
                assert s.greeting.startswith(b"421 4.7.0"), (over, s.greeting)
                assert closed(s)
        for other in ("192.0.2.2", "2001:db8:0:1::1"):
            s = connect(port, proxy_header=v1(other))
            with s:
                assert s.greeting.startswith(b"220"), (other, s.greeting)
                assert s.command(b"EHLO client.test").startswith(b"250")
        held.pop(0).close()
        with until_greeted(lambda: connect(port, proxy_header=v1("192.0.2.1"))) as again:
            assert again.greeting.startswith(b"220")
    finally:
        for h in held:
            h.close()
    assert Scrape(proxy.links_port)("smtp_offload_refusals_total", reason="max_sessions_per_client") >= 2
    assert proxy.events("proxy_refused") == []  # valid headers: not a PROXY protocol failure
    assert_clean_log(proxy)


# -- the in-flight byte budget charged for real bytes --------------------------------

BUDGET = 1_000_000


def body(n: int) -> bytes:
    """About n bytes of message with short lines (no line limit is being tested)."""
    line = b"x" * 998 + b"\r\n"
    return b"Subject: big\r\n\r\n" + line * (n // len(line) + 1)


def open_data(port: int, size: int) -> RawSession:
    s = RawSession(port)
    assert s.start_data(mail=b"MAIL FROM:<a@sender.test> SIZE=%d" % size).startswith(b"354")
    return s


def inflight(port: int, ok, timeout: float = DEADLINE) -> float:
    return scrape_until(port, lambda m: ok(m("smtp_offload_inflight_bytes")), timeout)("smtp_offload_inflight_bytes")


def test_false_size_is_charged_for_the_bytes_that_arrive(make_proxy, sink):
    proxy = make_proxy({"server": {"max_inflight_bytes": BUDGET}})
    liar = open_data(proxy.smtp_port, 1)
    try:
        data = body(3 * BUDGET)
        liar.send(data)
        # its real bytes hold the budget (alone in flight, a message may pass it, as with SIZE)
        assert inflight(proxy.links_port, lambda v: v >= len(data)) >= len(data)
        with RawSession(proxy.smtp_port) as honest:  # a small honest message must wait now
            reply = honest.start_data(mail=b"MAIL FROM:<b@sender.test> SIZE=1000")
            assert reply.startswith(b"451 4.3.2"), reply
            assert honest.command(b"QUIT").startswith(b"221")
        liar.send(b"\r\n.\r\n")
        assert liar.reply().startswith(b"250 2.0.0")
    finally:
        liar.close()
    assert inflight(proxy.links_port, lambda v: v == 0) == 0  # exactly what was charged is released
    assert len(sink.messages) == 1
    assert Scrape(proxy.links_port)("smtp_offload_refusals_total", reason="busy") == 1


def test_message_whose_bytes_do_not_fit_is_refused_after_its_end(make_proxy, sink):
    proxy = make_proxy({"server": {"max_inflight_bytes": BUDGET}})
    first, second = open_data(proxy.smtp_port, 1), open_data(proxy.smtp_port, 1)
    try:
        part = body(600_000)
        first.send(part)
        assert inflight(proxy.links_port, lambda v: v >= len(part)) >= len(part)
        # the second one's bytes cannot be charged: read to its end, then 451, session in step
        second.send(body(600_000) + b"\r\n.\r\n")
        reply = second.reply()
        assert reply.startswith(b"451 4.3.2"), reply
        assert second.command(b"NOOP").startswith(b"250")
        first.send(b"\r\n.\r\n")
        assert first.reply().startswith(b"250 2.0.0")
    finally:
        first.close()
        second.close()
    assert inflight(proxy.links_port, lambda v: v == 0) == 0
    assert len(sink.messages) == 1 and sink.messages[0].mail_from == "a@sender.test"
    assert Scrape(proxy.links_port)("smtp_offload_refusals_total", reason="busy") == 1


# -- pure functions and config ----------------------------------------------------

@pytest.mark.parametrize("address,key", [
    ("192.0.2.1", "192.0.2.1"),
    ("2001:db8::1", "2001:db8::/64"),
    ("2001:db8::ffff:1", "2001:db8::/64"),
    ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("fe80::1%eth0", "fe80::/64"),
    (None, None),
    ("", None),
])
def test_client_key(address, key):
    assert client_key(address) == key


def test_limits_admit_leave_and_grow():
    limits = Limits(max_sessions=10, max_inflight_bytes=100, data_timeout=1, max_sessions_per_client=2)
    assert limits.admit("a") and limits.admit("a") and not limits.admit("a") and limits.admit("b")
    limits.leave("a")
    assert limits.admit("a") and not limits.admit("a")
    for _ in range(2):
        limits.leave("a")
    limits.leave("b")
    assert limits.clients == {}
    unlimited = Limits(max_sessions=10, max_inflight_bytes=100, data_timeout=1)
    assert all(unlimited.admit("a") for _ in range(1000))

    a = limits.reserve(1)
    b = limits.reserve(1)
    assert limits.grow(a, 60)  # 62 of 100
    assert not limits.grow(b, 50)  # 112: over, and not alone
    assert limits.inflight_bytes == 62
    limits.release(b)
    assert limits.grow(61, 500)  # alone: may pass the budget, as reserve() lets one message do
    limits.release(561)
    assert limits.inflight_bytes == 0


@pytest.mark.parametrize("key,value,needle", [
    ("command_timeout", 0, "server.command_timeout: must be greater than 0"),
    ("envelope_timeout", -1, "server.envelope_timeout: must be greater than 0"),
    ("max_sessions_per_client", -1, "server.max_sessions_per_client: must be 0 (off) or more"),
    ("max_sessions_per_client", "many", "server.max_sessions_per_client: expected an integer"),
])
def test_config_errors_name_the_key(tmp_path, key, value, needle):
    path = tmp_path / "c.toml"
    path.write_text(config_mod.dump_sections({"server": {key: value}}))
    with pytest.raises(ConfigError) as exc:
        config_mod.load(path, env={})
    assert needle in str(exc.value)


def test_defaults():
    s = config_mod.load(None, env={}).server
    assert (s.command_timeout, s.envelope_timeout, s.max_sessions_per_client) == (60.0, 300.0, 50)
