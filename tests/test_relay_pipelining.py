"""The first RCPT of a transaction sends MAIL and RCPT downstream in one write when the
downstream offers PIPELINING (RFC 2920; issue 17), and the replies mean exactly what they
meant one by one: a MAIL refused downstream is the answer to the client's RCPT, a refused
recipient is refused alone, a connection lost mid-way is a 4xx, a reply nobody asked for
is never taken as an answer. Real proxy process, real downstreams on loopback."""

from __future__ import annotations

import pytest

from tests.support.mail import message, text
from tests.support.net import RawSession
from tests.support.scripted import Act


def start(make_proxy, port: int):
    # A short command timeout: a proxy that waited for MAIL's reply before sending RCPT would
    # fail the first test in seconds, not hang.
    return make_proxy({"downstream": {"command_timeout": 5, "pool_size": 2}}, downstream_port=port)


def body(token: str) -> bytes:
    return message(text(f"{token}\r\n"), subject=token) + b".\r\n"


def test_mail_and_first_rcpt_go_in_one_write(make_proxy, scripted):
    # The downstream answers MAIL only together with the next command's answer: only a proxy
    # that sent RCPT right behind MAIL, without waiting, gets either reply.
    ds = scripted(lambda conn, verb, arg: Act("defer") if verb == "MAIL" else Act(), pipelining=True)
    proxy = start(make_proxy, ds.port)
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<x@example.com>") == b"250 2.1.5 rcpt:<x@example.com> ok\r\n"
        assert s.command(b"RCPT TO:<y@example.com>") == b"250 2.1.5 rcpt:<y@example.com> ok\r\n"
        assert s.command(b"DATA").startswith(b"354")
        s.send(body("TOKEN-one"))
        assert s.reply().startswith(b"250 2.0.0 ")
        # the next transaction on the same (pooled, in step) connection pipelines again
        assert s.command(b"MAIL FROM:<b@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<z@example.com>") == b"250 2.1.5 rcpt:<z@example.com> ok\r\n"
        assert s.command(b"DATA").startswith(b"354")
        s.send(body("TOKEN-two"))
        assert s.reply().startswith(b"250 2.0.0 ")
    assert [(d.conn, d.sender, d.rcpts, d.token) for d in ds.deliveries] == [
        (1, "a@sender.test", ["x@example.com", "y@example.com"], "TOKEN-one"),
        (1, "b@sender.test", ["z@example.com"], "TOKEN-two")]


@pytest.mark.parametrize("code", [550, 451, 421])
def test_mail_refused_downstream_is_the_answer_to_rcpt(make_proxy, scripted, code):
    """Not the 503 the downstream gave the RCPT that followed the refused MAIL. A 421 (the
    downstream is closing) is our 451 with its text, and costs only that connection."""
    refused = {"n": 0}

    def decide(conn, verb, arg):
        if verb == "MAIL" and arg == "bad@sender.test":
            refused["n"] += 1
            return Act("refuse", code)
        return Act()

    ds = scripted(decide, pipelining=True)
    proxy = start(make_proxy, ds.port)
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<bad@sender.test>").startswith(b"250 ")
        reply = s.command(b"RCPT TO:<x@example.com>")
        shown = 451 if code == 421 else code
        assert reply == b"%d %d.1.0 mail:<bad@sender.test> refused\r\n" % (shown, code // 100), reply
        # nothing was accepted: DATA has no recipient; a new transaction goes through
        assert s.command(b"DATA").startswith(b"503 ")
        assert s.command(b"RSET").startswith(b"250 ")
        assert s.command(b"MAIL FROM:<good@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<y@example.com>") == b"250 2.1.5 rcpt:<y@example.com> ok\r\n"
        assert s.command(b"DATA").startswith(b"354")
        s.send(body("TOKEN-after"))
        assert s.reply().startswith(b"250 2.0.0 ")
    assert refused["n"] == 1
    assert [(d.sender, d.rcpts) for d in ds.deliveries] == [("good@sender.test", ["y@example.com"])]
    assert len(ds.conns) == (2 if code == 421 else 1)  # in step after a refusal: kept
    assert not proxy.events("smtp_internal_error") and not proxy.events("message_internal_error")


def test_first_rcpt_refused_alone(make_proxy, scripted):
    ds = scripted(lambda conn, verb, arg: Act("refuse", 550) if arg == "x@example.com" else Act(),
                  pipelining=True)
    proxy = start(make_proxy, ds.port)
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<x@example.com>") == b"550 5.1.1 rcpt:<x@example.com> refused\r\n"
        assert s.command(b"RCPT TO:<y@example.com>") == b"250 2.1.5 rcpt:<y@example.com> ok\r\n"
        assert s.command(b"DATA").startswith(b"354")
        s.send(body("TOKEN-y"))
        assert s.reply().startswith(b"250 2.0.0 ")
    assert [(d.sender, d.rcpts) for d in ds.deliveries] == [("a@sender.test", ["y@example.com"])]
    assert ds.saw(b"MAIL FROM:<a@sender.test>") and sum(c.startswith(b"MAIL") for _, c in ds.commands) == 1


@pytest.mark.parametrize("fault", ["mail_drop", "rcpt_drop", "rcpt_extra", "rcpt_stale"])
def test_downstream_misbehaving_mid_way_is_a_4xx_and_the_next_try_works(make_proxy, scripted, fault):
    """Closed after MAIL or after RCPT without a reply: 451 4.4.1. One reply too many (an
    extra after RCPT's, or MAIL's said again before RCPT's, which would shift the answers by
    one): 451 4.4.2, as for one command. Such a connection is never used again: the proxy
    tries once more on a new one (as for a pooled connection the downstream closed while
    idle), and when that fails too the client's retry of the RCPT opens a third."""
    verb_of = {"mail_drop": "MAIL", "rcpt_drop": "RCPT", "rcpt_extra": "RCPT", "rcpt_stale": "RCPT"}
    act = {"mail_drop": Act("drop"), "rcpt_drop": Act("drop"), "rcpt_extra": Act(extra=True),
           "rcpt_stale": Act(stale=True)}[fault]

    def decide(conn, verb, arg):
        return act if conn.n in (1, 2) and verb == verb_of[fault] else Act()

    ds = scripted(decide, pipelining=True)
    proxy = start(make_proxy, ds.port)
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        reply = s.command(b"RCPT TO:<x@example.com>")
        status = b"4.4.2" if fault in ("rcpt_extra", "rcpt_stale") else b"4.4.1"
        assert reply.startswith(b"451 " + status + b" "), reply
        assert s.command(b"RCPT TO:<x@example.com>") == b"250 2.1.5 rcpt:<x@example.com> ok\r\n"
        assert s.command(b"DATA").startswith(b"354")
        s.send(body("TOKEN-retry"))
        assert s.reply().startswith(b"250 2.0.0 ")
    assert [(d.conn, d.rcpts, d.token) for d in ds.deliveries] == [(3, ["x@example.com"], "TOKEN-retry")]


def test_aiosmtpd_downstream_refusing_mail_or_one_rcpt(make_proxy, sink):
    """The same through a real aiosmtpd server offering PIPELINING: the replies to the client
    are its replies, command by command."""
    async def handle_EHLO(server, session, envelope, hostname, responses):
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING"] + responses[-1:]

    async def handle_MAIL(server, session, envelope, address, options):
        if address == "blocked@sender.test":
            return "550 5.7.1 sender blocked here"
        envelope.mail_from, envelope.mail_options = address, list(options)
        return "250 2.1.0 sender fine"

    sink.recorder.handle_EHLO = handle_EHLO
    sink.recorder.handle_MAIL = handle_MAIL
    sink.recorder.rcpt_replies["nobody@example.com"] = "550 5.1.1 no such user here"
    proxy = start(make_proxy, sink.port)
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<blocked@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<support@example.com>") == b"550 5.7.1 sender blocked here\r\n"
        assert s.command(b"RSET").startswith(b"250 ")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<nobody@example.com>") == b"550 5.1.1 no such user here\r\n"
        assert s.command(b"RCPT TO:<support@example.com>").startswith(b"250 ")
        assert s.command(b"DATA").startswith(b"354")
        s.send(body("TOKEN-sink"))
        assert s.reply().startswith(b"250 2.0.0 ")
    (got,) = sink.messages
    assert (got.mail_from, got.rcpt_tos) == ("a@sender.test", ["support@example.com"])


def test_replies_to_commands_a_client_pipelined_come_in_one_write(proxy, sink):
    """PIPELINING is not offered, but a client that sends ahead anyway gets the replies to
    what it sent in one write once the last of them is known (aiosmtpd writes each on its
    own), in order, a refusal among them included; a command not yet sent is never waited
    for."""
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        s.send(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@example.com>\r\nDATA\r\n")
        first = s.sock.recv(65536)  # one write of four replies arrives as one segment on loopback
        assert [line[:4] for line in first.split(b"\r\n") if line] == [b"250 ", b"250 ", b"250 ", b"354 "], first
        s.send(body("TOKEN-pipelined")
               + b"MAIL FROM:<b@sender.test>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<z@example.com>\r\nRSET\r\n")
        replies = [s.reply()[:4] for _ in range(5)]
        assert replies == [b"250 ", b"250 ", b"550 ", b"250 ", b"250 "], replies
        assert s.command(b"QUIT").startswith(b"221 ")
    (got,) = sink.messages
    assert got.rcpt_tos == ["x@example.com", "y@example.com"] and b"TOKEN-pipelined" in got.content
