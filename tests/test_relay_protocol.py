"""Envelope addresses at the edges of RFC 5321 (issue 11, item 10), through the real proxy."""

from __future__ import annotations

import pytest

from tests.support.mail import message, text
from tests.support.net import RawSession


def test_postmaster_without_a_domain_is_accepted_and_relayed(proxy, sink):
    """RFC 5321 4.5.1: <Postmaster>, any case, must be accepted."""
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        for rcpt in (b"postmaster", b"PostMaster", b"POSTMASTER"):
            reply = s.command(b"RCPT TO:<" + rcpt + b">")
            assert reply.startswith(b"250 "), (rcpt, reply)
        # with a domain it is an ordinary address: someone else's postmaster is relaying
        assert s.command(b"RCPT TO:<postmaster@elsewhere.test>").startswith(b"550 5.7.1 ")
        assert s.command(b"DATA").startswith(b"354")
        s.send(message(text("for the postmaster\r\n"), to="postmaster") + b".\r\n")
        assert s.reply().startswith(b"250 ")
    (got,) = sink.messages
    assert got.rcpt_tos == ["postmaster", "PostMaster", "POSTMASTER"]


@pytest.mark.parametrize("sender", [b"<not an address>", b"<foo>", b"foo", b'<"quoted">'])
def test_mail_from_that_is_not_an_address_gets_501_5_1_7(proxy, sink, sender):
    with RawSession(proxy.smtp_port) as s:
        s.command(b"EHLO client.test")
        reply = s.command(b"MAIL FROM:" + sender)
        assert reply.startswith(b"501 5.1.7 ") and b"user@domain" in reply, reply
        # no transaction was opened: RCPT needs a MAIL first, and a good MAIL is not "nested"
        assert s.command(b"RCPT TO:<support@example.com>").startswith(b"503 ")
        assert s.command(b"MAIL FROM:<a@sender.test>").startswith(b"250 ")
        assert s.command(b"RCPT TO:<support@example.com>").startswith(b"250 ")
    assert proxy.events("mail_refused")


def test_null_and_ordinary_senders_still_pass(proxy, sink):
    for sender in (b"<>", b"<a@sender.test>", b'<"a b"@sender.test>'):
        with RawSession(proxy.smtp_port) as s:
            s.command(b"EHLO client.test")
            assert s.command(b"MAIL FROM:" + sender).startswith(b"250 "), sender
            assert s.command(b"RCPT TO:<support@example.com>").startswith(b"250 ")
            assert s.command(b"DATA").startswith(b"354")
            s.send(message(text("hi\r\n")) + b".\r\n")
            assert s.reply().startswith(b"250 ")
    assert [m.mail_from for m in sink.messages] == ["<>", "a@sender.test", '"a b"@sender.test']


def test_address_checks_as_pure_functions():
    from smtp_offload.smtp.policy import check_recipient, check_sender

    accepted = ("example.com",)
    assert check_recipient("postmaster", accepted) is None
    assert check_recipient("pOsTmAsTeR", accepted) is None
    assert check_recipient("postmasters", accepted).startswith("550 5.1.3")
    assert check_recipient("postmaster@elsewhere.test", accepted).startswith("550 5.7.1")
    assert check_sender("<>") is None and check_sender("a@b.test") is None
    for bad in ("foo", "@b.test", "a@", '"not an address"', ""):
        assert check_sender(bad).startswith("501 5.1.7 "), bad
