"""Sessions a stranger cannot hold, and clean answers to odd clients (issue 11, round 2),
against the proxy process over loopback: clients that never read, STARTTLS where it does not
belong, a declared SIZE that would buy the byte budget, half-closed sockets, malformed
addresses and SIZE values, failed handshakes, AUTH, and client bytes echoed in replies or logs."""

from __future__ import annotations

import json
import re
import select
import signal
import socket
import ssl

import pytest

from smtp_offload.app import DEFAULT_RESERVE
from smtp_offload.smtp.server import declared_size, printable
from tests.support.mail import message, text
from tests.support.net import RawSession, closed
from tests.support.proc import assert_clean_log
from tests.support.scrape import Scrape, scrape_until
from tests.support.scripted import Act

DEADLINE = 60.0  # generous: the timeouts under test are 2-4 s; this only stops a broken test
SHORT = {"idle_timeout": 2, "command_timeout": 2, "envelope_timeout": 4}
MiB = 1024 * 1024


@pytest.fixture
def tls(cert) -> dict[str, str]:
    return {"tls_cert": cert[0], "tls_key": cert[1]}


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


def sessions(proxy, ok) -> float:
    """The smtp_sessions gauge once ok(value) holds (or at the deadline)."""
    return scrape_until(proxy.links_port, lambda m: ok(m("smtp_offload_smtp_sessions")), DEADLINE)(
        "smtp_offload_smtp_sessions")


def no_internal_error(proxy) -> None:
    assert proxy.events("smtp_internal_error") == []
    assert_clean_log(proxy)


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the proxy sends until it closes the connection (a reset counts as closed)."""
    sock.settimeout(DEADLINE)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


# -- 1. a client that never reads ---------------------------------------------------

def flood(port: int) -> socket.socket:
    """A client that sends commands as fast as the proxy takes them and reads no reply, until
    the proxy stops taking them (its replies are stuck: the client's tiny receive buffer is
    full, the kernel's send buffer and the transport's are full behind it)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    payload = b"HELP\r\n" * 200_000  # its replies are ~15 times larger than every buffer on the way
    sent = 0
    while sent < len(payload):
        try:
            sent += s.send(payload[sent:sent + 65536])
        except BlockingIOError:
            if not select.select([], [s], [], 2.0)[1]:
                break  # the proxy has stopped reading: it is stuck writing replies nobody reads
        except OSError:  # the proxy already gave up on us
            break
    return s


def test_client_that_never_reads_does_not_hold_its_session(make_proxy, sink):
    """t_noread.py: close() waited forever for replies the client never read; the session
    stayed counted and max_sessions turned honest clients away."""
    proxy = make_proxy({"server": {**SHORT, "max_sessions": 3, "max_sessions_per_client": 0}})
    floods = [flood(proxy.smtp_port) for _ in range(3)]
    try:
        assert sessions(proxy, lambda v: v == 0) == 0  # while the floods still hold their sockets
        with RawSession(proxy.smtp_port) as honest:
            assert honest.greeting.startswith(b"220")
            assert honest.command(b"QUIT").startswith(b"221")
    finally:
        for s in floods:
            s.close()
    assert_clean_log(proxy)


def test_shutdown_does_not_wait_for_a_client_that_never_reads(make_proxy, sink):
    """App.stop waited drain_seconds for such a session: its 421 never flushed."""
    proxy = make_proxy({"server": {"drain_seconds": 600, "idle_timeout": 600, "command_timeout": 600,
                                   "envelope_timeout": 600}})
    s = flood(proxy.smtp_port)
    try:
        assert sessions(proxy, lambda v: v == 1) == 1
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(DEADLINE) == 0  # far less than drain_seconds
    finally:
        s.close()
    assert [e["in_flight"] for e in proxy.events("draining")] == [0]


# -- 2. STARTTLS inside TLS, and ends that leaked the slot ----------------------------------

def test_second_starttls_is_refused_and_the_session_goes_on(make_proxy, sink, tls):
    proxy = make_proxy({"server": {**tls, **SHORT, "max_sessions_per_client": 2}})
    t = Tls(proxy.smtp_port)
    try:
        assert t.command(b"STARTTLS") == b"503 5.5.1 TLS already active\r\n"  # RFC 3207: not 220
        ehlo = t.lines(b"EHLO client.test")
        assert ehlo[-1].startswith(b"250") and not [x for x in ehlo if b"STARTTLS" in x]
        assert t.command(b"MAIL FROM:<a@sender.test>").startswith(b"250")
        assert t.command(b"RCPT TO:<support@example.com>").startswith(b"250")
        assert t.command(b"DATA").startswith(b"354")
        t.sock.sendall(message(text("over TLS\r\n")) + b".\r\n")
        assert t.file.readline().startswith(b"250 2.0.0")
        # refused again, then silent: the idle timeout ends it, the client still connected
        assert t.command(b"STARTTLS").startswith(b"503 5.5.1")
        assert sessions(proxy, lambda v: v == 0) == 0
    finally:
        t.close()
    assert len(sink.messages) == 1
    for _ in range(2):  # both slots of this address are free again
        with RawSession(proxy.smtp_port) as s:
            assert s.greeting.startswith(b"220")
    no_internal_error(proxy)


def test_client_silent_after_starttls_is_cut_off_and_released(make_proxy, sink, tls):
    """The 220 to STARTTLS, then no handshake (or one the client abandons): the TLS layer never
    told aiosmtpd the connection ended, so the slot stayed taken after the idle timeout,
    even after the client closed its socket."""
    proxy = make_proxy({"server": {**tls, **SHORT, "max_sessions_per_client": 2}})
    held = []
    for _ in range(2):
        s = RawSession(proxy.smtp_port)
        assert s.command(b"EHLO client.test").startswith(b"250")
        assert s.command(b"STARTTLS").startswith(b"220")
        held.append(s)
    try:
        assert sessions(proxy, lambda v: v == 0) == 0
        for s in held:
            assert closed(s)
    finally:
        for s in held:
            s.close()
    for _ in range(2):  # the per-address count was released too
        with RawSession(proxy.smtp_port) as s:
            assert s.greeting.startswith(b"220")
    no_internal_error(proxy)


# -- 3. STARTTLS during a transaction; the session before the handshake ---------------------

def test_starttls_during_a_transaction_is_refused(make_proxy, scripted, tls):
    """t_tls_leak.py: the new session after the handshake orphaned the downstream transaction
    the RCPT had opened."""
    ds = scripted()
    proxy = make_proxy({"server": tls}, downstream_port=ds.port)
    with RawSession(proxy.smtp_port) as s:
        assert s.command(b"EHLO client.test").startswith(b"250")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250")
        assert s.command(b"STARTTLS") == b"503 5.5.1 STARTTLS not allowed during a mail transaction\r\n"
        assert s.command(b"RCPT TO:<support@example.com>").startswith(b"250")
        assert s.command(b"STARTTLS").startswith(b"503 5.5.1")
        assert s.command(b"DATA").startswith(b"354")  # the transaction goes on
        s.send(message(text("TOKEN-tx1\r\n")) + b".\r\n")
        assert s.reply().startswith(b"250 2.0.0")
        assert s.command(b"QUIT").startswith(b"221")
    assert [d.token for d in ds.deliveries] == ["TOKEN-tx1"]
    assert len(ds.conns) == 1
    no_internal_error(proxy)


def test_session_before_starttls_releases_its_downstream_connection(make_proxy, scripted, tls):
    """A message in plaintext, then STARTTLS: the old session's downstream connection was
    never closed nor pooled (with pool_size 0: closed) and stayed open for good."""
    ds = scripted()
    proxy = make_proxy({"server": tls, "downstream": {"pool_size": 0}}, downstream_port=ds.port)
    plain = RawSession(proxy.smtp_port)
    assert plain.start_data().startswith(b"354")
    plain.send(message(text("TOKEN-plain\r\n")) + b".\r\n")
    assert plain.reply().startswith(b"250 2.0.0")
    assert plain.command(b"STARTTLS").startswith(b"220")
    t = lenient().wrap_socket(plain.sock, server_hostname="mx.test")
    tf = t.makefile("rb")
    t.sendall(b"QUIT\r\n")
    assert tf.readline().startswith(b"221")
    t.close()
    ds.wait_for(lambda: len(ds.conns) == 1 and ds.conns[0].closed,
                      "the downstream connection of the session before STARTTLS to be closed", DEADLINE)
    assert [d.token for d in ds.deliveries] == ["TOKEN-plain"]
    no_internal_error(proxy)


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


# -- 5. half-close --------------------------------------------------------------------------

def test_pipelined_dialogue_then_half_close_gets_every_reply(proxy, sink):
    """Like `nc -N`: all commands at once, then SHUT_WR. aiosmtpd cancelled the session at the
    EOF: only the first replies came back."""
    s = socket.create_connection(("127.0.0.1", proxy.smtp_port), timeout=DEADLINE)
    with s:
        s.sendall(b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n"
                  + message(text("pipelined\r\n")) + b".\r\nNOOP\r\n")
        s.shutdown(socket.SHUT_WR)
        replies = [line for line in read_to_eof(s).split(b"\r\n") if line and line[3:4] != b"-"]
    assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"354", b"250", b"250"], replies
    assert replies[5].startswith(b"250 2.0.0 Ok: queued as")
    assert len(sink.messages) == 1
    assert [e["reply"][:3] for e in proxy.events("message")] == ["250"]
    no_internal_error(proxy)


def test_half_close_while_the_message_is_relayed_still_gets_the_reply(make_proxy, scripted):
    """t_halfclose.py (B): the downstream took the message, but the client that half-closed
    after the final dot got no reply (and would send it again)."""
    ds = scripted(lambda conn, verb, arg: Act(delay=1.0) if verb == "DOT" else Act())
    proxy = make_proxy(downstream_port=ds.port)
    with RawSession(proxy.smtp_port, timeout=DEADLINE) as s:
        assert s.start_data().startswith(b"354")
        s.send(message(text("TOKEN-half\r\n")) + b".\r\n")
        s.sock.shutdown(socket.SHUT_WR)  # before the downstream's delayed answer
        assert s.reply().startswith(b"250 2.0.0 Ok: queued as")
        assert closed(s)
    assert [d.token for d in ds.deliveries] == ["TOKEN-half"]
    assert [e["outcome"] for e in proxy.events("message")] == ["relayed"]
    no_internal_error(proxy)


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


# -- 7. failed TLS handshakes ----------------------------------------------------------------

def test_failed_handshake_is_logged_as_tls_failed(make_proxy, sink, tls):
    """t_tls_fail.py: a client that rejects the certificate, or sends no TLS after 220, was an
    smtp_internal_error with a traceback."""
    proxy = make_proxy({"server": tls})
    with RawSession(proxy.smtp_port) as s:  # bytes that are no ClientHello
        assert s.command(b"EHLO client.test").startswith(b"250")
        assert s.command(b"STARTTLS").startswith(b"220")
        s.send(b"this is not a TLS client hello\r\n" * 10)
        read_to_eof(s.sock)  # (perhaps a TLS alert) then the end
    with RawSession(proxy.smtp_port) as s:  # a client that verifies certificates
        assert s.command(b"EHLO client.test").startswith(b"250")
        assert s.command(b"STARTTLS").startswith(b"220")
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(s.sock, server_hostname="mx.test")
    m = scrape_until(proxy.links_port, lambda m: m("smtp_offload_refusals_total", reason="tls_failed") == 2
                     and m("smtp_offload_smtp_sessions") == 0, DEADLINE)
    assert m("smtp_offload_refusals_total", reason="tls_failed") == 2
    assert m("smtp_offload_smtp_sessions") == 0
    events = proxy.events("tls_failed")
    assert len(events) == 2 and all(e["level"] == "info" and e["reason"] and e["client"] == "127.0.0.1"
                                    for e in events)
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

def test_auth_is_neither_offered_nor_accepted(make_proxy, sink, tls):
    """t_auth.py: AUTH LOGIN PLAIN was offered after STARTTLS and could never succeed (an MTA
    with credentials defers forever); AUTH LOGIN then a 20000-byte line was a traceback."""
    proxy = make_proxy({"server": tls})
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


# -- 10. client bytes in replies and logs ---------------------------------------------------------

PRINTABLE_REPLY = re.compile(rb"[\x20-\x7e]*\r\n")


def test_replies_are_printable_and_every_log_line_is_json(proxy, sink):
    """t_codes2.py: `500 ... command "X<CR>Y" not recognized` echoed CR and NUL back, and
    aiosmtpd's warnings went to stderr as free text with the raw bytes."""
    with RawSession(proxy.smtp_port) as s:
        assert s.command(b"EHLO client.test").startswith(b"250")
        for line in (b"X\rY", b"NO\x00OP", b"NOOP\x00", b"VRFY \xff@["):
            s.sock.sendall(line + b"\r\n")
            reply = s.file.readline()
            assert PRINTABLE_REPLY.fullmatch(reply) and reply[:1] == b"5", (line, reply)
        assert s.command(b"NOOP").startswith(b"250")  # in step
    lines = proxy.log_path.read_bytes().splitlines()
    assert lines and [x for x in lines if not x.startswith(b"{")] == []
    for x in lines:
        json.loads(x)
    warned = [e["message"] for e in proxy.events("library_log") if e["logger"] == "mail.log"]
    assert any("unrecognised: X\\rY" in w for w in warned), warned
    no_internal_error(proxy)


@pytest.mark.parametrize("reply,clean", [
    ('500 Error: command "X\rY" not recognized', '500 Error: command "X?Y" not recognized'),
    ("250 ok\x00", "250 ok?"), ("550 b\u00fccher", "550 b?cher"), ("502 Could not VRFY \udcff", "502 Could not VRFY ?"),
    ("250 2.0.0 Ok", "250 2.0.0 Ok"),
])
def test_printable(reply, clean):
    assert printable(reply) == clean
