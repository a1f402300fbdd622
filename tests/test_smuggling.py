"""SMTP smuggling: whatever the client sends, the downstream receives exactly one
transaction per accepted DATA, with CRLF line ends only, no NUL, and dot-stuffing intact."""

from __future__ import annotations

import socket

import pytest


from tests.support.faulty import FaultyServer
from tests.support.mail import message, text
from tests.support.net import RawSession, self_signed

SPOOF = b"MAIL FROM:<ceo@bank.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n"
LOOKALIKES = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r", b"\r.\n", b"\n.\r",
              b"\r\n.\x00\r\n", b"\r\n\x00.\r\n", b"\r\r\n.\r\r\n", b"\r\n.\r\r\n", b"\n\x00.\n"]


def session(port: int, data: bytes) -> list[bytes]:
    """Send a whole dialogue in one write after DATA; return the replies that follow."""
    with RawSession(port) as s:
        assert s.start_data().startswith(b"354")
        s.send(data + b"QUIT\r\n")
        return list(iter(s.file.readline, b""))


def assert_clean_transport(content: bytes) -> None:
    # What the downstream read (after its own de-stuffing). A "." line may be content here:
    # it reached the downstream stuffed, or the downstream would have ended DATA there and
    # read the rest as commands (a second transaction, which the callers rule out).
    assert b"\x00" not in content
    assert content.count(b"\r") == content.count(b"\r\n") == content.count(b"\n")


@pytest.mark.parametrize("lookalike", LOOKALIKES, ids=[repr(x) for x in LOOKALIKES])
def test_end_of_data_lookalikes_do_not_split_the_message(proxy, sink, lookalike):
    head = message(text("first line\r\n"))
    replies = session(proxy.smtp_port, head + b"before" + lookalike + SPOOF + b"after\r\n.\r\n")
    codes = [r[:3] for r in replies]
    assert codes[0] == b"250" and codes[-1] == b"221" and len(codes) == 2, replies
    assert len(sink.messages) == 1
    got = sink.messages[0]
    assert got.rcpt_tos == ["support@example.com"] and got.mail_from == "a@sender.test"
    assert b"smuggled body" in got.content  # it stayed text inside the one message
    assert_clean_transport(got.content)


def test_bare_newlines_can_be_refused(make_proxy, sink):
    proxy = make_proxy({"server": {"bare_newlines": "reject"}})
    replies = session(proxy.smtp_port, message(text("a\nb\r\n")) + b".\r\n")
    assert replies[0].startswith(b"554 5.5.2")
    assert sink.messages == []
    replies = session(proxy.smtp_port, message(text("clean\r\n")) + b".\r\n")
    assert replies[0].startswith(b"250")


def test_dot_lines_are_stuffed_downstream(proxy, sink):
    body = ".\r\n..\r\n.hidden\r\n"
    replies = session(proxy.smtp_port, message(text(body)).replace(b"\r\n.", b"\r\n..") + b".\r\n")
    assert replies[0].startswith(b"250")
    assert sink.messages[0].content.endswith(body.encode())


def test_data_after_starttls_is_discarded(make_proxy, sink, tmp_path):
    """Commands pipelined behind STARTTLS must not be executed inside the TLS session
    (CVE-2011-0411 class): they are discarded with the plaintext buffer."""
    import ssl

    crt, key = self_signed(tmp_path)
    proxy = make_proxy({"server": {"tls_cert": crt, "tls_key": key}})
    raw = socket.create_connection(("127.0.0.1", proxy.smtp_port), timeout=20)
    f = raw.makefile("rb")
    f.readline()
    raw.sendall(b"EHLO c.test\r\n")
    line = f.readline()
    while line[3:4] == b"-":
        line = f.readline()
    raw.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
    assert f.readline().startswith(b"220")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    tls = ctx.wrap_socket(raw, server_hostname="mx.test")
    tf = tls.makefile("rb")
    tls.sendall(b"EHLO c.test\r\n")
    line = tf.readline()
    while line[3:4] == b"-":
        line = tf.readline()
    tls.sendall(b"RCPT TO:<support@example.com>\r\n")
    assert tf.readline().startswith(b"503")  # no MAIL was executed: the injected one is gone
    tls.close()


def test_wire_to_the_downstream_is_canonical(make_proxy):
    """The raw bytes the downstream reads: one DATA, CRLF only, no NUL, every dot line stuffed."""
    rec = FaultyServer("record")
    try:
        proxy = make_proxy(downstream_port=rec.port)
        wire = b"".join(LOOKALIKES).join([message(text("x\r\n")) + b"a", SPOOF] * 3)
        replies = session(proxy.smtp_port, wire + b"\r\nz\r\n.\r\n")
        assert replies[0].startswith(b"250")
        assert sum(1 for c in rec.commands if c.upper().startswith(b"DATA")) == 1
        (block,) = rec.data_blocks
        assert block.endswith(b"\r\n.\r\n") and b"\x00" not in block
        lines = block[:-5].split(b"\r\n")
        assert all(b"\r" not in ln and b"\n" not in ln for ln in lines)
        assert all(ln.startswith(b"..") for ln in lines if ln.startswith(b"."))
    finally:
        rec.stop()


@pytest.mark.parametrize("split", [1, 2, 3, 4, 5])
def test_terminator_split_across_reads(proxy, sink, split):
    """The end of data arriving in pieces (as slow links deliver it) is still found exactly once."""
    import time

    with RawSession(proxy.smtp_port) as s:
        assert s.start_data().startswith(b"354")
        body = message(text("line\r\n.dot line\r\n"))
        s.send(body[:-2])
        time.sleep(0.05)
        ending = body[-2:] + b".\r\nQUIT\r\n"
        for piece in (ending[:split], ending[split:]):
            s.send(piece)
            time.sleep(0.05)
        assert s.reply().startswith(b"250")
        assert s.reply().startswith(b"221")
    assert len(sink.messages) == 1 and sink.messages[0].content.endswith(b"line\r\ndot line\r\n")
